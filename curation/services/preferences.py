"""Preference pairs: create (from chat judgements, evaluation ratings or files), review, mask,
freeze into versions, export.

The review follows QA pairs' rules and words (``curation.services.review``): draft ──submit──►
in review ──approve × quorum──► approved, ──reject (with a comment)──► rejected; an admin
reopens a decided pair to draft. Nobody confirms a pair they authored (a pair built from
chat is authored by the clinician who judged). Every write carries the optimistic-lock
``version`` the user loaded. Derived fields (content hash, prompt key, SimHash, identifier
findings) are computed in one place, ``preference_derive``.

Freezing (``preference_version_freeze``) splits approved pairs the way dataset versions are
split (``curation.services.versions``: groups that must share a split, stratified by
department, seeded), with pairs sharing a prompt in one group, and keeps every prompt of an
evaluation test split out of training: a pair whose prompt is in the test split of any
dataset version or preference version goes to this version's test split (``held_out``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from curation.importers.base import ImportFileError, RowIssue
from curation.lib import fingerprint, identifiers
from curation.models import DatasetItem
from curation.models_pref import PreferenceImport, PreferenceItem, PreferencePair, PreferenceReview, PreferenceVersion
from curation.services import core
from curation.services import review as review_rules
from curation.services.core import department_get_or_create, history_text
from curation.services.versions import (
    DEFAULT_SPLIT,
    Member,
    _empty_split_error,
    _seed_clean,
    assign_splits,
    cluster_members,
    export_recorded,
    item_digest,
    split_ratios_clean,
    zip_export,
)
from medportal.audit import audit_record
from medportal.errors import Conflict, InvalidInput, InvalidTransition, NotAllowed
from medportal.roles import ADMIN, CLINICIAN, CURATOR, has_role

S = PreferencePair.Status
D = PreferenceReview.Decision
K = PreferencePair.SourceKind
SPLITS = ("train", "validation", "test")
HASH_FORMAT = "medportal-preference-version/1"
MAX_TEXT_CHARS = 100_000
COMMENT_MAX_CHARS = 10_000
SCANNED = ("system", "prompt", "chosen", "rejected")


# --------------------------------------------------------------------------- derived fields


def prompt_key(*, prompt: str, history=(), system: str = "") -> str:
    """SHA-256 of the normalised conversation a model answers (history turns, then the
    question; the system prompt is left out so that a reworded system prompt does not hide a
    leaked question). The same key for a QA pair's instruction(+input) and a preference
    pair's prompt: the leak check compares SFT, preference and evaluation data with it."""
    parts = []
    for turn in history or ():
        if isinstance(turn, (list, tuple)):
            parts.append("\x1f".join(fingerprint.normalize(str(t or "")) for t in turn))
        else:
            parts.append(fingerprint.normalize(str(turn)))
    parts.append(fingerprint.normalize(prompt or ""))
    return hashlib.sha256("\x1e".join(parts).encode("utf-8")).hexdigest()


def dataset_item_prompt_key(content: dict) -> str:
    """``prompt_key`` of a frozen QA pair (instruction and input joined as LLaMA-Factory does)."""
    prompt = "\n".join(p for p in (content.get("instruction", ""), content.get("input", "")) if p)
    return prompt_key(prompt=prompt, history=content.get("history") or ())


def preference_derive(*, prompt: str, chosen: str, rejected: str, system: str = "", history=()) -> dict:
    key = prompt_key(prompt=prompt, history=history, system=system)
    joined = "\x1f".join((key, fingerprint.normalize(system), fingerprint.normalize(chosen), fingerprint.normalize(rejected)))
    found = []
    for name, text in (("system", system), ("prompt", prompt), ("chosen", chosen), ("rejected", rejected), ("history", history_text(history))):
        if text:
            found.extend(
                {"field": name, "kind": f.kind, "start": f.start, "end": f.end, "text": f.text} for f in identifiers.find_identifiers(text)
            )
    return {
        "content_hash": hashlib.sha256(joined.encode("utf-8")).hexdigest(),
        "prompt_key": key,
        "simhash": fingerprint.record_simhash(prompt, chosen, rejected),
        "identifiers": found,
        "has_identifiers": bool(found),
    }


