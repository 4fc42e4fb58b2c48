"""Reviewer agreement: Fleiss' and Cohen's kappa against textbook values computed here from
the formulas, the degenerate cases, the selector over stored reviews and the page."""

from __future__ import annotations

import math

import pytest
from django.contrib.auth.models import Group

from curation import selectors
from curation.lib import agreement
from curation.models import QAPair, Review

# Fleiss (1971) as worked on Wikipedia's "Fleiss' kappa" page: 10 subjects, 14 raters each,
# 5 categories; kappa = 0.210.
FLEISS_TABLE = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]
CATS = ["c1", "c2", "c3", "c4", "c5"]


def _ratings(table):
    return [[cat for cat, count in zip(CATS, row, strict=True) for _ in range(count)] for row in table]


def _fleiss_by_formula(table):
    """Fleiss' kappa straight from the definition, allowing a different rater count per subject."""
    n_i = [sum(row) for row in table]
    total = sum(n_i)
    p_j = [sum(row[j] for row in table) / total for j in range(len(table[0]))]
    p_i = [sum(c * (c - 1) for c in row) / (n * (n - 1)) for row, n in zip(table, n_i, strict=True)]
    p_bar = sum(p_i) / len(p_i)
    p_e = sum(p * p for p in p_j)
    return (p_bar - p_e) / (1 - p_e)



# --- the library ------------------------------------------------------------------------------


def test_fleiss_matches_the_textbook_example():
    expected = _fleiss_by_formula(FLEISS_TABLE)
    assert round(expected, 3) == 0.210
    k = agreement.fleiss(_ratings(FLEISS_TABLE), CATS)
    assert k.n == 10
    assert math.isclose(k.value, expected, rel_tol=1e-12)


def test_fleiss_with_unequal_rater_counts_uses_each_subjects_own_count():
    table = [[2, 0, 0], [1, 1, 0], [0, 3, 0], [1, 1, 1], [0, 0, 2]]
    k = agreement.fleiss(_ratings_for(table, ["a", "b", "c"]), ["a", "b", "c"])
    assert math.isclose(k.value, _fleiss_by_formula(table), rel_tol=1e-12)


def _ratings_for(table, cats):
    return [[cat for cat, count in zip(cats, row, strict=True) for _ in range(count)] for row in table]


def test_fleiss_ignores_subjects_with_a_single_rating():
    with_single = [*_ratings(FLEISS_TABLE), ["c1"]]
    assert agreement.fleiss(with_single, CATS).value == agreement.fleiss(_ratings(FLEISS_TABLE), CATS).value


def test_fleiss_is_undefined_when_every_rating_is_the_same():
    k = agreement.fleiss([["approve", "approve"], ["approve", "approve", "approve"]], ["approve", "reject"])
    assert k.value is None and k.reason == agreement.ONE_CATEGORY and k.n == 2


def test_fleiss_is_undefined_without_subjects():
    k = agreement.fleiss([["approve"]], ["approve", "reject"])
    assert (k.value, k.n, k.reason) == (None, 0, agreement.NO_SUBJECTS)


def test_cohen_matches_the_textbook_example():
    # Wikipedia's "Cohen's kappa" example: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no.
    pairs = [("yes", "yes")] * 20 + [("yes", "no")] * 5 + [("no", "yes")] * 10 + [("no", "no")] * 15
    p_o = (20 + 15) / 50
    p_e = (25 / 50) * (30 / 50) + (25 / 50) * (20 / 50)
    k = agreement.cohen(pairs, ["yes", "no"])
    assert math.isclose(k.value, (p_o - p_e) / (1 - p_e))
    assert math.isclose(k.value, 0.4)
    assert agreement.percent_agreement(pairs) == 0.7


def test_cohen_is_undefined_when_both_raters_always_agree_on_one_category():
    k = agreement.cohen([("approve", "approve")] * 4, ["approve", "reject", "request_changes"])
    assert k.value is None and k.reason == agreement.ONE_CATEGORY
    assert agreement.percent_agreement([("approve", "approve")] * 4) == 1.0


