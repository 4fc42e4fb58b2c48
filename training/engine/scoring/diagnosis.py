"""Does an answer name the right disease? Matching by the disease's names and synonyms (zh / en).

The Django side passes the catalogue — every disease's id (ORPHA:558), English name, Chinese
name and synonyms from the knowledge graph (curation's ``Disease`` rows) — as ``DiseaseNames``;
this module only reads text. The rule (docs/evaluation-suites.md, "Diagnosis"):

* text and names are compared after NFKC, case folding, "’s"/"'s" dropped, hyphens, slashes and
  underscores read as spaces, whitespace next to Chinese removed; a Latin name must match whole
  words; names shorter than 2 characters (Chinese) or 4 (Latin) are ignored;
* overlapping matches keep the longest ("Marfan syndrome type 2" over "Marfan syndrome");
* **named** — the diseases the answer names, in order of first mention (its differential);
* **top-1** — the answer's leading diagnosis: the first disease named after a marker such as
  最可能的诊断 / 首先考虑 / 诊断为 / "most likely diagnosis" / "leading diagnosis" / "diagnosis is",
  else the first disease named at all. It is right when it is the reference disease;
* **in differential** — the reference disease is among the named ones.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["DiagnosisMatcher", "DiagnosisScore", "DiseaseNames", "normalize_name"]

_CJK = "\u3400-\u9fff\uf900-\ufaff"
_MARKERS = re.compile(
    r"(最可能的诊断|最可能诊断|初步诊断|首先考虑|首先诊断|考虑诊断|诊断为|诊断是|考虑为|考虑是|"
    r"most likely diagnosis|most probable diagnosis|leading diagnosis|diagnosis is|diagnosis of|likely diagnosis|consistent with|suggestive of)"
)


def normalize_name(text: str) -> str:
    text = unicodedata.normalize("NFKC", text or "").casefold()
    text = re.sub(r"['’]s\b", "", text)
    text = re.sub(r"[-‐‑–—_/]", " ", text)
    text = re.sub(r"\s+", " ", text)
    text = re.sub(rf"\s+(?=[{_CJK}])|(?<=[{_CJK}])\s+", "", text)
    return text.strip()


def _is_latin(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


@dataclass(frozen=True, slots=True)
class DiseaseNames:
    id: str
    names: tuple[str, ...]  # English name, Chinese name, synonyms (any order)

    @classmethod
    def build(cls, id: str, name: str = "", name_zh: str = "", synonyms: Iterable[str] = ()) -> DiseaseNames:
        return cls(id=id, names=tuple(n for n in (name, name_zh, *synonyms) if n))


@dataclass(frozen=True, slots=True)
class DiagnosisScore:
    top1: bool
    in_differential: bool
    leading: str | None  # the id of the answer's leading diagnosis
    named: tuple[str, ...] = field(default=())  # ids in order of first mention

    def to_dict(self) -> dict:
        return {"top1": self.top1, "in_differential": self.in_differential, "leading": self.leading, "named": list(self.named)}


class DiagnosisMatcher:
    """Finds the diseases of a catalogue named in free text (indexed by each name's first two
    characters, so a 10,000-disease catalogue scans an answer in about a millisecond)."""

    def __init__(self, catalogue: Iterable[DiseaseNames]):
        self.index: dict[str, list[tuple[str, frozenset[str]]]] = {}
        owners: dict[str, set[str]] = {}
        for disease in catalogue:
            for raw in (*disease.names, disease.id):
                name = normalize_name(raw)
                latin = any(_is_latin(c) for c in name) and not re.search(f"[{_CJK}]", name)
                if len(name) < (4 if latin else 2):
                    continue
                owners.setdefault(name, set()).add(disease.id)
        for name, ids in owners.items():
            self.index.setdefault(name[:2], []).append((name, frozenset(ids)))
        for bucket in self.index.values():
            bucket.sort(key=lambda item: -len(item[0]))

    def mentions(self, text: str) -> list[tuple[int, frozenset[str]]]:
        """(position, disease ids) of each name found in ``text``, longest first at a position,
        overlapping shorter matches dropped, in order of position."""
        hay = normalize_name(text)
        found: list[tuple[int, int, frozenset[str]]] = []
        i, n = 0, len(hay)
        while i < n - 1:
            hit = None
            if not (_is_latin(hay[i]) and i and _is_latin(hay[i - 1])):
                for name, ids in self.index.get(hay[i : i + 2], ()):
                    end = i + len(name)
                    if hay.startswith(name, i) and not (_is_latin(name[-1]) and end < n and _is_latin(hay[end])):
                        hit = (i, end, ids)
                        break
            if hit:
                found.append(hit)
                i = hit[1]
            else:
                i += 1
        return [(start, ids) for start, _end, ids in found]

    def score(self, answer: str, reference_id: str) -> DiagnosisScore:
        found = self.mentions(answer)
        named: list[str] = []
        for _pos, ids in found:
            for disease_id in sorted(ids):
                if disease_id not in named:
                    named.append(disease_id)
        leading_ids: frozenset[str] | None = None
        hay = normalize_name(answer)
        marker = _MARKERS.search(hay)
        if marker:
            after = [ids for pos, ids in found if pos >= marker.end()]
            leading_ids = after[0] if after else None
        if leading_ids is None and found:
            leading_ids = found[0][1]
        leading = None
        if leading_ids:
            leading = reference_id if reference_id in leading_ids else sorted(leading_ids)[0]
        return DiagnosisScore(
            top1=leading == reference_id,
            in_differential=reference_id in named,
            leading=leading,
            named=tuple(named),
        )
