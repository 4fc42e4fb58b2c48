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

from curation.lib.identifiers import mask_identifiers
from curation.models import QAPair, QAPairRevision
from curation.services import core
from curation.services.review import (
    EDITABLE,
    _submit_fields,
    check_version,
    edit_refusal,
    mask_refusal,
    pair_conditional_update,
)
from medportal.audit import audit_record, audit_record_many
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
            summary=mask_identifiers(pair.instruction)[:200],
            changes={"status": [None, pair.status], "near_duplicate_of": pair.near_duplicate_of_id},
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


def _mask_history(history) -> list:
    out = []
    for turn in history or ():
        if isinstance(turn, (list, tuple)):
            out.append([mask_identifiers(t) if isinstance(t, str) else t for t in turn])
        else:
            out.append(mask_identifiers(turn) if isinstance(turn, str) else turn)
    return out


def _mask_content(content: Mapping) -> dict:
    masked = dict(content)
    for name in TEXT_FIELDS:
        if isinstance(masked.get(name), str) and masked[name]:
            masked[name] = mask_identifiers(masked[name])
    if masked.get("history"):
        masked["history"] = _mask_history(masked["history"])
    return masked


def qa_pair_mask_identifiers(*, pair: QAPair, editor, version: int) -> QAPair:
    """Replace every identifier found in the pair by its placeholder.

    Records a revision and an audit event (with counts per kind, never the identifiers
    themselves) and scrubs the same identifiers from the pair's earlier revisions, so the
    history does not keep what was masked. The status does not change.
    """
    if not has_role(editor, CURATOR):
        raise NotAllowed(_("Only curators and admins mask identifiers."))
    check_version(pair, version)
    reason = mask_refusal(pair, editor)
    if reason:
        raise InvalidTransition(reason)
    kinds: dict[str, int] = {}
    for f in pair.identifiers or ():
        kinds[f.get("kind", "?")] = kinds.get(f.get("kind", "?"), 0) + 1

    with transaction.atomic():
        core.revision_ensure_initial(pair)  # then masked below with the other revisions
        for name in TEXT_FIELDS:
            value = getattr(pair, name)
            if value:
                setattr(pair, name, mask_identifiers(value))
        pair.history = _mask_history(pair.history)
        fields = {name: getattr(pair, name) for name in (*TEXT_FIELDS, "history")}
        fields.update(_rederive(pair))
        try:
            with transaction.atomic():
                pair_conditional_update(pair=pair, version=int(version), **fields)
        except IntegrityError:
            raise _duplicate_error(pair) from None
        revisions = list(QAPairRevision.objects.filter(qa_pair=pair))
        for rev in revisions:
            rev.content = _mask_content(rev.content or {})
        QAPairRevision.objects.bulk_update(revisions, ["content"])
        core.revision_record(pair=pair, editor=editor, note=_("masked identifiers"))
        audit_record(
            actor=editor,
            action="qa_pair.mask",
            target=pair,
            summary=_("Masked %(n)s identifiers; earlier revisions scrubbed") % {"n": sum(kinds.values())},
            changes={"kinds": kinds, "remaining": len(pair.identifiers)},
        )
    return pair


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
