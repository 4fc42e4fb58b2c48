"""The grounding check: does a drafted answer rest on the abstract sentences it names?

A candidate is *flagged* when

* it names no supporting sentence (``no_support``);
* a number of its answer does not occur in those sentences (``number``) — percentages, decimals,
  ranges and Chinese-digit-free Arabic numbers, compared as numbers ("5.0" = "5");
* a dose (a number with a unit: ``5 mg``, ``0.5 mg/kg``, ``10 毫克``) does not occur there (``dose``);
* a drug name of the answer does not occur there (``drug``): words with the INN stems the WHO
  assigns (-mab, -nib, -pril, -sartan, -olol, -statin, …), a list of common drug names, and the
  matching Chinese stems (…沙星, …他汀, …普利, …单抗);
* or too little of its answer is found in them (``overlap``): the share of the answer's content
  words (English words less stop words, with a crude suffix stem; CJK character bigrams) that
  occur in the supporting sentences is below ``MIN_OVERLAP``. A Chinese answer to English
  sentences (or the reverse) has no overlap measure (``None``); its numbers, doses and Latin
  drug names are still checked.

It is a screen for reviewers, not a proof: it reads strings, so a paraphrase with other words
can be flagged and a claim that inverts its sentence ("did not" for "did") passes. Its precision
and recall on a hand-labelled set are measured by bench/literature.py (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

MIN_OVERLAP = 0.5
CHECK_VERSION = "grounding.v1"

_NUMBER = re.compile(r"(?<![\w.])\d+(?:,\d{3})*(?:\.\d+)?(?![\w.]*\d)")
_UNITS = (
    r"mg/kg(?:/d(?:ay)?)?|mg/m2|mg/d(?:ay)?|µg/kg|μg/kg|mcg/kg|mg|mcg|µg|μg|ug|ng|g|kg|ml|mL|l|L|IU|iu|U|units?|"
    r"mmol/L|mmol|mEq|Gy|cGy|毫克|克|微克|毫升|单位|国际单位|片|粒"
)
_DOSE = re.compile(rf"(\d+(?:\.\d+)?)\s*(?:-|–|to|~|至)?\s*(?:\d+(?:\.\d+)?)?\s*({_UNITS})(?![A-Za-z])")
_DRUG_SUFFIXES = (
    "mab", "nib", "pril", "sartan", "olol", "alol", "statin", "azole", "cillin", "mycin", "micin", "cycline",
    "floxacin", "oxacin", "vir", "tide", "parin", "dipine", "prazole", "oxetine", "triptan", "lukast", "semide",
    "thiazide", "platin", "rubicin", "taxel", "fungin", "gliptin", "gliflozin", "glitazone", "setron", "tidine",
    "zepam", "zolam", "barbital", "caine", "profen", "coxib", "sone", "olone", "lukast", "dronate", "tinib",
    "ciclib", "lisib", "zumab", "ximab", "umab", "cept", "kinase", "poetin", "grastim", "teplase", "xaban", "gatran",
)
_DRUG_WORDS = {
    "aspirin", "metformin", "insulin", "warfarin", "heparin", "cyclosporine", "ciclosporin", "tacrolimus",
    "methotrexate", "paracetamol", "acetaminophen", "ibuprofen", "morphine", "fentanyl", "ketamine", "propofol",
    "lidocaine", "digoxin", "amiodarone", "clopidogrel", "ticagrelor", "furosemide", "spironolactone", "dexamethasone",
    "prednisone", "prednisolone", "hydrocortisone", "levothyroxine", "tamoxifen", "letrozole", "cisplatin",
    "carboplatin", "doxorubicin", "gemcitabine", "fluorouracil", "capecitabine", "vancomycin", "penicillin",
    "amoxicillin", "ceftriaxone", "gentamicin", "rifampicin", "isoniazid", "azithromycin", "oseltamivir",
    "nitroglycerin", "epinephrine", "adrenaline", "norepinephrine", "dopamine", "dobutamine", "atropine",
    "magnesium", "potassium", "vitamin", "estrogen", "progesterone", "testosterone", "oxytocin", "misoprostol",
    "levodopa", "haloperidol", "lithium", "clozapine", "olanzapine", "risperidone", "sertraline", "fluoxetine",
    "diazepam", "midazolam", "naloxone", "methadone", "buprenorphine", "tramadol", "codeine", "ondansetron",
    "omeprazole", "ranitidine", "allopurinol", "colchicine", "hydroxychloroquine", "chloroquine", "botulinum",
}
_ZH_DRUG_STEMS = ("沙星", "他汀", "普利", "沙坦", "洛尔", "地平", "拉唑", "单抗", "替尼", "霉素", "西林", "韦")
_ZH_DRUG_NAMES = ("胰岛素", "二甲双胍", "阿司匹林", "华法林", "肝素", "头孢")
# A stem with the two characters before it ("伐他汀" of 阿托伐他汀): enough to tell drugs of one
# class apart without a dictionary, and no run-on into the words before the name.
_ZH_DRUG = re.compile(rf"(?:{'|'.join(_ZH_DRUG_NAMES)})|[\u4e00-\u9fff]{{2}}(?:{'|'.join(_ZH_DRUG_STEMS)})")
_WORD = re.compile(r"[A-Za-z][A-Za-z\-']+|\d+(?:\.\d+)?")
_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]+")
_STOP = {
    "the", "a", "an", "of", "in", "on", "and", "or", "to", "for", "with", "by", "at", "from", "as", "is", "are",
    "was", "were", "be", "been", "being", "this", "that", "these", "those", "it", "its", "their", "there", "which",
    "who", "whom", "what", "when", "where", "how", "why", "than", "then", "into", "such", "also", "can", "may",
    "might", "could", "would", "should", "will", "has", "have", "had", "do", "does", "did", "not", "no", "but",
    "if", "so", "both", "between", "among", "after", "before", "during", "about", "more", "most", "less", "other",
    "study", "studies", "patients", "patient", "results", "result", "showed", "show", "shows", "found", "according",
    "abstract", "authors", "we", "our", "they", "them", "he", "she", "his", "her", "yes", "answer", "question",
}
_ZH_STOP = {"患者", "研究", "结果", "显示", "可以", "一个", "我们", "他们", "以及", "根据", "摘要", "是否", "因为", "所以"}


@dataclass(slots=True)
class GroundingResult:
    ok: bool
    overlap: float | None  # None: answer and sentences in different languages
    flags: list[dict] = field(default_factory=list)  # [{"kind": "number"|"dose"|"drug"|"overlap"|"no_support", "text": …}]
    version: str = CHECK_VERSION

    def as_dict(self) -> dict:
        return asdict(self)


def numbers(text: str) -> set[float]:
    """The Arabic numbers of ``text`` ("1,200" is 1200; "M4" and "CD4" hold none)."""
    return {float(m.group().replace(",", "")) for m in _NUMBER.finditer(text or "")}


def doses(text: str) -> set[tuple[float, str]]:
    out = set()
    for m in _DOSE.finditer(text or ""):
        unit = m.group(2).lower().replace("µ", "μ").replace("mcg", "μg").replace("ug", "μg")
        unit = {"units": "u", "unit": "u", "iu": "u", "单位": "u", "国际单位": "u", "毫克": "mg", "克": "g", "微克": "μg", "毫升": "ml"}.get(unit, unit)
        out.add((float(m.group(1)), unit))
    return out


def drugs(text: str) -> set[str]:
    found = set()
    for w in re.findall(r"[A-Za-z][A-Za-z\-]{3,}", text or ""):
        lw = w.lower()
        if lw in _DRUG_WORDS or (len(lw) >= 6 and lw.endswith(_DRUG_SUFFIXES)):
            found.add(lw)
    found.update(m.group() for m in _ZH_DRUG.finditer(text or ""))
    return found


def _stem(word: str) -> str:
    word = word.lower()
    for suffix in ("ations", "ation", "ments", "ment", "ness", "ities", "ity", "ally", "ies", "ing", "ed", "es", "ly", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)]
    return word


def content_tokens(text: str) -> set[str]:
    tokens = {_stem(w) for w in _WORD.findall(text or "") if w.lower() not in _STOP and len(w) > 1}
    for run in _CJK_RUN.findall(text or ""):
        tokens.update(b for b in map(str.__add__, run, run[1:]) if b not in _ZH_STOP)
    return tokens


def _drug_in(drug: str, support: str, support_drugs: set[str]) -> bool:
    if drug in support_drugs:
        return True
    return drug.lower() in support.lower()


def check(answer: str, support: Sequence[str], *, min_overlap: float = MIN_OVERLAP) -> GroundingResult:
    """Check ``answer`` against the texts of the sentences it names."""
    if not support:
        return GroundingResult(ok=False, overlap=0.0, flags=[{"kind": "no_support", "text": ""}])
    joined = " ".join(support)
    flags: list[dict] = []
    support_numbers = numbers(joined)
    support_doses = doses(joined)
    answer_doses = doses(answer)
    for value, unit in sorted(answer_doses - support_doses):
        flags.append({"kind": "dose", "text": f"{value:g} {unit}"})
    dose_values = {v for v, _ in answer_doses}
    for value in sorted(numbers(answer) - support_numbers - dose_values):
        flags.append({"kind": "number", "text": f"{value:g}"})
    support_drugs = drugs(joined)
    cjk_support = bool(_CJK_RUN.search(joined))
    for drug in sorted(drugs(answer)):
        if _CJK_RUN.match(drug) and not cjk_support:
            continue  # a Chinese drug name cannot be looked up in English sentences
        if not _drug_in(drug, joined, support_drugs):
            flags.append({"kind": "drug", "text": drug})
    if _script(answer) != _script(joined):
        # A Chinese answer to an English abstract (or the reverse): words cannot be compared.
        return GroundingResult(ok=not flags, overlap=None, flags=flags)
    answer_tokens = content_tokens(answer)
    support_tokens = content_tokens(joined)
    overlap = len(answer_tokens & support_tokens) / len(answer_tokens) if answer_tokens else 0.0
    if overlap < min_overlap:
        flags.append({"kind": "overlap", "text": f"{overlap:.2f}"})
    return GroundingResult(ok=not flags, overlap=round(overlap, 3), flags=flags)


def _script(text: str) -> str:
    """"cjk" when most letters of ``text`` are Chinese characters, else "latin"."""
    cjk = len(re.findall(r"[\u3400-\u4dbf\u4e00-\u9fff]", text or ""))
    latin = len(re.findall(r"[A-Za-z]", text or ""))
    return "cjk" if cjk * 3 >= latin else "latin"


def best_support(answer: str, sentences: Sequence[str], *, k: int = 2) -> list[int]:
    """1-based numbers of the ``k`` sentences sharing the most content tokens with ``answer``
    (for a candidate that names none; the review page says the aligner chose them)."""
    tokens = content_tokens(answer)
    if not tokens:
        return []
    scored = [(len(tokens & content_tokens(s)), -i, i + 1) for i, s in enumerate(sentences)]
    scored = [s for s in scored if s[0] > 0]
    scored.sort(reverse=True)
    return sorted(n for _, _, n in scored[:k])
