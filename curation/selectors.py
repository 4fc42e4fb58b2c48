"""Reads for QA pairs, the review queue and reviewer agreement.

Every QA pair a user sees is fetched through ``access_pair``; every list goes through
``qa_pair_list`` / ``review_queue``, which own their ``select_related`` / ``prefetch_related``
so that a page costs the same number of queries whatever its size.

Search (see curation/lib/search.py) works the same on both databases: every query token must
be a prefix of a token of the pair's search document. CJK text is indexed as overlapping
bigrams, so a two-character query is an exact bigram match and a one-character query matches
the bigrams that start with it. PostgreSQL uses the GIN-indexed ``to_tsvector('simple', …)``
with a prefix tsquery; SQLite uses ``LIKE '% token%'`` over " " + the document.
"""

from __future__ import annotations

import difflib
import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import combinations

import django_filters
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.db.models import (
    BooleanField,
    Case,
    Count,
    ExpressionWrapper,
    FloatField,
    IntegerField,
    When,
    Exists,
    F,
    OuterRef,
    Q,
    QuerySet,
    TextField,
    Value,
)
from django.db.models.expressions import RawSQL
from django.db.models.functions import Concat, Length
from django.forms import NumberInput, Select
from django.http import Http404
from django.utils.translation import gettext_lazy as _
from django.utils.translation import gettext_noop, pgettext_lazy

from curation.lib import agreement as agreement_lib
from curation.lib.search import is_cjk_bigram, query_tokens, snippet_spans
from curation.models import Comment, Department, QAPair, QAPairRevision, Review, Tag
from curation.services.core import CONTENT_FIELDS, LABEL_FIELDS
from medportal.audit import audit_events_for
from medportal.errors import InvalidInput
from medportal.params import IdFilter, ModelIdChoiceFilter
from medportal.roles import ADMIN, ALL_ROLES, CLINICIAN, has_role

PAGE_SIZES = (25, 50, 100, 200)
SEARCH_MAX_CHARS = 500
DEFAULT_PAGE_SIZE = 50


# --- access -----------------------------------------------------------------------------------


def _pair_queryset() -> QuerySet[QAPair]:
    return QAPair.objects.select_related("department", "author", "near_duplicate_of", "import_batch").prefetch_related("tags")


def access_pair(user, pk, *, for_update: bool = False) -> QAPair:
    """The pair ``pk`` if ``user`` may see it, else 404 (403 for a user without any role).

    Every MedPortal role reads every pair; what each role may *change* is decided by the
    services. ``for_update`` locks the row (call inside ``transaction.atomic``).
    """
    if not has_role(user, *ALL_ROLES):
        raise PermissionDenied
    qs = _pair_queryset()
    if for_update:
        qs = qs.select_for_update(of=("self",))
    try:
        return qs.get(pk=int(pk))
    except (QAPair.DoesNotExist, ValueError, TypeError):
        raise Http404("No such QA pair.") from None


# --- background jobs ----------------------------------------------------------------------------


def job_progress(job, *, rows_done, rows_total, phase: str | None = None, **counts) -> dict:
    """The small JSON document a job page's progress bar polls, for every curation job (imports,
    case generation, literature drafting): ``phase`` is "finished" once the job is no longer
    active, else ``phase`` or the status; ``counts`` are the job's own tallies."""
    finished = not job.is_active
    return {
        "id": job.pk,
        "status": job.status,
        "status_display": str(job.get_status_display()),
        "phase": "finished" if finished else (phase or job.status),
        "finished": finished,
        "rows_done": rows_done,
        "rows_total": rows_total,
        "percent": job.progress_percent,
        **counts,
        "error": job.error,
    }


# --- search -----------------------------------------------------------------------------------


def _tsquery(tokens: Iterable[str]) -> str:
    """AND of the tokens. A CJK bigram is a whole indexed token and matches exactly; a lone
    character or a word of another script matches as a token prefix ("hyperten" finds
    "hypertension"; a single Chinese character finds the bigrams it starts)."""

    def term(t: str) -> str:
        quoted = "'{}'".format(t.replace("'", "''").replace("\\", "\\\\"))
        return quoted if is_cjk_bigram(t) else quoted + ":*"

    return " & ".join(term(t) for t in tokens)


