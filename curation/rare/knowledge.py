"""In-memory knowledge base: the HPO ontology, diseases with their annotations, information content."""
from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

from .parsers import (
    Term,
    parse_hpoa,
    parse_obo,
    parse_omim_names_zh,
    parse_orpha_names_zh,
    parse_zh_labels,
)

__all__ = [
    "FREQUENCY_TERMS",
    "UNKNOWN_FREQUENCY",
    "PHENOTYPE_ROOT",
    "ONSET_ROOT",
    "frequency_to_probability",
    "Ontology",
    "Annotation",
    "Disease",
    "KnowledgeBase",
]

PHENOTYPE_ROOT = "HP:0000118"  # Phenotypic abnormality
ONSET_ROOT = "HP:0003674"  # Onset
PAST_HISTORY_ROOT = "HP:0032443"  # Past medical history (aspect H)

# HPO frequency terms: (point estimate, low, high)
FREQUENCY_TERMS: dict[str, tuple[float, float, float]] = {
    "HP:0040280": (1.0, 1.0, 1.0),  # Obligate 100%
    "HP:0040281": (0.895, 0.80, 0.99),  # Very frequent 80-99%
    "HP:0040282": (0.545, 0.30, 0.79),  # Frequent 30-79%
    "HP:0040283": (0.17, 0.05, 0.29),  # Occasional 5-29%
    "HP:0040284": (0.025, 0.01, 0.04),  # Very rare 1-4%
    "HP:0040285": (0.0, 0.0, 0.0),  # Excluded 0%
}
# Range used when an annotation carries no frequency (documented in docs/rare-diseases-engine.md).
UNKNOWN_FREQUENCY: tuple[float, float] = (0.30, 0.79)

_FRACTION = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


def frequency_to_probability(freq: str) -> tuple[float | None, float, float]:
    """HPO frequency term, "n/m" or "NN%" -> (point estimate or None when unknown, low, high)."""
    freq = (freq or "").strip()
    if not freq:
        return None, UNKNOWN_FREQUENCY[0], UNKNOWN_FREQUENCY[1]
    if freq in FREQUENCY_TERMS:
        return FREQUENCY_TERMS[freq]
    m = _FRACTION.match(freq)
    if m:
        n, d = int(m.group(1)), int(m.group(2))
        if d > 0 and n <= d:
            p = n / d
            return p, p, p
    m = _PERCENT.match(freq)
    if m:
        p = min(max(float(m.group(1)) / 100.0, 0.0), 1.0)
        return p, p, p
    return None, UNKNOWN_FREQUENCY[0], UNKNOWN_FREQUENCY[1]


