"""Synthetic rare-disease patient cases grounded in HPO annotations.

See docs/rare-diseases-engine.md for the rules (onset -> age, sex, frequency sampling,
pertinent negatives, phrasing) and the realism knobs.
"""
from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field

import numpy as np

from .knowledge import (
    FEMALE_GENITAL,
    MALE_GENITAL,
    PHENOTYPE_ROOT,
    Annotation,
    Disease,
    KnowledgeBase,
)
from .ranker import Ranker

__all__ = ["CaseParams", "Case", "CaseGenerator", "ONSET_AGE_YEARS", "GENERATOR_NAME", "GENERATOR_VERSION"]

GENERATOR_NAME = "medportal.rare.CaseGenerator"
GENERATOR_VERSION = "1"
TASKS = ("diagnosis", "next_test", "differential")
LANGS = ("zh", "en")

# HPO onset term -> age range (years) at which the patient is seen.
ONSET_AGE_YEARS: dict[str, tuple[float, float]] = {
    "HP:0030674": (0.0, 7 / 365),  # Antenatal onset (seen as a newborn)
    "HP:0011460": (0.0, 7 / 365),  # Embryonal onset
    "HP:0011461": (0.0, 7 / 365),  # Fetal onset
    "HP:0003577": (0.0, 1.0),  # Congenital onset
    "HP:0003623": (0.0, 28 / 365),  # Neonatal onset
    "HP:0003593": (28 / 365, 1.0),  # Infantile onset
    "HP:0410280": (0.0, 15.0),  # Pediatric onset
    "HP:0011463": (1.0, 5.0),  # Childhood onset
    "HP:0003621": (5.0, 15.0),  # Juvenile onset
    "HP:0003581": (16.0, 60.0),  # Adult onset
    "HP:0011462": (16.0, 40.0),  # Young adult onset
    "HP:0025708": (16.0, 19.0),  # Early young adult onset
    "HP:0025709": (19.0, 25.0),  # Intermediate young adult onset
    "HP:0025710": (25.0, 40.0),  # Late young adult onset
    "HP:0003596": (40.0, 60.0),  # Middle age onset
    "HP:0003584": (60.0, 80.0),  # Late onset
}
DEFAULT_AGE_YEARS = (0.5, 40.0)  # no onset annotation
X_LINKED_RECESSIVE = "HP:0001419"
X_LINKED_RECESSIVE_MALE_SHARE = 0.9

# Where a finding goes in the vignette.
TEST_ROOTS = (
    "HP:0001939",  # Abnormality of metabolism/homeostasis ("laboratory abnormality")
    "HP:0001871",  # Abnormality of blood and blood-forming tissues
    "HP:0410263",  # Brain imaging abnormality
    "HP:0030178",  # Abnormality of central nervous system electrophysiology
    "HP:0011017",  # Abnormal cellular physiology
    "HP:0025354",  # Abnormal cellular phenotype
    "HP:0031983",  # Abnormal pulmonary thoracic imaging finding
    "HP:0003236",  # Elevated circulating creatine kinase concentration (lab under musculature)
)
TEST_WORDS = (
    " level", "concentration", "circulating", "serum", "plasma", "urine", "urinary", "aciduria",
    "imaging", "mri", "on ct", "radiograph", "eeg", "electroretinogra", "electromyogra", "biopsy",
    "ultrasound", "echocardiogra", "electrocardiogra", "nerve conduction", "activity", " count",
)
HISTORY_ROOTS = (
    "HP:0025142",  # Constitutional symptom
    "HP:0000708",  # Atypical behavior
    "HP:0012638",  # Abnormal nervous system physiology (seizures, developmental delay, ...)
    "HP:0002715",  # Abnormality of the immune system (recurrent infections)
    "HP:0032443",  # Past medical history
    "HP:0011458",  # Abdominal symptom (vomiting, abdominal pain, ...)
)


