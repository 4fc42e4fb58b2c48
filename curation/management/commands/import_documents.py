"""manage.py import_documents: import a literature file (PubMed XML, MEDLINE text, PubMedQA JSON,
text / Markdown) as documents, as the Literature → Import page does.

    python manage.py import_documents PATH [--format pubmed_xml|medline|pubmedqa|text] [--as-user U] [--json]

A bad file imports nothing and exits with its reason; the row report is on
/curation/literature/imports/<id>/ (``--json`` prints the counts and the first issues).
"""

from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, no_translations

from curation.management.common import command_user, literature_import_result
from curation.literature.parsers import FORMATS, MAX_BYTES
from curation.services.literature import documents_import
from medportal.errors import ApplicationError


class Command(BaseCommand):
    help = "Import a literature file (PubMed XML, MEDLINE, PubMedQA JSON, text/Markdown) as documents."

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path)
        parser.add_argument("--format", choices=FORMATS, help="Skip detection and read the file as this format.")
        parser.add_argument("--as-user", dest="as_user", help="Curator the import is recorded for (default: the first superuser).")
        parser.add_argument("--json", action="store_true", help="Print the result as one JSON object on the last line.")

    @no_translations
    def handle(self, *args, **opts):
        path: Path = opts["path"]
        if not path.is_file():
            raise CommandError(f"{path} is not a file.")
        if path.stat().st_size > MAX_BYTES:
            raise CommandError(f"{path} is larger than {MAX_BYTES // (1024 * 1024)} MB.")
        user = command_user(opts["as_user"])
        try:
            batch = documents_import(user=user, name=path.name, data=path.read_bytes(), format=opts["format"])
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        result = {**literature_import_result(batch, format=batch.format, rows=batch.rows_total), "issues": batch.issues[:20]}
        if opts["json"]:
            self.stdout.write(json.dumps(result, ensure_ascii=False))
            return
        self.stdout.write(
            f"Import #{batch.pk} ({batch.format}): {batch.created_count} documents created, {batch.duplicate_count} duplicates, "
            f"{batch.skipped_count} skipped, {batch.error_count} row errors"
        )
