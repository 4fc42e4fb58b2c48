"""``python manage.py import_qa PATH``: import a QA file (or folder) synchronously.

Exit status 0 when the file was processed (row errors included); a file-level error is a
one-line CommandError and a non-zero exit. ``--json`` prints the report as the last line.
"""

from __future__ import annotations

import json
import threading

from django.core.management.base import BaseCommand, CommandError, no_translations

from curation.management.common import command_user
from curation.importers import FORMATS, QA_FIELDS
from curation.models import ImportBatch
from curation.services.imports import (
    import_batch_counts,
    import_batch_create,
    mapping_parse,
)
from curation.workers.imports import import_batch_run
from medportal.errors import ApplicationError

# Files larger than this print progress to stderr (unless --json).
PROGRESS_MIN_BYTES = 1024 * 1024


class Command(BaseCommand):
    help = "Import QA pairs from a file or folder (alpaca, ShareGPT, CSV/TSV/XLSX, MedQuAD, PubMedQA, ...)."

    def add_arguments(self, parser):
        parser.add_argument("path", help="File or folder to import.")
        parser.add_argument("--format", choices=FORMATS, help="Override format detection.")
        parser.add_argument("--encoding", help="Override encoding detection (utf-8, gb18030, ...).")
        parser.add_argument(
            "--map",
            action="append",
            default=[],
            metavar="FIELD=COLUMN",
            help=f"Map a column to a QA field (repeatable). Fields: {', '.join(QA_FIELDS)}.",
        )
        parser.add_argument("--department", default="", help="Department for rows that name none.")
        parser.add_argument("--as-user", dest="as_user", help="Author of the pairs (default: the first superuser).")
        parser.add_argument("--status", choices=["draft", "approved"], default="draft", help="Status of the new pairs (approved: admins only).")
        parser.add_argument("--json", action="store_true", help="Print the report as one JSON object on the last line.")

    @no_translations  # messages in English, like Django's own commands
    def handle(self, *args, **opts):
        user = command_user(opts["as_user"])
        try:
            mapping = mapping_parse(opts["map"])
            batch = import_batch_create(
                user=user,
                path_or_upload=opts["path"],
                format=opts["format"],
                encoding=opts["encoding"],
                mapping=mapping,
                department=opts["department"],
                status=opts["status"],
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        if batch.status == ImportBatch.Status.FAILED:
            raise CommandError(_one_line(batch.error))

        watcher = None
        if not opts["json"] and _size(batch) >= PROGRESS_MIN_BYTES:
            watcher = _ProgressPrinter(batch.pk, self.stderr)
            watcher.start()
        try:
            batch = import_batch_run(batch_id=batch.pk)
        finally:
            if watcher:
                watcher.stop()
        if watcher:
            self.stderr.write(f"read {batch.rows_done}/{batch.rows_total or batch.rows_done} rows")
        if batch.status == ImportBatch.Status.FAILED:
            raise CommandError(_one_line(batch.error))

        counts = import_batch_counts(batch)
        errors = [{"row": i["row"], "file": i.get("file", ""), "message": i["message"]} for i in batch.issues if i["kind"] == "error"]
        skipped = [{"row": i["row"], "file": i.get("file", ""), "message": i["message"]} for i in batch.issues if i["kind"] == "skipped"]
        if opts["json"]:
            report = {
                "created": counts["created"],
                "duplicates": counts["duplicates"],
                "skipped": counts["skipped"],
                "errors": errors,
                "near_duplicates": counts["near_duplicates"],
                "identifiers": counts["identifiers"],
                "batch_id": batch.pk,
                "rows": counts["rows"],
                "skipped_rows": skipped,
            }
            self.stdout.write(json.dumps(report, ensure_ascii=False))
            return
        self.stdout.write(
            f"Import #{batch.pk} ({batch.filename}, {batch.format}, {batch.encoding or '-'}): "
            f"{counts['rows']} rows, {counts['created']} created, {counts['duplicates']} duplicates, "
            f"{counts['skipped']} skipped, {counts['errors']} row errors, "
            f"{counts['near_duplicates']} near-duplicates flagged, {counts['identifiers']} with identifiers."
        )
        for issue in batch.issues[:20]:
            where = f"{issue['file']}:" if issue.get("file") else ""
            self.stdout.write(f"  {where}row {issue['row']} [{issue['kind']}] {issue['message']}")
        if len(batch.issues) > 20:
            self.stdout.write(f"  … {len(batch.issues) - 20} more in the batch report (import #{batch.pk}).")


def _one_line(message: str) -> str:
    return " ".join((message or "The import failed.").split())


def _size(batch: ImportBatch) -> int:
    from curation.services.imports import import_batch_size

    return import_batch_size(batch)


class _ProgressPrinter:
    """Prints rows_done/rows_total to stderr once a second while the import reads the file.

    It polls the batch row through its own database connection (the import writes progress
    in short autocommit UPDATEs outside its write transaction).
    """

    def __init__(self, batch_id: int, stream):
        self.batch_id = batch_id
        self.stream = stream
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        from django.db import connection

        try:
            last = None
            while not self._stop.wait(0.5):
                row = ImportBatch.objects.filter(pk=self.batch_id).values_list("rows_done", "rows_total").first()
                if row and row != last:
                    done, total = row
                    self.stream.write(f"read {done}/{total or '?'} rows", ending="\n")
                    last = row
        except Exception:  # progress is cosmetic; never break the import
            pass
        finally:
            connection.close()
