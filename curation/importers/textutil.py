"""Small helpers shared by the readers."""

from __future__ import annotations

import re
from collections.abc import Iterator

# Separators for list-valued cells: ASCII and full-width commas/semicolons, the Chinese
# enumeration comma and vertical bars.
_LIST_SPLIT = re.compile(r"[,;，；、|｜\n]+")


class BadRecord(Exception):
    """A record of the wrong shape; becomes a RowIssue(kind="error")."""


_SURROGATE = re.compile("[\ud800-\udfff]")


def as_text(value: object, name: str) -> str:
    """A field value as stripped text. Numbers are accepted; containers are not."""
    if value is None:
        return ""
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (int, float)):
        text = str(value)
    else:
        raise BadRecord(f"the '{name}' field is {_kind(value)}, not text")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    lone = _SURROGATE.search(text)
    if lone:
        # Only JSON can produce these (an escape like "\ud800" without its pair); such text
        # cannot be stored as UTF-8, so the row is refused with the position.
        raise BadRecord(
            f"the '{name}' field contains an unpaired surrogate escape \\u{ord(lone.group()):04x} at character {lone.start() + 1}"
        )
    nul = text.find("\x00")
    if nul >= 0:
        raise BadRecord(nul_text(name, nul))
    return text.strip()


def nul_text(name: str, index: int) -> str:
    return f"the '{name}' field contains a NUL character (\\u0000) at character {index + 1}, which cannot be stored"


def _texts(value: object) -> Iterator[str]:
    """Every text in ``value``: itself, or the keys and texts inside its lists and dicts."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _texts(key)
            yield from _texts(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _texts(item)


def record_nul(fields: dict) -> str | None:
    """The problem text for the first field (or column of ``extra``) holding a NUL, else None.
    PostgreSQL cannot store NUL in text or jsonb, so such a row is refused, not the import."""
    for name, value in fields.items():
        named = value.items() if name == "extra" and isinstance(value, dict) else ((name, value),)
        for label, item in named:
            index = next((text.find("\x00") for text in _texts((label, item)) if "\x00" in text), None)
            if index is not None:
                return nul_text(str(label).replace("\x00", ""), index)
    return None


def as_list(value: object, name: str) -> list[str]:
    """Tags / codes: a list of strings, or one string split on , ; ， ； 、 |."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        items = [as_text(v, name) for v in value]
    elif isinstance(value, (str, int, float)):
        items = _LIST_SPLIT.split(as_text(value, name))
    else:
        raise BadRecord(f"the '{name}' field is {_kind(value)}, not text or a list")
    return list(dict.fromkeys(i.strip() for i in items if i and i.strip()))


def split_list(text: str) -> list[str]:
    return list(dict.fromkeys(i.strip() for i in _LIST_SPLIT.split(text) if i.strip()))


def _kind(value: object) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__}"


def kind_of_json(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return _kind(value)


def empty_issue_text(question: str, answer: str) -> str | None:
    """The reason a row is skipped for missing text, or None when both parts are there."""
    if not question and not answer:
        return "the question and the answer are empty."
    if not question:
        return "the question is empty."
    if not answer:
        return "the answer is empty."
    return None
