"""Creating and editing QA pairs: content, labels, identifier masking and bulk labelling.

Curators and admins edit pairs that are in draft or changes_requested; in review, approved
and rejected pairs are read-only (an admin can reopen a decided pair). Editing a pair whose
reviewers asked for changes sends it straight back to review in a new round. Every edit is a
conditional UPDATE on the version the editor loaded (see services/review.py), records a
revision and an audit event.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from curation.lib.identifiers import find_identifiers, mask_content, mask_history, mask_identifiers
from curation.models import Comment, QAPair, QAPairRevision, Review
from curation.services import core
from curation.services.review import (
    EDITABLE,
    _submit_fields,
    check_version,
    edit_refusal,
    mask_refusal,
    pair_conditional_update,
)
from medportal.audit import audit_record, audit_record_many, audit_scrub
from medportal.errors import InvalidInput, InvalidTransition, NotAllowed
from medportal.roles import CLINICIAN, CURATOR, has_role

S = QAPair.Status
TEXT_FIELDS = ("instruction", "input", "output", "system", "reasoning")
EDIT_FIELDS = (*TEXT_FIELDS, "history", "department", "tags", "disease_codes", "difficulty")
MAX_TEXT_CHARS = 100_000
MAX_CODES = 50

# Known coding systems and what their codes look like; anything else is accepted as free text.
_CODE_SYSTEMS = {
    "ICD10": re.compile(r"[A-Z][0-9]{2}(?:\.[0-9A-Z]{1,4})?"),
    "ICD11": re.compile(r"[0-9A-Z]{4}(?:\.[0-9A-Z]{1,4})?(?:&[0-9A-Z.]+)?"),
    "ORPHA": re.compile(r"[0-9]{1,7}"),
    "OMIM": re.compile(r"[0-9]{6}(?:\.[0-9]{4})?"),
    "HPO": re.compile(r"HP:[0-9]{7}"),
}
_CODE_PREFIX = re.compile(r"^\s*([A-Za-z][A-Za-z0-9]*)\s*[:：]\s*(.*)$")


def split_list(value) -> list[str]:
    """A list of strings from a list or a text separated by commas (, ， 、 ;) or new lines."""
    if value is None:
        return []
    if isinstance(value, str):
        parts = re.split(r"[,，、;；\n]", value)
    elif isinstance(value, Iterable):
        parts = [str(v) for v in value]
    else:
        raise InvalidInput(_("Expected a list."))
    return list(dict.fromkeys(p.strip() for p in parts if p and p.strip()))


def disease_codes_clean(codes) -> list[str]:
    """Validate disease codes loosely.

    ``ICD10:E11.9``, ``ICD11:5A11``, ``ORPHA:558``, ``OMIM:154700`` and ``HPO:HP:0001166``
    are checked against their system's shape (the system name is upper-cased; ``HP:0001166``
    alone becomes ``HPO:HP:0001166``); any other text (a disease name, say) is kept as is.
    """
    out, errors = [], []
    for raw in split_list(codes):
        code = raw
        if re.fullmatch(r"HP:[0-9]{7}", code, flags=re.I):
            code = "HPO:" + code.upper()
        m = _CODE_PREFIX.match(code)
        if m and m.group(1).upper() in _CODE_SYSTEMS:
            system, value = m.group(1).upper(), m.group(2).strip()
            value = value.upper()
            if not _CODE_SYSTEMS[system].fullmatch(value):
                errors.append(_("%(code)s does not look like a %(system)s code.") % {"code": raw, "system": system})
                continue
            code = f"{system}:{value}"
        if len(code) > 200:
            errors.append(_("%(code)s… is too long.") % {"code": code[:40]})
            continue
        out.append(code)
    if len(out) > MAX_CODES:
        errors.append(_("At most %(n)s disease codes.") % {"n": MAX_CODES})
    if errors:
        raise InvalidInput(" ".join(errors), details={"disease_codes": errors})
    return list(dict.fromkeys(out))


def history_clean(history) -> list[list[str]]:
    """``[[question, answer], ...]``; anything else is refused with a clear message."""
    if history in (None, "", []):
        return []
    msg = _("History must be a list of [question, answer] pairs.")
    if not isinstance(history, (list, tuple)):
        raise InvalidInput(msg, details={"history": [msg]})
    out = []
    for turn in history:
        if not (isinstance(turn, (list, tuple)) and len(turn) == 2 and all(isinstance(t, str) for t in turn)):
            raise InvalidInput(msg, details={"history": [msg]})
        out.append([turn[0], turn[1]])
    return out


def difficulty_clean(value) -> str:
    value = (value or "").strip()
    if value and value not in QAPair.Difficulty.values:
        msg = _("Choose a difficulty: %(choices)s.") % {"choices": ", ".join(QAPair.Difficulty.values)}
        raise InvalidInput(msg, details={"difficulty": [msg]})
    return value


def _text_clean(name: str, value, *, required: bool) -> str:
    value = "" if value is None else str(value)
    if name != "system":
        value = value.strip("\n\r\t ") if value.strip() else ""
    if required and not value.strip():
        msg = _("This field is required.")
        raise InvalidInput(
            _("%(field)s is required.") % {"field": QAPair._meta.get_field(name).verbose_name}, details={name: [msg]}
        )
    if len(value) > MAX_TEXT_CHARS:
        msg = _("At most %(n)s characters.") % {"n": MAX_TEXT_CHARS}
        raise InvalidInput(msg, details={name: [msg]})
    return value


def _clean_changes(changes: Mapping) -> dict:
    unknown = set(changes) - set(EDIT_FIELDS)
    if unknown:
        raise InvalidInput(_("Unknown fields: %(names)s.") % {"names": ", ".join(sorted(unknown))})
    clean: dict = {}
    for name, value in changes.items():
        if name in TEXT_FIELDS:
            clean[name] = _text_clean(name, value, required=name in ("instruction", "output"))
        elif name == "history":
            clean[name] = history_clean(value)
        elif name == "department":
            clean[name] = (value or "").strip()[:100] if isinstance(value, str) or value is None else str(value)
        elif name == "tags":
            clean[name] = [t[:100] for t in split_list(value)]
        elif name == "disease_codes":
            clean[name] = disease_codes_clean(value)
        elif name == "difficulty":
            clean[name] = difficulty_clean(value)
    return clean


def _full_clean(pair: QAPair) -> None:
    try:
        pair.full_clean(
            exclude=["author", "content_hash", "import_batch", "near_duplicate_of", "department"], validate_unique=False
        )
    except ValidationError as exc:
        raise InvalidInput("; ".join(exc.messages), details=exc.message_dict) from None


def _check_duplicate(pair: QAPair) -> None:
    other = core.duplicate_of(pair.content_hash, exclude_pk=pair.pk)
    if other is not None:
        raise InvalidInput(
            _("The same question, input and answer already exist as pair #%(pk)s.") % {"pk": other.pk},
            details={"instruction": [_("Duplicate of pair #%(pk)s.") % {"pk": other.pk}], "duplicate_of": other.pk},
        )


def _duplicate_error(pair: QAPair) -> InvalidInput:
    other = core.duplicate_of(pair.content_hash, exclude_pk=pair.pk)
    pk = other.pk if other else "?"
    return InvalidInput(
        _("The same question, input and answer already exist as pair #%(pk)s.") % {"pk": pk},
        details={"instruction": [_("Duplicate of pair #%(pk)s.") % {"pk": pk}], "duplicate_of": pk},
    )


def qa_pair_create(
    *,
    author,
    instruction: str,
    output: str,
    input: str = "",
    system: str = "",
    history: Sequence | None = None,
    reasoning: str = "",
    department: str = "",
    tags: Iterable[str] | str = (),
    disease_codes: Iterable[str] | str = (),
    difficulty: str = "",
    source: str = "manual",
) -> QAPair:
    """A new draft pair written by hand (curators and admins)."""
    if not has_role(author, CURATOR):
        raise NotAllowed(_("Only curators and admins create pairs."))
    return _qa_pair_create(
        author=author,
        instruction=instruction,
        output=output,
        input=input,
        system=system,
        history=history,
        reasoning=reasoning,
        department=department,
        tags=tags,
        disease_codes=disease_codes,
        difficulty=difficulty,
        source=source,
    )


def qa_pair_create_from_correction(
    *,
    author,
    instruction: str,
    output: str,
    system: str = "",
    history: Sequence | None = None,
    department: str = "",
    source_ref: str = "",
    extra: dict | None = None,
) -> QAPair:
    """A clinician's corrected model answer → a draft pair, submitted for review at once.

    Clinicians (and admins) may do this although they don't create pairs otherwise: the
    correction is their own text, and it goes through review like any other pair."""
    from curation.services.review import qa_pair_submit

    if not has_role(author, CLINICIAN):
        raise NotAllowed(_("Only clinicians and admins send corrections into review."))
    with transaction.atomic():
        pair = _qa_pair_create(
            author=author,
            instruction=instruction,
            output=output,
            system=system,
            history=history,
            department=department,
            source="chat-correction",
            source_ref=source_ref,
            extra=extra,
        )
        return qa_pair_submit(pair=pair, actor=author, version=pair.version)


# The structured inquiry of /api/v1/diagnose/ (the labels of the medical_inquiry template).
INQUIRY_FIELDS = (("patient_info", "患者信息"), ("symptoms", "症状描述"), ("test_results", "检查结果"))
INQUIRY_ASK = "请给出诊断建议。"
DIAGNOSE_SOURCE = "diagnose"


def inquiry_question(fields: Mapping[str, str]) -> str:
    """The inquiry as one readable question: each field on its own line ("无" when empty), then
    the request for a diagnosis. Any contender, whatever its template, is asked this text."""
    lines = [f"{label}：{(fields.get(key) or '').strip() or '无'}" for key, label in INQUIRY_FIELDS]
    return "\n".join([*lines, INQUIRY_ASK])


def reference_disease(reference: str):
    """The knowledge graph's disease for a code (``orpha:558`` → ORPHA:558), or InvalidInput."""
    from curation.models_rare import Disease

    codes = disease_codes_clean([reference]) if (reference or "").strip() else []
    disease = Disease.objects.filter(code=codes[0]).first() if len(codes) == 1 else None
    if disease is None:
        message = _("%(code)s is not a disease of the knowledge graph (ORPHA:…, OMIM:…, CCRD:…; see Rare diseases).") % {
            "code": (reference or "").strip() or "''"
        }
        raise InvalidInput(message, details={"reference": message})
    return disease


