"""Phenotype-similarity ranking of all diseases for a set of present / absent HPO terms.

Score = symmetric Resnik best-match average (information-content weighted):

    sim(Q, D) = 1/2 * ( mean_{q in Q} max_{d in D} IC(MICA(q, d))
                      + mean_{d in D} max_{q in Q} IC(MICA(q, d)) )

with MICA the most informative common ancestor. ``max_{d in D} IC(MICA(q, d))`` equals the
largest IC among the ancestors of q that are also ancestors of some annotation of D, so both
halves are sparse-matrix operations over precomputed ancestor closures: ranking one case
against ~12.7k diseases takes a few milliseconds.

Absent (excluded) findings lower the score of diseases annotated with the term (or a
descendant) by ``ABSENT_WEIGHT * IC(term) / |Q|``; a disease with a NOT annotation for a present
term is lowered the same way.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy import sparse

from .knowledge import KnowledgeBase

__all__ = ["Ranker"]

ABSENT_WEIGHT = 1.0


class Ranker:
    def __init__(self, kb: KnowledgeBase):
        self.kb = kb
        onto = kb.ontology
        self.ids: list[str] = list(kb.diseases)
        self.index = {d: i for i, d in enumerate(self.ids)}
        self.terms: list[str] = list(onto.terms)
        self.tindex = {t: i for i, t in enumerate(self.terms)}
        self.ic = np.array([kb.information_content(t) for t in self.terms], dtype=np.float64)

        # M: disease x term, 1 where the term is an ancestor of a positive annotation
        # P: disease x term, direct positive annotations, rows normalised (for the D -> Q mean)
        # N: disease x term, NOT annotations
        m_rows, m_cols, p_rows, p_cols, p_vals, n_rows, n_cols = [], [], [], [], [], [], []
        annotated: set[str] = set()
        for i, did in enumerate(self.ids):
            d = kb.diseases[did]
            closure: set[str] = set()
            direct = []
            for a in d.annotations:
                if a.hpo_id not in self.tindex:
                    continue
                if a.negated or a.high <= 0:
                    n_rows.append(i)
                    n_cols.append(self.tindex[a.hpo_id])
                    continue
                direct.append(a.hpo_id)
                closure |= onto.ancestors(a.hpo_id)
            direct = sorted(set(direct))
            annotated.update(direct)
            for t in closure:
                m_rows.append(i)
                m_cols.append(self.tindex[t])
            for t in direct:
                p_rows.append(i)
                p_cols.append(self.tindex[t])
                p_vals.append(1.0 / len(direct))
        shape = (len(self.ids), len(self.terms))
        self.M = sparse.csc_matrix((np.ones(len(m_rows), dtype=np.float32), (m_rows, m_cols)), shape=shape)
        self.P = sparse.csr_matrix((np.array(p_vals), (p_rows, p_cols)), shape=shape)
        self.N = sparse.csc_matrix((np.ones(len(n_rows), dtype=np.float32), (n_rows, n_cols)), shape=shape)
        self.has_annotations = np.asarray(self.P.sum(axis=1)).ravel() > 0

        # A: annotated term x term ancestor closure (rows only for terms used in annotations)
        self.ann_terms = sorted(annotated, key=self.tindex.__getitem__)
        a_rows, a_cols = [], []
        for r, t in enumerate(self.ann_terms):
            for anc in onto.ancestors(t):
                a_rows.append(r)
                a_cols.append(self.tindex[anc])
        self.A = sparse.csc_matrix(
            (np.ones(len(a_rows), dtype=np.float32), (a_rows, a_cols)), shape=(len(self.ann_terms), len(self.terms))
        )
        # P restricted to annotated-term columns, so P_ann @ best(annotated terms) is the D -> Q mean
        ann_cols = np.array([self.tindex[t] for t in self.ann_terms], dtype=np.int64)
        self.P_ann = self.P[:, ann_cols].tocsr()
        # stable tie-break: disease id order
        self._tiebreak = np.argsort(np.array(self.ids, dtype=object), kind="stable")
        self._tb_rank = np.empty(len(self.ids), dtype=np.int64)
        self._tb_rank[self._tiebreak] = np.arange(len(self.ids))

    def _terms(self, ids: Iterable[str]) -> list[int]:
        onto = self.kb.ontology
        out = []
        for t in ids:
            r = onto.resolve(t)
            if r is not None and r in self.tindex:
                out.append(self.tindex[r])
        return list(dict.fromkeys(out))

    def scores(self, present: Iterable[str], absent: Iterable[str] = ()) -> np.ndarray:
        """Similarity of every disease (in ``self.ids`` order) to the case."""
        onto = self.kb.ontology
        q = self._terms(present)
        n = len(self.ids)
        if not q:
            return np.zeros(n)
        anc_lists = [[self.tindex[a] for a in onto.ancestors(self.terms[t])] for t in q]
        union = sorted({a for lst in anc_lists for a in lst})
        pos = {a: i for i, a in enumerate(union)}
        ic_u = self.ic[union]
        sub = self.M[:, union].toarray() * ic_u  # disease x |U|: IC where shared
        q_to_d = np.zeros(n)
        for lst in anc_lists:
            q_to_d += sub[:, [pos[a] for a in lst]].max(axis=1)
        q_to_d /= len(q)
        best_t = (self.A[:, union].multiply(ic_u)).max(axis=1).toarray().ravel()  # per annotated term
        d_to_q = self.P_ann @ best_t
        score = 0.5 * (q_to_d + d_to_q)
        # pertinent negatives and NOT annotations
        ab = self._terms(absent)
        if ab:
            pen = np.asarray(self.M[:, ab].multiply(self.ic[ab]).sum(axis=1)).ravel()
            score -= ABSENT_WEIGHT * pen / len(q)
        if self.N.nnz:
            pen = np.asarray(self.N[:, q].multiply(self.ic[q]).sum(axis=1)).ravel()
            score -= ABSENT_WEIGHT * pen / len(q)
        score[~self.has_annotations] = -np.inf
        return score

    def _order(self, score: np.ndarray) -> np.ndarray:
        return np.lexsort((self._tb_rank, -score))

    def rank(self, present: Iterable[str], absent: Iterable[str] = ()) -> list[tuple[str, float]]:
        """All diseases, best first, with their scores (ties broken by disease id)."""
        score = self.scores(present, absent)
        order = self._order(score)
        ids = self.ids
        return [(ids[i], float(score[i])) for i in order]

    def top(self, present: Iterable[str], absent: Iterable[str] = (), k: int = 10) -> list[tuple[str, float]]:
        score = self.scores(present, absent)
        k = min(k, len(score))
        part = np.argpartition(-score, k - 1)[:k] if k < len(score) else np.arange(len(score))
        # include ties at the boundary consistently by full ordering of the candidates
        cand = part[np.lexsort((self._tb_rank[part], -score[part]))]
        return [(self.ids[i], float(score[i])) for i in cand[:k]]

    def rank_of(self, disease_id: str, present: Iterable[str], absent: Iterable[str] = ()) -> int:
        """1-based rank of ``disease_id`` in :meth:`rank` (ties broken by disease id)."""
        score = self.scores(present, absent)
        return self.rank_of_scores(disease_id, score)

    def rank_of_scores(self, disease_id: str, score: np.ndarray) -> int:
        i = self.index[disease_id]
        s = score[i]
        better = int(np.count_nonzero(score > s))
        ties = np.flatnonzero(score == s)
        before = int(np.count_nonzero(self._tb_rank[ties] < self._tb_rank[i]))
        return better + before + 1

    def best_rank(self, disease_ids: Iterable[str], score: np.ndarray) -> int | None:
        """Best rank among several acceptable diagnoses (None when none is known)."""
        ranks = [self.rank_of_scores(d, score) for d in disease_ids if d in self.index]
        return min(ranks) if ranks else None