class Ontology:
    """HPO terms with parent links; obsolete and alternative ids resolve to current terms."""

    def __init__(self, terms: Iterable[Term]):
        self.terms: dict[str, Term] = {}
        self._redirect: dict[str, str] = {}
        obsolete: list[Term] = []
        for t in terms:
            if t.obsolete:
                obsolete.append(t)
            else:
                self.terms[t.id] = t
        for t in self.terms.values():
            for alt in t.alt_ids:
                self._redirect.setdefault(alt, t.id)
        for t in obsolete:
            target = t.replaced_by or next((c for c in t.consider if c), "")
            self._redirect[t.id] = target
        self.obsolete_ids = frozenset(t.id for t in obsolete)
        self.children: dict[str, list[str]] = {tid: [] for tid in self.terms}
        for t in self.terms.values():
            for p in t.parents:
                if p in self.children:
                    self.children[p].append(t.id)
        self._anc: dict[str, frozenset[str]] = {}
        self._zh: dict[str, str] = {}

    def __contains__(self, hpo_id: str) -> bool:
        return hpo_id in self.terms

    def __len__(self) -> int:
        return len(self.terms)

    def resolve(self, hpo_id: str) -> str | None:
        """Current id for ``hpo_id`` (itself when current), following replaced_by/consider/alt_id."""
        seen = set()
        cur = hpo_id
        while cur and cur not in self.terms:
            if cur in seen:
                return None
            seen.add(cur)
            cur = self._redirect.get(cur, "")
        return cur or None

    def ancestors(self, hpo_id: str) -> frozenset[str]:
        """Ancestors including the term itself (empty for unknown ids); cached."""
        got = self._anc.get(hpo_id)
        if got is not None:
            return got
        if hpo_id not in self.terms:
            return frozenset()
        # iterative DFS with memoisation
        stack = [hpo_id]
        while stack:
            tid = stack[-1]
            if tid in self._anc:
                stack.pop()
                continue
            parents = [p for p in self.terms[tid].parents if p in self.terms]
            missing = [p for p in parents if p not in self._anc]
            if missing:
                stack.extend(missing)
                continue
            acc = {tid}
            for p in parents:
                acc |= self._anc[p]
            self._anc[tid] = frozenset(acc)
            stack.pop()
        return self._anc[hpo_id]

    def is_descendant(self, hpo_id: str, of: str) -> bool:
        """True when ``of`` is ``hpo_id`` or one of its ancestors."""
        return of in self.ancestors(hpo_id)

    def descendants(self, hpo_id: str) -> set[str]:
        out, stack = set(), [hpo_id]
        while stack:
            tid = stack.pop()
            if tid in out:
                continue
            out.add(tid)
            stack.extend(self.children.get(tid, ()))
        return out

    def set_zh_labels(self, labels: dict[str, str]) -> None:
        self._zh = dict(labels)

    def has_zh(self, hpo_id: str) -> bool:
        return hpo_id in self._zh

    def label(self, hpo_id: str, lang: str = "en") -> str:
        """English name, or the official Chinese label for lang="zh" (English when there is none)."""
        if lang.startswith("zh"):
            zh = self._zh.get(hpo_id)
            if zh:
                return zh
        t = self.terms.get(hpo_id)
        return t.name if t else hpo_id


@dataclass(frozen=True, slots=True)
class Annotation:
    hpo_id: str
    probability: float | None
    low: float
    high: float
    negated: bool
    onset: str
    sex: str
    frequency_raw: str


@dataclass(frozen=True, slots=True)
class Disease:
    id: str
    name: str
    name_zh: str
    annotations: tuple[Annotation, ...]
    onset: tuple[str, ...] = ()
    sex: str = ""  # "MALE" / "FEMALE" when only one sex is affected, else ""
    inheritance: tuple[str, ...] = ()

    @property
    def phenotypes(self) -> tuple[Annotation, ...]:
        """Positive (not negated, not excluded) phenotype annotations."""
        return tuple(a for a in self.annotations if not a.negated and a.high > 0)

    def display_name(self, lang: str = "en") -> str:
        if lang.startswith("zh") and self.name_zh:
            return self.name_zh
        return self.name


MALE_GENITAL = "HP:0010461"
FEMALE_GENITAL = "HP:0010460"