def qa_pair_create_from_inquiry(
    *,
    author,
    symptoms: str,
    reference: str,
    patient_info: str = "",
    test_results: str = "",
    reference_answer: str = "",
    department: str = "",
) -> QAPair:
    """A structured inquiry with a known diagnosis → a pair submitted for review at once.

    The question is the inquiry (``inquiry_question``), the answer the clinician's reference
    answer or else the disease's name and code, the disease code the reference: once approved
    and frozen into a version it is an item of the evaluation's diagnosis suite. Every role that
    may ask /diagnose may keep a case (clinicians know their patients' diagnoses); identifiers in
    the inquiry flag the pair like any other, so the identifier gate applies."""
    from curation.services.review import qa_pair_submit

    if not has_role(author, CURATOR, CLINICIAN):
        raise NotAllowed(_("Only curators, clinicians and admins keep diagnosis cases."))
    disease = reference_disease(reference)
    fields = {"patient_info": patient_info, "symptoms": symptoms, "test_results": test_results}
    if not (symptoms or "").strip():
        message = _("Describe the symptoms.")
        raise InvalidInput(message, details={"symptoms": message})
    output = (reference_answer or "").strip() or f"{disease.name_zh or disease.name}（{disease.code}）"
    with transaction.atomic():
        pair = _qa_pair_create(
            author=author,
            instruction=inquiry_question(fields),
            output=output,
            department=department,
            disease_codes=[disease.code],
            source=DIAGNOSE_SOURCE,
            source_ref=disease.code,
        )
        return qa_pair_submit(pair=pair, actor=author, version=pair.version)