def pair_apply_derived(pair: PreferencePair) -> None:
    for name, value in preference_derive(
        prompt=pair.prompt, chosen=pair.chosen, rejected=pair.rejected, system=pair.system, history=pair.history
    ).items():
        setattr(pair, name, value)


def near_duplicate_index(exclude_pk: int | None = None) -> fingerprint.NearDuplicateIndex:
    return core.near_duplicate_index(exclude_pk, model=PreferencePair)


def _near_duplicate(pair: PreferencePair, index) -> int | None:
    if pair.simhash is None:
        return None
    text = f"{pair.prompt}\n{pair.chosen}\n{pair.rejected}"
    return index.query(pair.simhash, max_distance=fingerprint.near_duplicate_distance(text))


def pair_content(pair: PreferencePair) -> dict:
    """A pair's content and provenance as frozen into a version (and exported)."""
    return {
        "system": pair.system,
        "history": [list(t) for t in pair.history or ()],
        "prompt": pair.prompt,
        "chosen": pair.chosen,
        "rejected": pair.rejected,
        "department": pair.department.name if pair.department_id else "",
        "source_kind": pair.source_kind,
        "chosen_model": pair.chosen_model,
        "rejected_model": pair.rejected_model,
    }


def mask_preference_content(content: dict) -> dict:
    """A copy of a frozen content with every identifier masked (the content itself when none)."""
    masked = dict(content)
    for name in SCANNED:
        if isinstance(masked.get(name), str):
            masked[name] = identifiers.mask_identifiers(masked[name])
    if masked.get("history"):
        masked["history"] = identifiers.mask_history(masked["history"])
    return masked if masked != content else content


# --------------------------------------------------------------------------- create


class DuplicatePreference(InvalidInput):
    pass


def _text(value, name: str, label) -> str:
    text = str(value or "").replace("\r\n", "\n").strip()
    if not text:
        raise InvalidInput(_("The %(field)s is empty.") % {"field": label}, details={name: [_("This field is required.")]})
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidInput(_("The %(field)s is longer than %(n)s characters.") % {"field": label, "n": MAX_TEXT_CHARS})
    return text


def preference_pair_create(
    *,
    author,
    prompt: str,
    chosen: str,
    rejected: str,
    source_kind: str,
    system: str = "",
    history: Sequence = (),
    source_ref: str = "",
    judged_by=None,
    chosen_model: str = "",
    rejected_model: str = "",
    department: str = "",
    extra: dict | None = None,
    submit: bool = False,
    import_batch: PreferenceImport | None = None,
    source_row: int | None = None,
    index=None,
) -> PreferencePair:
    """One new preference pair (draft; in review with ``submit``), flagged for identifiers and
    near-duplicates. Refuses an empty prompt or answer, two answers that are the same text and
    an exact duplicate of a stored pair (``DuplicatePreference``, ``details["duplicate_of"]``)."""
    if source_kind not in K.values:
        raise InvalidInput(_("Unknown preference source %(kind)r.") % {"kind": source_kind})
    prompt = _text(prompt, "prompt", _("question"))
    chosen = _text(chosen, "chosen", _("chosen answer"))
    rejected = _text(rejected, "rejected", _("rejected answer"))
    if " ".join(chosen.split()) == " ".join(rejected.split()):
        raise InvalidInput(_("The chosen and the rejected answers are the same text: there is no preference to learn."))
    history = [[str(q or ""), str(a or "")] for q, a in (history or ())]
    pair = PreferencePair(
        author=author,
        system=str(system or "").strip(),
        history=history,
        prompt=prompt,
        chosen=chosen,
        rejected=rejected,
        source_kind=source_kind,
        source_ref=str(source_ref or "")[:255],
        judged_by=judged_by,
        chosen_model=str(chosen_model or "")[:200],
        rejected_model=str(rejected_model or "")[:200],
        department=department_get_or_create(department) if department else None,
        extra=extra or {},
        import_batch=import_batch,
        source_row=source_row,
    )
    pair_apply_derived(pair)
    existing = PreferencePair.objects.filter(content_hash=pair.content_hash).values_list("pk", flat=True).first()
    if existing:
        raise DuplicatePreference(
            _("The same preference pair is already stored as #%(pk)s.") % {"pk": existing}, details={"duplicate_of": existing}
        )
    pair.near_duplicate_of_id = _near_duplicate(pair, index if index is not None else near_duplicate_index())
    if submit:
        pair.status, pair.review_round, pair.submitted_at = S.IN_REVIEW, 1, timezone.now()
    try:
        with transaction.atomic():
            pair.save()
    except IntegrityError:
        raise DuplicatePreference(_("The same preference pair is already stored."), details={"duplicate_of": None}) from None
    if index is not None and pair.simhash is not None:
        index.add(pair.pk, pair.simhash)
    audit_record(
        actor=author,
        action="preference_pair.create",
        target=pair,
        summary=f"Preference pair from {source_kind}" + (f" ({pair.source_ref})" if pair.source_ref else ""),
        changes={"source_kind": source_kind, "status": pair.status, "identifiers": len(pair.identifiers), "near_duplicate_of": pair.near_duplicate_of_id},
    )
    return pair