class KnowledgeBase:
    """Ontology + diseases + information content over the disease corpus."""

    def __init__(self, ontology: Ontology, diseases: Iterable[Disease], version: str):
        self.ontology = ontology
        self.version = version
        self.diseases: dict[str, Disease] = {}
        for d in diseases:
            self.diseases[d.id] = d
        self._ic: dict[str, float] = {}
        self._compute_ic()

    def _compute_ic(self) -> None:
        onto = self.ontology
        counts: dict[str, int] = {}
        for d in self.diseases.values():
            seen: set[str] = set()
            for a in d.phenotypes:
                seen |= onto.ancestors(a.hpo_id)
            for t in seen:
                counts[t] = counts.get(t, 0) + 1
        n = max(len(self.diseases), 1)
        self.max_ic = math.log(n)
        self._ic = {t: -math.log(c / n) for t, c in counts.items()}

    def information_content(self, hpo_id: str) -> float:
        """-log(share of diseases annotated with the term or a descendant).

        Terms that annotate no disease get the maximum (as if one disease had them).
        """
        return self._ic.get(hpo_id, self.max_ic)

    def disease(self, disease_id: str) -> Disease:
        return self.diseases[disease_id]

    @classmethod
    def from_files(cls, obo, hpoa, zh=None, orpha_names_zh=None, omim_names_zh=None) -> "KnowledgeBase":
        version, terms = parse_obo(obo)
        onto = Ontology(terms)
        if zh:
            onto.set_zh_labels(parse_zh_labels(zh))
        names_zh: dict[str, str] = {}
        for path, parser in ((orpha_names_zh, parse_orpha_names_zh), (omim_names_zh, parse_omim_names_zh)):
            if path:
                names_zh.update({k: v[0] for k, v in parser(path).items() if v[0]})
        _, rows = parse_hpoa(hpoa)
        diseases = diseases_from_rows(onto, rows, names_zh)
        return cls(onto, diseases, version)


def diseases_from_rows(onto: Ontology, rows, names_zh: dict[str, str] | None = None) -> list[Disease]:
    """Group hpoa rows into Disease objects (aspect P/H -> annotations, C -> onset, I -> inheritance).

    Obsolete/alternative HPO ids are resolved; rows with unknown ids are skipped.
    """
    names_zh = names_zh or {}
    acc: dict[str, dict] = {}
    for r in rows:
        d = acc.get(r.disease_id)
        if d is None:
            d = acc[r.disease_id] = {"name": r.disease_name, "ann": {}, "onset": [], "inh": [], "sex": set()}
        hpo = onto.resolve(r.hpo_id)
        if hpo is None:
            continue
        if r.aspect == "C":
            # Aspect C is "clinical course": onset terms, but also course and mortality terms
            # (Orphanet files even put "Miscarriage" there); only onset terms give an age.
            if not r.negated and hpo not in d["onset"] and onto.is_descendant(hpo, ONSET_ROOT):
                d["onset"].append(hpo)
            continue
        if r.aspect == "I":
            if not r.negated and hpo not in d["inh"]:
                d["inh"].append(hpo)
            continue
        if r.aspect not in ("P", "H"):
            continue
        p, lo, hi = frequency_to_probability(r.frequency)
        onset = onto.resolve(r.onset) or "" if r.onset else ""
        ann = Annotation(hpo, p, lo, hi, r.negated, onset, r.sex, r.frequency)
        prev = d["ann"].get((hpo, r.negated))
        # keep one annotation per (term, NOT) -- the one with the most specific frequency
        if prev is None or (prev.probability is None and p is not None):
            d["ann"][(hpo, r.negated)] = ann
        if r.sex in ("MALE", "FEMALE") and not r.negated:
            d["sex"].add(r.sex)
    out = []
    for did, d in acc.items():
        anns = tuple(d["ann"].values())
        out.append(
            Disease(
                id=did,
                name=d["name"],
                name_zh=names_zh.get(did, ""),
                annotations=anns,
                onset=tuple(d["onset"]),
                sex=_disease_sex(onto, anns, d["sex"]),
                inheritance=tuple(d["inh"]),
            )
        )
    return out


def _disease_sex(onto: Ontology, anns, sexes: set[str]) -> str:
    """Only one sex affected: explicit sex-column rows, or very frequent genital phenotypes, of one sex.

    A genital phenotype of one sex with a lower frequency (e.g. occasional hypospadias) does not
    make a disease sex-specific; the generator then just drops it for patients of the other sex.
    """
    seen = set(sexes)
    for a in anns:
        if a.negated or a.probability is None or a.probability < 0.8:
            continue
        anc = onto.ancestors(a.hpo_id)
        if MALE_GENITAL in anc:
            seen.add("MALE")
        if FEMALE_GENITAL in anc:
            seen.add("FEMALE")
    return next(iter(seen)) if len(seen) == 1 else ""