def _qa_pair_create(
    *,
    author,
    instruction: str,
    output: str,
    input: str = "",
    system: str = "",
    history: Sequence | None = None,
    reasoning: str = "",
    department: str = "",
    tags: Iterable[str] | str = (),
    disease_codes: Iterable[str] | str = (),
    difficulty: str = "",
    source: str = "manual",
    source_ref: str = "",
    extra: dict | None = None,
) -> QAPair:
    data = _clean_changes(
        {
            "instruction": instruction,
            "output": output,
            "input": input,
            "system": system,
            "history": history,
            "reasoning": reasoning,
            "department": department,
            "tags": tags,
            "disease_codes": disease_codes,
            "difficulty": difficulty,
        }
    )
    with transaction.atomic():
        pair = QAPair(
            author=author,
            source=(source or "")[:255],
            source_ref=(source_ref or "")[:255],
            extra=dict(extra or {}),
            status=S.DRAFT,
            **{k: data[k] for k in (*TEXT_FIELDS, "history", "disease_codes", "difficulty")},
        )
        pair.department = core.department_get_or_create(data["department"])
        core.pair_apply_derived(pair)
        _check_duplicate(pair)
        pair.near_duplicate_of_id = core.find_near_duplicate(pair)
        _full_clean(pair)
        try:
            with transaction.atomic():
                pair.save()
        except IntegrityError:
            raise _duplicate_error(pair) from None
        if data["tags"]:
            pair.tags.set(core.tags_get_or_create(data["tags"]))
        core.revision_record(pair=pair, editor=author, note=_("created"))
        audit_record(
            actor=author,
            action="qa_pair.create",
            target=pair,
            summary=_("Created"),  # never the pair's text: audit events keep kinds and counts only
            changes={
                "status": [None, pair.status],
                "near_duplicate_of": pair.near_duplicate_of_id,
                "identifiers": identifier_kinds(pair.identifiers),
            },
        )
    return pair


