"""django-q2 tasks of the training app. Thin: the id in, the worker body out.

Enqueued through ``medportal.jobs`` (kinds "finetune" and "evaluation" on the ``gpu`` cluster —
``Q_CLUSTER_NAME=gpu manage.py qcluster`` — and "merge" on the default one; registered in
``training.apps``). The failure hook of every kind is ``medportal.jobs.task_hook``; silent
workers are reaped by ``medportal.jobs.reap_silent`` on the default cluster.
"""

from __future__ import annotations


def finetune_job_task(job_id: int) -> dict:
    """Claim and run one queued fine-tune job."""
    from training.workers.finetune import finetune_job_run

    job = finetune_job_run(job_id=job_id)
    if job is None:
        return {"job": job_id, "status": None, "error": "no such job"}
    return {"job": job.pk, "status": job.status, "error": job.error, "adapter_path": job.adapter_path}


def evaluation_task(run_id: int) -> dict:
    """Claim and run one queued evaluation run."""
    from training.workers.evaluation import evaluation_run

    run = evaluation_run(run_id=run_id)
    if run is None:
        return {"run": run_id, "status": None, "error": "no such evaluation run"}
    return {"run": run.pk, "status": run.status, "error": run.error, "summary": run.summary}


def adapter_merge_task(merge_id: int) -> dict:
    """Claim and run one queued adapter merge."""
    from training.workers.merge import adapter_merge_run

    merge = adapter_merge_run(merge_id=merge_id)
    if merge is None:
        return {"merge": merge_id, "status": None, "error": "no such merge"}
    return {"merge": merge.pk, "status": merge.status, "error": merge.error, "base_model": merge.base_model_id}
