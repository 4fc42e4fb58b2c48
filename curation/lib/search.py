"""Search analysis that works for Chinese without a dictionary.

Chinese has no spaces between words, so word-based full-text search finds nothing. Like
Lucene's CJK analyzer, MedPortal indexes overlapping character bigrams of every run of CJK
characters ("高血压" → "高血 血压") and lower-cased words/numbers of every other script. A query
is analysed the same way and every one of its tokens must match, so "血压" finds "高血压" and
"hypertension" finds "Hypertension". On PostgreSQL the tokens go into a GIN-indexed
``to_tsvector('simple', …)``; on SQLite they are matched as substrings.

``index_texts`` builds the search documents of many records at once (imports): the CJK
bigrams, which are most of the tokens of a Chinese text, are found, de-duplicated and joined
by numpy instead of one Python string per bigram. Its output is exactly ``index_text``'s.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence

import numpy as np

from curation.lib import fingerprint

_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_RUN = re.compile(rf"[{_CJK}]{{2,}}")  # runs that yield bigrams
_SINGLE = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+")  # lone CJK characters and other-script words
# NFKC matters here only for full-width letters and digits (ＣＴ → ct); checking for them first
# skips a normalisation pass over almost every Chinese text.
_FULLWIDTH = re.compile("[\uff10-\uff19\uff21-\uff3a\uff41-\uff5a\uf900-\ufaff]")


def _prepare(text: str) -> str:
    if _FULLWIDTH.search(text):
        text = unicodedata.normalize("NFKC", text)
    return text.lower()


def analyze(text: str) -> list[str]:
    """Tokens of ``text`` in order of first appearance, without duplicates."""
    text = _prepare(text)
    tokens: dict[str, None] = {}
    pos = 0
    for run in _CJK_RUN.finditer(text):
        tokens.update(dict.fromkeys(_SINGLE.findall(text, pos, run.start())))
        s = run.group()
        tokens.update(dict.fromkeys(map(str.__add__, s, s[1:])))  # overlapping bigrams, at C speed
        pos = run.end()
    tokens.update(dict.fromkeys(_SINGLE.findall(text, pos)))
    return list(tokens)


def index_text(*texts: str) -> str:
    """The stored search document: the distinct words and lone CJK characters in order of
    first appearance, then the distinct CJK bigrams in order of first appearance, joined by
    spaces."""
    text = _prepare("\n".join(t for t in texts if t))
    tokens = _SINGLE.findall(_CJK_RUN.sub(" ", text))
    for run in _CJK_RUN.findall(text):
        tokens += map(str.__add__, run, run[1:])  # overlapping bigrams, at C speed
    return " ".join(dict.fromkeys(tokens))


def index_texts(records: Iterable[Sequence[str]]) -> list[str]:
    """``[index_text(*texts) for texts in records]``, computed in bulk.

    Words and lone characters never equal a bigram (they hold no CJK character, or just
    one), so de-duplicating the two kinds apart gives the same document.
    """
    prepared = [_prepare("\n".join(t for t in texts if t)) for texts in records]
    bigrams: list[str] = []
    for part in fingerprint.batches([len(text) for text in prepared], fingerprint.BATCH_CHARS):
        bigrams.extend(_bigram_documents(prepared[part]))
    documents = []
    for text, pairs in zip(prepared, bigrams):
        words = " ".join(dict.fromkeys(_SINGLE.findall(_CJK_RUN.sub(" ", text))))
        documents.append(f"{words} {pairs}" if words and pairs else words or pairs)
    return documents


def _bigram_documents(texts: list[str]) -> list[str]:
    """For each prepared text, its distinct CJK bigrams in order of first appearance, joined
    by spaces."""
    if not texts:
        return []
    # The texts end to end, one "\n" (never CJK) between two: no bigram spans two texts.
    points = np.frombuffer("\n".join(texts).encode("utf-32-le", "surrogatepass"), dtype="<u4")
    cjk = ((points >= 0x4E00) & (points <= 0x9FFF)) | ((points >= 0x3400) & (points <= 0x4DBF))
    cjk |= (points >= 0xF900) & (points <= 0xFAFF)  # the code points of _CJK
    starts = np.flatnonzero(cjk[:-1] & cjk[1:])
    rows = np.searchsorted(np.cumsum([len(text) + 1 for text in texts]), starts, side="right")
    first = fingerprint.first_occurrences((points[starts].astype(np.uint64) << np.uint64(32)) | points[starts + 1], rows)
    starts, rows = starts[first], rows[first]
    out = np.empty((starts.size, 3), dtype="<u4")  # each bigram and a space
    out[:, 0] = points[starts]
    out[:, 1] = points[starts + 1]
    out[:, 2] = 0x20
    joined = out.tobytes().decode("utf-32-le")
    bounds = (3 * np.searchsorted(rows, np.arange(len(texts) + 1))).tolist()
    return [joined[a : b - 1] if b > a else "" for a, b in zip(bounds, bounds[1:])]


_BIGRAM = re.compile(rf"[{_CJK}]{{2}}")


def is_cjk_bigram(token: str) -> bool:
    """True for the two-character CJK tokens that ``index_text`` writes."""
    return _BIGRAM.fullmatch(token) is not None


def query_tokens(query: str) -> list[str]:
    """Distinct tokens of a user query, at most 32 (longer queries are cut)."""
    return analyze(query)[:32]


def match_spans(text: str, tokens: Sequence[str]) -> list[tuple[int, int]]:
    """Where the query ``tokens`` occur in ``text``: sorted, merged ``(start, end)`` spans.

    A CJK token matches wherever its characters occur; a word of another script matches at
    the start of a word, ignoring case ("hyperten" marks the start of "Hypertension"), as the
    search itself matches it.
    """
    if not text or not tokens:
        return []
    parts = []
    for t in sorted({t for t in tokens if t}, key=len, reverse=True):
        if re.match(rf"[{_CJK}]", t):
            parts.append(re.escape(t))
        else:
            parts.append(rf"(?<![^\W_]){re.escape(t)}")
    if not parts:
        return []
    spans: list[tuple[int, int]] = []
    # Overlapping bigrams ("高血", "血压") must both mark: scan every start, not just after a match.
    pattern = re.compile("(?=(" + "|".join(parts) + "))", re.IGNORECASE)
    for m in pattern.finditer(text):
        start, end = m.start(1), m.end(1)
        if spans and start <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], end))
        else:
            spans.append((start, end))
    return spans


def snippet_spans(text: str, tokens: Sequence[str], width: int) -> tuple[int, int, list[tuple[int, int]]]:
    """A window of at most ``width`` characters of ``text`` that shows the first match:
    ``(start, end, spans inside it)``."""
    spans = match_spans(text, tokens)
    start = 0
    if spans and spans[0][1] > width:
        start = max(0, min(spans[0][0] - width // 3, len(text) - width))
    end = min(len(text), start + width)
    inside = [(max(a, start), min(b, end)) for a, b in spans if a < end and b > start]
    return start, end, inside
