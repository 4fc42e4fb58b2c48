"""The worker of a drafting run (kind "literature_draft"): claim, draft document by document,
store each document's candidates in a transaction that also records the progress.

Cancel: checked before every generation and, while one streams, with the heartbeat every
BEAT_EVERY_S (a long generation on a big model stops early); the candidates of documents
already finished stay (in review), the document being drafted is dropped. A dead worker's run is failed by the reaper
(not resumable): what was stored stays, start a new run for the rest.
"""

from __future__ import annotations

import logging
import time

from django.db import transaction

from curation.literature.drafting import DraftFailed, DraftParams, draft_candidate, plan
from curation.models import Document, DraftRun
from curation.services.literature_drafting import JOB_KIND, draft_model_resolve, store_candidates
from medportal import jobs
from medportal.audit import audit_record
from medportal.errors import ApplicationError

logger = logging.getLogger(__name__)


class _Lost(Exception):
    """The run is not ours any more (reaped, cancelled at once)."""


class _Cancelled(Exception):
    pass


BEAT_EVERY_S = 10.0


class _Beat:
    """Asked after every streamed piece of a generation: every BEAT_EVERY_S a heartbeat, which
    also tells whether the run was cancelled or is not ours any more (then the generation stops)."""

    def __init__(self, run: DraftRun):
        self.run = run
        self.last = time.monotonic()
        self.stop: type[Exception] | None = None

    def __call__(self) -> bool:
        if time.monotonic() - self.last < BEAT_EVERY_S:
            return False
        self.last = time.monotonic()
        state = jobs.cancel_requested(JOB_KIND, self.run.pk, self.run.attempt)
        if state is None or not jobs.heartbeat(JOB_KIND, self.run.pk, self.run.attempt):
            self.stop = _Lost
        elif state:
            self.stop = _Cancelled
        return self.stop is not None


def draft_run_work(*, run_id: int) -> DraftRun:
    run = jobs.claim(JOB_KIND, run_id, done=0, progress=0.0)
    if run is None:
        return DraftRun.objects.get(pk=run_id)
    run = DraftRun.objects.select_related("created_by").get(pk=run_id)
    params = DraftParams.from_dict(run.params)
    documents = {d.pk: d for d in Document.objects.filter(pk__in=run.document_ids)}
    order = [documents[i] for i in run.document_ids if i in documents]
    errors: list[dict] = [{"document": i, "message": "The document was deleted before drafting."} for i in run.document_ids if i not in documents]
    done = created = flagged = duplicates = 0
    pair_ids: list[int] = []
    try:
        try:
            _label, generate = draft_model_resolve(run.model_key, actor=run.created_by, target=run)
        except ApplicationError as exc:
            raise DraftFailed(exc.message) from None
        steps = plan(len(order), params)
        for d_index, document in enumerate(order):
            candidates = []
            for _d, c_index, qtype in [s for s in steps if s[0] == d_index]:
                state = jobs.cancel_requested(JOB_KIND, run.pk, run.attempt)
                if state is None:
                    raise _Lost()
                if state:
                    raise _Cancelled()
                seed = params.seed + 1000 * d_index + 2 * c_index
                beat = _Beat(run)
                try:
                    candidate = draft_candidate(
                        document.sentences, generate, question_type=qtype, lang=params.lang, params=params, seed=seed, prompts=run.prompt, on_piece=beat
                    )
                except DraftFailed as exc:
                    if beat.stop:
                        raise beat.stop() from None
                    errors.append({"document": document.pk, "message": str(exc)[:500]})
                else:
                    if beat.stop:
                        raise beat.stop()
                    candidates.append(candidate)
                done += 1
                if not jobs.set_progress(JOB_KIND, run.pk, run.attempt, 0.99 * done / max(1, run.total), done=done):
                    raise _Lost()
            with transaction.atomic():
                ids, n_flagged, n_dup = store_candidates(candidates, document=document, run=run)
                if not jobs.heartbeat(
                    JOB_KIND,
                    run.pk,
                    run.attempt,
                    created_count=created + len(ids),
                    flagged_count=flagged + n_flagged,
                    duplicate_count=duplicates + n_dup,
                    qa_pair_ids=pair_ids + ids,
                    errors=errors[-200:],
                ):
                    raise _Lost()  # rolls this document's pairs back
            pair_ids += ids
            created += len(ids)
            flagged += n_flagged
            duplicates += n_dup
        jobs.succeed(JOB_KIND, run.pk, run.attempt, done=done, errors=errors[-200:])
    except _Cancelled:
        jobs.finish(JOB_KIND, run.pk, run.attempt, DraftRun.Status.CANCELLED, errors=errors[-200:])
    except _Lost:
        logger.info("Drafting run %s is no longer ours (cancelled or reaped)", run_id)
    except DraftFailed as exc:
        jobs.fail(JOB_KIND, run_id, f"The model could not be used: {exc}", attempt=run.attempt)
    except Exception as exc:
        logger.exception("Drafting run %s failed", run_id)
        jobs.fail(JOB_KIND, run_id, f"{exc.__class__.__name__}: {exc}", attempt=run.attempt)
    run.refresh_from_db()
    audit_record(
        actor=run.created_by,
        action="literature_draft.run",
        target=run,
        summary=f"{run.status}: {run.created_count} candidates ({run.flagged_count} flagged) from {len(order)} documents"[:500],
        changes={"status": run.status, "created": run.created_count, "flagged": run.flagged_count, "errors": len(run.errors), "error": run.error[:500]},
    )
    return run
