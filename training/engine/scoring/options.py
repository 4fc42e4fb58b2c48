"""Which option a free-text answer to a multiple-choice question chose.

``extract_choice(answer, options, question="")`` returns a ``Choice``: the option's key ("A".."Z")
or ``None`` when the answer commits to no single option, and the rule that decided. The rules are
tried in this order; the first that decides wins (docs/evaluation-suites.md, "Multiple choice"):

1. ``explicit`` — a statement of the answer: 答案是B, 答案：(B), 正确答案为B, 选B, 故选B, 选项B,
   B项正确, "the answer is B", "Answer: (B)", "option B", "I'd choose B". Negated statements
   (不选B, "B项错误") are ignored; if several remain, the last one counts (reasoning comes first).
2. ``list`` — the answer offers several options (A或B, "B or C", AB, A、B、D): no choice.
3. ``letter`` — the whole answer is one option letter, possibly bracketed (B, (B), 【B】, **B**, b).
4. ``leading`` — the answer starts with an option letter marked as one: "B.", "B、", "B)", "B 脉",
   "(B) …" (but not the English article: "A patient …").
5. ``mention`` — option letters standing alone in the text ("… RCA (C)", 我觉得是B), ignoring
   negated ones ("not the LAD (A)") and letters inside option texts ("Vitamin C"): one distinct
   letter decides; two or more mean no choice.
6. ``text`` — the options' texts found in the answer (whitespace next to Chinese ignored; texts of
   more than 3 characters case-insensitively, Latin words whole; a text found only inside a longer
   option's text does not count, so "冲脉" is not "脉", nor one inside a repeat of the question):
   one option decides; several are narrowed to the one in the clause that
   repeats the most of the question (``clause``), else no choice.

Everything is compared after Unicode NFKC normalisation (full-width letters and brackets, Ⅷ → VIII)
with Markdown emphasis removed.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Choice", "extract_choice", "normalize"]

RULES = ("explicit", "list", "letter", "leading", "mention", "text", "clause", "none")


@dataclass(frozen=True, slots=True)
class Choice:
    """The chosen option key, or None, and the rule (one of RULES) that decided."""

    key: str | None
    rule: str

    @property
    def parsed(self) -> bool:
        return self.key is not None


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text or "")
    text = re.sub(r"\*\*|__|`", "", text)
    return text.replace("\u3000", " ").strip()


_NEGATION_BEFORE = re.compile(r"(?:不是|不选|不应选|排除|除了|并非|而非|\bnot\b|\bisn't\b|\bnor\b|\bneither\b|\bexcept\b)[^.;,，。；]{0,14}$", re.I)
_NEGATION_AFTER = re.compile(r"^\s*(?:\)|】|\])?\s*项?\s*(?:错误|不对|不正确|是错误的|错|不是|is\s+(?:wrong|incorrect|not))", re.I)


def _letters(keys) -> str:
    return "".join(sorted(keys))


def _letter_ok(text: str, match: re.Match, group: int = 1) -> bool:
    """An uppercase letter must not continue a word; a lowercase one must end a sentence
    ("answer is b", not "answer is a deficiency")."""
    letter = match.group(group)
    after = text[match.end(group) :]
    if after[:1].isascii() and after[:1].isalnum():
        return False
    if letter.islower():
        return re.match(r"\s*(?:$|[.,;:!?)\]】。，；])", after) is not None
    return True


def _negated(text: str, start: int, end: int) -> bool:
    return bool(_NEGATION_BEFORE.search(text[:start]) or _NEGATION_AFTER.match(text[end:]))


def _explicit(text: str, keys: str) -> str | None:
    L = f"[{keys}{keys.lower()}]"
    open_ = r"[\(\[【]?\s*"
    patterns = [
        rf"(?:正确答案|最佳答案|参考答案|答案|答)\s*(?:应该|应当|应)?\s*(?:是|为|选择|选)?\s*[:]?\s*{open_}({L})",
        rf"(?<!不)(?:选择|应选|故选|选项|选)\s*(?:是|为)?\s*[:]?\s*{open_}({L})",
        rf"(?<![A-Za-z])([{keys}])\s*项?\s*(?:正确|是正确的|为正确答案|是答案|为答案)",
        rf"\banswers?\s*(?:is|would be|should be|will be|=|:)?\s*[:]?\s*(?:option\s*|choice\s*)?{open_}({L})",
        rf"\b(?:option|choice)\s*(?:is\s*)?[:]?\s*{open_}({L})",
        rf"\b(?:choose|chose|pick|select|go with|going with|opt for)\s*(?:option\s*|choice\s*)?{open_}({L})",
    ]
    found: list[tuple[int, str]] = []
    for pattern in patterns:
        for m in re.finditer(pattern, text, flags=re.I):
            letter = m.group(1)
            if letter.upper() not in keys or not _letter_ok(text, m):
                continue
            if _negated(text, m.start(), m.end(1)):
                continue
            found.append((m.start(1), letter.upper()))
    if not found:
        return None
    return max(found)[1]


def _is_list(text: str, keys: str) -> bool:
    if re.fullmatch(rf"[\(\[【]?\s*[{keys}]{{2,}}\s*[\)\]】]?[.。]?", text):
        return True
    sep = r"\s*(?:、|,|/|和|或|或者|及|与|跟|\bor\b|\band\b|&)\s*"
    for m in re.finditer(rf"(?<![A-Za-z])[\(\[]?([{keys}])[\)\]]?{sep}[\(\[]?([{keys}])[\)\]]?(?![A-Za-z0-9])", text):
        if m.group(1) != m.group(2) and not _negated(text, m.start(), m.end()):
            return True
    return False


def _whole_letter(text: str, keys: str) -> str | None:
    m = re.fullmatch(rf"[\(\[【]?\s*([{keys}{keys.lower()}])\s*[\)\]】]?\s*[.。,，!！]?", text)
    return m.group(1).upper() if m else None


def _leading(text: str, keys: str) -> str | None:
    m = re.match(rf"[\(\[【]?\s*([{keys}])(?:\s*[.、:)\]】。,，;；项]|\s+(?=[^\sa-z0-9]))", text)
    return m.group(1) if m else None


_CJK = "\u3400-\u9fff\uf900-\ufaff"


def _is_cjk(ch: str) -> bool:
    return re.match(f"[{_CJK}]", ch) is not None


def _squeeze(text: str) -> tuple[str, list[int]]:
    """Text with whitespace next to a CJK character or punctuation dropped and other runs of
    whitespace made one space, and each kept character's index in the original."""
    chars, where = [], []
    n = len(text)
    i = 0
    while i < n:
        ch = text[i]
        if ch.isspace():
            j = i
            while j < n and text[j].isspace():
                j += 1
            before = text[i - 1] if i else ""
            after = text[j] if j < n else ""
            if before.isalnum() and after.isalnum() and not _is_cjk(before) and not _is_cjk(after):
                chars.append(" ")
                where.append(i)
            i = j
            continue
        chars.append(ch)
        where.append(i)
        i += 1
    return "".join(chars), where


