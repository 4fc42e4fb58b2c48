"""The review state machine in curation/services/review.py: every allowed and forbidden
transition, the quorum, self-review, required comments and reopening."""

from __future__ import annotations

import pytest
from django.test import override_settings

from curation.models import QAPair, Review
from curation.services import editing, review
from medportal.errors import Conflict, InvalidInput, InvalidTransition, NotAllowed
from medportal.models import AuditEvent

S = QAPair.Status



def fresh(pair):
    return QAPair.objects.get(pk=pair.pk)


def actions(pair):
    return list(
        AuditEvent.objects.filter(target_type="curation.qapair", target_id=str(pair.pk))
        .order_by("id")
        .values_list("action", flat=True)
    )


def submitted(make_pair, author):
    pair = make_pair(author)
    return review.qa_pair_submit(pair=pair, actor=author, version=pair.version)


# --- submit -----------------------------------------------------------------------------------


def test_it_submits_a_draft_into_review_round_one(make_pair, curator):
    pair = make_pair(curator)
    review.qa_pair_submit(pair=pair, actor=curator, version=1)
    pair = fresh(pair)
    assert pair.status == S.IN_REVIEW
    assert pair.review_round == 1
    assert pair.version == 2
    assert pair.submitted_at is not None
    assert actions(pair) == ["qa_pair.submit"]


def test_any_curator_may_submit_another_curators_pair(make_pair, curator, curator2):
    pair = make_pair(curator)
    review.qa_pair_submit(pair=pair, actor=curator2, version=1)
    assert fresh(pair).status == S.IN_REVIEW


def test_the_author_may_submit_even_without_the_curator_role(make_pair, clinician):
    pair = make_pair(clinician)
    review.qa_pair_submit(pair=pair, actor=clinician, version=1)
    assert fresh(pair).status == S.IN_REVIEW


def test_a_clinician_cannot_submit_someone_elses_pair(make_pair, curator, clinician):
    pair = make_pair(curator)
    with pytest.raises(NotAllowed):
        review.qa_pair_submit(pair=pair, actor=clinician, version=1)
    assert fresh(pair).status == S.DRAFT
    assert actions(pair) == []


def test_a_user_without_a_role_cannot_submit(make_pair, curator, outsider):
    pair = make_pair(curator)
    with pytest.raises(NotAllowed):
        review.qa_pair_submit(pair=pair, actor=outsider, version=1)


@pytest.mark.parametrize("status", [S.IN_REVIEW, S.APPROVED, S.REJECTED])
def test_it_refuses_to_submit_a_pair_that_is(make_pair, curator, status):
    pair = make_pair(curator, status=status)
    with pytest.raises(InvalidTransition):
        review.qa_pair_submit(pair=pair, actor=curator, version=1)
    assert fresh(pair).status == status
    assert fresh(pair).version == 1


def test_resubmitting_a_changes_requested_pair_opens_the_next_round(make_pair, curator, clinician):
    pair = submitted(make_pair, curator)
    review.qa_pair_request_changes(pair=pair, reviewer=clinician, comment="补充剂量", version=pair.version)
    pair = fresh(pair)
    review.qa_pair_submit(pair=pair, actor=curator, version=pair.version)
    pair = fresh(pair)
    assert (pair.status, pair.review_round, pair.decided_at) == (S.IN_REVIEW, 2, None)


# --- review -----------------------------------------------------------------------------------


@override_settings(MEDPORTAL_REVIEW_QUORUM=1)
def test_with_quorum_one_a_single_approval_approves(make_pair, curator, clinician):
    pair = submitted(make_pair, curator)
    r = review.qa_pair_approve(pair=pair, reviewer=clinician, version=pair.version)
    pair = fresh(pair)
    assert pair.status == S.APPROVED
    assert pair.decided_at is not None
    assert (r.round, r.decision) == (1, Review.Decision.APPROVE)
    assert actions(pair)[-1] == "qa_pair.approve"


@override_settings(MEDPORTAL_REVIEW_QUORUM=2)
def test_with_quorum_two_the_pair_waits_for_the_second_approval(make_pair, curator, clinician, clinician2):
    pair = submitted(make_pair, curator)
    review.qa_pair_approve(pair=pair, reviewer=clinician, version=pair.version)
    pair = fresh(pair)
    assert pair.status == S.IN_REVIEW
    assert actions(pair)[-1] == "qa_pair.review"
    review.qa_pair_approve(pair=pair, reviewer=clinician2, version=pair.version)
    pair = fresh(pair)
    assert pair.status == S.APPROVED
    assert actions(pair)[-1] == "qa_pair.approve"


