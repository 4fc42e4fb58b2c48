"""JSON readers: a JSON array, JSON Lines or one object, holding alpaca, ShareGPT, OpenAI
messages, query/response, question/answer or medical-o1 records; and PubMedQA's dict
keyed by PMID."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from .base import ImportFileError, Item, ParsedRecord, RowIssue, Source
from .textutil import BadRecord, as_list, as_text, empty_issue_text, kind_of_json, record_nul

_EXPECTED = (
    "instruction/output (alpaca), conversations (ShareGPT), messages (OpenAI), "
    "query/response, question/answer, Question/Complex_CoT/Response (medical-o1) "
    "or a PubMedQA object keyed by PMID"
)


# --------------------------------------------------------------------------- detection


def record_format(obj: dict) -> str | None:
    """The record format a JSON object's keys imply, or None."""
    if "conversations" in obj:
        return "sharegpt"
    if "messages" in obj:
        messages = obj["messages"]
        first = messages[0] if isinstance(messages, list) and messages else None
        if isinstance(first, dict) and ("from" in first or "value" in first):
            return "sharegpt"
        return "openai"
    return format_from_keys(obj.keys())


def format_from_keys(keys) -> str | None:
    keys = set(keys)
    if "conversations" in keys:
        return "sharegpt"
    if "messages" in keys:
        return "sharegpt" if ("from" in keys or "value" in keys) else "openai"
    if "instruction" in keys and "output" in keys:
        return "alpaca"
    if "Question" in keys and ("Complex_CoT" in keys or "Response" in keys):
        return "medical_o1"
    if "QUESTION" in keys and ("LONG_ANSWER" in keys or "CONTEXTS" in keys):
        return "pubmedqa"
    if "query" in keys and "response" in keys:
        return "query_response"
    if "question" in keys and "answer" in keys:
        return "question_answer"
    return None


_KEY = re.compile(r'"((?:[^"\\\n]|\\.){1,60})"\s*:')
_LABEL_MAP = re.compile(r'^\{\s*"[^"\n]{1,40}"\s*:\s*("|-?\d|true|false|null)')


# Python refuses to turn more than 4300 digits into an int (ValueError, CVE-2020-10735): a
# number that long is kept as its digits, so a hostile file is data, not a crash.
_MAX_INT_DIGITS = 4000


def _parse_int(text: str):
    return int(text) if len(text) <= _MAX_INT_DIGITS else text


def _decoder() -> json.JSONDecoder:
    return json.JSONDecoder(parse_int=_parse_int)


def _loads(text: str):
    return json.loads(text, parse_int=_parse_int)


def sniff_json_format(head: str) -> str:
    """Guess the format from the start of a JSON/JSONL text (which may be cut anywhere)."""
    s = head.lstrip()
    decoder = _decoder()
    try:
        whole = _loads(s)
    except (ValueError, RecursionError):
        pass
    else:  # the head is the whole document
        if isinstance(whole, list):
            return _format_of_items(whole)
        if isinstance(whole, dict):
            return _format_of_object(whole)
    if s.startswith("["):
        first = s[1:].lstrip()[:1]
        if first and first != "{":
            raise ImportFileError(
                f"The JSON array holds {_kind_of_start(first)}, not one object per question-answer record."
            )
        start = s.find("{")
        if start >= 0:
            try:
                obj, _ = decoder.raw_decode(s, start)
            except json.JSONDecodeError:
                obj = None
            if isinstance(obj, dict):
                fmt = record_format(obj)
                if fmt and fmt != "pubmedqa":
                    return fmt
        fmt = format_from_keys(_KEY.findall(s[:16384]))
        if fmt and fmt != "pubmedqa":
            return fmt
        raise _unknown_keys(_KEY.findall(s[:2000]))
    if s.startswith("{"):
        first_line = s.split("\n", 1)[0].strip()
        try:
            obj = _loads(first_line)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            fmt = record_format(obj)
            if fmt and fmt != "pubmedqa":
                return fmt
            if fmt is None and _is_label_map(obj):
                raise _label_map_error(len(obj))
        if _LABEL_MAP.match(s):
            raise _label_map_error(None)
        fmt = format_from_keys(_KEY.findall(s[:16384]))
        if fmt:
            return fmt
        what = "the first record has the keys" if isinstance(obj, dict) else "the JSON document has keys such as"
        raise _unknown_keys(_KEY.findall(s[:2000]), what)
    raise ImportFileError("Not a JSON file: it does not start with '[' or '{'.")


