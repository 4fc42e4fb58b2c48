"""The models curation's literature drafting may use, and their generation
(``MEDPORTAL_DRAFT_PROVIDER``, read by ``curation.services.literature_drafting``).

Curation imports neither training nor chat: it names this module by a dotted path, as the
vignette rewrite names ``training.runnables.rewrite_provider``. Every runnable model is offered
(base models and succeeded adapters, hosted ones when external endpoints are allowed); a model
on an external endpoint receives the abstracts with identifiers masked, and the sending is
audited (``training.runnables.external_messages``).
"""

from __future__ import annotations

import threading

from training.inference.base import GenerationParams, InferenceError
from training.models import BaseModel, FineTuneJob
from training.runnables import external_messages, runnable, runnable_bases, runnable_jobs, runnable_label


def choices() -> list[tuple[str, str]]:
    """``[(key, label)]``: ``"<base id>"`` or ``"<base id>:<job id>"``, as the other model pickers."""
    out = [(str(b.pk), runnable_label(b)) for b in runnable_bases().order_by("name")]
    out += [(f"{j.base_model_id}:{j.pk}", runnable_label(j.base_model, j)) for j in runnable_jobs().order_by("-pk")]
    return out


def resolve(key: str, *, actor=None, target=None):
    """``(label, generate)`` for a picker key; ``LookupError`` with a sentence when it cannot run.

    ``generate(messages, *, max_new_tokens, temperature, top_p, repetition_penalty, seed)`` returns
    the reply or raises ``curation.literature.drafting.DraftFailed``.
    """
    from curation.literature.drafting import DraftFailed

    base_id, _, job_id = (key or "").partition(":")
    if not base_id.isdigit() or (job_id and not job_id.isdigit()):
        raise LookupError(f"'{key}' names no model.")
    base = BaseModel.objects.filter(pk=int(base_id), is_active=True).select_related("endpoint").first()
    if base is None:
        raise LookupError(f"Model #{base_id} is not a registered, active base model.")
    job = None
    if job_id:
        job = FineTuneJob.objects.filter(pk=int(job_id)).select_related("base_model").first()
        if job is None:
            raise LookupError(f"Fine-tune job #{job_id} does not exist.")
    try:
        run = runnable(base, job)
    except InferenceError as exc:
        raise LookupError(str(exc)) from None

    def generate(messages: list[dict], *, on_piece=None, **params) -> str:
        """The reply; with ``on_piece``, streamed and asked after every piece whether to stop
        (a long generation keeps its job's heartbeat and notices a cancel): True stops it with
        ``DraftFailed``."""
        try:
            [sent] = external_messages(run, [messages], actor=actor, purpose="literature drafting", target=target or base)
            backend = run.backend()
            if on_piece is None:
                return backend.generate(run.ref, sent, GenerationParams(**params))
            cancel = threading.Event()
            stream = backend.stream(run.ref, sent, GenerationParams(**params), cancel=cancel)
            pieces = []
            try:
                for piece in stream:
                    pieces.append(piece)
                    if on_piece():
                        cancel.set()
                        raise DraftFailed("the generation was stopped")
            finally:
                stream.close()
            return "".join(pieces)
        except InferenceError as exc:
            raise DraftFailed(str(exc)) from None

    return run.label, generate