def text_search(qs: QuerySet, q: str) -> QuerySet:
    """Rows of ``qs`` whose search document holds every token of ``q`` (bigrams exactly, others as a
    token prefix): the generated, GIN-indexed ``search_vector`` column on PostgreSQL, substrings
    of ``search_text`` on SQLite. For every model with both columns: QA pairs (migration 0002),
    literature documents (migration 0006)."""
    tokens = query_tokens(q or "")
    if not tokens:
        return qs
    if connection.vendor == "postgresql":
        table = qs.model._meta.db_table
        match = RawSQL(
            f"\"{table}\".\"search_vector\" @@ to_tsquery('simple'::regconfig, %s)",
            (_tsquery(tokens),),
            output_field=BooleanField(),
        )
        return qs.filter(match)
    qs = qs.alias(_search_doc=Concat(Value(" "), F("search_text"), Value(" "), output_field=TextField()))
    for token in tokens:
        qs = qs.filter(_search_doc__contains=f" {token} " if is_cjk_bigram(token) else " " + token)
    return qs


def qa_pair_search(qs: QuerySet[QAPair], q: str) -> QuerySet[QAPair]:
    """Pairs whose search document holds every token of ``q`` (see ``text_search``)."""
    return text_search(qs, q)


def qa_pair_relevance_order(qs: QuerySet[QAPair], q: str) -> QuerySet[QAPair]:
    """``qs`` (already searched for ``q``) ordered by relevance, best first.

    Every listed pair holds every token, so the score says *where*: a token in the question
    counts 2, in the answer 1. Ties go to the denser document: on PostgreSQL the
    length-normalised ``ts_rank`` over the GIN-indexed ``search_vector`` (migration 0002), on
    SQLite the shorter search document.
    """
    tokens = query_tokens(q or "")
    if not tokens:
        return qs.order_by("-id")
    score = Value(0)
    for token in tokens:
        score = score + Case(When(instruction__icontains=token, then=Value(2)), default=Value(0))
        score = score + Case(When(output__icontains=token, then=Value(1)), default=Value(0))
    qs = qs.alias(_relevance=ExpressionWrapper(score, output_field=IntegerField()))
    if connection.vendor == "postgresql":
        table = QAPair._meta.db_table
        rank = RawSQL(
            f"ts_rank(\"{table}\".\"search_vector\", to_tsquery('simple'::regconfig, %s), 1)",
            (_tsquery(tokens),),
            output_field=FloatField(),
        )
        return qs.alias(_density=rank).order_by("-_relevance", "-_density", "-id")
    return qs.alias(_length=Length("search_text")).order_by("-_relevance", "_length", "-id")


SNIPPET_CHARS = 90


def search_snippet(text: str, q: str, width: int = SNIPPET_CHARS) -> list[Segment]:
    """At most ``width`` characters of ``text`` around its first match of ``q``, cut into
    plain segments and "match" segments (the template escapes each and marks the matches)."""
    start, end, spans = snippet_spans(text or "", query_tokens(q or ""), width)
    out: list[Segment] = [Segment("…")] if start > 0 else []
    pos = start
    for a, b in spans:
        if a > pos:
            out.append(Segment(text[pos:a]))
        out.append(Segment(text[a:b], "match"))
        pos = b
    if pos < end:
        out.append(Segment(text[pos:end]))
    if end < len(text or ""):
        out.append(Segment("…"))
    return out


# --- list -------------------------------------------------------------------------------------


class PairOrdering(django_filters.OrderingFilter):
    """The list's sort choices plus "relevance" (of the search ``q``; newest first without one)."""

    RELEVANCE = "relevance"

    def build_choices(self, fields, labels):
        return [*super().build_choices(fields, labels), (self.RELEVANCE, _("Relevance"))]

    def filter(self, qs, value):
        if value and self.RELEVANCE in value:
            q = self.parent.form.cleaned_data.get("q", "") if self.parent is not None else ""
            return qa_pair_relevance_order(qs, q)
        return super().filter(qs, value)


def _user_queryset():
    return get_user_model().objects.filter(is_active=True).order_by("username")