@dataclass
class CaseParams:
    disease_id: str
    lang: str = "zh"
    task: str = "diagnosis"  # "diagnosis" | "next_test" | "differential"
    seed: int = 0
    min_present: int = 3
    max_present: int = 12
    negatives: int = 3
    # realism knobs (see docs); set all to 0 for "textbook" cases
    # (defaults tuned so the ranker finds generated cases about as hard as the 873 real cases)
    imprecision: float = 0.7  # chance a present term is reported as one of its parents
    extra_mean: float = 6.0  # mean number (Poisson) of unrelated findings added
    drop: float = 0.5  # chance an otherwise sampled non-obligate term goes unreported

    def __post_init__(self):
        if self.lang not in LANGS:
            raise ValueError(f"lang must be one of {LANGS}, not {self.lang!r}")
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, not {self.task!r}")
        if not (0 <= self.min_present <= self.max_present):
            raise ValueError("need 0 <= min_present <= max_present")
        if self.negatives < 0:
            raise ValueError("negatives must be >= 0")
        for name in ("imprecision", "drop"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")
        if self.extra_mean < 0:
            raise ValueError("extra_mean must be >= 0")


@dataclass
class Case:
    disease_id: str
    disease_name: str
    age_years: float
    age_text: str
    sex: str  # "male" | "female"
    present: list[str]
    absent: list[str]
    vignette: str
    question: str
    answer: str
    differential: list[tuple[str, str]]
    true_rank: int
    difficulty: str
    params: dict = field(default_factory=dict)
    hpo_version: str = ""


def difficulty_for_rank(rank: int) -> str:
    """1 -> easy, 2-10 -> medium, > 10 -> hard."""
    if rank <= 1:
        return "easy"
    if rank <= 10:
        return "medium"
    return "hard"


class CaseGenerator:
    def __init__(self, kb: KnowledgeBase, ranker: Ranker):
        self.kb = kb
        self.ranker = ranker
        self.onto = kb.ontology
        # Pool of (disease-weighted) positive annotations for "unrelated findings" noise.
        pool = []
        for d in kb.diseases.values():
            for a in d.phenotypes:
                pool.append(a.hpo_id)
        self._pool = pool
        self._kind_cache: dict[str, str] = {}

    # ---------------------------------------------------------------- public
    def generate(self, params: CaseParams, count: int) -> list[Case]:
        if params.disease_id not in self.kb.diseases:
            raise KeyError(f"unknown disease {params.disease_id!r}")
        disease = self.kb.diseases[params.disease_id]
        if not disease.phenotypes:
            raise ValueError(f"{params.disease_id} has no phenotype annotations to sample from")
        return [self._one(disease, params, i) for i in range(count)]

    # ------------------------------------------------------------- sampling
    def _one(self, disease: Disease, params: CaseParams, i: int) -> Case:
        rng = random.Random(f"{params.seed}:{disease.id}:{i}")
        sex = self._sex(disease, rng)
        age = self._age(disease, rng)
        present = self._present(disease, sex, params, rng)
        present = self._noise(disease, present, params, rng)
        present = self._most_specific(present)
        rng.shuffle(present)
        score = self.ranker.scores(present)
        absent = self._negatives(disease, present, score, params, rng)
        if absent:
            score = self.ranker.scores(present, absent)
        true_rank = self.ranker.rank_of_scores(disease.id, score)
        top = self.ranker.top(present, absent, k=4)
        diff_ids = [d for d, _ in top if d != disease.id][:3]
        differential = [(d, self.kb.diseases[d].display_name(params.lang)) for d in diff_ids]
        lang = params.lang
        vignette = self._vignette(lang, sex, age, present, absent)
        question = self._question(lang, params.task, vignette)
        answer = self._answer(lang, params.task, disease, present, differential)
        p = asdict(params)
        p.update(count_index=i, generator=GENERATOR_NAME, generator_version=GENERATOR_VERSION)
        return Case(
            disease_id=disease.id,
            disease_name=disease.display_name(lang),
            age_years=round(age, 3),
            age_text=_age_text(age, lang),
            sex=sex,
            present=present,
            absent=absent,
            vignette=vignette,
            question=question,
            answer=answer,
            differential=differential,
            true_rank=true_rank,
            difficulty=difficulty_for_rank(true_rank),
            params=p,
            hpo_version=self.kb.version,
        )

    def _sex(self, disease: Disease, rng: random.Random) -> str:
        if disease.sex == "MALE":
            return "male"
        if disease.sex == "FEMALE":
            return "female"
        if X_LINKED_RECESSIVE in disease.inheritance and len(disease.inheritance) == 1:
            return "male" if rng.random() < X_LINKED_RECESSIVE_MALE_SHARE else "female"
        return "male" if rng.random() < 0.5 else "female"

    def _age(self, disease: Disease, rng: random.Random) -> float:
        ranges = [self._onset_range(o) for o in disease.onset]
        ranges = [r for r in ranges if r]
        lo, hi = rng.choice(ranges) if ranges else DEFAULT_AGE_YEARS
        return rng.uniform(lo, hi)

    def _onset_range(self, onset: str) -> tuple[float, float] | None:
        if onset in ONSET_AGE_YEARS:
            return ONSET_AGE_YEARS[onset]
        # a more specific onset term: use its nearest listed ancestor
        for anc in sorted(self.onto.ancestors(onset), key=lambda t: -len(self.onto.ancestors(t))):
            if anc in ONSET_AGE_YEARS:
                return ONSET_AGE_YEARS[anc]
        return None

    def _fits_sex(self, a: Annotation, sex: str) -> bool:
        if a.sex and a.sex.lower() != sex:
            return False
        anc = self.onto.ancestors(a.hpo_id)
        if sex == "female" and MALE_GENITAL in anc:
            return False
        if sex == "male" and FEMALE_GENITAL in anc:
            return False
        return True

    def _present(self, disease: Disease, sex: str, params: CaseParams, rng: random.Random) -> list[str]:
        candidates = [a for a in disease.phenotypes if self._fits_sex(a, sex)]
        chosen: list[str] = []
        rest: list[Annotation] = []
        for a in candidates:
            # obligate -> always; ranges -> a probability drawn within the range; exact n/m or % -> as is
            p = 1.0 if a.low >= 1.0 else rng.uniform(a.low, a.high)
            if rng.random() < p and not (params.drop and a.low < 1.0 and rng.random() < params.drop):
                chosen.append(a.hpo_id)
            else:
                rest.append(a)
        if len(chosen) < params.min_present and rest:
            # top up, weighting by the annotated frequency
            weights = [max(a.probability if a.probability is not None else (a.low + a.high) / 2, 0.01) for a in rest]
            while len(chosen) < params.min_present and rest:
                j = rng.choices(range(len(rest)), weights=weights)[0]
                chosen.append(rest.pop(j).hpo_id)
                weights.pop(j)
        chosen = list(dict.fromkeys(chosen))
        if len(chosen) > params.max_present:
            chosen = rng.sample(chosen, params.max_present)
        return chosen

    def _noise(self, disease: Disease, present: list[str], params: CaseParams, rng: random.Random) -> list[str]:
        out = []
        for t in present:
            if params.imprecision and rng.random() < params.imprecision:
                parents = [p for p in self.onto.terms[t].parents
                           if p != PHENOTYPE_ROOT and PHENOTYPE_ROOT in self.onto.ancestors(p)
                           and self.kb.information_content(p) >= 2.0]
                if parents:
                    t = rng.choice(sorted(parents))
            out.append(t)
        n_extra = _poisson(rng, params.extra_mean) if params.extra_mean else 0
        if n_extra:
            closure = self._closure(disease)
            tries = 0
            while n_extra and tries < 50:
                tries += 1
                t = rng.choice(self._pool)
                if t in closure or any(t in self.onto.ancestors(x) or x in self.onto.ancestors(t) for x in out):
                    continue
                out.append(t)
                n_extra -= 1
        return list(dict.fromkeys(out))

    def _closure(self, disease: Disease) -> set[str]:
        c: set[str] = set()
        for a in disease.annotations:
            c |= self.onto.ancestors(a.hpo_id)
        return c

    def _most_specific(self, terms: list[str]) -> list[str]:
        """Drop terms that are ancestors of other terms in the list (keep the specific one)."""
        keep = []
        for t in terms:
            if any(t != o and t in self.onto.ancestors(o) for o in terms):
                continue
            keep.append(t)
        return keep

    def _negatives(self, disease: Disease, present: list[str], score: np.ndarray, params: CaseParams,
                   rng: random.Random) -> list[str]:
        if not params.negatives:
            return []
        onto = self.onto
        present_anc = set().union(*(onto.ancestors(t) for t in present)) if present else set()

        def compatible(t: str) -> bool:
            # not an ancestor / descendant of a presented finding
            return t not in present_anc and not any(p in onto.ancestors(t) for p in present)

        # 1) the disease's own NOT annotations are the best pertinent negatives
        own_not = [a.hpo_id for a in disease.annotations if a.negated or a.high <= 0]
        picks = [t for t in sorted(own_not) if compatible(t)]
        rng.shuffle(picks)
        picks = picks[: params.negatives]
        if len(picks) < params.negatives:
            # 2) frequent phenotypes of the top differential diseases the true disease does not have
            closure = self._closure_positive(disease)
            own_terms = {a.hpo_id for a in disease.phenotypes}
            order = np.argsort(-score, kind="stable")[:12]
            cand: dict[str, float] = {}
            for idx in order:
                did = self.ranker.ids[idx]
                if did == disease.id:
                    continue
                for a in self.kb.diseases[did].phenotypes:
                    t = a.hpo_id
                    if t in closure or onto.ancestors(t) & own_terms:
                        continue
                    if not compatible(t) or t in picks:
                        continue
                    w = self.kb.information_content(t) * (a.probability if a.probability is not None else 0.5)
                    cand[t] = max(cand.get(t, 0.0), w)
            ranked = sorted(cand.items(), key=lambda kv: (-kv[1], kv[0]))[: 3 * params.negatives]
            rng.shuffle(ranked)
            for t, _ in ranked:
                if len(picks) >= params.negatives:
                    break
                if any(t in onto.ancestors(p) or p in onto.ancestors(t) for p in picks):
                    continue
                picks.append(t)
        return picks

    def _closure_positive(self, disease: Disease) -> set[str]:
        c: set[str] = set()
        for a in disease.phenotypes:
            c |= self.onto.ancestors(a.hpo_id)
        return c

    # --------------------------------------------------------------- phrasing
    def finding_kind(self, hpo_id: str) -> str:
        """"test" (laboratory / imaging / electrophysiology), "history" or "exam"."""
        got = self._kind_cache.get(hpo_id)
        if got:
            return got
        anc = self.onto.ancestors(hpo_id)
        name = " " + self.onto.label(hpo_id).lower()
        if any(r in anc for r in TEST_ROOTS) or any(w in name for w in TEST_WORDS):
            kind = "test"
        elif any(r in anc for r in HISTORY_ROOTS) or "recurrent" in name or "episod" in name:
            kind = "history"
        else:
            kind = "exam"
        self._kind_cache[hpo_id] = kind
        return kind

    def term_text(self, hpo_id: str, lang: str) -> str:
        if lang == "zh":
            if self.onto.has_zh(hpo_id):
                return self.onto.label(hpo_id, "zh")
            return f"（{self.onto.label(hpo_id, 'en')}）"
        return self.onto.label(hpo_id, "en")

    def _vignette(self, lang: str, sex: str, age: float, present: list[str], absent: list[str]) -> str:
        groups = {"history": [], "exam": [], "test": []}
        for t in present:
            groups[self.finding_kind(t)].append(self.term_text(t, lang))
        neg = [self.term_text(t, lang) for t in absent]
        if lang == "zh":
            parts = [f"患者，{'男' if sex == 'male' else '女'}，{_age_text(age, 'zh')}。"]
            if groups["history"]:
                parts.append(f"病史：{'、'.join(groups['history'])}。")
            if groups["exam"]:
                parts.append(f"体格检查：{'、'.join(groups['exam'])}。")
            if groups["test"]:
                parts.append(f"辅助检查：{'、'.join(groups['test'])}。")
            if neg:
                parts.append(f"阴性所见：无{'、无'.join(neg)}。")
            return "".join(parts)
        parts = [f"A {_age_text(age, 'en')} {'boy' if sex == 'male' and age < 16 else 'girl' if age < 16 else 'man' if sex == 'male' else 'woman'} is evaluated."]
        if groups["history"]:
            parts.append(f"History: {_join_en(groups['history'])}.")
        if groups["exam"]:
            parts.append(f"Examination: {_join_en(groups['exam'])}.")
        if groups["test"]:
            parts.append(f"Investigations: {_join_en(groups['test'])}.")
        if neg:
            parts.append(f"Pertinent negatives: no {', no '.join(n[0].lower() + n[1:] for n in neg)}.")
        return " ".join(parts)

    def _question(self, lang: str, task: str, vignette: str) -> str:
        ask = {
            ("zh", "diagnosis"): "最可能的诊断是什么？请说明诊断依据。",
            ("zh", "next_test"): "为明确诊断，下一步应进行哪些检查？",
            ("zh", "differential"): "请给出主要的鉴别诊断，并说明首先考虑哪一种及理由。",
            ("en", "diagnosis"): "What is the most likely diagnosis? Explain your reasoning.",
            ("en", "next_test"): "What should be the next investigations to establish the diagnosis?",
            ("en", "differential"): "Give the main differential diagnosis and say which one you favour and why.",
        }[(lang, task)]
        return f"{vignette}\n\n{ask}"

    def _characteristic(self, disease: Disease, present: list[str], k: int = 4) -> list[tuple[str, Annotation | None]]:
        """Presented findings that support the diagnosis most: high IC x annotated frequency."""
        by_term = {a.hpo_id: a for a in disease.phenotypes}
        scored = []
        for t in present:
            a = by_term.get(t)
            if a is None:  # reported imprecisely: match the annotation it came from
                a = next((x for x in disease.phenotypes if t in self.onto.ancestors(x.hpo_id)), None)
                if a is None:
                    continue  # unrelated finding
            freq = a.probability if a.probability is not None else 0.5
            scored.append((self.kb.information_content(t) * (0.5 + freq), t, a))
        scored.sort(key=lambda s: (-s[0], s[1]))
        return [(t, a) for _, t, a in scored[:k]]

    def _freq_text(self, a: Annotation | None, lang: str) -> str:
        if a is None or a.probability is None and not a.frequency_raw:
            return ""
        lo, hi = round(a.low * 100), round(a.high * 100)
        pct = f"{lo}%" if lo == hi else f"{lo}–{hi}%"
        return f"（见于约{pct}的患者）" if lang == "zh" else f" (seen in about {pct} of patients)"

    def _answer(self, lang: str, task: str, disease: Disease, present: list[str],
                differential: list[tuple[str, str]]) -> str:
        name = disease.display_name(lang)
        chars = self._characteristic(disease, present)
        support = [self.term_text(t, lang) + self._freq_text(a, lang) for t, a in chars]
        tests = self._next_tests(disease, present)
        diff = [f"{n}（{d}）" if lang == "zh" else f"{n} ({d})" for d, n in differential]
        if lang == "zh":
            lines = []
            if task == "next_test":
                lines.append(f"首先考虑{name}（{disease.id}）。")
                if tests:
                    lines.append("建议检查：评估是否存在" + "、".join(self.term_text(t, lang) for t in tests) + "；")
                lines.append("并行基因检测（靶向基因包或全外显子组测序）以明确分子诊断。")
                if support:
                    lines.append("依据：" + "；".join(support) + "。")
            else:
                lines.append(f"最可能的诊断：{name}（{disease.id}）。")
                if support:
                    lines.append("诊断依据：" + "；".join(support) + "。")
                if diff:
                    lines.append("鉴别诊断：" + "；".join(diff) + "。")
                if task == "differential" and support:
                    lines.append(f"首先考虑{name}，因为上述特征性表现与其表型谱最为吻合。")
            lines.append("注意：以上为基于表型的推断，需至遗传科/罕见病门诊由专科医生评估，并经基因检测等确诊。")
            lines.append(f"（表型知识来源：Human Phenotype Ontology {self.kb.version}）")
            return "\n".join(lines)
        lines = []
        if task == "next_test":
            lines.append(f"The leading diagnosis is {name} ({disease.id}).")
            if tests:
                lines.append("Next: look for " + _join_en(self.term_text(t, lang) for t in tests) + ";")
            lines.append("and order genetic testing (a targeted gene panel or exome sequencing) to confirm it.")
            if support:
                lines.append("Reasoning: " + "; ".join(support) + ".")
        else:
            lines.append(f"Most likely diagnosis: {name} ({disease.id}).")
            if support:
                lines.append("Reasoning: " + "; ".join(support) + ".")
            if diff:
                lines.append("Differential diagnosis: " + "; ".join(diff) + ".")
            if task == "differential" and support:
                lines.append(f"{name} is favoured because these characteristic findings match its phenotype profile best.")
        lines.append("Note: this is a phenotype-based inference; the patient should be assessed by a clinical "
                     "geneticist / rare-disease clinic and the diagnosis confirmed, e.g. by genetic testing.")
        lines.append(f"(Phenotype knowledge: Human Phenotype Ontology {self.kb.version})")
        return "\n".join(lines)

    def _next_tests(self, disease: Disease, present: list[str], k: int = 3) -> list[str]:
        """Annotated laboratory / imaging findings of the disease not yet in the vignette."""
        shown = set().union(*(self.onto.ancestors(t) for t in present)) if present else set()
        cand = []
        for a in disease.phenotypes:
            if a.hpo_id in shown or self.finding_kind(a.hpo_id) != "test":
                continue
            freq = a.probability if a.probability is not None else 0.5
            cand.append((-freq * self.kb.information_content(a.hpo_id), a.hpo_id))
        cand.sort()
        return [t for _, t in cand[:k]]


def _poisson(rng: random.Random, lam: float) -> int:
    # Knuth; lam is small
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _age_text(age: float, lang: str) -> str:
    days = int(round(age * 365))
    if lang == "zh":
        if days < 28:
            return f"出生{max(days, 1)}天"
        if age < 2:
            return f"{max(int(age * 12), 1)}个月"
        return f"{int(age)}岁"
    if days < 28:
        return f"{max(days, 1)}-day-old"
    if age < 2:
        return f"{max(int(age * 12), 1)}-month-old"
    return f"{int(age)}-year-old"


def _join_en(items) -> str:
    items = list(items)
    items = [i[0].lower() + i[1:] if i and not i[:2].isupper() else i for i in items]
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]
