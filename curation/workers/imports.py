"""The worker of an import batch (kind "import"): claim, read, write, record the end.

``import_batch_run`` claims the batch through ``medportal.jobs`` (queued → running by one
conditional UPDATE, so a redelivered task never runs twice), reads the file
(``curation.services.imports.import_plan_read``, heartbeating with its progress) and stores
everything in one transaction (``import_plan_write``) that ends with the conditional
``succeed``: a batch that was cancelled or reaped meanwhile stores nothing. Every failure ends
up in ``batch.error``. Run by ``curation.tasks.import_batch_task`` on the default cluster, or
inline for small files (``import_batch_dispatch``) and by ``import_qa``.
"""

from __future__ import annotations

import logging

from django.db import IntegrityError

from curation.importers import ImportFileError
from curation.models import ImportBatch
from curation.services.imports import ImportOptions, JobLost, import_file_error_text, import_plan_read, import_plan_write
from medportal import jobs
from medportal.audit import audit_record

logger = logging.getLogger(__name__)

KIND = "import"


def import_batch_run(*, batch_id: int) -> ImportBatch:
    """Run a queued batch to the end. Returns the batch in its final state.

    A batch that is not queued any more (already claimed by another worker, finished) is
    returned untouched."""
    batch = jobs.claim(KIND, batch_id, rows_done=0, progress=0.0)
    if batch is None:
        return ImportBatch.objects.select_related("created_by").get(pk=batch_id)
    batch = ImportBatch.objects.select_related("created_by").get(pk=batch_id)
    options = ImportOptions.from_dict(batch.options)
    try:
        plan = import_plan_read(batch, options)
        for attempt in (1, 2):
            try:
                import_plan_write(batch, options, plan)
                break
            except IntegrityError:
                # Another writer stored one of our texts between the two phases; the
                # write phase re-checks the keys, so one more try moves it to duplicates.
                if attempt == 2:
                    raise
    except JobLost:
        logger.info("Import batch %s is no longer ours (cancelled or reaped); nothing stored", batch.pk)
    except ImportFileError as exc:
        jobs.fail(KIND, batch.pk, import_file_error_text(exc), attempt=batch.attempt)
    except Exception as exc:
        logger.exception("Import batch %s failed", batch.pk)
        jobs.fail(
            KIND, batch.pk, f"The import stopped on an unexpected error: {exc.__class__.__name__}: {exc}", attempt=batch.attempt
        )
    batch.refresh_from_db()
    if batch.status == ImportBatch.Status.FAILED:
        audit_record(
            actor=batch.created_by,
            action="import.run",
            target=batch,
            summary=f"{batch.filename}: failed: {batch.error}",
            changes={"status": batch.status, "error": batch.error},
        )
    return batch