# --------------------------------------------------------------------------- review


def _conflict(pair: PreferencePair) -> Conflict:
    return Conflict(
        _("This preference pair was changed after you opened it; reload to see the change."), details={"pair": pair.pk}
    )


def _check_version(pair: PreferencePair, version) -> int:
    return review_rules.check_version(pair, version, conflict=_conflict)


def _update(pair: PreferencePair, version: int, **fields) -> None:
    review_rules.pair_conditional_update(pair=pair, version=version, conflict=_conflict, **fields)


# The rules are the QA pairs' (same statuses, roles and fields); only the reviewer message names preference pairs.
submit_refusal = review_rules.submit_refusal
reopen_refusal = review_rules.reopen_refusal
mask_refusal = review_rules.mask_refusal
identifier_warning = review_rules.identifier_warning


def review_refusal(pair: PreferencePair, user) -> str | None:
    if not has_role(user, CLINICIAN):
        return _("Only clinicians and admins review preference pairs.")
    return review_rules.review_refusal(pair, user)


def preference_pair_submit(*, pair: PreferencePair, actor, version) -> PreferencePair:
    reason = submit_refusal(pair, actor)
    if reason and not (has_role(actor, CURATOR) or pair.author_id == actor.pk):
        raise NotAllowed(reason)
    version = _check_version(pair, version)
    if reason:
        raise InvalidTransition(reason)
    old = pair.status
    with transaction.atomic():
        _update(pair, version, status=S.IN_REVIEW, review_round=pair.review_round + 1, submitted_at=timezone.now(), decided_at=None)
        audit_record(
            actor=actor,
            action="preference_pair.submit",
            target=pair,
            summary=_("Submitted for review (round %(round)s)") % {"round": pair.review_round},
            changes={"status": [old, pair.status], "review_round": pair.review_round},
        )
    return pair


