"""django-q2 tasks of evaluation runs. Thin: fetch by id, call the service.

``evaluation_task`` runs on the ``gpu`` cluster (``Q_CLUSTER_NAME=gpu manage.py qcluster``), queued
by ``training.services.evaluations.evaluation_enqueue``; ``evaluation_runs_reap_task`` runs every
minute on the default cluster (schedule created by migration 0003).
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def evaluation_task(run_id: int) -> dict:
    """Claim and run one queued evaluation run."""
    from training.services.evaluations import evaluation_run

    run = evaluation_run(run_id=run_id)
    if run is None:
        return {"run": run_id, "status": None, "error": "no such evaluation run"}
    return {"run": run.pk, "status": run.status, "error": run.error, "summary": run.summary}


def evaluation_hook(task) -> None:
    """Result hook: a task that died outside the worker logic still leaves its error on the run."""
    from training.services.evaluations import evaluation_fail

    if task.success:
        return
    try:
        run_id = int(task.args[0])
    except (TypeError, ValueError, IndexError):
        logger.error("evaluation_hook: task %s has no run id", task.id)
        return
    evaluation_fail(run_id=run_id, message=f"The background worker failed: {task.result}", task_id=task.id)


def evaluation_runs_reap_task() -> list[int]:
    """Fail running evaluation runs whose worker stopped sending heartbeats."""
    from training.services.evaluations import evaluation_runs_reap

    return evaluation_runs_reap()
