"""The worker of a case-generation job (kind "rare_cases"): claim, generate with progress,
store every case in one transaction that ends with the conditional ``succeed``.

Always on the default cluster (``curation.tasks.rare_cases_task``): generation never runs
inside a request. A job cancelled or reaped while it generated stores nothing.
"""

from __future__ import annotations

import logging
import time

from django.db import transaction

from curation.models import GenerationJob
from curation.services.rare import RareCasesParams, RareCasesResult, audit_generate, generate_cases, rewrite_cases, store_cases
from medportal import jobs
from medportal.audit import audit_record

logger = logging.getLogger(__name__)

KIND = "rare_cases"
PROGRESS_EVERY_S = 0.5


class _Lost(Exception):
    """The job is not ours any more (cancelled, reaped)."""


def rare_cases_run(*, job_id: int) -> GenerationJob:
    """Run a queued job to the end (claimed with a conditional UPDATE: a redelivered task is a
    no-op); returns the job as it ended (or as found)."""
    job = jobs.claim(KIND, job_id, done=0, progress=0.0)
    if job is None:
        return GenerationJob.objects.select_related("created_by").get(pk=job_id)
    job = GenerationJob.objects.select_related("created_by").get(pk=job_id)
    params = RareCasesParams.from_dict(job.params)
    result = RareCasesResult(job_id=job.pk)
    last = [0.0]

    def on_progress(done: int) -> None:
        now = time.monotonic()
        if now - last[0] < PROGRESS_EVERY_S and done < job.total:
            return
        last[0] = now
        done = min(done, job.total)
        if not jobs.set_progress(KIND, job.pk, job.attempt, 0.99 * done / max(1, job.total), done=done):
            raise _Lost()

    try:
        items = list(generate_cases(params, on_progress=None if params.rewrite else on_progress))
        # The rewrite (one model generation per case) is the slow part when asked for: it drives progress.
        items = rewrite_cases(items, params, on_progress=on_progress)
        with transaction.atomic():
            store_cases(items, user=job.created_by, params=params, result=result)
            ended = jobs.succeed(
                KIND,
                job.pk,
                job.attempt,
                done=job.total,
                created_count=result.created,
                duplicate_count=result.duplicates,
                qa_pair_ids=result.qa_pair_ids,
                errors=result.errors,
            )
            if not ended:
                raise _Lost()  # rolls the pairs back
            job.refresh_from_db()
            audit_generate(user=job.created_by, params=params, result=result, target=job)
    except _Lost:
        logger.info("Generation job %s is no longer ours (cancelled or reaped); nothing stored", job_id)
    except Exception as exc:
        logger.exception("Generation job %s failed", job_id)
        jobs.fail(KIND, job_id, f"{exc.__class__.__name__}: {getattr(exc, 'message', exc)}", attempt=job.attempt)
        job.refresh_from_db()
        audit_record(actor=job.created_by, action="rare_cases.generate", target=job, summary=f"failed: {job.error}"[:500], changes={"error": job.error})
    job.refresh_from_db()
    return job
