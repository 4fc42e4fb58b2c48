"""django-q2 task of literature drafting (kind "literature_draft"). Thin: run one row by id."""

from __future__ import annotations


def literature_draft_task(run_id: int) -> dict:
    from curation.workers.literature import draft_run_work

    run = draft_run_work(run_id=run_id)
    return {"run": run.pk, "status": run.status, "created": run.created_count, "error": run.error}