def _label_snapshot(pair: QAPair) -> dict:
    return {
        "department": pair.department.name if pair.department_id else "",
        "tags": sorted(t.name for t in pair.tags.all()),
        "disease_codes": list(pair.disease_codes or []),
        "difficulty": pair.difficulty,
    }


def _rederive(pair: QAPair) -> dict:
    """After a content change: recompute the derived fields, refuse an exact duplicate, find
    a near-duplicate; returns the columns for the conditional update."""
    d = core.pair_apply_derived(pair)
    _check_duplicate(pair)
    pair.near_duplicate_of_id = core.find_near_duplicate(pair)
    return {
        "content_hash": d.content_hash,
        "simhash": d.simhash,
        "identifiers": d.identifiers,
        "has_identifiers": d.has_identifiers,
        "search_text": d.search_text,
        "near_duplicate_of_id": pair.near_duplicate_of_id,
    }


def qa_pair_update(*, pair: QAPair, editor, version: int, note: str = "", **changes) -> QAPair:
    """Change content and/or labels of a draft or changes_requested pair.

    ``changes`` holds any of ``EDIT_FIELDS`` (tags and disease codes as lists or comma text,
    department as a name). Unchanged values are ignored; if nothing changed nothing happens.
    A changes_requested pair goes back to in_review in a new round.
    """
    if not has_role(editor, CURATOR):
        raise NotAllowed(_("Only curators and admins edit pairs."))
    data = _clean_changes(changes)
    check_version(pair, version)
    reason = edit_refusal(pair, editor)
    if reason:
        raise InvalidTransition(reason)

    before_labels = _label_snapshot(pair)
    changed_fields = [
        n for n in (*TEXT_FIELDS, "history") if n in data and data[n] != (getattr(pair, n) or ([] if n == "history" else ""))
    ]
    label_changes = {n: [before_labels[n], data[n]] for n in ("department", "tags", "disease_codes", "difficulty") if n in data}
    label_changes = {n: v for n, v in label_changes.items() if (sorted(v[0]) != sorted(v[1]) if n == "tags" else v[0] != v[1])}
    if not changed_fields and not label_changes:
        return pair

    with transaction.atomic():
        core.revision_ensure_initial(pair)
        fields: dict = {}
        for name in changed_fields:
            setattr(pair, name, data[name])
            fields[name] = data[name]
        if "disease_codes" in label_changes:
            pair.disease_codes = fields["disease_codes"] = data["disease_codes"]
        if "difficulty" in label_changes:
            pair.difficulty = fields["difficulty"] = data["difficulty"]
        if "department" in label_changes:
            pair.department = core.department_get_or_create(data["department"])
            fields["department"] = pair.department
        if changed_fields:
            fields.update(_rederive(pair))
        _full_clean(pair)
        old_status = pair.status
        resubmit = pair.status == S.CHANGES_REQUESTED
        if resubmit:
            fields.update(_submit_fields(pair, timezone.now()))
        try:
            with transaction.atomic():
                pair_conditional_update(pair=pair, version=int(version), **fields)
        except IntegrityError:
            raise _duplicate_error(pair) from None
        if "tags" in label_changes:
            pair.tags.set(core.tags_get_or_create(data["tags"]))
            if hasattr(pair, "_prefetched_objects_cache"):
                pair._prefetched_objects_cache.pop("tags", None)
        core.revision_record(pair=pair, editor=editor, note=note or _("edited"))
        audit_changes: dict = {"fields": changed_fields, "labels": label_changes}
        if resubmit:
            audit_changes["status"] = [old_status, pair.status]
        audit_record(
            actor=editor,
            action="qa_pair.edit",
            target=pair,
            summary=_("Edited %(fields)s") % {"fields": ", ".join([*changed_fields, *label_changes])},
            changes=audit_changes,
        )
        if resubmit:
            audit_record(
                actor=editor,
                action="qa_pair.submit",
                target=pair,
                summary=_("Edited after changes were requested; back in review (round %(round)s)") % {"round": pair.review_round},
                changes={"status": [old_status, pair.status], "review_round": pair.review_round},
            )
    return pair


