"""The review workflow of a QA pair: a small state machine, every step atomic and audited.

```
draft ──submit──► in_review ──approve × quorum──► approved ──reopen (admin)──► draft
  ▲                  │  ├──reject──────────────► rejected ──reopen (admin)──► draft
  │                  │  └──request changes─────► changes_requested ──edit / submit──► in_review (round + 1)
```

* submit: a curator or admin, or the pair's author; from draft or changes_requested. Each
  submission opens a new review round.
* review: a clinician or admin who is not the author, once per round. Reject and request
  changes need a comment and decide at once; the pair is approved when the approvals of the
  current round reach ``settings.MEDPORTAL_REVIEW_QUORUM`` (read at call time).
* reopen: an admin, with a reason, sends an approved or rejected pair back to draft.

Optimistic locking: every write carries the ``version`` the user loaded. The change is a
conditional ``UPDATE … WHERE version = <expected>`` that also bumps the version; if no row
matched, someone else changed the pair first and ``Conflict`` names who and when. A review
bumps the version too, so two reviewers deciding at once are serialised by the row lock and
the later one is told to reload instead of both counting against a stale tally.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext, pgettext

from curation.lib.identifiers import find_identifiers, mask_identifiers
from curation.models import Comment, QAPair, Review
from medportal.audit import audit_events_for, audit_record
from medportal.errors import Conflict, InvalidInput, InvalidTransition, NotAllowed
from medportal.roles import ADMIN, ALL_ROLES, CLINICIAN, CURATOR, has_role

S = QAPair.Status
D = Review.Decision

EDITABLE = frozenset({S.DRAFT, S.CHANGES_REQUESTED})
SUBMITTABLE = frozenset({S.DRAFT, S.CHANGES_REQUESTED})
REOPENABLE = frozenset({S.APPROVED, S.REJECTED})
COMMENT_MAX_CHARS = 10_000


def review_quorum() -> int:
    return max(1, int(settings.MEDPORTAL_REVIEW_QUORUM))


# --- optimistic lock ------------------------------------------------------------------------


def conflict_error(pair_pk: int) -> Conflict:
    """The Conflict to raise when ``pair_pk`` changed under the user: says who and when."""
    from curation.models import QAPair as _QAPair

    event = audit_events_for(_QAPair(pk=pair_pk)).first()
    if event is not None:
        who = event.actor.get_username() if event.actor else _("someone")
        when = timezone.localtime(event.created_at)
    else:
        row = _QAPair.objects.filter(pk=pair_pk).values_list("updated_at", flat=True).first()
        who, when = _("someone"), timezone.localtime(row) if row else timezone.localtime()
    return Conflict(
        _("This pair was changed by %(user)s at %(time)s after you opened it; reload to see the change.")
        % {"user": who, "time": when.strftime("%Y-%m-%d %H:%M:%S")},
        details={"pair": pair_pk, "changed_by": who, "changed_at": when.isoformat()},
    )


def _qa_pair_conflict(pair) -> Conflict:
    return conflict_error(pair.pk)


def check_version(pair, version, *, conflict=_qa_pair_conflict) -> int:
    """Raise Conflict unless ``version`` is the version of the pair as just loaded; return it as an int.

    ``pair`` is any reviewed pair with a ``version`` column (a QA pair or a preference pair);
    ``conflict(pair)`` builds the Conflict to raise (by default the QA pair's, naming who changed it).
    """
    try:
        expected = int(version)
    except (TypeError, ValueError):
        raise InvalidInput(
            _("The form is missing the pair's version; reload the page."), details={"version": [_("Required.")]}
        ) from None
    if expected != pair.version:
        raise conflict(pair)
    return expected


def pair_conditional_update(*, pair, version: int, conflict=_qa_pair_conflict, **fields) -> None:
    """Apply ``fields`` and bump the version only if the row still has ``version``.

    Call inside ``transaction.atomic``. Updates ``pair`` in memory on success. Works for any
    model with ``version`` and ``updated_at`` columns; ``conflict`` as for ``check_version``.
    """
    now = timezone.now()
    changed = type(pair)._default_manager.filter(pk=pair.pk, version=version).update(
        version=F("version") + 1, updated_at=now, **fields
    )
    if changed == 0:
        raise conflict(pair)
    for name, value in fields.items():
        setattr(pair, name, value)
    pair.version = version + 1
    pair.updated_at = now


# --- rules (also used by the pages to decide which buttons to show) --------------------------
# QA pairs and preference pairs share the review workflow (PreferencePair.Status is QAPair.Status,
# both have author, review_round, has_identifiers and a ``reviews`` relation): these rules serve both.


def submit_refusal(pair: QAPair, user) -> str | None:
    """Why ``user`` may not submit ``pair`` now, or None."""
    if not (has_role(user, CURATOR) or (pair.author_id == user.pk and has_role(user, *ALL_ROLES))):
        return _("Only curators, admins and the pair's author submit pairs for review.")
    if pair.status not in SUBMITTABLE:
        return _("Only draft pairs and pairs with changes requested can be submitted; this one is %(status)s.") % {
            "status": pair.get_status_display()
        }
    return None


def review_refusal(pair: QAPair, user) -> str | None:
    """Why ``user`` may not review ``pair`` now, or None (one query for the round check)."""
    if not has_role(user, CLINICIAN):
        return _("Only clinicians and admins review pairs.")
    if pair.author_id == user.pk:
        return _("Nobody reviews their own pair.")
    if pair.status != S.IN_REVIEW:
        return _("This pair is not in review; it is %(status)s.") % {"status": pair.get_status_display()}
    if pair.reviews.filter(reviewer=user, round=pair.review_round).exists():
        return _("You have already reviewed this pair in round %(round)s.") % {"round": pair.review_round}
    return None


def edit_refusal(pair: QAPair, user) -> str | None:
    if not has_role(user, CURATOR):
        return _("Only curators and admins edit pairs.")
    if pair.status not in EDITABLE:
        return _("A pair that is %(status)s cannot be edited.") % {"status": pair.get_status_display()}
    return None


def mask_refusal(pair: QAPair, user) -> str | None:
    """Masking is allowed at every status (it only removes identifiers; the status stays)."""
    if not has_role(user, CURATOR):
        return _("Only curators and admins mask identifiers.")
    if not pair.has_identifiers:
        return _("This pair has no identifiers to mask.")
    return None


def reopen_refusal(pair: QAPair, user) -> str | None:
    if not has_role(user, ADMIN):
        return _("Only admins reopen decided pairs.")
    if pair.status not in REOPENABLE:
        return _("Only approved or rejected pairs can be reopened; this one is %(status)s.") % {
            "status": pair.get_status_display()
        }
    return None


def _raise_for(reason: str | None, *, forbidden: bool) -> None:
    if reason:
        raise (NotAllowed if forbidden else InvalidTransition)(reason)


# --- identifier warnings ----------------------------------------------------------------------

IDENTIFIER_KIND_LABELS = {
    "resident_id": gettext_lazy("ID number"),
    "mobile": gettext_lazy("mobile phone number"),
    "landline": gettext_lazy("phone number"),
    "email": gettext_lazy("e-mail address"),
    "record_number": gettext_lazy("record number"),
}


def identifier_kind_labels(findings) -> list[str]:
    """The translated kinds of ``findings`` (stored dicts), each once, in a stable order."""
    kinds = {f.get("kind") for f in findings or ()}
    return [str(label) for kind, label in IDENTIFIER_KIND_LABELS.items() if kind in kinds]


def identifier_kinds_text(findings) -> str:
    """The translated kinds joined for a sentence ("手机号、电子邮箱" / "mobile phone number, e-mail address")."""
    return pgettext("list separator", ", ").join(identifier_kind_labels(findings))


def identifier_warning(pair: QAPair) -> str | None:
    """What to tell whoever submits or approves a pair flagged with identifiers, or None."""
    if not pair.has_identifiers:
        return None
    n = len(pair.identifiers or ())
    return ngettext(
        "This pair holds %(n)s unmasked personal identifier (%(kinds)s). It cannot be frozen into a "
        "dataset version until it is masked.",
        "This pair holds %(n)s unmasked personal identifiers (%(kinds)s). It cannot be frozen into a "
        "dataset version until they are masked.",
        n,
    ) % {"n": n, "kinds": identifier_kinds_text(pair.identifiers)}


def approval_identifier_check(pair, *, approving: bool, confirmed: bool) -> str | None:
    """The identifier warning of a pair being approved (None when there is none or it is not an
    approval); InvalidInput unless the reviewer ticked that they have seen it. QA and preference pairs."""
    warning = identifier_warning(pair) if approving else None
    if warning and not confirmed:
        raise InvalidInput(
            warning + " " + _("Tick the confirmation to approve it anyway."),
            details={"confirm_identifiers": [_("Confirm that you have seen the identifiers.")]},
        )
    return warning


# --- transitions ----------------------------------------------------------------------------


def _submit_fields(pair: QAPair, now) -> dict:
    return {"status": S.IN_REVIEW, "review_round": pair.review_round + 1, "submitted_at": now, "decided_at": None}


def qa_pair_submit(*, pair: QAPair, actor, version: int) -> QAPair:
    """draft / changes_requested → in_review, opening review round + 1."""
    if not (has_role(actor, CURATOR) or (pair.author_id == actor.pk and has_role(actor, *ALL_ROLES))):
        raise NotAllowed(submit_refusal(pair, actor))
    check_version(pair, version)
    _raise_for(submit_refusal(pair, actor), forbidden=False)
    old = pair.status
    with transaction.atomic():
        pair_conditional_update(pair=pair, version=int(version), **_submit_fields(pair, timezone.now()))
        audit_record(
            actor=actor,
            action="qa_pair.submit",
            target=pair,
            summary=_("Submitted for review (round %(round)s)") % {"round": pair.review_round},
            changes={
                "status": [old, pair.status],
                "review_round": pair.review_round,
                "identifiers": len(pair.identifiers or ()),
            },
        )
    return pair


@dataclass
class BulkResult:
    done: list[int] = field(default_factory=list)
    skipped: dict[int, str] = field(default_factory=dict)
    flagged: list[int] = field(default_factory=list)  # submitted with unmasked identifiers


def qa_pair_bulk_submit(*, actor, versions: Mapping[int, int]) -> BulkResult:
    """Submit every selected pair that can be submitted; skip (and say why) the others.

    ``versions`` maps pair id → the version the user saw. All or nothing on a conflict.
    """
    if not has_role(actor, CURATOR):
        raise NotAllowed(_("Only curators and admins submit pairs in bulk."))
    result = BulkResult()
    pairs = {p.pk: p for p in QAPair.objects.filter(pk__in=list(versions))}
    now = timezone.now()
    with transaction.atomic():
        for pk in sorted(versions):
            pair = pairs.get(pk)
            if pair is None:
                result.skipped[pk] = _("No such pair.")
                continue
            check_version(pair, versions[pk])
            reason = submit_refusal(pair, actor)
            if reason:
                result.skipped[pk] = reason
                continue
            old = pair.status
            pair_conditional_update(pair=pair, version=pair.version, **_submit_fields(pair, now))
            audit_record(
                actor=actor,
                action="qa_pair.submit",
                target=pair,
                summary=_("Submitted for review (round %(round)s, bulk)") % {"round": pair.review_round},
                changes={"status": [old, pair.status], "review_round": pair.review_round, "bulk": True},
            )
            result.done.append(pk)
            if pair.has_identifiers:
                result.flagged.append(pk)
    return result


def qa_pair_review(
    *, pair: QAPair, reviewer, decision: str, comment: str = "", version: int, confirm_identifiers: bool = False
) -> Review:
    """Record ``reviewer``'s decision for the current round and apply it to the pair.

    Approving a pair flagged with unmasked identifiers needs ``confirm_identifiers``: the
    reviewer has seen the warning (the pair still cannot be frozen until it is masked)."""
    if not has_role(reviewer, CLINICIAN):
        raise NotAllowed(_("Only clinicians and admins review pairs."))
    if pair.author_id == reviewer.pk:
        raise NotAllowed(_("Nobody reviews their own pair."))
    if decision not in D.values:
        raise InvalidInput(
            _("Unknown decision %(decision)r.") % {"decision": decision},
            details={"decision": [_("Choose approve, reject or request_changes.")]},
        )
    comment = (comment or "").strip()
    if decision != D.APPROVE and not comment:
        raise InvalidInput(
            _("Say why: a comment is required to reject or request changes."), details={"comment": [_("This field is required.")]}
        )
    if len(comment) > COMMENT_MAX_CHARS:
        raise InvalidInput(
            _("The comment is too long."), details={"comment": [_("At most %(n)s characters.") % {"n": COMMENT_MAX_CHARS}]}
        )
    check_version(pair, version)
    _raise_for(review_refusal(pair, reviewer), forbidden=False)
    warning = approval_identifier_check(pair, approving=decision == D.APPROVE, confirmed=confirm_identifiers)

    with transaction.atomic():
        # Bump first: the row lock serialises concurrent reviewers of this pair.
        pair_conditional_update(pair=pair, version=int(version))
        review = Review(qa_pair=pair, reviewer=reviewer, decision=decision, comment=comment, round=pair.review_round)
        review.full_clean(exclude=["qa_pair", "reviewer"], validate_unique=False)
        try:
            with transaction.atomic():
                review.save()
        except IntegrityError:
            raise InvalidTransition(
                _("You have already reviewed this pair in round %(round)s.") % {"round": pair.review_round}
            ) from None

        now = timezone.now()
        old = pair.status
        if decision == D.APPROVE:
            approvals = Review.objects.filter(qa_pair=pair, round=pair.review_round, decision=D.APPROVE).count()
            quorum = review_quorum()
            if approvals >= quorum:
                new, action = S.APPROVED, "qa_pair.approve"
                summary = _("Approved (%(n)s of %(q)s approvals)") % {"n": approvals, "q": quorum}
            else:
                new, action = old, "qa_pair.review"
                summary = _("Approval %(n)s of %(q)s needed") % {"n": approvals, "q": quorum}
        elif decision == D.REJECT:  # the comment stays on the review, never in the audit log
            new, action, summary = S.REJECTED, "qa_pair.reject", _("Rejected")
        else:
            new, action, summary = S.CHANGES_REQUESTED, "qa_pair.request_changes", _("Changes requested")
        if new != old:
            QAPair.objects.filter(pk=pair.pk).update(status=new, decided_at=now)
            pair.status, pair.decided_at = new, now
        audit_record(
            actor=reviewer,
            action=action,
            target=pair,
            summary=summary,
            changes={
                "status": [old, new],
                "decision": decision,
                "review": review.pk,
                "review_round": pair.review_round,
                **({"identifiers_confirmed": len(pair.identifiers or ())} if warning else {}),
            },
        )
    return review


def qa_pair_approve(
    *, pair: QAPair, reviewer, comment: str = "", version: int, confirm_identifiers: bool = False
) -> Review:
    return qa_pair_review(
        pair=pair,
        reviewer=reviewer,
        decision=D.APPROVE,
        comment=comment,
        version=version,
        confirm_identifiers=confirm_identifiers,
    )


def qa_pair_reject(*, pair: QAPair, reviewer, comment: str, version: int) -> Review:
    return qa_pair_review(pair=pair, reviewer=reviewer, decision=D.REJECT, comment=comment, version=version)


def qa_pair_request_changes(*, pair: QAPair, reviewer, comment: str, version: int) -> Review:
    return qa_pair_review(pair=pair, reviewer=reviewer, decision=D.REQUEST_CHANGES, comment=comment, version=version)


def qa_pair_reopen(*, pair: QAPair, actor, reason: str, version: int) -> QAPair:
    """approved / rejected → draft (admin only, with a reason)."""
    if not has_role(actor, ADMIN):
        raise NotAllowed(_("Only admins reopen decided pairs."))
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput(_("Give a reason for reopening the pair."), details={"reason": [_("This field is required.")]})
    check_version(pair, version)
    _raise_for(reopen_refusal(pair, actor), forbidden=False)
    old = pair.status
    with transaction.atomic():
        pair_conditional_update(pair=pair, version=int(version), status=S.DRAFT, submitted_at=None, decided_at=None)
        audit_record(
            actor=actor,
            action="qa_pair.reopen",
            target=pair,
            summary=_("Reopened: %(reason)s") % {"reason": mask_identifiers(reason)},
            changes={"status": [old, pair.status], "reason": mask_identifiers(reason)},
        )
    return pair


def comment_create(*, pair: QAPair, author, body: str) -> Comment:
    """Add a comment to the pair's free discussion thread (any role)."""
    if not has_role(author, *ALL_ROLES):
        raise NotAllowed(_("Your role does not allow this."))
    body = (body or "").strip()
    if not body:
        raise InvalidInput(_("The comment is empty."), details={"body": [_("This field is required.")]})
    if len(body) > COMMENT_MAX_CHARS:
        raise InvalidInput(
            _("The comment is too long."), details={"body": [_("At most %(n)s characters.") % {"n": COMMENT_MAX_CHARS}]}
        )
    with transaction.atomic():
        comment = Comment(qa_pair=pair, author=author, body=body)
        comment.full_clean()
        comment.save()
        audit_record(  # never the comment's text: it may hold identifiers
            actor=author,
            action="qa_pair.comment",
            target=pair,
            summary=_("Commented"),
            changes={"comment": comment.pk, "identifiers": len(find_identifiers(body))},
        )
    return comment
