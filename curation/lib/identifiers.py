"""Personal identifiers in Chinese/English medical text: resident ID numbers, mobile and
landline phone numbers, e-mail addresses and hospital record numbers.

The goal is to flag the pairs a reviewer must look at (and to mask them on request) without
flagging ordinary medical numbers: lab values ("血糖 13.5 mmol/L"), blood pressure
("150/100mmHg"), years, dosages, an 18-digit string whose check digit is wrong, or an
11-digit number that does not start with 13-19.

Every pattern is compiled once and run once per kind; a text without any digit or "@" is
answered after a single scan. Django-free.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass

KINDS: tuple[str, ...] = ("resident_id", "mobile", "landline", "email", "record_number")

PLACEHOLDERS: dict[str, str] = {
    "resident_id": "[身份证号]",
    "mobile": "[手机号]",
    "landline": "[电话]",
    "email": "[邮箱]",
    "record_number": "[病历号]",
}

# When two candidates overlap, the first kind here wins (then the longer match).
_PRIORITY = {"email": 0, "resident_id": 1, "record_number": 2, "mobile": 3, "landline": 4}


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    start: int
    end: int
    text: str


# --------------------------------------------------------------------------- resident id

# GB/T 2260 province-level codes (first two digits), plus 81/82/83 (residence permits for
# Hong Kong, Macao and Taiwan residents). Foreigners' permanent residence cards (2023) start
# with 9 followed by a province code.
_PROVINCES = frozenset(
    "11 12 13 14 15 21 22 23 31 32 33 34 35 36 37 41 42 43 44 45 46 "
    "50 51 52 53 54 61 62 63 64 65 71 81 82 83".split()
)
_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"
_FULLWIDTH = str.maketrans("０１２３４５６７８９Ｘｘx", "0123456789XXX")


def _region_ok(s: str) -> bool:
    return s[:2] in _PROVINCES or (s[0] == "9" and s[1:3] in _PROVINCES)


def _date_ok(year: int, month: int, day: int) -> bool:
    try:
        born = _dt.date(year, month, day)
    except ValueError:
        return False
    return _dt.date(1900, 1, 1) <= born <= _dt.date.today()


def check_digit(first17: str) -> str:
    """ISO 7064 MOD 11-2 check character for the first 17 digits of a resident ID."""
    total = sum(int(d) * w for d, w in zip(first17, _WEIGHTS, strict=True))
    return _CHECK[total % 11]


def is_valid_resident_id(s: str) -> bool:
    """GB 11643-1999 citizen ID number: 18 characters with a region prefix, a real birth date
    (YYYYMMDD, not in the future) and a correct MOD 11-2 check character (X allowed); or a
    legacy 15-digit number (region, YYMMDD in the 1900s, sequence) with a real date."""
    s = s.strip().translate(_FULLWIDTH)
    if len(s) == 18:
        if not (s[:17].isascii() and s[:17].isdigit()) or s[17] not in "0123456789X":
            return False
        if not _region_ok(s) or not _date_ok(int(s[6:10]), int(s[10:12]), int(s[12:14])):
            return False
        return check_digit(s[:17]) == s[17]
    if len(s) == 15:
        if not (s.isascii() and s.isdigit()) or not _region_ok(s):
            return False
        return _date_ok(1900 + int(s[6:8]), int(s[8:10]), int(s[10:12]))
    return False


# --------------------------------------------------------------------------- patterns

_MMDD = r"(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])"
# The leading char class comes first so that the regex engine can skip ahead quickly; the
# lookbehind right after it checks that no digit comes before the match.
_RESIDENT_ID = re.compile(
    rf"[1-9](?<!\d\d)(?<!\d\.\d)\d{{5}}(?:(?:18|19|20)\d\d{_MMDD}\d{{3}}[\dXxＸｘ]|\d\d{_MMDD}\d{{3}})(?!\d|\.\d)"
)
_MOBILE = re.compile(
    r"(?:(?:[(（]\+?86[)）]|\+86|0(?<!\d0)086|8(?<!\d8)6)[ -]?1|1(?<!\d1)(?<!\d\.1))"
    r"[3-9]\d[ -]?\d{4}[ -]?\d{4}(?!\d|\.\d)"
)
_LANDLINE = re.compile(
    r"(?:[(（]0[1-9]\d{1,2}[)）][ -]?|0(?<!\d0)[1-9]\d{1,2}[ -])"
    r"[1-9]\d{6,7}"
    r"(?:(?:-|[ ]?(?:转|分机|ext\.?|x)[ ]?)\d{1,6})?(?!\d)",
    re.IGNORECASE,
)
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![A-Za-z0-9-])")
_RECORD = re.compile(
    r"(?:(?:住院|病历|门诊|病案|检查|就诊卡?|ID)号码?|MRN|medical\s+record(?:\s+(?:no\.?|number|#))?|patient\s+ID)"
    r"\s*(?:[:：#＃]|no\.?|number|为|是)?\s*"
    r"(?=[A-Za-z-]*\d)([A-Za-z0-9][A-Za-z0-9-]{4,})(?![A-Za-z0-9])",
    re.IGNORECASE,
)
_DIGIT = re.compile(r"\d")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef]")
# North American toll-free prefixes written without separators (1-800-...): English texts
# (MedQuAD) print them as 11 digits that look like a mainland mobile number.
_US_TOLL_FREE = frozenset({"1800", "1833", "1844", "1855", "1866", "1877", "1888"})


def find_identifiers(text: str) -> list[Finding]:
    """Identifiers in ``text``, sorted by position and not overlapping."""
    if not text:
        return []
    has_at = "@" in text
    has_digit = _DIGIT.search(text) is not None
    if not has_digit and not has_at:
        return []
    found: list[Finding] = []
    if has_at:
        found.extend(Finding("email", m.start(), m.end(), m.group()) for m in _EMAIL.finditer(text))
    if has_digit:
        for m in _RESIDENT_ID.finditer(text):
            if is_valid_resident_id(m.group()):
                found.append(Finding("resident_id", m.start(), m.end(), m.group()))
        for m in _MOBILE.finditer(text):
            if m.group()[:4] in _US_TOLL_FREE and not _CJK.search(text, max(0, m.start() - 30), m.end() + 30):
                continue  # "call 18004516434" in English text: a US toll-free number
            found.append(Finding("mobile", m.start(), m.end(), m.group()))
        for m in _LANDLINE.finditer(text):
            found.append(Finding("landline", m.start(), m.end(), m.group()))
        for m in _RECORD.finditer(text):
            found.append(Finding("record_number", m.start(1), m.end(1), m.group(1)))
    if len(found) < 2:
        return found
    return _resolve(found)


def _resolve(found: list[Finding]) -> list[Finding]:
    found.sort(key=lambda f: (_PRIORITY[f.kind], f.start - f.end, f.start))
    kept: list[Finding] = []
    for finding in found:
        if all(finding.end <= k.start or finding.start >= k.end for k in kept):
            kept.append(finding)
    kept.sort(key=lambda f: f.start)
    return kept


def mask_identifiers(text: str, findings: list[Finding] | None = None) -> str:
    """``text`` with each identifier replaced by its kind's placeholder ("[手机号]", ...)."""
    if findings is None:
        findings = find_identifiers(text)
    if not findings:
        return text
    parts: list[str] = []
    position = 0
    for finding in sorted(findings, key=lambda f: f.start):
        if finding.start < position:
            continue
        parts.append(text[position : finding.start])
        parts.append(PLACEHOLDERS[finding.kind])
        position = finding.end
    parts.append(text[position:])
    return "".join(parts)


# The text fields of a pair's content (revisions, frozen dataset items) that may hold identifiers.
CONTENT_TEXT_FIELDS: tuple[str, ...] = ("instruction", "input", "output", "system", "reasoning")


def mask_history(history) -> list:
    """``[[question, answer], ...]`` with every turn masked."""
    out = []
    for turn in history or ():
        if isinstance(turn, (list, tuple)):
            out.append([mask_identifiers(t) if isinstance(t, str) else t for t in turn])
        else:
            out.append(mask_identifiers(turn) if isinstance(turn, str) else turn)
    return out


def mask_content(content: dict) -> dict:
    """A copy of a content dict (revision snapshot, frozen item) with its text fields and
    history masked; ``content`` itself when it holds no identifier (no copy, one scan)."""
    masked = dict(content)
    changed = False
    for name in CONTENT_TEXT_FIELDS:
        value = masked.get(name)
        if isinstance(value, str) and value:
            new = mask_identifiers(value)
            if new != value:
                masked[name], changed = new, True
    if masked.get("history"):
        history = mask_history(masked["history"])
        if history != masked["history"]:
            masked["history"], changed = history, True
    return masked if changed else content