def preference_pair_review(
    *, pair: PreferencePair, reviewer, decision: str, comment: str = "", version, confirm_identifiers: bool = False
) -> PreferenceReview:
    """Confirm (approve) or discard (reject, with a comment) a pair in review; approved when
    the approvals of the round reach ``MEDPORTAL_REVIEW_QUORUM``."""
    if not has_role(reviewer, CLINICIAN):
        raise NotAllowed(_("Only clinicians and admins review preference pairs."))
    if pair.author_id == reviewer.pk:
        raise NotAllowed(_("Nobody reviews their own pair."))
    if decision not in D.values:
        raise InvalidInput(_("Unknown decision %(decision)r.") % {"decision": decision}, details={"decision": [_("Choose approve or reject.")]})
    comment = (comment or "").strip()
    if decision == D.REJECT and not comment:
        raise InvalidInput(_("Say why: a comment is required to reject."), details={"comment": [_("This field is required.")]})
    if len(comment) > COMMENT_MAX_CHARS:
        raise InvalidInput(_("The comment is too long."), details={"comment": [_("At most %(n)s characters.") % {"n": COMMENT_MAX_CHARS}]})
    version = _check_version(pair, version)
    reason = review_refusal(pair, reviewer)
    if reason:
        raise InvalidTransition(reason)
    warning = review_rules.approval_identifier_check(pair, approving=decision == D.APPROVE, confirmed=confirm_identifiers)
    with transaction.atomic():
        _update(pair, version)
        try:
            with transaction.atomic():
                review = PreferenceReview.objects.create(pair=pair, reviewer=reviewer, decision=decision, comment=comment, round=pair.review_round)
        except IntegrityError:
            raise InvalidTransition(_("You have already reviewed this pair in round %(round)s.") % {"round": pair.review_round}) from None
        old, new = pair.status, pair.status
        if decision == D.APPROVE:
            approvals = PreferenceReview.objects.filter(pair=pair, round=pair.review_round, decision=D.APPROVE).count()
            quorum = max(1, int(settings.MEDPORTAL_REVIEW_QUORUM))
            if approvals >= quorum:
                new = S.APPROVED
            summary = _("Approved (%(n)s of %(q)s approvals)") % {"n": approvals, "q": quorum}
        else:
            new, summary = S.REJECTED, _("Rejected")
        if new != old:
            now = timezone.now()
            PreferencePair.objects.filter(pk=pair.pk).update(status=new, decided_at=now)
            pair.status, pair.decided_at = new, now
        audit_record(
            actor=reviewer,
            action=f"preference_pair.{decision}",
            target=pair,
            summary=summary,
            changes={"status": [old, new], "review": review.pk, "review_round": pair.review_round, **({"identifiers_confirmed": len(pair.identifiers)} if warning else {})},
        )
    return review


def preference_pair_reopen(*, pair: PreferencePair, actor, reason: str, version) -> PreferencePair:
    if not has_role(actor, ADMIN):
        raise NotAllowed(_("Only admins reopen decided pairs."))
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput(_("Give a reason for reopening the pair."), details={"reason": [_("This field is required.")]})
    version = _check_version(pair, version)
    refusal = reopen_refusal(pair, actor)
    if refusal:
        raise InvalidTransition(refusal)
    old = pair.status
    with transaction.atomic():
        _update(pair, version, status=S.DRAFT, submitted_at=None, decided_at=None)
        audit_record(
            actor=actor,
            action="preference_pair.reopen",
            target=pair,
            summary=_("Reopened: %(reason)s") % {"reason": identifiers.mask_identifiers(reason)},
            changes={"status": [old, pair.status]},
        )
    return pair


def preference_pair_mask_identifiers(*, pair: PreferencePair, actor, version) -> PreferencePair:
    """Replace every identifier of the pair by its placeholder; the status stays."""
    refusal = mask_refusal(pair, actor)
    if refusal and not has_role(actor, CURATOR):
        raise NotAllowed(refusal)
    version = _check_version(pair, version)
    if refusal:
        raise InvalidTransition(refusal)
    masked = mask_preference_content(
        {"system": pair.system, "prompt": pair.prompt, "chosen": pair.chosen, "rejected": pair.rejected, "history": pair.history}
    )
    derived = preference_derive(**masked)
    fields = {**{k: masked[k] for k in ("system", "prompt", "chosen", "rejected", "history")}, **derived}
    if PreferencePair.objects.filter(content_hash=derived["content_hash"]).exclude(pk=pair.pk).exists():
        raise InvalidTransition(_("Masked, this pair would be the same as another stored pair; reject one of them instead."))
    with transaction.atomic():
        count = len(pair.identifiers or ())
        _update(pair, version, **fields)
        audit_record(
            actor=actor, action="preference_pair.mask", target=pair, summary=_("Masked %(n)s identifiers") % {"n": count}, changes={"identifiers": count}
        )
    return pair


# --------------------------------------------------------------------------- import


