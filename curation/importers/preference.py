"""Preference files → parsed preference records (Django-free).

Formats (detected from the first record's keys, or named):

* ``llamafactory`` — LLaMA-Factory pairwise, alpaca shape: ``instruction`` (+ ``input``,
  ``system``, ``history``), ``chosen``, ``rejected`` (strings); or ShareGPT shape:
  ``conversations`` (list of ``{"from", "value"}``) and ``chosen`` / ``rejected`` as one
  ``{"from": "gpt", "value": ...}`` message each.
* ``trl`` — TRL's preference datasets: ``prompt`` / ``chosen`` / ``rejected`` as strings
  (standard) or as lists of ``{"role", "content"}`` messages (conversational: the prompt
  holds the system message and earlier turns, chosen / rejected the one answer each).

Files: a JSON array, JSON Lines, or Parquet (what ``curation.exports.preference`` writes for
Hugging Face ``datasets``; its rows have the TRL / export columns). Every row becomes a
``PreferenceRecord`` or a ``RowIssue`` (the same row report as QA imports); a problem with the
file as a whole raises ``ImportFileError`` and nothing is imported.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .base import ImportFileError, RowIssue, read_file_bytes
from .encoding import decode, detect_encoding
from .textutil import BadRecord, as_text, kind_of_json, record_nul

PREFERENCE_FORMATS: tuple[str, ...] = ("llamafactory", "trl")
MAX_ROWS = 200_000


@dataclass(slots=True)
class PreferenceRecord:
    row: int
    prompt: str
    chosen: str
    rejected: str
    system: str = ""
    history: list[list[str]] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


def detect_preference_format(obj: dict) -> str | None:
    keys = set(obj)
    if not {"chosen", "rejected"} <= keys:
        return None
    if "prompt" in keys:
        return "trl"
    if "instruction" in keys or "conversations" in keys:
        return "llamafactory"
    return None


# --------------------------------------------------------------------------- one record


def _role_turns(messages, name: str) -> list[tuple[str, str]]:
    """(role, text) of a message list in either spelling (role/content or from/value)."""
    if not isinstance(messages, list):
        raise BadRecord(f"the '{name}' field is {kind_of_json(messages)}, not a list of messages")
    turns = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise BadRecord(f"message {i + 1} of '{name}' is {kind_of_json(m)}, not an object")
        role = m.get("role", m.get("from"))
        text = m.get("content", m.get("value"))
        role = {"human": "user", "gpt": "assistant", "observation": "user"}.get(role, role)
        if role not in ("system", "user", "assistant"):
            raise BadRecord(f"message {i + 1} of '{name}' has the role {role!r}; expected system, user or assistant")
        turns.append((role, as_text(text, name)))
    return turns


def _conversation(turns: list[tuple[str, str]], name: str) -> tuple[str, list[list[str]], str]:
    """system, history, last user turn of a prompt given as messages."""
    system = ""
    if turns and turns[0][0] == "system":
        system = turns[0][1]
        turns = turns[1:]
    if not turns or turns[-1][0] != "user":
        raise BadRecord(f"the '{name}' messages must end with a user turn")
    body, last = turns[:-1], turns[-1][1]
    if len(body) % 2:
        raise BadRecord(f"the '{name}' messages must alternate user and assistant turns")
    history = []
    for (r1, q), (r2, a) in zip(body[0::2], body[1::2], strict=True):
        if (r1, r2) != ("user", "assistant"):
            raise BadRecord(f"the '{name}' messages must alternate user and assistant turns")
        history.append([q, a])
    return system, history, last


def _answer(value, name: str) -> str:
    if isinstance(value, dict):
        return _role_turns([value], name)[0][1]
    if isinstance(value, list):
        turns = _role_turns(value, name)
        answers = [t for r, t in turns if r == "assistant"]
        if len(answers) != 1 or len(turns) != 1:
            raise BadRecord(f"the '{name}' field must hold exactly one assistant message")
        return answers[0]
    return as_text(value, name)


def _history(value) -> list[list[str]]:
    if value in (None, ""):
        return []
    if not isinstance(value, list):
        raise BadRecord(f"the 'history' field is {kind_of_json(value)}, not a list of [question, answer] pairs")
    out = []
    for turn in value:
        if not isinstance(turn, (list, tuple)) or len(turn) != 2:
            raise BadRecord("the 'history' field must be a list of [question, answer] pairs")
        out.append([as_text(turn[0], "history"), as_text(turn[1], "history")])
    return out


def parse_record(obj, row: int, fmt: str | None) -> PreferenceRecord | RowIssue:
    if not isinstance(obj, dict):
        return RowIssue(row, f"the row is {kind_of_json(obj)}, not an object", "error")
    kind = fmt or detect_preference_format(obj)
    try:
        if kind is None:
            raise BadRecord("the row has no chosen and rejected answers with a prompt, instruction or conversations")
        if kind == "trl":
            prompt = obj.get("prompt")
            if isinstance(prompt, list):
                system, history, text = _conversation(_role_turns(prompt, "prompt"), "prompt")
            else:
                text = as_text(prompt, "prompt")
                system = as_text(obj.get("system"), "system")
                history = _history(obj.get("history"))
        elif "conversations" in obj:
            system, history, text = _conversation(_role_turns(obj["conversations"], "conversations"), "conversations")
            system = system or as_text(obj.get("system"), "system")
        else:
            parts = [as_text(obj.get("instruction"), "instruction"), as_text(obj.get("input"), "input")]
            text = "\n".join(p for p in parts if p)
            system = as_text(obj.get("system"), "system")
            history = _history(obj.get("history"))
        chosen = _answer(obj.get("chosen"), "chosen")
        rejected = _answer(obj.get("rejected"), "rejected")
    except BadRecord as exc:
        return RowIssue(row, str(exc), "error")
    missing = [n for n, v in (("prompt", text), ("chosen answer", chosen), ("rejected answer", rejected)) if not v]
    if missing:
        return RowIssue(row, "the " + " and the ".join(missing) + (" is" if len(missing) == 1 else " are") + " empty.", "skipped")
    if " ".join(chosen.split()) == " ".join(rejected.split()):
        return RowIssue(row, "the chosen and the rejected answers are the same text.", "skipped")
    known = {"prompt", "instruction", "input", "system", "history", "conversations", "chosen", "rejected"}
    extra = {k: v for k, v in obj.items() if k not in known and isinstance(v, (str, int, float, bool))}
    nul = record_nul({"extra": extra})
    if nul:
        return RowIssue(row, nul + ".", "error")
    return PreferenceRecord(row=row, prompt=text, chosen=chosen, rejected=rejected, system=system, history=history, extra=extra)


# --------------------------------------------------------------------------- files


def _json_rows(text: str) -> list:
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            rows = json.loads(stripped)
        except (ValueError, RecursionError) as exc:
            raise ImportFileError(f"The file is not valid JSON: {exc}.") from None
        return rows
    rows = []
    for n, line in enumerate(stripped.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except (ValueError, RecursionError) as exc:
            if n == 1:
                raise ImportFileError(f"The file is neither a JSON array nor JSON Lines: {exc}.") from None
            rows.append(_BadLine(str(exc)))
    return rows


@dataclass
class _BadLine:
    message: str


def _parquet_rows(path: Path) -> list:
    try:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise ImportFileError(f"The Parquet file cannot be read: {exc}.") from None
    return table.to_pylist()


def read_preference_file(path: str | Path, *, format: str | None = None) -> tuple[str, Iterator[PreferenceRecord | RowIssue], int]:
    """(format, records in file order, number of rows). Raises ImportFileError for the file."""
    path = Path(path)
    if format not in (None, "", *PREFERENCE_FORMATS):
        raise ImportFileError(f"Unknown preference format '{format}'; choose {' or '.join(PREFERENCE_FORMATS)}.")
    data = read_file_bytes(path)
    if data[:4] == b"PAR1":
        rows = _parquet_rows(path)
    else:
        rows = _json_rows(decode(data, detect_encoding(data), explicit=False))
    if not isinstance(rows, list):
        raise ImportFileError("The file must hold one preference record per row (a JSON array or JSON Lines).")
    if not rows:
        raise ImportFileError("The file holds no record.")
    if len(rows) > MAX_ROWS:
        raise ImportFileError(f"The file holds {len(rows)} rows; at most {MAX_ROWS} are imported at once.")
    fmt = format or None
    if fmt is None:
        first = next((r for r in rows if isinstance(r, dict)), None)
        fmt = detect_preference_format(first) if first else None
        if fmt is None:
            keys = ", ".join(sorted(first)[:12]) if first else "none"
            raise ImportFileError(
                "This is not a preference file: each record needs chosen and rejected answers with a prompt (TRL) "
                f"or an instruction / conversations (LLaMA-Factory pairwise). The first record's keys: {keys}."
            )

    def produce():
        for row, obj in enumerate(rows, 1):
            if isinstance(obj, _BadLine):
                yield RowIssue(row, f"the line is not valid JSON: {obj.message}", "error")
            else:
                yield parse_record(obj, row, fmt)

    return fmt, produce(), len(rows)
