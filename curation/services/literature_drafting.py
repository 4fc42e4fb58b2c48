"""Drafting QA candidates from documents with a model: start, cancel, store.

``draft_run_start`` checks the request and queues a ``DraftRun`` (``medportal.jobs`` kind
"literature_draft"); the worker (``curation.workers.literature``) drafts the candidates
(``curation.literature.drafting``) and stores each document's candidates as synthetic QA pairs
*in review* — source: the document, the model, the prompt version, the supporting sentences
and the grounding check's result in ``synthetic_meta``. Like every pair, they reach a dataset
version only once approved.

The model comes from the provider named by ``MEDPORTAL_DRAFT_PROVIDER`` (default
``training.draft_provider``): curation imports neither training nor chat.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from curation.literature.drafting import LANGS, PROMPT_VERSION, PROMPTS, QUESTION_TYPES, Candidate, DraftParams
from curation.models import Document, DraftRun, QAPair
from curation.services import core
from medportal import jobs
from medportal.audit import audit_record
from medportal.errors import InvalidInput, NotAllowed
from medportal.roles import CURATOR, has_role, is_admin

JOB_KIND = "literature_draft"
SOURCE = "literature"
GENERATOR = "medportal.literature.v1"
MAX_DOCUMENTS = 200
MAX_PER_DOCUMENT = 10


def draft_provider():
    """The module that lists runnable models (``choices()``) and resolves one (``resolve(key, actor=)``)."""
    return importlib.import_module(settings.MEDPORTAL_DRAFT_PROVIDER)


def draft_model_choices() -> list[tuple[str, str]]:
    return draft_provider().choices()


def draft_model_resolve(key: str, *, actor=None, target=None):
    """``(label, generate)``, or InvalidInput saying why the model cannot run."""
    try:
        return draft_provider().resolve(key, actor=actor, target=target)
    except LookupError as exc:
        raise InvalidInput(str(exc.args[0] if exc.args else exc)) from None


def draft_run_start(
    *,
    user,
    document_ids: Sequence[int],
    model_key: str,
    per_document: int = 2,
    types: Sequence[str] = QUESTION_TYPES,
    lang: str = "en",
    seed: int = 0,
    max_new_tokens: int = 192,
) -> DraftRun:
    """Queue a drafting run for the worker once the request commits."""
    if not has_role(user, CURATOR):
        raise NotAllowed(_("Only curators and admins draft candidates."))
    ids = list(dict.fromkeys(int(i) for i in document_ids))
    if not ids:
        raise InvalidInput(_("Choose at least one document."))
    if len(ids) > MAX_DOCUMENTS:
        raise InvalidInput(_("At most %(n)d documents per run.") % {"n": MAX_DOCUMENTS})
    found = set(Document.objects.filter(pk__in=[i for i in ids if 0 < i < 2**63]).values_list("pk", flat=True))
    missing = [i for i in ids if i not in found]
    if missing:
        raise InvalidInput(_("No such document: %(ids)s.") % {"ids": ", ".join(map(str, missing[:10]))})
    if not 1 <= int(per_document) <= MAX_PER_DOCUMENT:
        raise InvalidInput(_("Candidates per document must be between 1 and %(n)d.") % {"n": MAX_PER_DOCUMENT})
    types = tuple(dict.fromkeys(types))
    if not types or any(t not in QUESTION_TYPES for t in types):
        raise InvalidInput(_("Choose question types among: %(types)s.") % {"types": ", ".join(QUESTION_TYPES)})
    if lang not in LANGS:
        raise InvalidInput(_("The answer language must be zh or en."))
    if not 16 <= int(max_new_tokens) <= 2048:
        raise InvalidInput(_("The reply length must be between 16 and 2048 tokens."))
    label, _generate = draft_model_resolve(model_key, actor=user)
    params = DraftParams(per_document=int(per_document), types=types, lang=lang, max_new_tokens=int(max_new_tokens), seed=int(seed))
    run = DraftRun(
        created_by=user,
        model_key=model_key,
        model_label=label[:300],
        document_ids=ids,
        params=params.to_dict(),
        prompt_version=PROMPT_VERSION,
        prompt=PROMPTS,
        total=len(ids) * params.per_document,
    )
    with transaction.atomic():
        run.save()
        audit_record(
            actor=user,
            action="literature_draft.queue",
            target=run,
            summary=f"Drafting run #{run.pk}: {run.total} candidates from {len(ids)} documents with {label}"[:500],
            changes={**params.to_dict(), "model": label, "prompt_version": PROMPT_VERSION, "documents": ids[:1000]},
        )
        jobs.enqueue_after_commit(JOB_KIND, run.pk)
    return run


def draft_run_cancel(*, user, run: DraftRun) -> str:
    if not (is_admin(user) or run.created_by_id == user.pk):
        raise NotAllowed(_("Only the curator who started this run, or an admin, may cancel it."))
    if run.status not in DraftRun.ACTIVE:
        raise InvalidInput(_("This run has already ended."))
    outcome = jobs.request_cancel(JOB_KIND, run.pk)
    audit_record(actor=user, action="literature_draft.cancel", target=run, summary=f"cancel requested: {outcome}")
    return outcome


def candidate_pair(candidate: Candidate, *, document: Document, run: DraftRun, now) -> QAPair:
    pair = core.synthetic_pair(
        author=run.created_by,
        question=candidate.question,
        answer=candidate.answer,
        now=now,
        source=SOURCE,
        source_ref=document.reference[:255],
        synthetic_meta={
            "generator": GENERATOR,
            "document_id": document.pk,
            "pmid": document.pmid,
            "doi": document.doi,
            "model": run.model_label,
            "model_key": run.model_key,
            "prompt_version": run.prompt_version,
            "run_id": run.pk,
            "question_type": candidate.question_type,
            "lang": candidate.lang,
            "seed": candidate.seed,
            "support": candidate.support,
            "support_by": candidate.support_by,
            "grounding": candidate.grounding,
        },
    )
    core.pair_apply_derived(pair)
    return pair


def store_candidates(items: Sequence[Candidate], *, document: Document, run: DraftRun) -> tuple[list[int], int, int]:
    """Store one document's candidates (call inside a transaction): ``(pair ids, flagged, duplicates)``."""
    now = timezone.now()
    pairs, seen = [], set()
    duplicates = 0
    for c in items:
        pair = candidate_pair(c, document=document, run=run, now=now)
        if pair.content_hash in seen:
            duplicates += 1
            continue
        seen.add(pair.content_hash)
        pairs.append(pair)
    stored = set(QAPair.objects.filter(content_hash__in=[p.content_hash for p in pairs]).values_list("content_hash", flat=True))
    fresh = [p for p in pairs if p.content_hash not in stored]
    duplicates += len(pairs) - len(fresh)
    created = QAPair.objects.bulk_create(fresh, batch_size=500)
    ids = [p.pk for p in created]
    if ids and None in ids:
        by_hash = dict(QAPair.objects.filter(content_hash__in=[p.content_hash for p in fresh]).values_list("content_hash", "pk"))
        ids = [by_hash[p.content_hash] for p in fresh]
    flagged = sum(1 for p in fresh if not p.synthetic_meta["grounding"]["ok"])
    return ids, flagged, duplicates
