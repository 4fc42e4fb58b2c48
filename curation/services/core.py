"""Shared write helpers for QA pairs: derived fields, labels, revisions.

Every path that creates or changes pair content (manual create, edit, import, corrections
from chat, synthetic cases) goes through ``pair_derive`` so the duplicate key, near-duplicate
fingerprint, identifier flags and search document are always in step with the text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from django.db.models import Q

from curation.lib import fingerprint, identifiers
from curation.lib.search import index_text, index_texts
from curation.models import Department, QAPair, QAPairRevision, Tag

CONTENT_FIELDS = ("instruction", "input", "output", "system", "history", "reasoning")
LABEL_FIELDS = ("department", "tags", "disease_codes", "difficulty")
# Fields whose text is scanned for identifiers, in display order.
SCANNED_FIELDS = ("instruction", "input", "output", "system", "reasoning")
# The widest SimHash distance any script uses (4 bits for mostly-Chinese text, 3 otherwise:
# see fingerprint.near_duplicate_distance); the index must be built for the widest.
NEAR_DUP_MAX_BITS = 4


@dataclass(frozen=True, slots=True)
class Derived:
    content_hash: str
    simhash: int | None
    identifiers: list[dict]
    has_identifiers: bool
    search_text: str


def history_text(history: Iterable) -> str:
    return "\n".join(str(part) for turn in history or () for part in (turn if isinstance(turn, (list, tuple)) else [turn]))


def derive(*, instruction: str, input: str = "", output: str = "", system: str = "", history=(), reasoning: str = "") -> Derived:
    content_hash, simhash = fingerprint.record_fingerprints(instruction, input, output)
    found = _identifier_findings(
        {"instruction": instruction, "input": input, "output": output, "system": system, "reasoning": reasoning}, history
    )
    return Derived(
        content_hash=content_hash,
        simhash=simhash,
        identifiers=found,
        has_identifiers=bool(found),
        search_text=index_text(instruction, input, output),
    )


def derive_many(contents: Sequence[Mapping]) -> list[Derived]:
    """``derive(**content)`` for each mapping of content fields (a missing field has
    ``derive``'s default), with the SimHash fingerprints and search documents of all of them
    computed together: the same results, several times faster for imports."""
    qa = [(c["instruction"], c.get("input", ""), c.get("output", "")) for c in contents]
    derived = []
    for c, (content_hash, simhash), search_text in zip(contents, fingerprint.record_fingerprints_many(qa), index_texts(qa)):
        found = _identifier_findings(c, c.get("history", ()))
        derived.append(
            Derived(
                content_hash=content_hash,
                simhash=simhash,
                identifiers=found,
                has_identifiers=bool(found),
                search_text=search_text,
            )
        )
    return derived


def _identifier_findings(texts: Mapping[str, str], history) -> list[dict]:
    """The identifier findings of the scanned fields (a missing one is empty), then of the
    history, as stored."""
    found: list[dict] = []
    for name in SCANNED_FIELDS:
        text = texts.get(name)
        if text:
            found.extend(
                {"field": name, "kind": f.kind, "start": f.start, "end": f.end, "text": f.text}
                for f in identifiers.find_identifiers(text)
            )
    hist = history_text(history)
    if hist:
        found.extend(
            {"field": "history", "kind": f.kind, "start": f.start, "end": f.end, "text": f.text}
            for f in identifiers.find_identifiers(hist)
        )
    return found


def synthetic_pair(*, author, question: str, answer: str, now, **fields) -> QAPair:
    """An unsaved machine-generated pair (rare-disease cases, literature drafts): flagged synthetic,
    it starts in review (round 1), so only a clinician's approval lets it into a dataset version.
    ``fields`` are the rest (source, source_ref, synthetic_meta...); call ``pair_apply_derived`` last."""
    return QAPair(
        author=author,
        instruction=question,
        output=answer,
        status=QAPair.Status.IN_REVIEW,
        review_round=1,
        submitted_at=now,
        synthetic=True,
        **fields,
    )


def pair_apply_derived(pair: QAPair) -> Derived:
    d = derive(**{f: getattr(pair, f) for f in CONTENT_FIELDS})
    pair.content_hash = d.content_hash
    pair.simhash = d.simhash
    pair.identifiers = d.identifiers
    pair.has_identifiers = d.has_identifiers
    pair.search_text = d.search_text
    return d


def pair_content(pair: QAPair) -> dict:
    """The content and labels of a pair as plain data (revisions, dataset items, exports)."""
    return {
        "instruction": pair.instruction,
        "input": pair.input,
        "output": pair.output,
        "system": pair.system,
        "history": pair.history or [],
        "reasoning": pair.reasoning,
        "department": pair.department.name if pair.department_id else "",
        "tags": sorted(t.name for t in pair.tags.all()) if pair.pk else [],
        "disease_codes": list(pair.disease_codes or []),
        "difficulty": pair.difficulty,
    }


def revision_record(*, pair: QAPair, editor, note: str = "") -> QAPairRevision:
    last = pair.revisions.order_by("-number").values_list("number", flat=True).first() or 0
    return QAPairRevision.objects.create(qa_pair=pair, number=last + 1, editor=editor, content=pair_content(pair), note=note[:255])


def revision_ensure_initial(pair: QAPair) -> None:
    """Record the pair's current content as revision 1 if it has no revision yet.

    Imports do not write a revision per pair (that would store every text twice); the
    content as imported becomes revision 1, dated at the import, just before the first edit.
    Call it before changing a pair's content or labels.
    """
    if not pair.revisions.exists():
        rev = QAPairRevision.objects.create(qa_pair=pair, number=1, editor=pair.author, content=pair_content(pair), note="imported")
        QAPairRevision.objects.filter(pk=rev.pk).update(created_at=pair.created_at)


def department_get_or_create(name: str) -> Department | None:
    name = (name or "").strip()[:100]
    if not name:
        return None
    return Department.objects.get_or_create(name=name)[0]


def tags_get_or_create(names: Iterable[str]) -> list[Tag]:
    wanted = list(dict.fromkeys(n.strip()[:100] for n in names if n and n.strip()))
    if not wanted:
        return []
    existing = {t.name: t for t in Tag.objects.filter(name__in=wanted)}
    missing = [Tag(name=n) for n in wanted if n not in existing]
    if missing:
        Tag.objects.bulk_create(missing, ignore_conflicts=True)
        existing = {t.name: t for t in Tag.objects.filter(name__in=wanted)}
    return [existing[n] for n in wanted]


def near_duplicate_index(exclude_pk: int | None = None, *, model=QAPair) -> fingerprint.NearDuplicateIndex:
    """An in-memory index of every stored fingerprint of ``model`` (QA pairs, or any model with a
    ``simhash`` column such as preference pairs; one query, ints only)."""
    index = fingerprint.NearDuplicateIndex(NEAR_DUP_MAX_BITS)
    rows = model._default_manager.exclude(simhash=None)
    if exclude_pk is not None:
        rows = rows.exclude(pk=exclude_pk)
    for pk, fp in rows.values_list("pk", "simhash").iterator(chunk_size=5000):
        index.add(pk, fp)
    return index


def find_near_duplicate(pair: QAPair) -> int | None:
    if pair.simhash is None:
        return None
    text = f"{pair.instruction}\n{pair.input}\n{pair.output}"
    return near_duplicate_index(exclude_pk=pair.pk).query(pair.simhash, max_distance=fingerprint.near_duplicate_distance(text))


def duplicate_of(content_hash: str, exclude_pk: int | None = None) -> QAPair | None:
    qs = QAPair.objects.filter(content_hash=content_hash)
    if exclude_pk is not None:
        qs = qs.filter(~Q(pk=exclude_pk))
    return qs.first()
