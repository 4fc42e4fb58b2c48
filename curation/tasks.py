"""django-q2 tasks of the curation app. Thin: the id in, the worker body out.

Enqueued through ``medportal.jobs`` (kinds "import" and "rare_cases", registered in
``curation.apps``); the failure hook of every kind is ``medportal.jobs.task_hook``."""

from __future__ import annotations


def import_batch_task(batch_id: int) -> dict:
    """Run one queued import batch (kind "import")."""
    from curation.services.imports import import_batch_counts
    from curation.workers.imports import import_batch_run

    batch = import_batch_run(batch_id=batch_id)
    return {"batch": batch.pk, "status": batch.status, "error": batch.error, **import_batch_counts(batch)}


def rare_cases_task(job_id: int) -> dict:
    """Run one queued case-generation job (kind "rare_cases")."""
    from curation.workers.rare import rare_cases_run

    job = rare_cases_run(job_id=job_id)
    return {"job": job.pk, "status": job.status, "created": job.created_count, "error": job.error}
