"""Bradley–Terry on fixtures with a known answer.

``fit`` returns the posterior mode under a Gaussian prior N(0, s²) on the log-strengths
(s = prior_sd / SCALE). For two models with W wins out of n the gap d = θ_A − θ_B solves
n·σ(d) + d / (2 s²) = W; with a lot of data the prior is negligible and d → ln(W / (n − W)).
"""

import math

import pytest
from scipy.optimize import brentq

from chat.lib.bradley_terry import PRIOR_SD, SCALE, fit


def votes(a, b, wins_a, wins_b, ties=0):
    return [(a, b, 1.0)] * wins_a + [(a, b, 0.0)] * wins_b + [(a, b, 0.5)] * ties


def map_gap(wins: float, n: int, prior_sd: float = PRIOR_SD) -> float:
    """The documented two-model formula, in Elo points: solve n·σ(d) + d / (2 s²) = W."""
    s2 = (prior_sd / SCALE) ** 2
    d = brentq(lambda d: n / (1.0 + math.exp(-d)) + d / (2.0 * s2) - wins, -50.0, 50.0, xtol=1e-12)
    return SCALE * d


def gap(rated, a="A", b="B"):
    by = {r.name: r.rating for r in rated}
    return by[a] - by[b]


def test_two_models_get_the_log_odds_of_their_record_when_the_prior_is_negligible():
    # A beats B 3 times out of 4: p_A / p_B = 3, so the gap is 400·log10(3) ≈ 190.85 points.
    rated = fit(votes("A", "B", 3000, 1000), bootstrap=0)
    by = {r.name: r for r in rated}
    assert gap(rated) == pytest.approx(400 * math.log10(3), abs=0.05)
    assert by["A"].rating + by["B"].rating == pytest.approx(2000, abs=1e-6)  # centred on 1000
    assert (by["A"].votes, by["A"].wins, by["B"].wins) == (4000, 3000.0, 1000.0)


def test_a_30_10_record_is_shrunk_by_the_prior_exactly_as_documented():
    rated = fit(votes("A", "B", 30, 10), bootstrap=0)
    assert gap(rated) == pytest.approx(map_gap(30, 40), abs=0.01)
    assert 188.0 < gap(rated) < 400 * math.log10(3)  # a little below the prior-free 190.85
    # A wider prior gives back the maximum-likelihood answer.
    assert gap(fit(votes("A", "B", 30, 10), bootstrap=0, prior_sd=40_000)) == pytest.approx(400 * math.log10(3), abs=0.05)


def test_three_models_recover_consistent_strengths_9_3_1():
    battles = votes("A", "B", 3000, 1000) + votes("B", "C", 3000, 1000) + votes("A", "C", 3600, 400)
    by = {r.name: r.rating for r in fit(battles, bootstrap=0)}
    assert by["A"] - by["B"] == pytest.approx(SCALE * math.log(3), abs=0.05)
    assert by["B"] - by["C"] == pytest.approx(SCALE * math.log(3), abs=0.05)
    assert [r.name for r in fit(battles, bootstrap=0)] == ["A", "B", "C"]


def test_ties_count_half_a_win_each():
    by = {r.name: r.rating for r in fit(votes("A", "B", 10, 10) + votes("A", "B", 0, 0, ties=20), bootstrap=0)}
    assert by["A"] == pytest.approx(by["B"], abs=1e-6)
    rated = fit(votes("A", "B", 20, 0, ties=20), bootstrap=0)  # 30 : 10 in half wins
    assert gap(rated) == pytest.approx(map_gap(30, 40), abs=0.01)


def test_bootstrap_intervals_contain_the_estimate_and_narrow_with_more_votes():
    few = {r.name: r for r in fit(votes("A", "B", 6, 2), bootstrap=300, seed=1)}
    many = {r.name: r for r in fit(votes("A", "B", 60, 20), bootstrap=300, seed=1)}
    for rated in (few, many):
        assert rated["A"].low <= rated["A"].rating <= rated["A"].high
    assert (many["A"].high - many["A"].low) < (few["A"].high - few["A"].low)


@pytest.mark.parametrize("wins", [1, 2, 5])
def test_a_model_that_won_every_vote_gets_a_finite_moderate_rating(wins):
    rated = fit(votes("A", "B", wins, 0), bootstrap=50)
    assert rated[0].name == "A" and all(math.isfinite(x) for r in rated for x in (r.rating, r.low, r.high) if x is not None)
    # The prior's answer, not the runaway maximum-likelihood one (which is infinite).
    assert gap(rated) == pytest.approx(map_gap(wins, wins), abs=0.01)
    assert gap(rated) < 500


def test_a_model_that_lost_every_battle_against_two_others_stays_finite():
    battles = votes("A", "C", 3, 0) + votes("B", "C", 2, 0) + votes("A", "B", 1, 1)
    by = {r.name: r.rating for r in fit(battles, bootstrap=0)}
    assert all(math.isfinite(v) for v in by.values())
    assert by["C"] < 1000 < max(by["A"], by["B"]) and by["C"] > 1000 - 500


def test_the_prior_must_be_positive():
    with pytest.raises(ValueError, match="prior_sd"):
        fit(votes("A", "B", 1, 0), prior_sd=0)


def test_no_votes_no_ratings():
    assert fit([]) == []
