"""Statistics of an evaluation report: agreement between raters, bootstrap intervals, paired tests.

Django-free; the numbers come from scipy and statsmodels, this module picks the variants and
refuses the degenerate cases (returns ``value=None`` with a reason instead of NaN):

* ``spearman(x, y)`` — Spearman's ρ (``scipy.stats.spearmanr``, ties averaged) with n;
* ``weighted_kappa(a, b)`` — Cohen's κ with quadratic weights over the categories 1–5
  (``statsmodels.stats.inter_rater.cohens_kappa(wt="quadratic")``) with n;
* ``bootstrap_ci(values)`` — the mean with a percentile bootstrap 95% interval
  (``scipy.stats.bootstrap``, 2,000 resamples, seeded);
* ``paired_bootstrap(a, b)`` — the mean difference a − b over the same items, its 95% interval
  and a two-sided p-value (twice the share of resampled differences on the other side of 0);
* ``mcnemar(a, b)`` — McNemar's test on paired right/wrong outcomes
  (``statsmodels.stats.contingency_tables.mcnemar``: exact binomial when the discordant pairs
  are fewer than 25, else χ² with continuity correction).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Agreement",
    "Interval",
    "McNemar",
    "PairedDifference",
    "bootstrap_ci",
    "calibration_warnings",
    "mcnemar",
    "paired_bootstrap",
    "spearman",
    "weighted_kappa",
]

RESAMPLES = 2000
SEED = 20260101
RUBRIC_SCALE = (1, 2, 3, 4, 5)
# Below these the report warns (docs/evaluation-suites.md, "Calibration").
MIN_CALIBRATION_N = 30
LOW_KAPPA = 0.4
LOW_RHO = 0.4

TOO_FEW = "too_few"
CONSTANT = "constant"


@dataclass(frozen=True, slots=True)
class Agreement:
    value: float | None
    n: int
    reason: str = ""

    def to_dict(self) -> dict:
        return {"value": None if self.value is None else round(self.value, 4), "n": self.n, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Interval:
    estimate: float | None
    low: float | None
    high: float | None
    n: int

    def to_dict(self, scale: float = 1.0, digits: int = 4) -> dict:
        def r(v):
            return None if v is None else round(v * scale, digits)

        return {"estimate": r(self.estimate), "low": r(self.low), "high": r(self.high), "n": self.n}


@dataclass(frozen=True, slots=True)
class PairedDifference:
    difference: float | None
    low: float | None
    high: float | None
    p_value: float | None
    n: int

    def to_dict(self, scale: float = 1.0) -> dict:
        def r(v):
            return None if v is None else round(v * scale, 4)

        return {"difference": r(self.difference), "low": r(self.low), "high": r(self.high), "p_value": None if self.p_value is None else round(self.p_value, 5), "n": self.n}


@dataclass(frozen=True, slots=True)
class McNemar:
    only_a: int  # right for a, wrong for b
    only_b: int
    statistic: float | None
    p_value: float | None
    exact: bool
    n: int

    def to_dict(self) -> dict:
        return {
            "only_a": self.only_a,
            "only_b": self.only_b,
            "statistic": None if self.statistic is None else round(self.statistic, 4),
            "p_value": None if self.p_value is None else round(self.p_value, 5),
            "exact": self.exact,
            "n": self.n,
        }


def _pairs(x: Sequence, y: Sequence) -> tuple[np.ndarray, np.ndarray]:
    if len(x) != len(y):
        raise ValueError(f"paired values differ in length ({len(x)} and {len(y)})")
    keep = [(a, b) for a, b in zip(x, y, strict=True) if a is not None and b is not None]
    return np.array([a for a, _ in keep], dtype=float), np.array([b for _, b in keep], dtype=float)


def spearman(x: Sequence[float | None], y: Sequence[float | None]) -> Agreement:
    """Spearman's ρ over the items both rated (None = not rated)."""
    from scipy.stats import spearmanr

    a, b = _pairs(x, y)
    n = len(a)
    if n < 3:
        return Agreement(None, n, TOO_FEW)
    if np.all(a == a[0]) or np.all(b == b[0]):
        return Agreement(None, n, CONSTANT)
    return Agreement(float(spearmanr(a, b).statistic), n)