_YES_NO = (("", _("All")), ("true", _("Yes")), ("false", _("No")))


# django-filter's OrderingFilter labels descending options with this string, but ships only a
# zh_CN catalog, which Django never loads for zh-hans: MedPortal's catalog carries it.
gettext_noop("%s (descending)")


class QAPairFilter(django_filters.FilterSet):
    """The filters of the pair list page and of GET /api/v1/pairs/ (one parser for both)."""

    # Ids go through medportal.params (IdFilter, ModelIdChoiceFilter): a value that is not an id
    # (2**64, "1e309", "０"...) is a field error, never a query. Search text is bounded: SQLite
    # refuses a LIKE pattern of more than 50,000 bytes.
    q = django_filters.CharFilter(method="_search", label=_("Search"), max_length=SEARCH_MAX_CHARS)
    status = django_filters.ChoiceFilter(choices=QAPair.Status.choices, label=_("Status"), empty_label=_("All"))
    department = ModelIdChoiceFilter(queryset=Department.objects.all(), label=_("Department"), empty_label=_("All"))
    tag = ModelIdChoiceFilter(field_name="tags", queryset=Tag.objects.all(), label=_("Tag"), empty_label=_("All"))
    source = django_filters.CharFilter(field_name="source", label=_("Source"), max_length=255)
    import_batch = IdFilter(
        field_name="import_batch_id",
        label=_("Import batch"),
        widget=NumberInput(attrs={"min": 1, "step": 1, "placeholder": "#", "style": "width: 7em"}),
    )
    synthetic = django_filters.BooleanFilter(label=_("Synthetic"), widget=Select(choices=_YES_NO))
    has_identifiers = django_filters.BooleanFilter(label=_("Identifier flag"), widget=Select(choices=_YES_NO))
    author = ModelIdChoiceFilter(queryset=_user_queryset(), label=_("Author"), empty_label=_("All"))
    reviewer = ModelIdChoiceFilter(
        queryset=_user_queryset(), method="_reviewed_by", label=_("Reviewed by"), empty_label=_("All")
    )
    sort = PairOrdering(
        fields=(("id", "id"), ("updated_at", "updated"), ("submitted_at", "submitted"), ("status", "status")),
        field_labels={"id": _("Created"), "updated_at": _("Updated"), "submitted_at": _("Submitted"), "status": _("Status")},
        label=_("Sort"),
        empty_label=_("Newest first"),
    )

    class Meta:
        model = QAPair
        fields: list[str] = []

    def _search(self, qs, name, value):
        return qa_pair_search(qs, value)

    def _reviewed_by(self, qs, name, value):
        if not value:
            return qs
        return qs.filter(Exists(Review.objects.filter(qa_pair=OuterRef("pk"), reviewer=value)))


FILTER_NAMES = tuple(QAPairFilter.base_filters)


def qa_pair_filter(filters: Mapping | None) -> QAPairFilter:
    """The bound filter set (its ``form`` renders the filter bar)."""
    data = filters if filters is not None else {}
    return QAPairFilter(data=data, queryset=_pair_queryset().defer("search_text"))


def qa_pair_list(*, user, filters: Mapping | None = None) -> QuerySet[QAPair]:
    """Pairs matching ``filters`` (the ``QAPairFilter`` names), newest first unless sorted.

    Raises ``InvalidInput`` (with the field errors as details) on a malformed filter.
    """
    if not has_role(user, *ALL_ROLES):
        raise PermissionDenied
    fs = qa_pair_filter(filters)
    if not fs.is_valid():
        raise InvalidInput(str(_("Invalid filter.")), details={k: [str(m) for m in v] for k, v in fs.errors.items()})
    qs = fs.qs
    return qs.order_by(*qs.query.order_by, "-id")  # the id breaks ties: stable pages


def page_size_from(value, default: int = DEFAULT_PAGE_SIZE) -> int:
    try:
        size = int(value)
    except (TypeError, ValueError):
        return default
    return size if size in PAGE_SIZES else default


# --- review queue -----------------------------------------------------------------------------


def reviewer_department_ids(user) -> list[int]:
    return list(user.review_departments.values_list("id", flat=True))