@override_settings(MEDPORTAL_REVIEW_QUORUM=2)
def test_approvals_of_an_earlier_round_do_not_count(make_pair, curator, clinician, clinician2):
    pair = submitted(make_pair, curator)
    review.qa_pair_approve(pair=pair, reviewer=clinician, version=pair.version)
    pair = fresh(pair)
    review.qa_pair_request_changes(pair=pair, reviewer=clinician2, comment="请补充禁忌症", version=pair.version)
    pair = fresh(pair)
    editing.qa_pair_update(pair=pair, editor=curator, version=pair.version, output="修改后的回答：需要医生指导。")
    pair = fresh(pair)
    assert (pair.status, pair.review_round) == (S.IN_REVIEW, 2)
    review.qa_pair_approve(pair=pair, reviewer=clinician2, version=pair.version)
    assert fresh(pair).status == S.IN_REVIEW  # only one approval in round 2
    pair = fresh(pair)
    review.qa_pair_approve(pair=pair, reviewer=clinician, version=pair.version)  # may review again in a new round
    assert fresh(pair).status == S.APPROVED


@override_settings(MEDPORTAL_REVIEW_QUORUM=3)
def test_a_rejection_decides_at_once_whatever_the_quorum(make_pair, curator, clinician, clinician2):
    pair = submitted(make_pair, curator)
    review.qa_pair_approve(pair=pair, reviewer=clinician, version=pair.version)
    pair = fresh(pair)
    review.qa_pair_reject(pair=pair, reviewer=clinician2, comment="答案错误", version=pair.version)
    pair = fresh(pair)
    assert pair.status == S.REJECTED
    assert actions(pair)[-1] == "qa_pair.reject"


@override_settings(MEDPORTAL_REVIEW_QUORUM=2)
def test_a_request_for_changes_decides_at_once(make_pair, curator, clinician):
    pair = submitted(make_pair, curator)
    review.qa_pair_request_changes(pair=pair, reviewer=clinician, comment="请注明剂量", version=pair.version)
    pair = fresh(pair)
    assert pair.status == S.CHANGES_REQUESTED
    assert actions(pair)[-1] == "qa_pair.request_changes"


def test_an_admin_may_review(make_pair, curator, admin_user):
    pair = submitted(make_pair, curator)
    review.qa_pair_approve(pair=pair, reviewer=admin_user, version=pair.version)
    assert fresh(pair).status == S.APPROVED


def test_nobody_approves_their_own_pair(make_pair, admin_user):
    pair = submitted(make_pair, admin_user)
    with pytest.raises(NotAllowed, match="own pair"):
        review.qa_pair_approve(pair=pair, reviewer=admin_user, version=pair.version)
    assert fresh(pair).status == S.IN_REVIEW
    assert not Review.objects.exists()


def test_an_author_cannot_reject_their_own_pair_either(make_pair, clinician, clinician2):
    pair = make_pair(clinician)
    review.qa_pair_submit(pair=pair, actor=clinician, version=1)
    pair = fresh(pair)
    with pytest.raises(NotAllowed):
        review.qa_pair_reject(pair=pair, reviewer=clinician, comment="x", version=pair.version)


def test_a_curator_cannot_review(make_pair, curator, curator2):
    pair = submitted(make_pair, curator)
    with pytest.raises(NotAllowed):
        review.qa_pair_approve(pair=pair, reviewer=curator2, version=pair.version)


@pytest.mark.parametrize("decision", [Review.Decision.REJECT, Review.Decision.REQUEST_CHANGES])
@pytest.mark.parametrize("comment", ["", "   \n "])
def test_reject_and_request_changes_require_a_comment(make_pair, curator, clinician, decision, comment):
    pair = submitted(make_pair, curator)
    with pytest.raises(InvalidInput) as exc:
        review.qa_pair_review(pair=pair, reviewer=clinician, decision=decision, comment=comment, version=pair.version)
    assert "comment" in exc.value.details
    pair = fresh(pair)
    assert pair.status == S.IN_REVIEW
    assert pair.version == 2
    assert not Review.objects.exists()


