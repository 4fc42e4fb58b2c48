"""Agreement statistics, bootstrap intervals and paired tests against known values."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from training.engine.scoring import stats


def test_spearman_matches_the_scipy_documentation_example():
    # scipy.stats.spearmanr docs: spearmanr([1,2,3,4,5], [5,6,7,8,7]) -> 0.8207826816681233
    result = stats.spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7])
    assert result.value == pytest.approx(0.8207826816681233)
    assert result.n == 5


def test_spearman_skips_unrated_items_and_refuses_degenerate_cases():
    assert stats.spearman([1, None, 3, 4], [2, 5, None, 4]).n == 2
    assert stats.spearman([1, None, 3, 4], [2, 5, None, 4]).value is None
    assert stats.spearman([3, 3, 3], [1, 2, 3]).reason == stats.CONSTANT


def _qwk_by_hand(a, b, k=5):
    """Quadratic-weighted kappa from its definition: 1 - sum(w*O) / sum(w*E)."""
    observed = np.zeros((k, k))
    for x, y in zip(a, b):
        observed[x - 1, y - 1] += 1
    expected = np.outer(observed.sum(1), observed.sum(0)) / observed.sum()
    w = np.array([[(i - j) ** 2 for j in range(k)] for i in range(k)]) / (k - 1) ** 2
    return 1 - (w * observed).sum() / (w * expected).sum()


def test_quadratic_kappa_known_values():
    assert stats.weighted_kappa([1, 2, 3, 4, 5], [1, 2, 3, 4, 5]).value == pytest.approx(1.0)
    # Complete reversal with uniform margins is exactly -1 under quadratic weights.
    assert stats.weighted_kappa([1, 2, 3, 4, 5], [5, 4, 3, 2, 1]).value == pytest.approx(-1.0)
    # Worked example: ratings 1..3 of 10 items by two raters.
    a = [1, 1, 2, 2, 3, 3, 3, 2, 1, 3]
    b = [1, 2, 2, 2, 3, 2, 3, 3, 1, 3]
    assert stats.weighted_kappa(a, b).value == pytest.approx(_qwk_by_hand(a, b))
    rng = random.Random(5)
    a = [rng.randint(1, 5) for _ in range(200)]
    b = [min(5, max(1, x + rng.choice((-1, 0, 0, 1)))) for x in a]
    k = stats.weighted_kappa(a, b)
    assert k.value == pytest.approx(_qwk_by_hand(a, b)) and k.n == 200


def test_kappa_is_undefined_when_both_raters_use_one_category():
    result = stats.weighted_kappa([4, 4, 4], [4, 4, 4])
    assert result.value is None and result.reason == stats.CONSTANT


def test_bootstrap_interval_of_a_proportion_matches_the_normal_approximation():
    values = [1] * 300 + [0] * 700
    ci = stats.bootstrap_ci(values)
    half = 1.96 * math.sqrt(0.3 * 0.7 / 1000)  # Wald interval, close to the bootstrap at n = 1000
    assert ci.estimate == pytest.approx(0.3)
    assert ci.low == pytest.approx(0.3 - half, abs=0.006)
    assert ci.high == pytest.approx(0.3 + half, abs=0.006)
    assert stats.bootstrap_ci(values) == ci  # seeded: the same interval every time


def test_bootstrap_of_constant_or_empty_values():
    assert stats.bootstrap_ci([1, 1, 1]).to_dict() == {"estimate": 1.0, "low": 1.0, "high": 1.0, "n": 3}
    assert stats.bootstrap_ci([]).estimate is None


def test_paired_bootstrap_finds_a_real_difference_and_not_a_null_one():
    rng = random.Random(1)
    base = [rng.random() for _ in range(400)]
    better = [x + 0.1 + rng.gauss(0, 0.05) for x in base]
    diff = stats.paired_bootstrap(better, base)
    assert diff.difference == pytest.approx(0.1, abs=0.01)
    assert diff.low > 0 and diff.p_value < 0.001
    noise = [x + rng.gauss(0, 0.05) for x in base]
    null = stats.paired_bootstrap(noise, base)
    assert null.low < 0 < null.high and null.p_value > 0.05


def test_mcnemar_reproduces_the_textbook_example():
    # Wikipedia "McNemar's test": 101 / 121 / 59 / 33; chi2 with Edwards' correction
    # (|121 - 59| - 1)^2 / 180 = 20.672, p = 5.45e-6.
    a = [True] * 101 + [True] * 121 + [False] * 59 + [False] * 33
    b = [True] * 101 + [False] * 121 + [True] * 59 + [False] * 33
    result = stats.mcnemar(a, b)
    assert (result.only_a, result.only_b, result.exact) == (121, 59, False)
    assert result.statistic == pytest.approx(3721 / 180)
    assert result.p_value == pytest.approx(5.45e-6, rel=0.01)


def test_mcnemar_is_exact_for_few_discordant_pairs():
    # 1 vs 6 discordant: two-sided binomial p = 2 * (1 + 7) / 128 = 0.125.
    a = [True] * 1 + [False] * 6 + [True] * 10
    b = [False] * 1 + [True] * 6 + [True] * 10
    result = stats.mcnemar(a, b)
    assert result.exact and result.p_value == pytest.approx(0.125)


def test_calibration_warnings():
    few = {"kappa": {"value": 0.9, "n": 5}, "rho": {"value": 0.9, "n": 5}}
    low = {"kappa": {"value": 0.2, "n": 50}, "rho": {"value": 0.3, "n": 50}}
    good = {"kappa": {"value": 0.7, "n": 50}, "rho": {"value": 0.7, "n": 50}}
    codes = {w["criterion"]: w["code"] for w in stats.calibration_warnings({"accuracy": few, "safety": low, "clarity": good})}
    assert codes == {"accuracy": "uncalibrated", "safety": "low_agreement"}
