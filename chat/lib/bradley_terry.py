"""Bradley–Terry ratings from pairwise votes, with bootstrap confidence intervals.

Django-free. ``fit`` finds the maximum-likelihood strengths of the model
P(i beats j) = p_i / (p_i + p_j); a tie counts as half a win for each side (as in the
LMSYS Chatbot Arena). Ratings are reported on the Elo scale: 400·log10(p) + 1000, centred so
the mean rating is 1000. A very small L2 penalty on log-strengths keeps the fit finite
when a model won (or lost) every vote; it moves well-determined ratings by far less than a
rating point.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

SCALE = 400.0 / math.log(10.0)
BASE = 1000.0


@dataclass(frozen=True)
class Rated:
    name: str
    rating: float
    low: float | None
    high: float | None
    votes: int
    wins: float


def _fit_log_strengths(n: int, a: np.ndarray, b: np.ndarray, score: np.ndarray, l2: float) -> np.ndarray:
    def loss(theta):
        d = theta[a] - theta[b]
        # score * log σ(d) + (1 - score) * log σ(-d), summed; σ via logaddexp for stability
        nll = np.sum(score * np.logaddexp(0.0, -d) + (1.0 - score) * np.logaddexp(0.0, d))
        return nll + l2 * np.sum(theta**2)

    def grad(theta):
        d = theta[a] - theta[b]
        p = 1.0 / (1.0 + np.exp(-d))
        g_d = p - score
        g = np.zeros(n)
        np.add.at(g, a, g_d)
        np.add.at(g, b, -g_d)
        return g + 2.0 * l2 * theta

    result = minimize(loss, np.zeros(n), jac=grad, method="L-BFGS-B", options={"maxiter": 1000, "gtol": 1e-10})
    theta = result.x
    return theta - theta.mean()


def fit(
    battles: Sequence[tuple[str, str, float]],
    *,
    bootstrap: int = 200,
    seed: int = 0,
    l2: float = 1e-6,
) -> list[Rated]:
    """``battles``: (model a, model b, score of a: 1 win, 0 loss, 0.5 tie). Sorted best first."""
    names = sorted({x for a, b, _s in battles for x in (a, b)})
    if not names:
        return []
    index = {name: i for i, name in enumerate(names)}
    a = np.array([index[x[0]] for x in battles], dtype=np.int64)
    b = np.array([index[x[1]] for x in battles], dtype=np.int64)
    score = np.array([float(x[2]) for x in battles])
    theta = _fit_log_strengths(len(names), a, b, score, l2)
    ratings = BASE + SCALE * theta

    lows = highs = None
    if bootstrap and len(battles) >= 2:
        rng = np.random.default_rng(seed)
        samples = np.empty((bootstrap, len(names)))
        for k in range(bootstrap):
            pick = rng.integers(0, len(battles), len(battles))
            samples[k] = BASE + SCALE * _fit_log_strengths(len(names), a[pick], b[pick], score[pick], l2)
        lows, highs = np.percentile(samples, 2.5, axis=0), np.percentile(samples, 97.5, axis=0)

    votes = np.bincount(a, minlength=len(names)) + np.bincount(b, minlength=len(names))
    wins = np.bincount(a, weights=score, minlength=len(names)) + np.bincount(b, weights=1.0 - score, minlength=len(names))
    out = [
        Rated(
            name=name,
            rating=float(ratings[i]),
            low=None if lows is None else float(lows[i]),
            high=None if highs is None else float(highs[i]),
            votes=int(votes[i]),
            wins=float(wins[i]),
        )
        for i, name in enumerate(names)
    ]
    return sorted(out, key=lambda r: -r.rating)
