"""django-q2 tasks of the training app. Thin: fetch by id, call the worker or a service.

``finetune_job_task`` runs on the ``gpu`` cluster (``Q_CLUSTER_NAME=gpu manage.py qcluster``);
``finetune_jobs_reap_task`` runs every minute on the default cluster (schedule created by
migration 0002).
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def finetune_job_task(job_id: int) -> dict:
    """Claim and run one queued fine-tune job (enqueued by the services with the id only)."""
    from training.worker import finetune_job_run

    job = finetune_job_run(job_id=job_id)
    if job is None:
        return {"job": job_id, "status": None, "error": "no such job"}
    return {"job": job.pk, "status": job.status, "error": job.error, "adapter_path": job.adapter_path}


def finetune_job_hook(task) -> None:
    """Result hook: a task that died outside the worker logic still leaves its error on the job."""
    from training.services.jobs import finetune_job_fail

    if task.success:
        return
    try:
        job_id = int(task.args[0])
    except (TypeError, ValueError, IndexError):
        logger.error("finetune_job_hook: task %s has no job id", task.id)
        return
    finetune_job_fail(job_id=job_id, message=f"The background worker failed: {task.result}", task_id=task.id)


def finetune_jobs_reap_task() -> list[int]:
    """Fail or re-queue running jobs whose worker stopped sending heartbeats."""
    from training.services.jobs import finetune_jobs_reap

    return finetune_jobs_reap()
