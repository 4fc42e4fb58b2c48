"""Bradley–Terry ratings from pairwise votes, with bootstrap confidence intervals.

Django-free. ``fit`` finds the maximum-likelihood strengths of the model
P(i beats j) = p_i / (p_i + p_j); a tie counts as half a win for each side (as in the
LMSYS Chatbot Arena). Ratings are reported on the Elo scale: 400·log10(p) + 1000, centred so
the mean rating is 1000.

Prior: the log-strengths θ = ln p get a weak Gaussian prior N(0, σ²), σ = ``prior_sd`` Elo
points (default 400, i.e. odds of 10:1 against an average model at one σ), and ``fit`` returns
the posterior mode (MAP). This keeps every rating finite with few votes, including a model that
won or lost all its battles, and pulls such ratings towards 1000 by an amount that fades as
votes accumulate. For two models with W wins out of n (ties count ½), the MAP gap d = θ_A − θ_B
solves  n·σ(d) + d / (2 s²) = W,  with s = σ / (400 / ln 10) and σ(d) = 1 / (1 + e^(−d)); without
the prior, d = ln(W / (n − W)). A 30–10 record gives 188.4 points instead of 190.8 (400·log10 3);
3000–1000 gives 190.8. The prior is worth less than one tie per model against an average one
(its precision 1/s² ≈ 0.19 against 0.25 for a single vote between equals).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

SCALE = 400.0 / math.log(10.0)
BASE = 1000.0
PRIOR_SD = 400.0  # Elo points: the standard deviation of the Gaussian prior on each rating


@dataclass(frozen=True)
class Rated:
    name: str
    rating: float
    low: float | None
    high: float | None
    votes: int
    wins: float


def _fit_log_strengths(n: int, a: np.ndarray, b: np.ndarray, score: np.ndarray, l2: float) -> np.ndarray:
    """MAP log-strengths: the negative log-likelihood plus ``l2``·Σθ² (l2 = 1 / (2 s²))."""
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
    prior_sd: float = PRIOR_SD,
) -> list[Rated]:
    """``battles``: (model a, model b, score of a: 1 win, 0 loss, 0.5 tie). Sorted best first.
    ``prior_sd``: the Gaussian prior's standard deviation in Elo points (see the module text)."""
    if not prior_sd > 0:
        raise ValueError("prior_sd must be a positive number of Elo points")
    l2 = 1.0 / (2.0 * (prior_sd / SCALE) ** 2)
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
