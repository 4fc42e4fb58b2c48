"""django-q2 tasks of the curation app. Tasks are thin: fetch by id, call a service."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def import_batch_task(batch_id: int) -> dict:
    """Run one queued import batch (enqueued by ``import_batch_dispatch`` with the id only)."""
    from curation.services.imports import import_batch_counts, import_batch_run

    batch = import_batch_run(batch_id=batch_id)
    return {"batch": batch.pk, "status": batch.status, "error": batch.error, **import_batch_counts(batch)}


def import_batch_hook(task) -> None:
    """Result hook: a task that died outside the service still leaves its error on the batch."""
    from curation.models import ImportBatch
    from curation.services.imports import import_batch_fail

    if task.success:
        return
    try:
        batch_id = int(task.args[0])
    except (TypeError, ValueError, IndexError):
        logger.error("import_batch_hook: task %s has no batch id", task.id)
        return
    if ImportBatch.objects.filter(pk=batch_id, status__in=[ImportBatch.Status.QUEUED, ImportBatch.Status.RUNNING]).exists():
        import_batch_fail(batch_id=batch_id, message=f"The background worker failed: {task.result}")