def _unknown_keys(keys, what: str = "the first record has the keys") -> ImportFileError:
    keys = list(dict.fromkeys(keys))
    shown = ", ".join(keys[:8]) + (", ..." if len(keys) > 8 else "") if keys else "none"
    return ImportFileError(f"Cannot tell the format: {what} {shown}; expected {_EXPECTED}.")


def _kind_of_start(char: str) -> str:
    return {"[": "lists", '"': "strings", "n": "nulls", "t": "booleans", "f": "booleans"}.get(char, "numbers")


def _format_of_object(doc: dict) -> str:
    """The format of a JSON document that is one object."""
    if not doc:
        raise ImportFileError("The JSON object is empty: there are no records to import.")
    kind = record_format(doc)
    if kind:
        return kind
    if _is_pubmedqa(doc):
        return "pubmedqa"
    if _is_label_map(doc):
        raise _label_map_error(len(doc))
    raise _unknown_keys(list(doc.keys()), "the JSON object's top-level keys are")


def _is_label_map(obj: dict) -> bool:
    return bool(obj) and all(isinstance(v, (str, int, float, bool)) or v is None for v in obj.values())


def _label_map_error(n: int | None) -> ImportFileError:
    count = f"{n:,} ids" if n is not None else "ids"
    return ImportFileError(
        f"This JSON file maps {count} to labels (like PubMedQA's test_ground_truth.json); "
        "it holds no questions or answers to import."
    )


# --------------------------------------------------------------------------- document errors


_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]', re.S)


def _position(text: str, pos: int) -> tuple[int, int]:
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return line, column


def document_error(text: str, exc: json.JSONDecodeError) -> ImportFileError:
    """A specific sentence for a JSON document that does not parse."""
    end = len(text.rstrip())
    truncated = exc.msg.startswith("Unterminated string") or exc.pos >= end
    if not truncated:
        return ImportFileError(f"Invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}.")
    stack: list[str] = []
    completed = 0
    in_string = False
    for match in _TOKEN.finditer(text):
        token = match.group()
        if token[0] == '"':
            if len(token) == 1 or not token.endswith('"') or _escaped_quote(token):
                in_string = True
                break
            continue
        if token in "[{":
            stack.append(token)
        elif stack:
            stack.pop()
            if len(stack) == 1:
                completed += 1
    if in_string:
        what = "a string"
    elif stack and stack[-1] == "{":
        what = "an object"
    elif stack:
        what = "an array"
    else:
        what = "a value"
    line, column = _position(text, max(end - 1, 0))
    where = f"at line {line}, column {column}"
    if stack and stack[0] == "[" and len(stack) > 1 or (in_string and stack and stack[0] == "["):
        return ImportFileError(
            f"Truncated JSON: the file ends inside {what} {where} (record {completed + 1} is incomplete)."
        )
    return ImportFileError(f"Truncated JSON: the file ends inside {what} {where}.")


def _escaped_quote(token: str) -> bool:
    """A token like "abc\\" whose closing quote is escaped: the string is unterminated."""
    backslashes = len(token) - 1 - len(token[:-1].rstrip("\\"))
    return len(token) >= 2 and backslashes % 2 == 1


# --------------------------------------------------------------------------- record converters


def _extra(obj: dict, used: set[str]) -> dict:
    """The record's other keys, kept as they are (every named field goes through ``as_text``,
    which refuses NUL; here a NUL anywhere in a value or key refuses the row the same way)."""
    extra = {k: v for k, v in obj.items() if k not in used}
    nul = record_nul({"extra": extra})
    if nul:
        raise BadRecord(nul)
    return extra


def _history(value: object) -> list[list[str]]:
    if value in (None, "", []):
        return []
    if not isinstance(value, list):
        raise BadRecord(f"'history' is {kind_of_json(value)}, not a list of [question, answer] pairs")
    pairs = []
    for i, pair in enumerate(value, 1):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise BadRecord(f"history item {i} is not a [question, answer] pair")
        pairs.append([as_text(pair[0], "history"), as_text(pair[1], "history")])
    return pairs


def _require(obj: dict, *names: str) -> None:
    missing = [n for n in names if n not in obj]
    if missing:
        raise BadRecord("no " + " or ".join(f"'{n}'" for n in missing) + " field")


def _alpaca(obj: dict, row: int) -> ParsedRecord:
    if "instruction" not in obj and "input" not in obj:
        raise BadRecord("no 'instruction' field")
    _require(obj, "output")
    instruction = as_text(obj.get("instruction"), "instruction")
    input_ = as_text(obj.get("input"), "input")
    if not instruction and input_:
        instruction, input_ = input_, ""
    return ParsedRecord(
        row=row,
        instruction=instruction,
        input=input_,
        output=as_text(obj.get("output"), "output"),
        system=as_text(obj.get("system"), "system"),
        history=_history(obj.get("history")),
        reasoning=as_text(obj.get("reasoning"), "reasoning"),
        **_labels(obj),
        extra=_extra(obj, {"instruction", "input", "output", "system", "history", "reasoning", *_LABEL_KEYS}),
    )