def review_queue(
    *, user, all_departments: bool = False, department_ids: list[int] | None = None, department: int | None = None
) -> QuerySet[QAPair]:
    """Pairs waiting for ``user``'s review, oldest submission first.

    In review, not authored by ``user``, not yet reviewed by ``user`` in the current round.
    A reviewer assigned to departments sees those departments (plus pairs with no department)
    unless ``all_departments``; a reviewer without departments sees everything. Pairs of a
    department that no reviewer covers are in every default queue. ``department`` (an id)
    narrows the queue to one department.
    """
    if not has_role(user, *ALL_ROLES):
        raise PermissionDenied
    already = Review.objects.filter(qa_pair=OuterRef("pk"), reviewer=user, round=OuterRef("review_round"))
    qs = (
        QAPair.objects.filter(status=QAPair.Status.IN_REVIEW)
        .exclude(author=user)
        .exclude(Exists(already))
        .select_related("department", "author")
        .prefetch_related("tags")
        .defer("search_text")
    )
    if department is not None:
        qs = qs.filter(department_id=department)
    elif not all_departments:
        ids = reviewer_department_ids(user) if department_ids is None else department_ids
        if ids:
            qs = qs.filter(Q(department_id__in=ids) | Q(department__isnull=True) | ~Q(department_id__in=covered_department_ids()))
    return qs.order_by(*QUEUE_ORDER)


QUEUE_ORDER = (F("submitted_at").asc(nulls_last=True), "id")


def covered_department_ids() -> QuerySet:
    """Departments that at least one active reviewer (a clinician or an admin) covers.

    A pair of any other department (rare-disease cases land in one that nobody was assigned
    to) is in every reviewer's default queue: no pair in review is hidden from everyone.
    """
    reviewers = get_user_model().objects.filter(is_active=True).filter(
        Q(is_superuser=True) | Q(groups__name__in=(CLINICIAN, ADMIN))
    )
    return Department.objects.filter(reviewers__in=reviewers).values("pk")


@dataclass(frozen=True, slots=True)
class DepartmentCount:
    department: Department | None
    count: int
    mine: bool  # in the reviewer's own departments
    uncovered: bool  # no reviewer covers it: in every default queue


def review_queue_department_counts(*, user, department_ids: list[int] | None = None) -> list[DepartmentCount]:
    """How many pairs wait for ``user`` in each department (all departments, one query),
    most first; pairs without a department count under ``None``."""
    ids = set(reviewer_department_ids(user) if department_ids is None else department_ids)
    rows = (
        review_queue(user=user, all_departments=True)
        .order_by()
        .values("department_id")
        .annotate(n=Count("id"))
        .values_list("department_id", "n")
    )
    counts = dict(rows)
    departments = Department.objects.in_bulk([pk for pk in counts if pk is not None])
    covered = set(Department.objects.filter(pk__in=covered_department_ids()).values_list("pk", flat=True))
    out = [
        DepartmentCount(departments.get(pk) if pk is not None else None, n, pk in ids, pk is not None and pk not in covered)
        for pk, n in counts.items()
    ]
    out.sort(key=lambda c: (-c.count, c.department.name if c.department else ""))
    return out


@dataclass(frozen=True, slots=True)
class Neighbours:
    previous: tuple[int, int] | None  # (pair id, position)
    next: tuple[int, int] | None
    position: int  # of the pair, or of the gap it left


def queue_neighbours(qs: QuerySet[QAPair], *, pk: int, position: int | None) -> Neighbours:
    """The pairs before and after pair ``pk`` in the ordered list ``qs``.

    ``position`` is where the user found the pair (0-based, from the list's link). Reading a
    window of three rows around it costs one query whatever the list's size. When the pair
    is no longer there (it was just reviewed and left the queue, or the list moved), the row
    that now sits at ``position`` is the next one.
    """
    position = max(position or 0, 0)
    start = max(position - 1, 0)
    window = list(qs.values_list("pk", flat=True)[start : position + 3])
    if pk in window:
        i = window.index(pk)
        here = start + i
        prev = (window[i - 1], here - 1) if i > 0 else None
        nxt = (window[i + 1], here + 1) if i + 1 < len(window) else None
        return Neighbours(prev, nxt, here)
    offset = position - start
    prev = (window[offset - 1], position - 1) if 0 < offset <= len(window) else None
    nxt = (window[offset], position) if offset < len(window) else None
    return Neighbours(prev, nxt, position)


