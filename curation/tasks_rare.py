"""django-q2 tasks of the rare-disease case generator. Thin: fetch by id, call a service."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def rare_cases_task(job_id: int) -> dict:
    """Run one queued generation job (enqueued by ``rare_cases_start`` with the id only)."""
    from curation.services.rare import rare_cases_run

    job = rare_cases_run(job_id=job_id)
    return {"job": job.pk, "status": job.status, "created": job.created_count, "error": job.error}


def rare_cases_hook(task) -> None:
    """Result hook: a task that died outside the service still leaves its error on the job."""
    from curation.models import GenerationJob
    from curation.services.rare import rare_cases_fail

    if task.success:
        return
    try:
        job_id = int(task.args[0])
    except (TypeError, ValueError, IndexError):
        logger.error("rare_cases_hook: task %s has no job id", task.id)
        return
    if GenerationJob.objects.filter(pk=job_id, status__in=[GenerationJob.Status.QUEUED, GenerationJob.Status.RUNNING]).exists():
        rare_cases_fail(job_id=job_id, message=f"The background worker failed: {task.result}")
