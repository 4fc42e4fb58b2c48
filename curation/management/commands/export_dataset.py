"""Write a dataset version in one export format and print the files written, one per line.

python manage.py export_dataset 3 --format llamafactory --out exports/v1
"""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from curation.exports import EXPORTERS
from curation.models import DatasetVersion
from curation.services.versions import dataset_version_export
from medportal.errors import ApplicationError


class Command(BaseCommand):
    help = "Export a frozen dataset version (llamafactory, sharegpt, hf or xlsx) into a folder."

    def add_arguments(self, parser):
        parser.add_argument("version_id", type=int, help="Id of the dataset version.")
        parser.add_argument("--format", required=True, choices=list(EXPORTERS))
        parser.add_argument("--out", required=True, help="Folder to write into (created if missing).")

    def handle(self, *args, **opts):
        version = DatasetVersion.objects.select_related("created_by").filter(pk=opts["version_id"]).first()
        if version is None:
            raise CommandError(f"Dataset version {opts['version_id']} does not exist.")
        out = Path(opts["out"])
        if out.exists() and not out.is_dir():
            raise CommandError(f"--out {out} exists and is not a folder.")
        try:
            paths = dataset_version_export(version=version, format=opts["format"], out_dir=out)
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        except OSError as exc:
            raise CommandError(f"Cannot write to {out}: {exc.strerror or exc}.") from None
        for path in paths:
            self.stdout.write(str(path))
