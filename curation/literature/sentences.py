"""Sentence splitting of abstracts (English and Chinese), numbered from 1 across sections.

The sentence list is computed once at import and stored with the document, so the numbers a
candidate cites ([S3]) keep pointing at the same text even if this splitter changes later.
"""

from __future__ import annotations

import re

# Words after which a full stop does not end a sentence.
_ABBREVIATIONS = {
    "e.g", "i.e", "al", "vs", "fig", "figs", "no", "nos", "approx", "ca", "cf", "dr", "mr", "mrs", "ms", "prof",
    "st", "resp", "ref", "refs", "eq", "vol", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept",
    "oct", "nov", "dec", "u.s", "inc", "ltd", "co", "min", "max", "mg", "ml", "kg", "sp", "spp",
}
# A sentence end: . ! ? then space(s) then something that starts a sentence; or a CJK stop.
_BOUNDARY = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9\u0391-\u03a9])|(?<=[。！？])")


def split_sentences(text: str) -> list[str]:
    text = (text or "").strip()
    if not text:
        return []
    out: list[str] = []
    start = 0
    for m in _BOUNDARY.finditer(text):
        candidate = text[start : m.start()].strip()
        if not candidate:
            continue
        last_word = re.search(r"([\w.]+)[.!?][\"')\]]*$", candidate)
        if last_word and candidate.endswith(".") and last_word.group(1).lower() in _ABBREVIATIONS:
            continue
        if last_word and candidate.endswith(".") and len(last_word.group(1)) == 1 and last_word.group(1).isupper():
            continue  # an initial: "A. madagascariensis"
        out.append(candidate)
        start = m.end()
    tail = text[start:].strip()
    if tail:
        out.append(tail)
    return out


def document_sentences(sections: list[dict]) -> list[dict]:
    """``[{"n": 1, "section": 0, "text": "…"}, …]`` over every section in order."""
    out: list[dict] = []
    for index, section in enumerate(sections):
        for sentence in split_sentences(section.get("text", "")):
            out.append({"n": len(out) + 1, "section": index, "text": sentence})
    return out