# --- detail -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Segment:
    text: str
    kind: str = ""  # identifier kind for highlighting, or diff op ("eq", "ins", "del", "skip")


def identifier_segments(text: str, findings: Iterable[Mapping]) -> list[Segment]:
    """``text`` cut into plain and identifier segments (the template escapes each one).

    Findings whose offsets no longer match the text are ignored; overlapping ones keep the
    first.
    """
    spans = []
    for f in findings:
        try:
            start, end = int(f["start"]), int(f["end"])
        except (KeyError, TypeError, ValueError):
            continue
        if 0 <= start < end <= len(text) and text[start:end] == f.get("text", text[start:end]):
            spans.append((start, end, str(f.get("kind", "identifier"))))
    spans.sort()
    out: list[Segment] = []
    pos = 0
    for start, end, kind in spans:
        if start < pos:
            continue
        if start > pos:
            out.append(Segment(text[pos:start]))
        out.append(Segment(text[start:end], kind))
        pos = end
    if pos < len(text):
        out.append(Segment(text[pos:]))
    return out


def history_display_text(history) -> str:
    from curation.services.core import history_text

    return history_text(history)


@dataclass(frozen=True, slots=True)
class FieldView:
    name: str
    label: str
    segments: list[Segment]


def qa_pair_content_view(pair: QAPair) -> list[FieldView]:
    """The non-empty content fields of ``pair`` with identifiers marked."""
    by_field: dict[str, list] = defaultdict(list)
    for f in pair.identifiers or ():
        if isinstance(f, Mapping):
            by_field[f.get("field", "")].append(f)
    out = []
    for name in ("system", "history", "instruction", "input", "output", "reasoning"):
        text = history_display_text(pair.history) if name == "history" else getattr(pair, name)
        if text:
            label = str(QAPair._meta.get_field(name).verbose_name)
            out.append(FieldView(name, label, identifier_segments(text, by_field.get(name, ()))))
    return out


_DIFF_TOKEN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef]|\w+|\s+|.", re.S)
_DIFF_CONTEXT = 60


def _diff_tokens(text: str) -> list[str]:
    return _DIFF_TOKEN.findall(text)


def text_diff(old: str, new: str) -> list[Segment]:
    """Segments ("eq"/"ins"/"del"/"skip") turning ``old`` into ``new``.

    CJK text is compared character by character, other scripts word by word, so the result
    reads well in both. Long unchanged stretches are shortened to their ends ("skip").
    """
    a, b = _diff_tokens(old), _diff_tokens(new)
    raw: list[Segment] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            raw.append(Segment("".join(a[i1:i2]), "eq"))
            continue
        if op in ("delete", "replace"):
            raw.append(Segment("".join(a[i1:i2]), "del"))
        if op in ("insert", "replace"):
            raw.append(Segment("".join(b[j1:j2]), "ins"))
    out: list[Segment] = []
    for i, seg in enumerate(raw):
        if seg.kind == "eq" and len(seg.text) > 3 * _DIFF_CONTEXT:
            head = seg.text[:_DIFF_CONTEXT] if i > 0 else ""
            tail = seg.text[-_DIFF_CONTEXT:] if i < len(raw) - 1 else ""
            if head:
                out.append(Segment(head, "eq"))
            out.append(Segment("…", "skip"))
            if tail:
                out.append(Segment(tail, "eq"))
        else:
            out.append(seg)
    return out


def _field_text(name: str, value) -> str:
    if value is None:
        return ""
    if name == "history":
        return history_display_text(value)
    if name == "difficulty":
        return _choice_label(QAPair.Difficulty.choices, value) if value else ""
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


REVISION_FIELDS = (*CONTENT_FIELDS, *LABEL_FIELDS)  # the keys of core.pair_content()


@dataclass(frozen=True, slots=True)
class FieldDiff:
    name: str
    label: str
    segments: list[Segment]