def weighted_kappa(a: Sequence[int | None], b: Sequence[int | None], categories: Sequence[int] = RUBRIC_SCALE) -> Agreement:
    """Quadratic-weighted Cohen's κ over the items both rated."""
    from statsmodels.stats.inter_rater import cohens_kappa

    x, y = _pairs(a, b)
    n = len(x)
    if n < 2:
        return Agreement(None, n, TOO_FEW)
    index = {c: i for i, c in enumerate(categories)}
    table = np.zeros((len(categories), len(categories)))
    for u, v in zip(x, y, strict=True):
        table[index[int(u)], index[int(v)]] += 1
    rows, cols = table.sum(1), table.sum(0)
    if np.count_nonzero(rows) == 1 and np.count_nonzero(cols) == 1:
        return Agreement(None, n, CONSTANT)  # chance agreement is total: κ is 0/0
    value = float(cohens_kappa(table, wt="quadratic", return_results=False))
    if not math.isfinite(value):
        return Agreement(None, n, CONSTANT)
    return Agreement(value, n)


def bootstrap_ci(values: Sequence[float], *, confidence: float = 0.95, resamples: int = RESAMPLES, seed: int = SEED) -> Interval:
    """The mean of ``values`` with its percentile bootstrap interval."""
    from scipy.stats import bootstrap

    data = np.asarray([v for v in values if v is not None], dtype=float)
    n = len(data)
    if n == 0:
        return Interval(None, None, None, 0)
    mean = float(data.mean())
    if n == 1 or np.all(data == data[0]):
        return Interval(mean, mean, mean, n)
    res = bootstrap(
        (data,), np.mean, confidence_level=confidence, n_resamples=resamples, method="percentile", random_state=np.random.default_rng(seed), vectorized=True
    )
    return Interval(mean, float(res.confidence_interval.low), float(res.confidence_interval.high), n)


def paired_bootstrap(a: Sequence[float], b: Sequence[float], *, confidence: float = 0.95, resamples: int = RESAMPLES, seed: int = SEED) -> PairedDifference:
    """Mean of a − b over the same items, its percentile interval and a two-sided p-value."""
    from scipy.stats import bootstrap

    x, y = _pairs(a, b)
    n = len(x)
    if n == 0:
        return PairedDifference(None, None, None, None, 0)
    diff = x - y
    mean = float(diff.mean())
    if n == 1 or np.all(diff == diff[0]):
        return PairedDifference(mean, mean, mean, None if mean == 0 else (1.0 if n == 1 else 0.0), n)
    res = bootstrap(
        (diff,), np.mean, confidence_level=confidence, n_resamples=resamples, method="percentile", random_state=np.random.default_rng(seed), vectorized=True
    )
    dist = np.asarray(res.bootstrap_distribution)
    # Two-sided: how often the resampled difference falls on the far side of zero.
    below = (np.count_nonzero(dist < 0) + 0.5 * np.count_nonzero(dist == 0)) / len(dist)
    p = min(1.0, 2 * min(below, 1 - below))
    return PairedDifference(mean, float(res.confidence_interval.low), float(res.confidence_interval.high), float(p), n)


def mcnemar(a: Sequence[bool | None], b: Sequence[bool | None]) -> McNemar:
    """McNemar's test of two contenders' right/wrong outcomes on the same items."""
    from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

    x, y = _pairs(a, b)
    n = len(x)
    both = int(np.count_nonzero((x == 1) & (y == 1)))
    only_a = int(np.count_nonzero((x == 1) & (y == 0)))
    only_b = int(np.count_nonzero((x == 0) & (y == 1)))
    neither = int(np.count_nonzero((x == 0) & (y == 0)))
    if only_a + only_b == 0:
        return McNemar(only_a, only_b, None, 1.0 if n else None, True, n)
    exact = only_a + only_b < 25
    res = sm_mcnemar([[both, only_a], [only_b, neither]], exact=exact, correction=True)
    return McNemar(only_a, only_b, float(res.statistic), float(res.pvalue), exact, n)


def calibration_warnings(per_criterion: dict[str, dict]) -> list[dict]:
    """Warnings about judge–clinician agreement: {criterion: {"kappa": Agreement.to_dict(),
    "rho": …}} → [{"criterion", "code", "n", "value"}], code "uncalibrated" (fewer than
    MIN_CALIBRATION_N items rated by both) or "low_agreement" (κ < LOW_KAPPA or ρ < LOW_RHO)."""
    out = []
    for criterion, stats in per_criterion.items():
        kappa, rho = stats.get("kappa") or {}, stats.get("rho") or {}
        n = int(kappa.get("n") or 0)
        if n < MIN_CALIBRATION_N:
            out.append({"criterion": criterion, "code": "uncalibrated", "n": n, "value": None})
            continue
        k, r = kappa.get("value"), rho.get("value")
        if (k is not None and k < LOW_KAPPA) or (r is not None and r < LOW_RHO) or (k is None and r is None):
            out.append({"criterion": criterion, "code": "low_agreement", "n": n, "value": k})
    return out
