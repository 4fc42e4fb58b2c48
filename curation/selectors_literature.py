"""Reads for literature: documents (every role reads them), imports and drafting runs
(curators and admins), and what the review page shows for a drafted candidate."""

from __future__ import annotations

from dataclasses import dataclass

from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404

from curation.models import Document, DraftRun, LiteratureImport, QAPair
from curation.selectors import job_progress, text_search
from medportal.roles import ALL_ROLES, CURATOR, has_role, is_admin


def _need(user, *roles) -> None:
    if not has_role(user, *roles):
        raise PermissionDenied


def access_document(*, user, pk) -> Document:
    _need(user, *ALL_ROLES)
    try:
        return Document.objects.select_related("import_batch").get(pk=int(pk))
    except (Document.DoesNotExist, ValueError, TypeError, OverflowError):
        raise Http404("No such document.") from None


def access_literature_import(*, user, pk) -> LiteratureImport:
    _need(user, CURATOR)
    try:
        return LiteratureImport.objects.select_related("created_by").get(pk=int(pk))
    except (LiteratureImport.DoesNotExist, ValueError, TypeError, OverflowError):
        raise Http404("No such import.") from None


def document_search(qs: QuerySet[Document], q: str) -> QuerySet[Document]:
    """Documents whose search document holds every token of ``q`` (Chinese bigrams, words as
    prefixes), by the rule QA pairs follow (``curation.selectors.text_search``; the GIN index
    of documents is migration 0006)."""
    return text_search(qs, q)


def document_list(*, user, q: str = "", year: int | None = None) -> QuerySet[Document]:
    _need(user, *ALL_ROLES)
    qs = Document.objects.defer("sections", "sentences", "search_text", "extra")
    if year:
        qs = qs.filter(year=year)
    return document_search(qs, q[:500]).order_by("-id")


def document_candidates(document: Document, limit: int = 200) -> list[QAPair]:
    """The QA candidates drafted from ``document``, newest first."""
    return list(
        QAPair.objects.filter(synthetic=True, source="literature", synthetic_meta__document_id=document.pk)
        .only("pk", "instruction", "status", "synthetic_meta")
        .order_by("-id")[:limit]
    )


def literature_import_list(*, user) -> QuerySet[LiteratureImport]:
    _need(user, CURATOR)
    return LiteratureImport.objects.select_related("created_by").order_by("-created_at", "-id")


@dataclass(frozen=True)
class SentenceView:
    n: int
    text: str
    supports: bool


@dataclass(frozen=True)
class SectionView:
    label: str
    sentences: list[SentenceView]


def document_sections(document: Document, support: set[int] | frozenset[int] = frozenset()) -> list[SectionView]:
    """The abstract as sections of numbered sentences, those in ``support`` marked."""
    by_section: dict[int, list[SentenceView]] = {}
    for s in document.sentences or []:
        by_section.setdefault(int(s.get("section", 0)), []).append(SentenceView(int(s["n"]), s["text"], int(s["n"]) in support))
    return [SectionView(sec.get("label", ""), by_section.get(i, [])) for i, sec in enumerate(document.sections or [])]


# --------------------------------------------------------------------------- drafting runs


def access_draft_run(*, user, pk) -> DraftRun:
    """A run, for the curator who started it and for admins (404 for other curators)."""
    _need(user, CURATOR)
    try:
        run = DraftRun.objects.select_related("created_by").get(pk=int(pk))
    except (DraftRun.DoesNotExist, ValueError, TypeError, OverflowError):
        raise Http404("No such drafting run.") from None
    if run.created_by_id != user.pk and not is_admin(user):
        raise Http404("No such drafting run.")
    return run


def draft_run_list(*, user) -> QuerySet[DraftRun]:
    _need(user, CURATOR)
    qs = DraftRun.objects.select_related("created_by").order_by("-created_at", "-id")
    return qs if is_admin(user) else qs.filter(created_by=user)


def draft_run_progress(run: DraftRun) -> dict:
    return job_progress(
        run, rows_done=run.done, rows_total=run.total,
        created=run.created_count, flagged=run.flagged_count, errors=len(run.errors or []),
    )


def documents_by_ids(*, user, ids) -> list[Document]:
    _need(user, CURATOR)
    wanted = []
    for i in ids:
        try:
            wanted.append(int(i))
        except (TypeError, ValueError):
            continue
    wanted = [i for i in wanted if 0 < i < 2**63][:200]
    found = {d.pk: d for d in Document.objects.filter(pk__in=wanted).defer("sections", "sentences", "search_text")}
    return [found[i] for i in dict.fromkeys(wanted) if i in found]


# --------------------------------------------------------------------------- review


@dataclass(frozen=True)
class CandidateEvidence:
    document: Document | None
    sections: list[SectionView]
    support: list[int]
    support_by: str
    grounding: dict
    model: str
    prompt_version: str
    question_type: str
    run_id: int | None


def candidate_evidence(pair: QAPair) -> CandidateEvidence | None:
    """What the review page shows for a drafted candidate: the abstract with its supporting
    sentences marked, and the grounding check; None for other pairs."""
    meta = pair.synthetic_meta or {}
    if not pair.synthetic or meta.get("generator", "").split(".v")[0] != "medportal.literature":
        return None
    support = [int(n) for n in meta.get("support") or [] if str(n).isdigit()]
    document = Document.objects.filter(pk=meta.get("document_id")).first() if meta.get("document_id") else None
    return CandidateEvidence(
        document=document,
        sections=document_sections(document, set(support)) if document else [],
        support=support,
        support_by=meta.get("support_by", ""),
        grounding=meta.get("grounding") or {},
        model=meta.get("model", ""),
        prompt_version=meta.get("prompt_version", ""),
        question_type=meta.get("question_type", ""),
        run_id=meta.get("run_id"),
    )