def preference_import(*, user, path, filename: str = "", format: str | None = None, submit: bool = False) -> PreferenceImport:
    """Import a LLaMA-Factory pairwise or TRL preference file (JSON, JSON Lines, Parquet).

    All or nothing for a file-level problem (``InvalidInput``, nothing stored); otherwise every
    row is a pair, a duplicate, a skipped row or a row error, counted and listed on the returned
    ``PreferenceImport`` in the shape of QA imports' row report (``ImportBatch.issues``)."""
    from curation.importers.preference import read_preference_file

    if not has_role(user, CURATOR):
        raise NotAllowed(_("Only curators and admins import files."))
    path = Path(path)
    filename = (filename or path.name)[:255]
    try:
        fmt, records, total = read_preference_file(path, format=format or None)
    except ImportFileError as exc:
        raise InvalidInput(_("Nothing was imported: %(reason)s") % {"reason": str(exc)}) from None
    now = timezone.now()
    with transaction.atomic():
        batch = PreferenceImport.objects.create(created_by=user, filename=filename, format=fmt, rows_total=total)
        issues: list[dict] = []
        counts = {"created": 0, "duplicate": 0, "near": 0, "skipped": 0, "error": 0, "identifiers": 0}
        seen: dict[str, int] = {}
        index = near_duplicate_index()
        for record in records:
            if isinstance(record, RowIssue):
                counts[record.kind] += 1
                issues.append({"row": record.row, "file": record.file, "kind": record.kind, "message": record.message})
                continue
            derived = preference_derive(
                prompt=record.prompt, chosen=record.chosen, rejected=record.rejected, system=record.system, history=record.history
            )
            if derived["content_hash"] in seen:
                counts["duplicate"] += 1
                issues.append(
                    {"row": record.row, "file": "", "kind": "duplicate", "message": _("Same pair as row %(row)s of this file.") % {"row": seen[derived["content_hash"]]}, "duplicate_of_row": seen[derived["content_hash"]]}
                )
                continue
            seen[derived["content_hash"]] = record.row
            try:
                pair = preference_pair_create(
                    author=user,
                    prompt=record.prompt,
                    chosen=record.chosen,
                    rejected=record.rejected,
                    system=record.system,
                    history=record.history,
                    source_kind=K.IMPORT,
                    source_ref=f"{filename}:{record.row}",
                    chosen_model=str(record.extra.get("chosen_model", "")),
                    rejected_model=str(record.extra.get("rejected_model", "")),
                    department=str(record.extra.get("department", "")),
                    extra=record.extra,
                    submit=submit,
                    import_batch=batch,
                    source_row=record.row,
                    index=index,
                )
            except DuplicatePreference as exc:
                counts["duplicate"] += 1
                issues.append({"row": record.row, "file": "", "kind": "duplicate", "message": exc.message, "duplicate_of": (exc.details or {}).get("duplicate_of")})
                continue
            except InvalidInput as exc:
                counts["error"] += 1
                issues.append({"row": record.row, "file": "", "kind": "error", "message": exc.message})
                continue
            counts["created"] += 1
            counts["near"] += pair.near_duplicate_of_id is not None
            counts["identifiers"] += pair.has_identifiers
        PreferenceImport.objects.filter(pk=batch.pk).update(
            created_count=counts["created"],
            duplicate_count=counts["duplicate"],
            near_duplicate_count=counts["near"],
            skipped_count=counts["skipped"],
            error_count=counts["error"],
            identifier_count=counts["identifiers"],
            issues=issues,
        )
        audit_record(
            actor=user,
            action="preference_pair.import",
            target=batch,
            summary=f"Imported {counts['created']} preference pairs from {filename}",
            changes={**counts, "format": fmt, "started": now.isoformat()},
        )
    batch.refresh_from_db()
    return batch


# --------------------------------------------------------------------------- versions