@dataclass(frozen=True, slots=True)
class RevisionView:
    revision: QAPairRevision
    diffs: list[FieldDiff] = field(default_factory=list)
    note: str = ""  # in the reader's language


def revision_diffs(revisions: list[QAPairRevision]) -> list[RevisionView]:
    """Each revision (newest first) with its field diffs against the one before it."""
    out = []
    previous: dict | None = None
    for rev in revisions:
        diffs = []
        if previous is not None:
            for name in REVISION_FIELDS:
                old, new = _field_text(name, previous.get(name)), _field_text(name, rev.content.get(name))
                if old != new:
                    label = str(QAPair._meta.get_field(name).verbose_name)
                    diffs.append(FieldDiff(name, label, text_diff(old, new)))
        out.append(RevisionView(rev, diffs, revision_note_display(rev.note)))
        previous = rev.content or {}
    out.reverse()
    return out


def qa_pair_reviews(pair: QAPair) -> list[Review]:
    return list(pair.reviews.select_related("reviewer").order_by("-round", "created_at", "id"))


def qa_pair_comments(pair: QAPair) -> QuerySet[Comment]:
    return pair.comments.select_related("author").order_by("created_at", "id")


def qa_pair_revisions(pair: QAPair) -> list[RevisionView]:
    return revision_diffs(list(pair.revisions.select_related("editor").order_by("number")))


def qa_pair_audit_events(pair: QAPair, limit: int = 200):
    return list(audit_events_for(pair)[:limit])


# Stored words are codes or were written in the writer's language; pages show them in the
# reader's. Audit actions are codes; revision notes were stored translated (or as "imported").
EVENT_LABELS = {
    "qa_pair.create": pgettext_lazy("pair event", "Created"),
    "qa_pair.edit": pgettext_lazy("pair event", "Edited"),
    "qa_pair.submit": pgettext_lazy("pair event", "Submitted for review"),
    "qa_pair.review": pgettext_lazy("pair event", "Approval recorded"),
    "qa_pair.approve": pgettext_lazy("pair event", "Approved"),
    "qa_pair.reject": pgettext_lazy("pair event", "Rejected"),
    "qa_pair.request_changes": pgettext_lazy("pair event", "Changes requested"),
    "qa_pair.reopen": pgettext_lazy("pair event", "Reopened"),
    "qa_pair.mask": pgettext_lazy("pair event", "Identifiers masked"),
    "qa_pair.bulk_label": pgettext_lazy("pair event", "Labelled in bulk"),
    "qa_pair.comment": pgettext_lazy("pair event", "Commented"),
}
# The notes MedPortal writes, stored in the writer's language (or "imported"); shown in a
# context of their own: the words alone ("imported", "created") mean other things elsewhere.
REVISION_NOTES = {
    "imported": pgettext_lazy("revision note", "imported"),
    "created": pgettext_lazy("revision note", "created"),
    "edited": pgettext_lazy("revision note", "edited"),
    "masked identifiers": pgettext_lazy("revision note", "masked identifiers"),
    "masked identifiers before freezing": pgettext_lazy("revision note", "masked identifiers before freezing"),
    "bulk label": pgettext_lazy("revision note", "bulk label"),
}
_CONTENT_SUMMARY_ACTIONS = ("qa_pair.create", "qa_pair.comment")  # their summary is the pair's or comment's text


def _choice_label(choices, value) -> str:
    return str(dict(choices).get(value, value)) if value is not None else "—"


def _field_label(name: str) -> str:
    try:
        return str(QAPair._meta.get_field(name).verbose_name)
    except Exception:
        return name


@dataclass(frozen=True, slots=True)
class EventView:
    event: object  # AuditEvent
    label: str
    detail: str


