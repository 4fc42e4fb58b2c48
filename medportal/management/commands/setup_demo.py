"""Create the demo users (curator / clinician / admin), departments and demo QA pairs, the demo
base model and a demo dataset version.

Safe to run again: users get fresh passwords (printed), pairs already present are reported
as duplicates by the importer and not created twice, the demo model (DATA_DIR/models/
medportal-demo) is built only when its folder is missing or not a usable model, and a
dataset version is frozen only when there is none. ``--no-model`` skips the model.
"""

from __future__ import annotations

import io
import json
import secrets
import shutil
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import BaseCommand, call_command
from django.db import transaction

from curation.models import DatasetVersion, Department
from medportal.errors import ApplicationError
from medportal.roles import ADMIN, CLINICIAN, CURATOR

DEMO_DATA = Path(__file__).resolve().parents[3] / "curation" / "demo_data"
DEMO_USERS = (("curator", CURATOR), ("clinician", CLINICIAN), ("admin", ADMIN))
DEMO_MODEL = "medportal-demo"
DEMO_VERSION = "demo-v1"
DEMO_SPLIT = (0.7, 0.1, 0.2)
DEPARTMENTS = ("心血管科", "内分泌科", "呼吸科", "消化科", "肝病科", "神经科", "血液科", "肾内科", "普通内科")


class Command(BaseCommand):
    help = "Create demo users with fresh passwords, departments, the demo QA pairs, the demo model and a dataset version."

    def add_arguments(self, parser):
        parser.add_argument("--no-model", action="store_true", help="Do not build or register the demo base model.")

    def handle(self, *args, no_model=False, **options):
        User = get_user_model()
        passwords = {}
        with transaction.atomic():
            for username, role in DEMO_USERS:
                user, _ = User.objects.get_or_create(username=username, defaults={"email": f"{username}@demo.invalid"})
                password = secrets.token_urlsafe(9)
                user.set_password(password)
                user.is_active = True
                user.is_staff = role == ADMIN
                user.is_superuser = role == ADMIN
                user.save()
                user.groups.add(Group.objects.get_or_create(name=role)[0])
                passwords[username] = password
            clinician = User.objects.get(username="clinician")
            for name in DEPARTMENTS:
                Department.objects.get_or_create(name=name)[0].reviewers.add(clinician)

        for filename, user, status in (("demo_reviewed.jsonl", "admin", "approved"), ("demo_drafts.jsonl", "curator", "draft")):
            out = io.StringIO()
            call_command("import_qa", str(DEMO_DATA / filename), "--as-user", user, "--status", status, "--json", stdout=out)
            result = json.loads(out.getvalue().strip().splitlines()[-1])
            self.stdout.write(f"{filename}: {result['created']} created, {result['duplicates']} already there ({status})")

        admin = User.objects.get(username="admin")
        self._demo_version(admin)
        if not no_model:
            self._demo_model(admin)

        self.stdout.write(self.style.SUCCESS("\nDemo users (passwords are new each time you run setup_demo):"))
        for username, role in DEMO_USERS:
            self.stdout.write(f"  {username:<10} {passwords[username]:<16} role: {role}")

    def _demo_version(self, admin) -> None:
        from curation.services.versions import dataset_version_freeze

        if DatasetVersion.objects.exists():
            self.stdout.write("Dataset versions exist already: none frozen.")
            return
        try:
            # About 120 approved pairs in 19 departments, split per department: a fifth held out for the
            # test split gives the demo's base-vs-tuned evaluation a couple of dozen answers to score.
            version = dataset_version_freeze(
                user=admin, name=DEMO_VERSION, description="The approved demo pairs (setup_demo).", split=DEMO_SPLIT
            )
        except ApplicationError as exc:
            self.stdout.write(self.style.WARNING(f"No demo dataset version: {exc.message}"))
            return
        self.stdout.write(f"Froze dataset version '{version.name}' (#{version.pk}): {version.counts}")

    def _demo_model(self, admin) -> None:
        from medportal.errors import InvalidInput
        from training.management.commands.build_demo_model import build_demo_model
        from training.models import BaseModel
        from training.services.base_models import base_model_inspect, base_model_register

        folder = (settings.DATA_DIR / "models" / DEMO_MODEL).resolve()
        try:
            base_model_inspect(folder)
            self.stdout.write(f"Demo model present at {folder}.")
        except InvalidInput:
            if folder.exists():
                shutil.rmtree(folder)
            self.stdout.write(f"Building the demo model at {folder} (a minute or two on a laptop CPU) …")
            result = build_demo_model(folder, name=DEMO_MODEL)
            self.stdout.write(f"Built: {result.get('num_parameters', 0):,} parameters in {result.get('seconds', 0):.0f} s.")
        existing = BaseModel.objects.filter(name=DEMO_MODEL).first()
        if existing is not None:
            if existing.path != str(folder):
                message = f"A base model named '{DEMO_MODEL}' is registered at another folder ({existing.path}); left as it is."
                self.stdout.write(self.style.WARNING(message))
            return
        try:
            model = base_model_register(
                actor=admin, name=DEMO_MODEL, path=folder, description="MedPortal demo model (built locally by setup_demo)."
            )
        except ApplicationError as exc:
            self.stdout.write(self.style.WARNING(f"Demo model not registered: {exc.message}"))
            return
        self.stdout.write(f"Registered base model '{model.name}' (#{model.pk}).")
