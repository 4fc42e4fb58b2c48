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
_RUN = re.compile(rf"([{_CJK}]+)|[^\W_{_CJK}]+")


def analyze(text: str) -> list[str]:
    """Tokens of ``text`` in order (duplicates kept)."""
    tokens: list[str] = []
    for match in _RUN.finditer(unicodedata.normalize("NFKC", text).lower()):
        run = match.group()
        if match.lastindex and len(run) > 1:
            tokens.extend(map(str.__add__, run, run[1:]))  # overlapping bigrams, at C speed
        else:
            tokens.append(run)
    return tokens


def index_text(*texts: str) -> str:
    """The stored search document: distinct tokens joined by spaces."""
    return " ".join(dict.fromkeys(t for text in texts if text for t in analyze(text)))


def query_tokens(query: str) -> list[str]:
    """Distinct tokens of a user query, at most 32 (longer queries are cut)."""
    return list(dict.fromkeys(analyze(query)))[:32]