def _find_all(hay: str, needle: str) -> list[tuple[int, int]]:
    """Occurrences of needle in hay; a needle that starts (ends) with a Latin letter or digit
    must not continue a word there."""
    spans = []
    start = hay.find(needle)
    while start != -1:
        end = start + len(needle)
        left_ok = not (needle[0].isascii() and needle[0].isalnum() and start and hay[start - 1].isascii() and hay[start - 1].isalnum())
        right_ok = not (needle[-1].isascii() and needle[-1].isalnum() and end < len(hay) and hay[end].isascii() and hay[end].isalnum())
        if left_ok and right_ok:
            spans.append((start, end))
        start = hay.find(needle, start + 1)
    return spans


def _echoes_question(hay: str, span: tuple[int, int], question: str) -> bool:
    """The occurrence sits inside a verbatim copy of the question (the answer repeats it)."""
    if not question:
        return False
    a, b = span
    k = 4
    for piece in (hay[max(0, a - k) : b], hay[a : b + k]):
        if len(piece) >= (b - a) + 2 and piece in question:
            return True
    return False


def _text_spans(text: str, options: Mapping[str, str], question: str = "") -> dict[str, list[tuple[int, int]]]:
    """Per option, the (start, end) spans in ``text`` where its text occurs, not inside a longer
    option's occurrence nor inside a repeat of the question. Short texts (3 characters or fewer:
    GG, Gg, gg) match case-sensitively, longer ones case-insensitively."""
    squeezed, where = _squeeze(text)
    folded = squeezed.casefold()
    q_squeezed = _squeeze(normalize(question))[0] if question else ""
    raw: dict[str, list[tuple[int, int]]] = {}
    for key, value in options.items():
        needle = _squeeze(normalize(value))[0]
        if not needle:
            continue
        fold = len(needle) > 3
        hay = folded if fold else squeezed
        q = q_squeezed.casefold() if fold else q_squeezed
        spans = [s for s in _find_all(hay, needle.casefold() if fold else needle) if not _echoes_question(hay, s, q)]
        if spans:
            raw[key] = spans
    out: dict[str, list[tuple[int, int]]] = {}
    for key, spans in raw.items():
        kept = [
            s
            for s in spans
            if not any(other != key and any(o[0] <= s[0] and s[1] <= o[1] and (o[1] - o[0]) > (s[1] - s[0]) for o in ospans) for other, ospans in raw.items())
        ]
        if kept:
            out[key] = [(where[a], where[b - 1] + 1) for a, b in kept]
    return out


