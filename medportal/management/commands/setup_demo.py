"""Create the demo users (curator / clinician / admin), departments and demo QA pairs.

Safe to run again: users get fresh passwords (printed), pairs already present are reported
as duplicates by the importer and not created twice.
"""

from __future__ import annotations

import io
import json
import secrets
from pathlib import Path

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import BaseCommand, call_command
from django.db import transaction

from curation.models import Department
from medportal.roles import ADMIN, CLINICIAN, CURATOR

DEMO_DATA = Path(__file__).resolve().parents[3] / "curation" / "demo_data"
DEMO_USERS = (("curator", CURATOR), ("clinician", CLINICIAN), ("admin", ADMIN))
DEPARTMENTS = ("心血管科", "内分泌科", "呼吸科", "消化科", "肝病科", "神经科", "血液科", "肾内科", "普通内科")


class Command(BaseCommand):
    help = "Create demo users with fresh passwords, departments and the demo QA pairs."

    def handle(self, *args, **options):
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

        self.stdout.write(self.style.SUCCESS("\nDemo users (passwords are new each time you run setup_demo):"))
        for username, role in DEMO_USERS:
            self.stdout.write(f"  {username:<10} {passwords[username]:<16} role: {role}")
