"""Search analysis that works for Chinese without a dictionary.

Chinese has no spaces between words, so word-based full-text search finds nothing. Like
Lucene's CJK analyzer, MedPortal indexes overlapping character bigrams of every run of CJK
characters ("高血压" → "高血 血压") and lower-cased words/numbers of every other script. A query
is analysed the same way and every one of its tokens must match, so "血压" finds "高血压" and
"hypertension" finds "Hypertension". On PostgreSQL the tokens go into a GIN-indexed
``to_tsvector('simple', …)``; on SQLite they are matched as substrings.
"""

from __future__ import annotations

import re
import unicodedata

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
    """The stored search document: distinct tokens, in order of first appearance, joined by spaces."""
    text = _prepare("\n".join(t for t in texts if t))
    tokens = _SINGLE.findall(_CJK_RUN.sub(" ", text))
    for run in _CJK_RUN.findall(text):
        tokens += map(str.__add__, run, run[1:])  # overlapping bigrams, at C speed
    return " ".join(dict.fromkeys(tokens))


_BIGRAM = re.compile(rf"[{_CJK}]{{2}}")


def is_cjk_bigram(token: str) -> bool:
    """True for the two-character CJK tokens that ``index_text`` writes."""
    return _BIGRAM.fullmatch(token) is not None


def query_tokens(query: str) -> list[str]:
    """Distinct tokens of a user query, at most 32 (longer queries are cut)."""
    return analyze(query)[:32]