# MedPortal's own alpaca files (demo data, exports with labels) may carry these optional keys.
_LABEL_KEYS = ("department", "tags", "disease_codes")


def _str_list(value: object, name: str) -> list[str]:
    if value in (None, "", []):
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.replace("；", ",").replace(";", ",").split(",") if v.strip()]
    if not isinstance(value, list):
        raise BadRecord(f"'{name}' is {kind_of_json(value)}, not a list of strings")
    return [as_text(v, name) for v in value if as_text(v, name)]


def _labels(obj: dict) -> dict:
    return {
        "department": as_text(obj.get("department"), "department"),
        "tags": _str_list(obj.get("tags"), "tags"),
        "disease_codes": _str_list(obj.get("disease_codes"), "disease_codes"),
    }


_USER = {"human", "user"}
_ASSISTANT = {"gpt", "assistant", "bot", "model", "chatgpt"}


def _content(value: object) -> str:
    """OpenAI content may be a list of parts: keep the text parts."""
    if isinstance(value, list):
        parts = []
        for part in value:
            if isinstance(part, dict) and part.get("type", "text") == "text":
                parts.append(as_text(part.get("text"), "content"))
            elif isinstance(part, str):
                parts.append(part.strip())
            else:
                raise BadRecord("a message has a non-text content part")
        return "\n".join(p for p in parts if p)
    return as_text(value, "content")


def _conversation(obj: dict, row: int, list_key: str, role_key: str, text_key: str) -> ParsedRecord | str:
    turns = obj.get(list_key)
    if not isinstance(turns, list):
        raise BadRecord(f"'{list_key}' is {kind_of_json(turns)}, not a list of turns")
    system_parts: list[str] = []
    dialogue: list[tuple[str, str]] = []
    for i, turn in enumerate(turns, 1):
        if not isinstance(turn, dict):
            raise BadRecord(f"turn {i} is {kind_of_json(turn)}, not an object")
        role = turn.get(role_key, turn.get("role" if role_key == "from" else "from"))
        text = _content(turn.get(text_key, turn.get("content" if text_key == "value" else "value")))
        role = str(role).strip().lower() if role is not None else ""
        if role == "system":
            if text:
                system_parts.append(text)
            continue
        if role in _USER:
            role = "user"
        elif role in _ASSISTANT:
            role = "assistant"
        else:
            raise BadRecord(f"turn {i} has the role '{role}', which is not human/user, gpt/assistant or system")
        expected = "user" if len(dialogue) % 2 == 0 else "assistant"
        if role != expected:
            raise BadRecord(
                f"turn {i} is from the {role} but the {expected} was expected (turns must alternate, starting with the user)"
            )
        dialogue.append((role, text))
    if not dialogue:
        return "the conversation has no question."
    if len(dialogue) % 2 == 1:
        return "the conversation ends with a question that has no answer."
    pairs = [[dialogue[i][1], dialogue[i + 1][1]] for i in range(0, len(dialogue), 2)]
    system = as_text(obj.get("system"), "system")
    if system_parts:
        system = "\n".join([system, *system_parts]) if system else "\n".join(system_parts)
    last = pairs.pop()
    return ParsedRecord(
        row=row,
        instruction=last[0],
        output=last[1],
        system=system,
        history=pairs,
        extra=_extra(obj, {list_key, "system"}),
    )


def _sharegpt(obj: dict, row: int) -> ParsedRecord | str:
    key = "conversations" if "conversations" in obj else "messages"
    return _conversation(obj, row, key, "from", "value")


def _openai(obj: dict, row: int) -> ParsedRecord | str:
    key = "messages" if "messages" in obj else "conversations"
    return _conversation(obj, row, key, "role", "content")


def _query_response(obj: dict, row: int) -> ParsedRecord:
    _require(obj, "query", "response")
    return ParsedRecord(
        row=row,
        instruction=as_text(obj.get("query"), "query"),
        output=as_text(obj.get("response"), "response"),
        system=as_text(obj.get("system"), "system"),
        history=_history(obj.get("history")),
        extra=_extra(obj, {"query", "response", "system", "history"}),
    )