def _event_detail(event, reviews: Mapping[int, Review]) -> str:
    changes = event.changes if isinstance(event.changes, Mapping) else {}
    parts: list[str] = []
    status = changes.get("status")
    if isinstance(status, list) and len(status) == 2 and status[0] != status[1]:
        old, new = (_choice_label(QAPair.Status.choices, v) for v in status)
        parts.append(f"{old} → {new}" if status[0] else new)
    if changes.get("review_round"):
        parts.append(str(_("round %(round)s")) % {"round": changes["review_round"]})
    edited = [*(changes.get("fields") or []), *(changes.get("labels") or [])]
    if edited:
        parts.append(", ".join(_field_label(n) for n in edited))
    if event.action == "qa_pair.bulk_label":
        for name, value in (("department", changes.get("department")), ("tags", changes.get("add_tag")), ("difficulty", changes.get("difficulty"))):
            if value:
                shown = _choice_label(QAPair.Difficulty.choices, value) if name == "difficulty" else value
                parts.append(f"{_field_label(name)}: {shown}")
    if event.action == "qa_pair.mask" and isinstance(changes.get("kinds"), Mapping):
        n = sum(v for v in changes["kinds"].values() if isinstance(v, int))
        parts.append(str(_("%(n)s identifiers")) % {"n": n})
    if changes.get("reason"):
        parts.append(str(changes["reason"]))
    review = reviews.get(changes.get("review")) if isinstance(changes.get("review"), int) else None
    if review is not None and review.comment:
        parts.append(review.comment)
    if event.action in _CONTENT_SUMMARY_ACTIONS and event.summary:
        parts.append(event.summary)
    return " · ".join(parts)


def qa_pair_event_views(pair: QAPair, limit: int = 200) -> list[EventView]:
    """The pair's audit events, newest first, described in the reader's language: a label
    for the action and details rebuilt from the stored changes (statuses, fields, the review
    comment), never the summary written in the writer's language. Unknown actions keep their
    stored summary."""
    events = qa_pair_audit_events(pair, limit)
    review_ids = [e.changes.get("review") for e in events if isinstance(e.changes, Mapping) and isinstance(e.changes.get("review"), int)]
    reviews = Review.objects.in_bulk(review_ids) if review_ids else {}
    out = []
    for e in events:
        label = EVENT_LABELS.get(e.action)
        if label is None:
            out.append(EventView(e, e.action, e.summary))
        else:
            out.append(EventView(e, str(label), _event_detail(e, reviews)))
    return out


def _note_msgids() -> dict[str, str]:
    from django.conf import settings
    from django.utils import translation

    out: dict[str, str] = {}
    for msgid, shown in REVISION_NOTES.items():
        out[msgid] = msgid
        for lang, _name in settings.LANGUAGES:
            with translation.override(lang):
                out[translation.gettext(msgid)] = msgid
                out[str(shown)] = msgid
    return out


def revision_note_display(note: str) -> str:
    """A revision note in the reader's language when it is one of the notes MedPortal writes
    (stored in the writer's language, or as "imported"); a note someone typed, unchanged."""
    msgid = _note_msgids().get(note or "")
    return str(REVISION_NOTES[msgid]) if msgid else note


