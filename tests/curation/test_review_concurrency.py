"""No lost update: two users who loaded the same version act "at once"; the first wins and the
second gets a Conflict that names the winner, whatever the order of the two actions."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, connections
from django.test import override_settings

from curation.models import QAPair, Review
from curation.services import editing, review
from medportal.errors import Conflict

S = QAPair.Status



def load(pk):
    return QAPair.objects.get(pk=pk)


def _edit_output(user, text):
    def act(pair, version):
        editing.qa_pair_update(pair=pair, editor=user, version=version, output=text)

    return act


def _set_difficulty(user, value):
    def act(pair, version):
        editing.qa_pair_update(pair=pair, editor=user, version=version, difficulty=value)

    return act


def _submit(user):
    def act(pair, version):
        review.qa_pair_submit(pair=pair, actor=user, version=version)

    return act


def _approve(user):
    def act(pair, version):
        review.qa_pair_approve(pair=pair, reviewer=user, version=version)

    return act


def _reject(user):
    def act(pair, version):
        review.qa_pair_reject(pair=pair, reviewer=user, comment="不准确", version=version)

    return act


@pytest.mark.parametrize("first_wins", ["a", "b"])
def test_two_edits_from_the_same_version_keep_the_first_and_refuse_the_second(make_pair, curator, curator2, first_wins):
    pair = make_pair(curator)
    mine, theirs = load(pair.pk), load(pair.pk)  # both opened version 1
    acts = {
        "a": (mine, _edit_output(curator, "甲的回答：每日两次。")),
        "b": (theirs, _edit_output(curator2, "乙的回答：每日三次。")),
    }
    first, second = (acts["a"], acts["b"]) if first_wins == "a" else (acts["b"], acts["a"])
    first[1](first[0], 1)
    with pytest.raises(Conflict) as exc:
        second[1](second[0], 1)
    winner = curator if first_wins == "a" else curator2
    assert exc.value.details["changed_by"] == winner.username
    assert f"changed by {winner.username} " in exc.value.message
    stored = load(pair.pk)
    assert stored.output == ("甲的回答：每日两次。" if first_wins == "a" else "乙的回答：每日三次。")
    assert stored.version == 2
    assert stored.revisions.count() == 2  # created + the winning edit only


@pytest.mark.parametrize("order", ["edit-then-submit", "submit-then-edit"])
def test_an_edit_and_a_submit_from_the_same_version_cannot_both_apply(make_pair, curator, curator2, order):
    pair = make_pair(curator)
    a, b = load(pair.pk), load(pair.pk)
    edit, submit = _set_difficulty(curator, "hard"), _submit(curator2)
    if order == "edit-then-submit":
        edit(a, 1)
        with pytest.raises(Conflict):
            submit(b, 1)
        assert (load(pair.pk).status, load(pair.pk).difficulty) == (S.DRAFT, "hard")
    else:
        submit(b, 1)
        with pytest.raises(Conflict):
            edit(a, 1)
        assert (load(pair.pk).status, load(pair.pk).difficulty) == (S.IN_REVIEW, "")


@override_settings(MEDPORTAL_REVIEW_QUORUM=2)
@pytest.mark.parametrize("order", ["approve-first", "reject-first"])
def test_two_reviewers_deciding_on_the_same_version_are_serialised(make_pair, curator, clinician, clinician2, order):
    pair = make_pair(curator)
    review.qa_pair_submit(pair=pair, actor=curator, version=1)
    a, b = load(pair.pk), load(pair.pk)  # both reviewers opened version 2
    approve, reject = _approve(clinician), _reject(clinician2)
    if order == "approve-first":
        approve(a, 2)
        with pytest.raises(Conflict):
            reject(b, 2)
        assert load(pair.pk).status == S.IN_REVIEW
        assert list(Review.objects.values_list("reviewer__username", flat=True)) == ["clinician"]
    else:
        reject(b, 2)
        with pytest.raises(Conflict):
            approve(a, 2)
        assert load(pair.pk).status == S.REJECTED
        assert list(Review.objects.values_list("reviewer__username", flat=True)) == ["clinician2"]


@pytest.mark.parametrize("order", ["mask-first", "edit-first"])
def test_masking_and_editing_from_the_same_version_cannot_both_apply(make_pair, curator, curator2, order):
    pair = make_pair(curator, instruction="患者电话 13800138000，咳嗽三天怎么办？")
    assert pair.has_identifiers
    a, b = load(pair.pk), load(pair.pk)

    def mask(p, v):
        editing.qa_pair_mask_identifiers(pair=p, editor=curator, version=v)

    edit = _edit_output(curator2, "多喝水，注意休息。")
    first, second = ((mask, a), (edit, b)) if order == "mask-first" else ((edit, b), (mask, a))
    first[0](first[1], 1)
    with pytest.raises(Conflict):
        second[0](second[1], 1)
    stored = load(pair.pk)
    assert stored.version == 2
    assert ("13800138000" not in stored.instruction) == (order == "mask-first")


@pytest.mark.skipif(connection.vendor != "postgresql", reason="needs PostgreSQL row locks across real connections")
@pytest.mark.django_db(transaction=True)
def test_two_threads_editing_the_same_version_on_postgresql_lose_nothing(make_pair, curator, curator2):
    pair = make_pair(curator)
    barrier = threading.Barrier(2)
    outcomes: dict[str, str] = {}

    def worker(user, text):
        try:
            mine = load(pair.pk)
            barrier.wait(timeout=10)
            editing.qa_pair_update(pair=mine, editor=user, version=1, output=text)
            outcomes[user.username] = "ok"
        except Conflict:
            outcomes[user.username] = "conflict"
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=worker, args=(curator, "线程甲：多休息。")),
        threading.Thread(target=worker, args=(curator2, "线程乙：多喝水。")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(outcomes.values()) == ["conflict", "ok"]
    winner = next(name for name, outcome in outcomes.items() if outcome == "ok")
    stored = load(pair.pk)
    assert stored.version == 2
    assert stored.output == {"curator": "线程甲：多休息。", "curator2": "线程乙：多喝水。"}[winner]