def _question_answer(obj: dict, row: int) -> ParsedRecord:
    _require(obj, "question", "answer")
    labels = as_list(obj.get("label"), "label")
    diseases = as_list(obj.get("related_diseases"), "related_diseases")
    extra = _extra(obj, {"question", "answer"})
    return ParsedRecord(
        row=row,
        instruction=as_text(obj.get("question"), "question"),
        output=as_text(obj.get("answer"), "answer"),
        department=labels[0] if labels else "",
        tags=labels,
        disease_codes=diseases,
        extra=extra,
    )


def _medical_o1(obj: dict, row: int) -> ParsedRecord:
    _require(obj, "Question", "Response")
    return ParsedRecord(
        row=row,
        instruction=as_text(obj.get("Question"), "Question"),
        reasoning=as_text(obj.get("Complex_CoT"), "Complex_CoT"),
        output=as_text(obj.get("Response"), "Response"),
        extra=_extra(obj, {"Question", "Complex_CoT", "Response"}),
    )


CONVERTERS: dict[str, Callable[[dict, int], ParsedRecord | str]] = {
    "alpaca": _alpaca,
    "sharegpt": _sharegpt,
    "openai": _openai,
    "query_response": _query_response,
    "question_answer": _question_answer,
    "medical_o1": _medical_o1,
}


def convert(obj: object, row: int, fmt: str, label: str, file: str) -> Item:
    """One JSON value → ParsedRecord, or RowIssue with ``label`` ("Line 7", "Record 3") first."""
    if not isinstance(obj, dict):
        return RowIssue(row, f"{label}: expected a JSON object, got {kind_of_json(obj)}.", "error", file)
    try:
        result = CONVERTERS[fmt](obj, row)
    except BadRecord as exc:
        return RowIssue(row, f"{label}: {exc}.", "error", file)
    if isinstance(result, str):
        return RowIssue(row, f"{label}: {result}", "skipped", file)
    reason = empty_issue_text(result.instruction, result.output)
    if reason:
        return RowIssue(row, f"{label}: {reason}", "skipped", file)
    result.file = file
    return result


# --------------------------------------------------------------------------- containers


def _split_lines(text: str) -> list[str]:
    # JSON strings cannot hold a raw newline, so "\n" always ends a record. (Not
    # str.splitlines(): U+2028 and friends are legal inside JSON strings.)
    return text.split("\n")


def _looks_like_jsonl(text: str) -> bool:
    starts = 0
    for line in _split_lines(text)[:50]:
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("{") and len(stripped) > 1:
            starts += 1
            if starts >= 2:
                return True
        else:
            return False
    return False


def open_json(path: Path, text: str, *, fmt: str | None, encoding: str, file: str) -> Source:
    """Parse/validate a JSON or JSON Lines text and return its Source."""
    stripped = text.lstrip()
    if not stripped:
        raise ImportFileError("The file is empty.")
    if stripped[0] not in "[{":
        raise ImportFileError(f"Not a JSON file: it starts with {stripped[:1]!r} instead of '[' or '{{'.")
    doc: object = None
    lines: list[str] | None = None
    try:
        doc = _loads(text)
    except json.JSONDecodeError as exc:
        if stripped[0] == "{" and (exc.msg == "Extra data" or _looks_like_jsonl(text)):
            lines = _split_lines(text)
        else:
            raise document_error(text, exc) from None
    except RecursionError:
        raise ImportFileError("The JSON document is nested too deeply to read.") from None

    if lines is not None:
        return _open_lines(path, lines, fmt=fmt, encoding=encoding, file=file)
    if isinstance(doc, list):
        if fmt == "pubmedqa":
            raise ImportFileError("A PubMedQA file is a JSON object keyed by PMID, but this file is a JSON array.")
        if not doc:
            raise ImportFileError("The JSON array is empty: there are no records to import.")
        fmt = fmt or _format_of_items(doc)
        return _open_items(path, doc, fmt=fmt, encoding=encoding, file=file, label="Record")
    if not isinstance(doc, dict):
        raise ImportFileError(f"The JSON document is {kind_of_json(doc)}, not a list of records.")
    if not doc:
        raise ImportFileError("The JSON object is empty: there are no records to import.")
    fmt = fmt or _format_of_object(doc)
    if fmt == "pubmedqa":
        return _open_pubmedqa(path, doc, encoding=encoding, file=file)
    # One object holding one record (a one-line JSON Lines file, or a pretty-printed record).
    return _open_items(path, [doc], fmt=fmt, encoding=encoding, file=file, label="Record")