def key_values(data, first: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """A JSON object as (key, text) rows for a key/value table: nested values as JSON text,
    never a Python repr. Keys named in ``first`` lead, the rest follow alphabetically: the
    order the database returns is no order (PostgreSQL's jsonb sorts keys by length)."""
    if not isinstance(data, Mapping):
        return [("", json.dumps(data, ensure_ascii=False))] if data not in (None, "", [], {}) else []
    rank = {key: i for i, key in enumerate(first)}
    rows = []
    for key, value in sorted(data.items(), key=lambda kv: (rank.get(str(kv[0]), len(rank)), str(kv[0]))):
        if isinstance(value, str):
            text = value
        elif isinstance(value, bool):
            text = str(_("Yes") if value else _("No"))
        else:
            text = json.dumps(value, ensure_ascii=False)
        rows.append((str(key), text))
    return rows


def qa_pair_reviewed_in_round(pair: QAPair, user) -> bool:
    return pair.reviews.filter(reviewer=user, round=pair.review_round).exists()


def qa_pair_approvals(pair: QAPair) -> int:
    return pair.reviews.filter(round=pair.review_round, decision=Review.Decision.APPROVE).count()


# --- agreement --------------------------------------------------------------------------------

DECISIONS = tuple(Review.Decision.values)
KAPPA_REASONS = {
    agreement_lib.NO_SUBJECTS: _("no pair was reviewed by two or more reviewers in the same round"),
    agreement_lib.ONE_CATEGORY: _("every decision was the same, so chance agreement is 100% and kappa is undefined"),
}


@dataclass(frozen=True, slots=True)
class KappaView:
    value: float | None
    n: int
    reason: str  # translated; empty when defined

    @property
    def defined(self) -> bool:
        return self.value is not None


def _kappa_view(k: agreement_lib.Kappa) -> KappaView:
    return KappaView(k.value, k.n, str(KAPPA_REASONS.get(k.reason, k.reason)) if k.reason else "")


@dataclass(frozen=True, slots=True)
class PairwiseAgreement:
    other: object  # user
    n: int
    percent: float | None
    kappa: KappaView


@dataclass(frozen=True, slots=True)
class ReviewerAgreement:
    reviewer: object  # user
    reviews: int  # all the reviewer's reviews
    co_reviewed: int  # (pair, round)s the reviewer shares with at least one other reviewer
    percent: float | None
    pairwise: list[PairwiseAgreement]


@dataclass(frozen=True, slots=True)
class AgreementReport:
    subjects: int  # (pair, round) with at least two reviews
    ratings: int  # reviews over those subjects
    fleiss: KappaView
    decision_counts: dict  # decision label → number of reviews
    reviewers: list[ReviewerAgreement]


def review_agreement() -> AgreementReport:
    """Agreement between reviewers over the pairs that several of them reviewed in one round."""
    multi = (
        Review.objects.values("qa_pair_id", "round")
        .order_by()
        .annotate(n=Count("id"))
        .filter(n__gte=2)
        .values_list("qa_pair_id", "round")
    )
    keys = set(multi)
    rows = []
    if keys:
        pair_ids = {pk for pk, _ in keys}
        rows = [
            r
            for r in Review.objects.filter(qa_pair_id__in=pair_ids).values_list("qa_pair_id", "round", "reviewer_id", "decision")
            if (r[0], r[1]) in keys
        ]
    subjects: dict[tuple[int, int], dict[int, str]] = defaultdict(dict)
    for pair_id, rnd, reviewer_id, decision in rows:
        subjects[(pair_id, rnd)][reviewer_id] = decision
    fleiss = agreement_lib.fleiss([list(s.values()) for s in subjects.values()], DECISIONS)

    co: dict[tuple[int, int], list[tuple[str, str]]] = defaultdict(list)
    for ratings in subjects.values():
        for a, b in combinations(sorted(ratings), 2):
            co[(a, b)].append((ratings[a], ratings[b]))
    shared = Counter(rid for ratings in subjects.values() for rid in ratings)
    totals = (
        dict(
            Review.objects.filter(reviewer_id__in=shared.keys())
            .values("reviewer_id")
            .order_by()
            .annotate(n=Count("id"))
            .values_list("reviewer_id", "n")
        )
        if shared
        else {}
    )
    users = {u.pk: u for u in get_user_model().objects.filter(pk__in=shared.keys())}
    reviewers = []
    for rid in sorted(shared, key=lambda pk: users[pk].get_username()):
        pairwise = []
        all_pairs: list[tuple[str, str]] = []
        for (a, b), labels in co.items():
            if rid not in (a, b):
                continue
            other = b if a == rid else a
            mine = labels if a == rid else [(y, x) for x, y in labels]
            all_pairs.extend(mine)
            pairwise.append(
                PairwiseAgreement(
                    other=users[other],
                    n=len(mine),
                    percent=agreement_lib.percent_agreement(mine),
                    kappa=_kappa_view(agreement_lib.cohen(mine, DECISIONS)),
                )
            )
        pairwise.sort(key=lambda p: p.other.get_username())
        reviewers.append(
            ReviewerAgreement(
                reviewer=users[rid],
                reviews=totals.get(rid, 0),
                co_reviewed=shared[rid],
                percent=agreement_lib.percent_agreement(all_pairs),
                pairwise=pairwise,
            )
        )
    return AgreementReport(
        subjects=len(subjects),
        ratings=len(rows),
        fleiss=_kappa_view(fleiss),
        decision_counts={str(Review.Decision(code).label): n for code, n in sorted(Counter(r[3] for r in rows).items())},
        reviewers=reviewers,
    )