def identifier_kinds(findings) -> dict[str, int]:
    """{kind: count} of identifier findings (stored dicts or ``Finding`` objects)."""
    kinds: dict[str, int] = {}
    for f in findings or ():
        kind = f.get("kind", "?") if isinstance(f, Mapping) else f.kind
        kinds[kind] = kinds.get(kind, 0) + 1
    return dict(sorted(kinds.items()))


def _mask_texts(objects, attribute: str) -> dict[str, int]:
    """Mask ``attribute`` of each object in place; returns the kinds masked. Saves the changed."""
    kinds: dict[str, int] = {}
    for obj in objects:
        text = getattr(obj, attribute) or ""
        found = find_identifiers(text)
        if found:
            for kind, n in identifier_kinds(found).items():
                kinds[kind] = kinds.get(kind, 0) + n
            setattr(obj, attribute, mask_identifiers(text, found))
            obj.save(update_fields=[attribute])
    return kinds


def _mask_pair(pair: QAPair, editor, *, note: str, bulk: bool = False) -> dict[str, int]:
    """Mask every stored copy of ``pair``'s identifiers (call inside ``transaction.atomic``
    after the version check): its text fields and history, every revision snapshot, the
    discussion comments, the review comments, and the pair's audit events (summaries and
    recorded changes). Records a revision and a ``qa_pair.mask`` audit event holding kinds and
    counts only. Returns the kinds masked in the pair's content."""
    kinds = identifier_kinds(pair.identifiers)
    core.revision_ensure_initial(pair)  # then masked below with the other revisions
    for name in TEXT_FIELDS:
        value = getattr(pair, name)
        if value:
            setattr(pair, name, mask_identifiers(value))
    pair.history = mask_history(pair.history)
    fields = {name: getattr(pair, name) for name in (*TEXT_FIELDS, "history")}
    fields.update(_rederive(pair))
    try:
        with transaction.atomic():
            pair_conditional_update(pair=pair, version=pair.version, **fields)
    except IntegrityError:
        raise _duplicate_error(pair) from None
    revisions = list(QAPairRevision.objects.filter(qa_pair=pair))
    for rev in revisions:
        rev.content = mask_content(rev.content or {})
    QAPairRevision.objects.bulk_update(revisions, ["content"])
    comment_kinds = _mask_texts(Comment.objects.filter(qa_pair=pair), "body")
    review_kinds = _mask_texts(Review.objects.filter(qa_pair=pair).exclude(comment=""), "comment")
    for kind, n in review_kinds.items():
        comment_kinds[kind] = comment_kinds.get(kind, 0) + n
    audit_scrub(target=pair, scrub=mask_identifiers)
    core.revision_record(pair=pair, editor=editor, note=note)
    n = sum(kinds.values())
    if bulk:
        summary = _("Masked %(n)s identifiers before freezing; earlier revisions, comments and history scrubbed") % {"n": n}
    else:
        summary = _("Masked %(n)s identifiers; earlier revisions, comments and history scrubbed") % {"n": n}
    audit_record(
        actor=editor,
        action="qa_pair.mask",
        target=pair,
        summary=summary,
        changes={"kinds": kinds, "comment_kinds": dict(sorted(comment_kinds.items())), "remaining": len(pair.identifiers)},
    )
    return kinds