def evaluation_test_prompt_keys(*, exclude_version: PreferenceVersion | None = None) -> dict[str, str]:
    """prompt key → where it is tested ("dataset version X" / "preference version Y"), over
    the test split of every dataset version (what evaluation runs read) and preference version."""
    keys: dict[str, str] = {}
    rows = DatasetItem.objects.filter(split=DatasetItem.Split.TEST).select_related("version").only("content", "version__name")
    for item in rows.iterator(chunk_size=2000):
        keys.setdefault(dataset_item_prompt_key(item.content), f"dataset version {item.version.name}")
    prefs = PreferenceItem.objects.filter(split="test")
    if exclude_version is not None:
        prefs = prefs.exclude(version=exclude_version)
    for key, name in prefs.values_list("prompt_key", "version__name").iterator(chunk_size=5000):
        keys.setdefault(key, f"preference version {name}")
    return keys


def evaluated_test_prompt_keys() -> dict[str, str]:
    """prompt key → where, over the test splits that evaluations actually read: the test split of
    every dataset version an evaluation run used (``EvalRun.dataset_version``, reached through its
    reverse relation: curation imports no training code) and of every preference version. What a
    new SFT freeze keeps out of training (re-freezing with another seed before any evaluation
    still reshuffles freely)."""
    keys: dict[str, str] = {}
    rows = (
        DatasetItem.objects.filter(split=DatasetItem.Split.TEST, version__eval_runs__split=DatasetItem.Split.TEST)
        .distinct()
        .select_related("version")
        .only("content", "version__name")
    )
    for item in rows.iterator(chunk_size=2000):
        keys.setdefault(dataset_item_prompt_key(item.content), f"dataset version {item.version.name}")
    for key, name in PreferenceItem.objects.filter(split="test").values_list("prompt_key", "version__name").iterator(chunk_size=5000):
        keys.setdefault(key, f"preference version {name}")
    return keys


def training_leaks() -> list[dict]:
    """Every training or validation item, of any dataset or preference version, whose prompt
    is in the test split of a version: [{"kind", "version", "item", "tested_in"}]."""
    tested = evaluation_test_prompt_keys()
    found = []
    for item in DatasetItem.objects.exclude(split="test").select_related("version").iterator(chunk_size=2000):
        key = dataset_item_prompt_key(item.content)
        if key in tested and not DatasetItem.objects.filter(version=item.version, split="test", qa_pair=item.qa_pair).exists():
            found.append({"kind": "dataset", "version": item.version.name, "item": item.pk, "tested_in": tested[key]})
    for item in PreferenceItem.objects.exclude(split="test").select_related("version").iterator(chunk_size=2000):
        if item.prompt_key in tested:
            found.append({"kind": "preference", "version": item.version.name, "item": item.pk, "tested_in": tested[item.prompt_key]})
    return found


def preference_version_hash(assignments: Iterable[tuple[str, str]]) -> str:
    h = hashlib.sha256(HASH_FORMAT.encode("ascii") + b"\n")
    for digest, split in sorted(assignments):
        h.update(f"{digest} {split}\n".encode("ascii"))
    return h.hexdigest()