def test_approval_needs_no_comment_but_keeps_one(make_pair, curator, clinician):
    pair = submitted(make_pair, curator)
    r = review.qa_pair_approve(pair=pair, reviewer=clinician, comment="  准确 ", version=pair.version)
    assert r.comment == "准确"


def test_it_refuses_an_unknown_decision(make_pair, curator, clinician):
    pair = submitted(make_pair, curator)
    with pytest.raises(InvalidInput):
        review.qa_pair_review(pair=pair, reviewer=clinician, decision="maybe", comment="", version=pair.version)


@override_settings(MEDPORTAL_REVIEW_QUORUM=2)
def test_each_reviewer_reviews_once_per_round(make_pair, curator, clinician):
    pair = submitted(make_pair, curator)
    review.qa_pair_approve(pair=pair, reviewer=clinician, version=pair.version)
    pair = fresh(pair)
    with pytest.raises(InvalidTransition, match="already reviewed"):
        review.qa_pair_approve(pair=pair, reviewer=clinician, version=pair.version)
    assert Review.objects.count() == 1


@pytest.mark.parametrize("status", [S.DRAFT, S.CHANGES_REQUESTED, S.APPROVED, S.REJECTED])
def test_it_refuses_to_review_a_pair_that_is(make_pair, curator, clinician, status):
    pair = make_pair(curator, status=status)
    with pytest.raises(InvalidTransition):
        review.qa_pair_approve(pair=pair, reviewer=clinician, version=pair.version)
    assert fresh(pair).status == status


# --- reopen -----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [S.APPROVED, S.REJECTED])
def test_an_admin_reopens_a_decided_pair_as_draft(make_pair, curator, admin_user, status):
    pair = make_pair(curator, status=status)
    review.qa_pair_reopen(pair=pair, actor=admin_user, reason="新的指南", version=1)
    pair = fresh(pair)
    assert pair.status == S.DRAFT
    event = AuditEvent.objects.get(action="qa_pair.reopen")
    assert event.changes["reason"] == "新的指南"
    assert event.changes["status"] == [status, S.DRAFT]


def test_reopening_requires_a_reason(make_pair, curator, admin_user):
    pair = make_pair(curator, status=S.APPROVED)
    with pytest.raises(InvalidInput):
        review.qa_pair_reopen(pair=pair, actor=admin_user, reason=" ", version=1)
    assert fresh(pair).status == S.APPROVED


@pytest.mark.parametrize("user", ["curator", "clinician"])
def test_only_admins_reopen(make_pair, curator, clinician, user):
    pair = make_pair(curator, status=S.APPROVED)
    with pytest.raises(NotAllowed):
        review.qa_pair_reopen(pair=pair, actor={"curator": curator, "clinician": clinician}[user], reason="x", version=1)


@pytest.mark.parametrize("status", [S.DRAFT, S.IN_REVIEW, S.CHANGES_REQUESTED])
def test_it_refuses_to_reopen_an_undecided_pair(make_pair, curator, admin_user, status):
    pair = make_pair(curator, status=status)
    with pytest.raises(InvalidTransition):
        review.qa_pair_reopen(pair=pair, actor=admin_user, reason="x", version=1)


def test_a_reopened_pair_goes_through_a_new_round(make_pair, curator, clinician, admin_user):
    pair = submitted(make_pair, curator)
    review.qa_pair_approve(pair=pair, reviewer=clinician, version=pair.version)
    pair = fresh(pair)
    review.qa_pair_reopen(pair=pair, actor=admin_user, reason="复核", version=pair.version)
    pair = fresh(pair)
    review.qa_pair_submit(pair=pair, actor=curator, version=pair.version)
    pair = fresh(pair)
    assert (pair.status, pair.review_round) == (S.IN_REVIEW, 2)
    review.qa_pair_approve(pair=pair, reviewer=clinician, version=pair.version)
    assert fresh(pair).status == S.APPROVED


# --- editing and the workflow -----------------------------------------------------------------


def test_editing_a_changes_requested_pair_sends_it_back_to_review(make_pair, curator, clinician):
    pair = submitted(make_pair, curator)
    review.qa_pair_request_changes(pair=pair, reviewer=clinician, comment="请补充", version=pair.version)
    pair = fresh(pair)
    editing.qa_pair_update(pair=pair, editor=curator, version=pair.version, output="补充后的回答：每日一次，饭后服用。")
    pair = fresh(pair)
    assert (pair.status, pair.review_round) == (S.IN_REVIEW, 2)
    assert actions(pair)[-2:] == ["qa_pair.edit", "qa_pair.submit"]