def test_cohen_is_zero_or_negative_for_chance_or_worse():
    k = agreement.cohen([("a", "b"), ("b", "a")], ["a", "b"])
    assert k.value == pytest.approx(-1.0)
    assert agreement.percent_agreement([]) is None
    assert agreement.cohen([], ["a"]).reason == agreement.NO_SUBJECTS


# --- the selector and the page ----------------------------------------------------------------


@pytest.fixture
def clinician3(django_user_model):
    user = django_user_model.objects.create_user(username="clinician3", password="x")
    user.groups.add(Group.objects.get_or_create(name="clinician")[0])
    return user


def _review(pair, user, decision, round_=1):
    Review.objects.create(
        qa_pair=pair, reviewer=user, decision=decision, round=round_, comment="" if decision == "approve" else "x"
    )


def test_the_report_computes_agreement_over_co_reviewed_rounds(make_pair, curator, clinician, clinician2, clinician3):
    a, b, c, d, e = (make_pair(curator, status=QAPair.Status.APPROVED) for _ in range(5))
    for pair, (d1, d2) in zip(
        (a, b, c, d),
        [("approve", "approve"), ("reject", "reject"), ("approve", "reject"), ("request_changes", "request_changes")],
        strict=True,
    ):
        _review(pair, clinician, d1)
        _review(pair, clinician2, d2)
    _review(a, clinician3, "approve")  # three reviewers on a
    _review(e, clinician3, "approve")  # a single review: not a subject
    _review(a, clinician, "reject", round_=2)  # alone in round 2: not a subject

    report = selectors.review_agreement()
    assert report.subjects == 4
    assert report.ratings == 9
    subjects = [
        ["approve", "approve", "approve"],
        ["reject", "reject"],
        ["approve", "reject"],
        ["request_changes", "request_changes"],
    ]
    assert report.fleiss.value == pytest.approx(agreement.fleiss(subjects, selectors.DECISIONS).value)

    by_name = {r.reviewer.username: r for r in report.reviewers}
    assert set(by_name) == {"clinician", "clinician2", "clinician3"}
    c1 = by_name["clinician"]
    assert (c1.reviews, c1.co_reviewed) == (5, 4)
    with_c2 = next(p for p in c1.pairwise if p.other.username == "clinician2")
    assert (with_c2.n, with_c2.percent) == (4, 0.75)
    pairs = [("approve", "approve"), ("reject", "reject"), ("approve", "reject"), ("request_changes", "request_changes")]
    assert with_c2.kappa.value == pytest.approx(agreement.cohen(pairs, selectors.DECISIONS).value)
    with_c3 = next(p for p in c1.pairwise if p.other.username == "clinician3")
    assert with_c3.n == 1 and with_c3.kappa.value is None and with_c3.kappa.reason


def test_the_page_shows_kappas(client, make_pair, curator, clinician, clinician2):
    for d1, d2 in [("approve", "approve"), ("reject", "approve"), ("reject", "reject")]:
        pair = make_pair(curator)
        _review(pair, clinician, d1)
        _review(pair, clinician2, d2)
    client.force_login(curator)
    response = client.get("/curation/agreement/")
    assert response.status_code == 200
    html = response.content.decode()
    expected = agreement.fleiss([["approve", "approve"], ["reject", "approve"], ["reject", "reject"]], selectors.DECISIONS).value
    assert f'id="fleiss-kappa">{expected:.3f}' in html
    assert 'data-reviewer="clinician"' in html and 'data-other="clinician2"' in html


def test_the_page_says_na_with_a_reason_when_everyone_agrees_on_one_decision(client, make_pair, curator, clinician, clinician2):
    for _ in range(2):
        pair = make_pair(curator)
        _review(pair, clinician, "approve")
        _review(pair, clinician2, "approve")
    client.force_login(clinician)
    html = client.get("/curation/agreement/").content.decode()
    assert 'id="fleiss-kappa">n/a' in html
    assert "every decision was the same" in html
    assert "100%" in html


def test_the_page_works_with_no_reviews(client, clinician):
    client.force_login(clinician)
    response = client.get("/curation/agreement/")
    assert response.status_code == 200
    assert 'id="fleiss-kappa">n/a' in response.content.decode()