def _format_of_items(items: list) -> str:
    for obj in items[:50]:
        if isinstance(obj, dict):
            fmt = record_format(obj)
            if fmt == "pubmedqa":
                raise ImportFileError(
                    "These look like PubMedQA items, but PubMedQA files are an object keyed by PMID, not a list."
                )
            if fmt:
                return fmt
            raise _unknown_keys(list(obj.keys()))
    first = items[0] if items else None
    raise ImportFileError(
        f"The JSON array's first item is {kind_of_json(first)}, not an object "
        "(expected one object per question-answer record)."
    )


def _check_json_fmt(fmt: str) -> None:
    if fmt not in CONVERTERS:
        raise ImportFileError(f"A JSON file cannot be read as format '{fmt}'.")


def _open_items(path: Path, items: list, *, fmt: str, encoding: str, file: str, label: str) -> Source:
    _check_json_fmt(fmt)

    def produce() -> Iterator[Item]:
        for index, obj in enumerate(items, 1):
            yield convert(obj, index, fmt, f"{label} {index}", file)

    return Source(path, fmt, encoding, [], {}, len(items), produce)


def _open_lines(path: Path, lines: list[str], *, fmt: str | None, encoding: str, file: str) -> Source:
    if fmt is None:
        fmt = _format_of_lines(lines)
    _check_json_fmt(fmt)
    total = sum(1 for line in lines if line.strip())
    decoder = _decoder()

    def produce() -> Iterator[Item]:
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if not line:
                continue
            try:
                obj = decoder.decode(line)
            except json.JSONDecodeError as exc:
                yield RowIssue(number, f"Line {number}: not valid JSON ({exc.msg} at column {exc.colno}).", "error", file)
                continue
            except RecursionError:
                yield RowIssue(number, f"Line {number}: the JSON is nested too deeply to read.", "error", file)
                continue
            yield convert(obj, number, fmt, f"Line {number}", file)

    return Source(path, fmt, encoding, [], {}, total, produce)


def _format_of_lines(lines: list[str]) -> str:
    seen = 0
    for line in lines:
        line = line.strip()
        if not line:
            continue
        seen += 1
        if seen > 50:
            break
        try:
            obj = _loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            fmt = record_format(obj)
            if fmt and fmt != "pubmedqa":
                return fmt
            raise _unknown_keys(list(obj.keys()))
    raise ImportFileError("None of the first JSON Lines is a valid JSON object; cannot tell the format.")


# --------------------------------------------------------------------------- PubMedQA


def _is_pubmedqa(doc: dict) -> bool:
    first = next(iter(doc.values()))
    return isinstance(first, dict) and "QUESTION" in first


def _open_pubmedqa(path: Path, doc: dict, *, encoding: str, file: str) -> Source:
    if _is_label_map(doc):
        raise _label_map_error(len(doc))

    def produce() -> Iterator[Item]:
        for index, (pmid, item) in enumerate(doc.items(), 1):
            label = f"Record {index} (PMID {pmid})".replace("\x00", "")
            if not isinstance(item, dict):
                yield RowIssue(index, f"{label}: expected a JSON object, got {kind_of_json(item)}.", "error", file)
                continue
            try:
                record = _pubmedqa_item(str(pmid), item, index)
            except BadRecord as exc:
                yield RowIssue(index, f"{label}: {exc}.", "error", file)
                continue
            reason = empty_issue_text(record.instruction, record.output)
            if reason:
                yield RowIssue(index, f"{label}: {reason}", "skipped", file)
                continue
            record.file = file
            yield record

    return Source(path, "pubmedqa", encoding, [], {}, len(doc), produce)


def _pubmedqa_item(pmid: str, item: dict, row: int) -> ParsedRecord:
    if "QUESTION" not in item:
        raise BadRecord("no 'QUESTION' field")
    contexts = item.get("CONTEXTS") or []
    if isinstance(contexts, str):
        contexts = [contexts]
    if not isinstance(contexts, list):
        raise BadRecord("'CONTEXTS' is not a list")
    decision = as_text(item.get("final_decision"), "final_decision")
    extra = _extra(item, {"QUESTION", "CONTEXTS", "LONG_ANSWER"})
    nul = record_nul({"PMID": pmid})
    if nul:
        raise BadRecord(nul)
    return ParsedRecord(
        row=row,
        instruction=as_text(item.get("QUESTION"), "QUESTION"),
        input="\n\n".join(t for t in (as_text(c, "CONTEXTS") for c in contexts) if t),
        output=as_text(item.get("LONG_ANSWER"), "LONG_ANSWER"),
        tags=[f"pubmedqa:{decision}"] if decision else [],
        source_ref=pmid,
        extra=extra,
    )
