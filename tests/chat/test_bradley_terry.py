"""Bradley–Terry on fixtures with a known answer."""

import math

import pytest

from chat.lib.bradley_terry import SCALE, fit


def votes(a, b, wins_a, wins_b, ties=0):
    return [(a, b, 1.0)] * wins_a + [(a, b, 0.0)] * wins_b + [(a, b, 0.5)] * ties


def test_two_models_get_the_log_odds_of_their_record():
    # A beats B 30 times out of 40: p_A / p_B = 3, so the gap is 400·log10(3) ≈ 190.85 points.
    rated = fit(votes("A", "B", 30, 10), bootstrap=0)
    by = {r.name: r for r in rated}
    assert by["A"].rating - by["B"].rating == pytest.approx(400 * math.log10(3), abs=0.05)
    assert by["A"].rating + by["B"].rating == pytest.approx(2000, abs=1e-6)  # centred on 1000
    assert (by["A"].votes, by["A"].wins, by["B"].wins) == (40, 30.0, 10.0)


def test_three_models_recover_consistent_strengths_9_3_1():
    battles = votes("A", "B", 30, 10) + votes("B", "C", 30, 10) + votes("A", "C", 36, 4)
    by = {r.name: r.rating for r in fit(battles, bootstrap=0)}
    assert by["A"] - by["B"] == pytest.approx(SCALE * math.log(3), abs=0.05)
    assert by["B"] - by["C"] == pytest.approx(SCALE * math.log(3), abs=0.05)
    assert [r.name for r in fit(battles, bootstrap=0)] == ["A", "B", "C"]


def test_ties_count_half_a_win_each():
    by = {r.name: r.rating for r in fit(votes("A", "B", 10, 10) + votes("A", "B", 0, 0, ties=20), bootstrap=0)}
    assert by["A"] == pytest.approx(by["B"], abs=1e-6)
    by = {r.name: r for r in fit(votes("A", "B", 20, 0, ties=20), bootstrap=0)}  # 30 : 10 in half wins
    assert by["A"].rating - by["B"].rating == pytest.approx(400 * math.log10(3), abs=0.05)


def test_bootstrap_intervals_contain_the_estimate_and_narrow_with_more_votes():
    few = {r.name: r for r in fit(votes("A", "B", 6, 2), bootstrap=300, seed=1)}
    many = {r.name: r for r in fit(votes("A", "B", 60, 20), bootstrap=300, seed=1)}
    for rated in (few, many):
        assert rated["A"].low <= rated["A"].rating <= rated["A"].high
    assert (many["A"].high - many["A"].low) < (few["A"].high - few["A"].low)


def test_a_model_that_won_every_vote_gets_a_finite_top_rating():
    rated = fit(votes("A", "B", 5, 0), bootstrap=50)
    assert rated[0].name == "A" and math.isfinite(rated[0].rating) and rated[0].rating > 1300


def test_no_votes_no_ratings():
    assert fit([]) == []