def preference_version_freeze(
    *, user, name: str, description: str = "", split: Sequence[float] | str = DEFAULT_SPLIT, seed: int = 42
) -> PreferenceVersion:
    """Freeze every approved preference pair into a new, immutable, content-hashed version."""
    if not has_role(user, CURATOR):
        raise NotAllowed(_("Only curators and admins can freeze dataset versions."))
    name = " ".join(str(name or "").split())
    if not name:
        raise InvalidInput(_("Give the dataset version a name."))
    if len(name) > 100:
        raise InvalidInput(_("The name is longer than %(n)s characters.") % {"n": 100})
    if PreferenceVersion.objects.filter(name=name).exists():
        raise InvalidInput(
            _("A dataset version named “%(name)s” already exists; versions are permanent, so pick another name.") % {"name": name}
        )
    ratios = split_ratios_clean(split)
    seed = _seed_clean(seed)
    with transaction.atomic():
        selection = PreferencePair.objects.filter(status=S.APPROVED).select_related("department").order_by("pk")
        if not selection.exists():
            raise InvalidInput(_("No approved preference pair to freeze; review pairs first."))
        flagged = list(selection.filter(has_identifiers=True).values_list("pk", flat=True))
        if flagged:
            raise InvalidInput(
                _("Approved preference pairs hold unmasked personal identifiers (%(ids)s); mask them first.")
                % {"ids": ", ".join(f"#{pk}" for pk in flagged[:50])},
                details={"identifier_pairs": flagged},
            )
        members, keys = [], {}
        for pair in selection.iterator(chunk_size=2000):
            content = pair_content(pair)
            # content_hash = prompt key: pairs sharing a prompt always share a split.
            members.append(Member(pk=pair.pk, digest=item_digest(content), stratum=content["department"], content_hash=pair.prompt_key, simhash=pair.simhash, content=content))
            keys[pair.pk] = pair.prompt_key
        edges = list(PreferencePair.objects.exclude(near_duplicate_of=None).values_list("pk", "near_duplicate_of_id"))
        groups = cluster_members(members, near_duplicate_edges=edges)
        tested = evaluation_test_prompt_keys()
        # Split as usual (the same approved pairs and seed give the same version), then move every
        # group holding a tested prompt to test.
        assignment = assign_splits(groups, ratios, seed)
        held_groups = [g for g in groups if any(keys[m.pk] in tested for m in g)]
        held_out = []
        for group in held_groups:
            for m in group:
                assignment[m.pk] = "test"
                if keys[m.pk] in tested:
                    held_out.append({"pair": m.pk, "tested_in": tested[keys[m.pk]]})
        by_split = {s: [m for m in members if assignment[m.pk] == s] for s in SPLITS}
        counts = {s: len(by_split[s]) for s in SPLITS}
        error = _empty_split_error(ratios, counts, members)
        if error is not None:
            raise error
        version = PreferenceVersion(
            name=name,
            description=str(description or "").strip(),
            created_by=user,
            split_ratios=list(ratios),
            seed=seed,
            content_hash=preference_version_hash((m.digest, assignment[m.pk]) for m in members),
            counts=counts,
            held_out=sorted(held_out, key=lambda h: h["pair"]),
        )
        try:
            with transaction.atomic():
                version.save()
        except IntegrityError:
            raise InvalidInput(
                _("A dataset version named “%(name)s” already exists; versions are permanent, so pick another name.") % {"name": name}
            ) from None
        PreferenceItem.objects.bulk_create(
            [
                PreferenceItem(version=version, pair_id=m.pk, split=s, position=i, prompt_key=keys[m.pk], content=m.content)
                for s in SPLITS
                for i, m in enumerate(sorted(by_split[s], key=lambda m: (m.digest, m.pk)))
            ],
            batch_size=1000,
        )
        audit_record(
            actor=user,
            action="preference_version.freeze",
            target=version,
            summary=f"Froze preference version {name}: {counts['train']}/{counts['validation']}/{counts['test']}",
            changes={"content_hash": version.content_hash, "counts": counts, "seed": seed, "split_ratios": list(ratios), "held_out": len(held_out)},
        )
    return version


def preference_version_export(*, version: PreferenceVersion, format: str, out_dir: Path, user=None) -> list[Path]:
    """Write ``version`` as ``llamafactory`` (pairwise), ``trl`` (JSONL) or ``hf`` (Parquet)."""
    from curation.exports.preference import PREFERENCE_EXPORTERS

    if user is not None and not has_role(user, CURATOR, CLINICIAN):
        raise NotAllowed(_("Your role does not allow exporting dataset versions."))
    if format not in PREFERENCE_EXPORTERS:
        raise InvalidInput(
            _("Unknown export format “%(format)s”; choose one of %(choices)s.") % {"format": format, "choices": ", ".join(PREFERENCE_EXPORTERS)}
        )
    return export_recorded(
        PREFERENCE_EXPORTERS[format], version=version, format=format, out_dir=out_dir, user=user,
        action="preference_version.export", summary=f"Exported preference version {version.name} as {format}",
    )


def preference_version_export_zip(*, version: PreferenceVersion, format: str, user=None):
    archive = zip_export(
        lambda out_dir: preference_version_export(version=version, format=format, out_dir=out_dir, user=user),
        prefix="medportal-pref-export-",
    )
    from curation.exports.preference import file_stem

    return archive, f"{file_stem(version)}-{format}.zip"


def dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False)