def test_editing_a_draft_keeps_it_a_draft(make_pair, curator):
    pair = make_pair(curator)
    editing.qa_pair_update(pair=pair, editor=curator, version=1, difficulty="hard")
    pair = fresh(pair)
    assert (pair.status, pair.difficulty, pair.version) == (S.DRAFT, "hard", 2)
    assert actions(pair) == ["qa_pair.edit"]


@pytest.mark.parametrize("status", [S.IN_REVIEW, S.APPROVED, S.REJECTED])
def test_pairs_in_review_or_decided_are_read_only(make_pair, curator, admin_user, status):
    pair = make_pair(curator, status=status)
    for user in (curator, admin_user):
        with pytest.raises(InvalidTransition):
            editing.qa_pair_update(pair=pair, editor=user, version=1, output="改了")
    assert fresh(pair).output == pair.output


def test_a_clinician_cannot_edit(make_pair, curator, clinician):
    pair = make_pair(curator)
    with pytest.raises(NotAllowed):
        editing.qa_pair_update(pair=pair, editor=clinician, version=1, output="改了")


def test_every_transition_bumps_the_version(make_pair, curator, clinician, admin_user):
    pair = make_pair(curator)
    seen = [pair.version]
    review.qa_pair_submit(pair=pair, actor=curator, version=pair.version)
    seen.append(fresh(pair).version)
    review.qa_pair_reject(pair=fresh(pair), reviewer=clinician, comment="错", version=seen[-1])
    seen.append(fresh(pair).version)
    review.qa_pair_reopen(pair=fresh(pair), actor=admin_user, reason="再看", version=seen[-1])
    seen.append(fresh(pair).version)
    assert seen == [1, 2, 3, 4]


def test_a_stale_version_is_a_conflict_naming_who_changed_it(make_pair, curator, curator2):
    pair = make_pair(curator)
    stale = fresh(pair)
    review.qa_pair_submit(pair=pair, actor=curator2, version=1)
    with pytest.raises(Conflict) as exc:
        review.qa_pair_submit(pair=stale, actor=curator, version=1)
    assert exc.value.details["changed_by"] == "curator2"
    assert "changed by curator2 at" in exc.value.message
    assert "reload" in exc.value.message


def test_a_missing_version_is_invalid_input(make_pair, curator):
    pair = make_pair(curator)
    with pytest.raises(InvalidInput):
        review.qa_pair_submit(pair=pair, actor=curator, version=None)


# --- bulk submit and comments -----------------------------------------------------------------


def test_bulk_submit_submits_drafts_and_changes_requested_and_skips_the_rest(make_pair, curator):
    draft = make_pair(curator)
    changes = make_pair(curator, status=S.CHANGES_REQUESTED, review_round=1)
    approved = make_pair(curator, status=S.APPROVED)
    result = review.qa_pair_bulk_submit(actor=curator, versions={draft.pk: 1, changes.pk: 1, approved.pk: 1, 999999: 1})
    assert sorted(result.done) == sorted([draft.pk, changes.pk])
    assert set(result.skipped) == {approved.pk, 999999}
    assert fresh(draft).status == fresh(changes).status == S.IN_REVIEW
    assert fresh(changes).review_round == 2
    assert fresh(approved).status == S.APPROVED


def test_bulk_submit_writes_nothing_when_one_row_is_stale(make_pair, curator):
    a, b = make_pair(curator), make_pair(curator)
    editing.qa_pair_update(pair=b, editor=curator, version=1, difficulty="easy")
    with pytest.raises(Conflict):
        review.qa_pair_bulk_submit(actor=curator, versions={a.pk: 1, b.pk: 1})
    assert fresh(a).status == S.DRAFT


def test_comments_are_recorded_and_audited_without_touching_the_version(make_pair, curator, clinician):
    pair = make_pair(curator)
    c = review.comment_create(pair=pair, author=clinician, body=" 剂量需要核实 ")
    assert c.body == "剂量需要核实"
    assert fresh(pair).version == 1
    assert actions(pair) == ["qa_pair.comment"]
    with pytest.raises(InvalidInput):
        review.comment_create(pair=pair, author=clinician, body="  ")