def qa_pair_mask_identifiers(*, pair: QAPair, editor, version: int) -> QAPair:
    """Replace every identifier found in the pair by its placeholder, at any status (the
    status does not change: masking only removes identifiers).

    Every stored copy goes too (see ``_mask_pair``): earlier revisions, discussion and review
    comments, and the text of the pair's audit events; the new audit event holds kinds and
    counts, never the identifiers themselves.
    """
    if not has_role(editor, CURATOR):
        raise NotAllowed(_("Only curators and admins mask identifiers."))
    check_version(pair, version)
    reason = mask_refusal(pair, editor)
    if reason:
        raise InvalidTransition(reason)
    with transaction.atomic():
        _mask_pair(pair, editor, note=_("masked identifiers"))
    return pair


def qa_pairs_mask_identifiers(*, editor, pair_ids: Iterable[int]) -> list[int]:
    """Mask the identifiers of every flagged pair among ``pair_ids`` in one action (the
    freeze form's "mask all"): all or nothing, one audit event per pair. Pairs without a
    flag are left alone. Returns the ids masked."""
    if not has_role(editor, CURATOR):
        raise NotAllowed(_("Only curators and admins mask identifiers."))
    done = []
    with transaction.atomic():
        pairs = QAPair.objects.select_for_update().filter(pk__in=list(pair_ids), has_identifiers=True).order_by("pk")
        for pair in pairs:
            _mask_pair(pair, editor, note=_("masked identifiers before freezing"), bulk=True)
            done.append(pair.pk)
    return done


@dataclass
class BulkLabelResult:
    done: list[int] = field(default_factory=list)
    skipped: dict[int, str] = field(default_factory=dict)


def qa_pair_bulk_label(
    *,
    actor,
    versions: Mapping[int, int],
    department: str | None = None,
    add_tag: str | None = None,
    difficulty: str | None = None,
) -> BulkLabelResult:
    """Set the department / add a tag / set the difficulty of many pairs at once.

    ``versions`` maps pair id → the version the user saw; if any of them changed since,
    nothing is written (Conflict). Pairs that are not editable (in review, approved,
    rejected) are skipped and reported. The status of the others does not change.
    """
    if not has_role(actor, CURATOR):
        raise NotAllowed(_("Only curators and admins label pairs in bulk."))
    department = (department or "").strip() or None
    add_tag = (add_tag or "").strip()[:100] or None
    difficulty = difficulty_clean(difficulty) or None
    if not (department or add_tag or difficulty):
        raise InvalidInput(_("Choose a department, a tag or a difficulty to apply."))
    if not versions:
        raise InvalidInput(_("Select at least one pair."))
    result = BulkLabelResult()
    with transaction.atomic():
        pairs = {
            p.pk: p for p in QAPair.objects.filter(pk__in=list(versions)).select_related("department").prefetch_related("tags")
        }
        dept = core.department_get_or_create(department) if department else None
        tag = core.tags_get_or_create([add_tag])[0] if add_tag else None
        touched = []
        for pk in sorted(versions):
            pair = pairs.get(pk)
            if pair is None:
                result.skipped[pk] = _("No such pair.")
                continue
            check_version(pair, versions[pk])
            if pair.status not in EDITABLE:
                result.skipped[pk] = _("A pair that is %(status)s cannot be edited.") % {"status": pair.get_status_display()}
                continue
            core.revision_ensure_initial(pair)
            fields: dict = {}
            if dept is not None:
                fields["department"] = dept
            if difficulty:
                fields["difficulty"] = difficulty
            pair_conditional_update(pair=pair, version=pair.version, **fields)
            if tag is not None:
                pair.tags.add(tag)
                pair._prefetched_objects_cache.pop("tags", None)
            core.revision_record(pair=pair, editor=actor, note=_("bulk label"))
            touched.append(pair)
            result.done.append(pk)
        if touched:
            audit_record_many(
                actor=actor,
                action="qa_pair.bulk_label",
                targets=touched,
                summary=_("Bulk label on %(n)s pairs") % {"n": len(touched)},
                changes={"department": department, "add_tag": add_tag, "difficulty": difficulty},
            )
    return result
