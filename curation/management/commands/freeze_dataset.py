"""Freeze approved QA pairs into a dataset version (see docs/datasets.md).

    python manage.py freeze_dataset --name v1 --department 心内科 --tag 高血压 --split 0.8,0.1,0.1 --seed 42 --json

A selection holding pairs with unmasked personal identifiers is refused (the error lists
them); ``--mask-identifiers`` masks them first, audited per pair. A split with a ratio above 0
that would get no pair is refused with the number of approved pairs needed.

``--as-user`` names the curator/admin recorded as the one who froze it; by default the
first active superuser, else the first active member of the "admin" group (lowest id).
With ``--json`` the last line printed is
``{"version_id": id, "hash": "...", "counts": {"train": n, "validation": n, "test": n}}``.
"""

from __future__ import annotations

import json

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db.models import Q

from curation.services.versions import dataset_version_freeze
from medportal.errors import ApplicationError
from medportal.roles import ADMIN


def default_user():
    User = get_user_model()
    active = User.objects.filter(is_active=True).order_by("pk")
    return active.filter(is_superuser=True).first() or active.filter(Q(groups__name=ADMIN)).first()


class Command(BaseCommand):
    help = "Freeze the approved QA pairs matching the filters into an immutable, split dataset version."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True, help="Unique name of the version.")
        parser.add_argument("--description", default="")
        parser.add_argument(
            "--department", action="append", default=[], help="Department name (repeatable; any of them)."
        )
        parser.add_argument("--tag", action="append", default=[], help="Tag name (repeatable; pairs with any of them).")
        parser.add_argument(
            "--synthetic", choices=["yes", "no"], help="Only synthetic pairs (yes) or only real ones (no)."
        )
        parser.add_argument("--source", action="append", default=[], help="Exact QAPair.source (repeatable).")
        parser.add_argument("--split", default="0.8,0.1,0.1", help="train,validation,test ratios adding up to 1.")
        parser.add_argument("--seed", type=int, default=42)
        parser.add_argument(
            "--as-user", help="Username of the curator/admin freezing it (default: the first active admin)."
        )
        parser.add_argument(
            "--mask-identifiers",
            action="store_true",
            help="Mask the personal identifiers of the selected pairs first (audited per pair); "
            "without it a selection holding identifiers is refused.",
        )
        parser.add_argument("--json", action="store_true", help="End with one JSON line: version_id, hash, counts.")

    def handle(self, *args, **opts):
        User = get_user_model()
        if opts["as_user"]:
            user = User.objects.filter(**{User.USERNAME_FIELD: opts["as_user"]}, is_active=True).first()
            if user is None:
                raise CommandError(f"No active user named '{opts['as_user']}'.")
        else:
            user = default_user()
            if user is None:
                raise CommandError("No active admin user exists; create one or pass --as-user USERNAME.")
        try:
            version = dataset_version_freeze(
                user=user,
                name=opts["name"],
                description=opts["description"],
                departments=opts["department"],
                tags=opts["tag"],
                filters={"synthetic": opts["synthetic"], "sources": opts["source"]},
                split=opts["split"],
                seed=opts["seed"],
                mask_identifiers=opts["mask_identifiers"],
            )
        except ApplicationError as exc:
            details = exc.details if isinstance(exc.details, dict) else {}
            hint = " Re-run with --mask-identifiers to mask them all first." if details.get("identifier_pairs") else ""
            raise CommandError(exc.message + hint) from None
        counts = {k: version.counts[k] for k in ("train", "validation", "test")}
        self.stdout.write(
            f"Froze dataset version '{version.name}' (#{version.pk}) as {user.get_username()}: "
            f"train {counts['train']}, validation {counts['validation']}, test {counts['test']}, "
            f"{version.synthetic_count} synthetic; hash {version.content_hash}"
        )
        masked = version.masked_pairs
        if masked:
            self.stdout.write(f"Masked the identifiers of {len(masked)} pairs first: " + ", ".join(f"#{pk}" for pk in masked))
        if opts["json"]:
            self.stdout.write(json.dumps({"version_id": version.pk, "hash": version.content_hash, "counts": counts}))