def _mask(text: str, spans) -> str:
    chars = list(text)
    for a, b in spans:
        for i in range(a, b):
            chars[i] = " "
    return "".join(chars)


def _mentions(text: str, keys: str, option_spans) -> set[str]:
    masked = _mask(text, [s for spans in option_spans.values() for s in spans])
    letters = set()
    for m in re.finditer(rf"(?<![A-Za-z0-9])([{keys}])(?![A-Za-z0-9])", masked):
        after = masked[m.end() :]
        if m.group(1) == "A" and re.match(r"\s+[a-z0-9]", after):  # the English article
            continue
        if _negated(masked, m.start(), m.end()):
            continue
        letters.add(m.group(1))
    return letters


def _bigrams(text: str) -> set[str]:
    text = text.casefold()
    words = set(re.findall(r"[a-z0-9][a-z0-9-]{2,}", text)) - _STOP
    cjk = re.sub(r"[^\u3400-\u9fff]+", "|", text)
    grams = {part[i : i + 2] for part in cjk.split("|") for i in range(len(part) - 1)}
    return words | grams


_STOP = {"the", "and", "for", "which", "what", "with", "most", "that", "this", "from", "are", "was", "has", "have", "its", "into", "not"}


def _by_clause(text: str, question: str, spans: dict[str, list[tuple[int, int]]]) -> str | None:
    """Of several options found, the one alone in the clause sharing most with the question."""
    if not question:
        return None
    wanted = _bigrams(normalize(question))
    best: list[tuple[int, set[str]]] = []
    for m in re.finditer(r"[^,，。；;.!?！？\n]+", text):
        a, b = m.span()
        inside = {key for key, ss in spans.items() if any(a <= s[0] and s[1] <= b for s in ss)}
        covered = " ".join(
            text[x:y] for ss in spans.values() for x, y in ss if a <= x and y <= b
        )
        clause_grams = _bigrams(text[a:b]) - _bigrams(covered)
        best.append((len(wanted & clause_grams), inside))
    if not best:
        return None
    top = max(score for score, _ in best)
    winners = [inside for score, inside in best if score == top]
    if top == 0 or len(winners) != 1 or len(winners[0]) != 1:
        return None
    return next(iter(winners[0]))


def extract_choice(answer: str, options: Mapping[str, str], question: str = "") -> Choice:
    """The option ``answer`` chose among ``options`` ({"A": "卵巢", …}); see the module doc."""
    keys = _letters(k.upper() for k in options if len(k) == 1 and k.isalpha())
    if not keys:
        raise ValueError("options must be keyed by single letters")
    options = {k.upper(): v for k, v in options.items()}
    text = normalize(answer)
    if not text:
        return Choice(None, "none")
    letter = _explicit(text, keys)
    if letter:
        return Choice(letter, "explicit")
    if _is_list(text, keys):
        return Choice(None, "list")
    letter = _whole_letter(text, keys)
    if letter:
        return Choice(letter, "letter")
    letter = _leading(text, keys)
    if letter:
        return Choice(letter, "leading")
    spans = _text_spans(text, options, question)
    mentioned = _mentions(text, keys, spans)
    if len(mentioned) == 1:
        return Choice(mentioned.pop(), "mention")
    if len(mentioned) > 1:
        return Choice(None, "mention")
    if len(spans) == 1:
        return Choice(next(iter(spans)), "text")
    if len(spans) > 1:
        key = _by_clause(text, question, spans)
        return Choice(key, "clause")
    return Choice(None, "none")
