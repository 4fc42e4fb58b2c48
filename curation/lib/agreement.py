"""Inter-rater agreement: Cohen's kappa for two reviewers, Fleiss' kappa for many.

Django-free. Both statistics come from statsmodels (``statsmodels.stats.inter_rater``); this
module only builds the tables they expect and refuses the degenerate cases in which kappa is
0/0 (every decision in one category), returning ``value=None`` with a reason instead of NaN.

Fleiss' kappa assumes every subject was rated by the same number of raters. When the counts
differ (a pair reviewed by two clinicians in one round and by three in another) the
generalisation that computes each subject's agreement with its own rater count is used
(P_i = Σ_j n_ij(n_ij − 1) / (n_i(n_i − 1)); p_j = Σ_i n_ij / Σ_i n_i); with equal counts it is
exactly Fleiss (1971), which the tests check against statsmodels.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
from statsmodels.stats.inter_rater import cohens_kappa, fleiss_kappa

NO_SUBJECTS = "no_subjects"  # nothing was rated by (enough) raters
ONE_CATEGORY = "one_category"  # every rating fell in one category: chance agreement is 1, kappa is 0/0

REASONS = {
    NO_SUBJECTS: "no subject was rated by enough raters",
    ONE_CATEGORY: "every rating is in the same category, so chance agreement is 100% and kappa is undefined",
}


@dataclass(frozen=True, slots=True)
class Kappa:
    """A kappa value, or ``None`` with the reason (one of ``REASONS``) it is undefined."""

    value: float | None
    n: int
    reason: str = ""

    @property
    def defined(self) -> bool:
        return self.value is not None


def percent_agreement(pairs: Sequence[tuple[Hashable, Hashable]]) -> float | None:
    """Share (0–1) of (a, b) rating pairs in which both raters chose the same category."""
    if not pairs:
        return None
    return sum(1 for a, b in pairs if a == b) / len(pairs)


def contingency_table(pairs: Sequence[tuple[Hashable, Hashable]], categories: Sequence[Hashable]) -> np.ndarray:
    """Square table: rows are rater A's category, columns rater B's."""
    index = {c: i for i, c in enumerate(categories)}
    table = np.zeros((len(categories), len(categories)), dtype=float)
    for a, b in pairs:
        table[index[a], index[b]] += 1
    return table


def cohen(pairs: Sequence[tuple[Hashable, Hashable]], categories: Sequence[Hashable]) -> Kappa:
    """Cohen's kappa of two raters over the subjects both rated (one (a, b) tuple per subject)."""
    n = len(pairs)
    if n == 0:
        return Kappa(None, 0, NO_SUBJECTS)
    table = contingency_table(pairs, categories)
    p_expected = float((table.sum(0) * table.sum(1)).sum()) / (n * n)
    if math.isclose(p_expected, 1.0):
        return Kappa(None, n, ONE_CATEGORY)
    value = float(cohens_kappa(table, return_results=False))
    return Kappa(value, n)


def subject_table(ratings: Sequence[Sequence[Hashable]], categories: Sequence[Hashable]) -> np.ndarray:
    """Subjects × categories counts from one list of ratings per subject."""
    index = {c: i for i, c in enumerate(categories)}
    table = np.zeros((len(ratings), len(categories)), dtype=float)
    for row, subject in enumerate(ratings):
        for rating in subject:
            table[row, index[rating]] += 1
    return table


def fleiss(ratings: Sequence[Sequence[Hashable]], categories: Sequence[Hashable]) -> Kappa:
    """Fleiss' kappa over subjects with at least two ratings each (others are ignored)."""
    usable = [r for r in ratings if len(r) >= 2]
    n = len(usable)
    if n == 0:
        return Kappa(None, 0, NO_SUBJECTS)
    table = subject_table(usable, categories)
    p_cat = table.sum(0) / table.sum()
    p_expected = float((p_cat * p_cat).sum())
    if math.isclose(p_expected, 1.0):
        return Kappa(None, n, ONE_CATEGORY)
    per_subject = table.sum(1)
    if np.all(per_subject == per_subject[0]):
        return Kappa(float(fleiss_kappa(table, method="fleiss")), n)
    agreement = ((table * (table - 1)).sum(1) / (per_subject * (per_subject - 1))).mean()
    return Kappa(float((agreement - p_expected) / (1 - p_expected)), n)
