"""CSV, TSV and XLSX files with a header row, and multiple-choice (CMMLU-style) tables."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import sys
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from .base import QA_FIELDS, ImportFileError, Item, ParsedRecord, RowIssue, Source
from .textutil import empty_issue_text, record_nul, split_list

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))

# --------------------------------------------------------------------------- header synonyms

# Per field, header names in order of preference. Compared after casefolding and removing
# spaces, underscores and hyphens, so "Complex_CoT", "complex cot" and "COMPLEX-COT" match.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "instruction": (
        "instruction", "question", "ask", "query", "prompt", "q", "input_question",
        "问题", "提问", "问", "咨询", "咨询内容", "患者问题", "病情描述", "问题描述", "指令", "题目", "题干",
        "title", "标题",
    ),
    "output": (
        "output", "answer", "response", "reply", "a", "completion", "target",
        "回答", "答案", "回复", "医生回答", "医生回复", "解答", "答复", "输出",
    ),
    "input": ("input", "context", "contexts", "输入", "上下文", "补充说明", "背景"),
    "system": ("system", "system_prompt", "系统", "系统提示", "系统提示词"),
    "history": ("history", "历史", "对话历史"),
    "reasoning": (
        "reasoning", "complex_cot", "cot", "chain_of_thought", "rationale", "thinking", "think",
        "推理", "推理过程", "思维链", "思考过程",
    ),
    "department": ("department", "dept", "科室", "就诊科室", "部门", "科别"),
    "tags": ("tags", "tag", "labels", "label", "category", "标签", "类别", "分类"),
    "disease_codes": (
        "disease_codes", "disease_code", "icd10", "icd-10", "icd", "icd_code", "codes",
        "疾病编码", "icd编码", "orpha", "omim",
    ),
    "source_ref": ("source_ref", "source", "ref", "reference", "pmid", "url", "link", "来源", "出处", "链接", "id", "编号"),
}

_NORM_RE = re.compile(r"[\s_\-]+")


def _norm(name: str) -> str:
    return _NORM_RE.sub("", name.casefold())


_NORMALIZED_SYNONYMS = {f: tuple(_norm(s) for s in names) for f, names in SYNONYMS.items()}
_GUESS_ORDER = ("instruction", "output", "input", "system", "history", "reasoning", "department", "tags", "disease_codes", "source_ref")

_MCQ_QUESTION = ("question", "问题", "题目", "题干")
_MCQ_ANSWER = ("answer", "答案")
_LETTER = re.compile(r"^[A-Za-z]$")


def guess_mapping(columns: list[str]) -> dict[str, str]:
    """Default field → column mapping from header names (case-insensitive, zh/en synonyms)."""
    by_norm: dict[str, str] = {}
    for column in columns:
        by_norm.setdefault(_norm(column), column)
    used: set[str] = set()
    mapping: dict[str, str] = {}
    for field in _GUESS_ORDER:
        for synonym in _NORMALIZED_SYNONYMS[field]:
            column = by_norm.get(synonym)
            if column is not None and column not in used:
                mapping[field] = column
                used.add(column)
                break
    return mapping


def resolve_mapping(columns: list[str], requested: dict[str, str] | None) -> dict[str, str]:
    """The effective mapping: the guess, overridden field by field by ``requested``.

    A requested field with an empty value is left unmapped. Raises ImportFileError for an
    unknown field, a column that does not exist, or no question/answer column.
    """
    guessed = guess_mapping(columns)
    if not requested:
        mapping = guessed
    else:
        for field, column in requested.items():
            if field not in QA_FIELDS:
                raise ImportFileError(
                    f"Unknown field '{field}' in the column mapping; expected one of {', '.join(QA_FIELDS)}."
                )
            if column and column not in columns:
                raise ImportFileError(
                    f"The mapping sends '{field}' to the column '{column}', but the file has no such column "
                    f"(columns: {_list_columns(columns)})."
                )
        explicit = {f: c for f, c in requested.items() if c}
        taken = set(explicit.values())
        mapping = {f: c for f, c in guessed.items() if f not in requested and c not in taken}
        mapping.update(explicit)
        mapping = {f: mapping[f] for f in QA_FIELDS if f in mapping}
    _require_question_and_answer(columns, mapping)
    return mapping


def _require_question_and_answer(columns: list[str], mapping: dict[str, str]) -> None:
    if "instruction" not in mapping:
        raise ImportFileError(
            f"No question column found (columns: {_list_columns(columns)}); map 'instruction' to the question column."
        )
    if "output" not in mapping:
        raise ImportFileError(
            f"No answer column found (columns: {_list_columns(columns)}); map 'output' to the answer column."
        )


def _list_columns(columns: list[str]) -> str:
    return ", ".join(columns) if columns else "none"


def clean_header(raw: Iterable[object]) -> list[str]:
    """Header cells as unique names: blanks become "column_N", repeats get ".1", ".2"..."""
    names: list[str] = []
    seen: dict[str, int] = {}
    for index, cell in enumerate(raw, 1):
        name = cell_text(cell).replace("\ufeff", "").strip() or f"column_{index}"
        if name in seen:
            seen[name] += 1
            name = f"{name}.{seen[name]}"
        seen.setdefault(name, 0)
        names.append(name)
    return names


def is_mcq_header(columns: list[str]) -> bool:
    normalized = {_norm(c) for c in columns}
    letters = {c.strip().upper() for c in columns if _LETTER.match(c.strip())}
    return (
        any(q in normalized for q in _MCQ_QUESTION)
        and any(a in normalized for a in _MCQ_ANSWER)
        and {"A", "B"} <= letters
    )


# --------------------------------------------------------------------------- cells


def cell_text(value: object) -> str:
    """An XLSX/CSV cell as text: whole floats without ".0", dates in ISO form."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time() else value.isoformat(sep=" ")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    return str(value)


def _clean(text: str) -> str:
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.strip()


# --------------------------------------------------------------------------- CSV / TSV text


def sniff_delimiter(text: str, default: str) -> str:
    """The header line decides: a .csv whose header has no comma but tabs/semicolons uses those."""
    first = text.split("\n", 1)[0]
    if default == "," and "," not in first:
        if "\t" in first:
            return "\t"
        if ";" in first:
            return ";"
    return default


def _reader(text: str, delimiter: str):
    return csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=False)


def read_text_header(text: str, delimiter: str) -> list[str]:
    try:
        header = next(_reader(text, delimiter), None)
    except csv.Error as exc:
        raise ImportFileError(f"Cannot read the header row as CSV: {exc}.") from None
    if not header or not any(h.strip() for h in header):
        raise ImportFileError("The first row is empty: a header row with column names is required.")
    return clean_header(header)


def _count_rows(text: str, delimiter: str) -> int:
    """Data rows (after the header) that are not blank; also validates the CSV structure."""
    reader = _reader(text, delimiter)
    count = 0
    try:
        next(reader, None)
        for row in reader:
            if any(cell.strip() for cell in row):
                count += 1
    except csv.Error as exc:
        raise ImportFileError(f"Malformed CSV near line {reader.line_num}: {exc}.") from None
    return count


def _text_rows(text: str, delimiter: str) -> Iterator[list[str]]:
    reader = _reader(text, delimiter)
    next(reader, None)
    try:
        yield from reader
    except csv.Error as exc:
        raise ImportFileError(f"Malformed CSV near line {reader.line_num}: {exc}.") from None


# --------------------------------------------------------------------------- XLSX


def _load_workbook(path: Path):
    try:
        import openpyxl
    except ImportError:  # pragma: no cover - openpyxl is a dependency
        raise ImportFileError("XLSX support is not installed (openpyxl is missing).") from None
    try:
        return openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        raise ImportFileError(f"Cannot open the file as an XLSX workbook ({exc}).") from None
    except Exception as exc:  # openpyxl raises assorted errors for damaged workbooks
        raise ImportFileError(f"Cannot open the file as an XLSX workbook ({type(exc).__name__}: {exc}).") from None


def _qa_sheets(workbook) -> list:
    """The sheets to read: the first whose header has question and answer columns, plus every
    later sheet with the same header (MedPortal's own export: a summary sheet, then one sheet
    per split). A workbook with no such sheet falls back to its first sheet."""
    headers = []
    for sheet in workbook.worksheets:
        first = next(sheet.iter_rows(max_row=1, values_only=True), None)
        headers.append(clean_header(first) if first and any(cell_text(c).strip() for c in first) else None)
    for i, header in enumerate(headers):
        if header and not is_mcq_header(header):
            mapping = guess_mapping(header)
            if "instruction" in mapping and "output" in mapping:
                return [s for s, h in zip(workbook.worksheets[i:], headers[i:]) if h == header]
    return workbook.worksheets[:1]


def _unreadable(exc: Exception) -> ImportFileError:
    """openpyxl parses cells while it iterates rows, and raises what its parsers raise: a
    number cell of 5000 digits (ValueError), broken sheet XML (ParseError), a damaged entry
    (BadZipFile)... All are problems with the file."""
    text = str(exc)
    if len(text) > 200:
        text = text[:200] + "…"
    return ImportFileError(f"Cannot read the XLSX workbook ({type(exc).__name__}: {text}).")


def _xlsx_rows(path: Path) -> tuple[list[str], int | None, object, list[str]]:
    workbook = _load_workbook(path)
    try:
        sheets = _qa_sheets(workbook) if workbook.worksheets else []
        first = next(sheets[0].iter_rows(max_row=1, values_only=True), None) if sheets else None
    except Exception as exc:
        workbook.close()
        raise _unreadable(exc) from None
    if not sheets:
        workbook.close()
        raise ImportFileError("The workbook has no sheets.")
    if not first or not any(cell_text(c).strip() for c in first):
        workbook.close()
        raise ImportFileError("The first row of the first sheet is empty: a header row with column names is required.")

    def chained():
        try:
            for sheet in sheets:
                it = sheet.iter_rows(values_only=True)
                next(it, None)  # header
                yield from it
        except ImportFileError:
            raise
        except Exception as exc:
            raise _unreadable(exc) from None

    try:
        total = sum(max((s.max_row or 1) - 1, 0) for s in sheets) if all(s.max_row for s in sheets) else None
    except Exception as exc:
        workbook.close()
        raise _unreadable(exc) from None
    return clean_header(first), total, (workbook, chained()), [s.title for s in sheets]


# --------------------------------------------------------------------------- Source builders


def open_table(
    path: Path,
    *,
    fmt: str,
    text: str | None,
    encoding: str | None,
    mapping: dict[str, str] | None,
    file: str,
) -> Source:
    """A CSV/TSV (``text`` given) or XLSX (``text`` None) file; ``fmt`` may be "mcq"."""
    if text is None:
        columns, total, handle, _sheets = _xlsx_rows(path)
        handle[0].close()

        def rows() -> Iterator[list[str]]:
            workbook, it = _xlsx_rows(path)[2]
            try:
                for values in it:
                    yield [cell_text(v) for v in values]
            finally:
                workbook.close()

    else:
        delimiter = "\t" if fmt == "tsv" else sniff_delimiter(text, ",")
        columns = read_text_header(text, delimiter)
        total = _count_rows(text, delimiter)

        def rows() -> Iterator[list[str]]:
            return _text_rows(text, delimiter)

    if total == 0:
        raise ImportFileError("The file has a header row but no data rows.")
    if fmt == "mcq":
        return _mcq_source(path, columns, rows, total, encoding, mapping, file)
    effective = resolve_mapping(columns, mapping)
    produce = _tabular_producer(columns, effective, rows, file)
    return Source(path, fmt, encoding, columns, effective, total, produce)


def _tabular_producer(columns, mapping, rows, file):
    index = {column: i for i, column in enumerate(columns)}
    fields = [(field, index[column]) for field, column in mapping.items()]
    mapped = set(mapping.values())
    rest = [(column, i) for column, i in index.items() if column not in mapped]
    width = len(columns)

    def produce() -> Iterator[Item]:
        for number, cells in enumerate(rows(), 1):
            if not any(c.strip() for c in cells):
                continue  # blank line / formatted-but-empty spreadsheet row
            label = f"Row {number}"
            if len(cells) > width and any(c.strip() for c in cells[width:]):
                yield RowIssue(
                    number,
                    f"{label}: {len(cells)} fields but the header has {width} columns (check the quoting).",
                    "error",
                    file,
                )
                continue
            if len(cells) < width:
                cells = cells + [""] * (width - len(cells))
            values = {field: _clean(cells[i]) for field, i in fields}
            nul = record_nul({**values, "extra": {column: cells[i] for column, i in rest}})
            if nul:
                yield RowIssue(number, f"{label}: {nul}.", "error", file)
                continue
            try:
                history = _history_cell(values.get("history", ""))
            except ValueError as exc:
                yield RowIssue(number, f"{label}: {exc}", "error", file)
                continue
            reason = empty_issue_text(values.get("instruction", ""), values.get("output", ""))
            if reason:
                yield RowIssue(number, f"{label}: {reason}", "skipped", file)
                continue
            extra = {column: _clean(cells[i]) for column, i in rest if cells[i].strip()}
            yield ParsedRecord(
                row=number,
                instruction=values["instruction"],
                output=values["output"],
                input=values.get("input", ""),
                system=values.get("system", ""),
                history=history,
                reasoning=values.get("reasoning", ""),
                department=values.get("department", ""),
                tags=split_list(values["tags"]) if values.get("tags") else [],
                disease_codes=split_list(values["disease_codes"]) if values.get("disease_codes") else [],
                source_ref=values.get("source_ref", ""),
                file=file,
                extra=extra,
            )

    return produce


def _history_cell(text: str) -> list[list[str]]:
    """A history column holds JSON: [[question, answer], ...] (as MedPortal's XLSX export writes)."""
    if not text.strip():
        return []
    try:
        value = json.loads(text, parse_int=lambda digits: int(digits) if len(digits) <= 4000 else digits)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the history column is not JSON ({exc.msg} at character {exc.pos}).") from None
    if not isinstance(value, list) or not all(
        isinstance(t, list) and len(t) == 2 and all(isinstance(x, str) for x in t) for t in value
    ):
        raise ValueError("the history column must be a JSON list of [question, answer] pairs.")
    return [list(t) for t in value]


_SPLITS = {"dev", "test", "val", "valid", "validation", "train"}


def _find(columns: list[str], names: tuple[str, ...]) -> str | None:
    by_norm = {_norm(c): c for c in reversed(columns)}
    for name in names:
        if _norm(name) in by_norm:
            return by_norm[_norm(name)]
    return None


def _mcq_source(path, columns, rows, total, encoding, mapping, file) -> Source:
    mapping = dict(mapping or {})
    for field, column in mapping.items():
        if field not in QA_FIELDS:
            raise ImportFileError(f"Unknown field '{field}' in the column mapping; expected one of {', '.join(QA_FIELDS)}.")
        if column and column not in columns:
            raise ImportFileError(
                f"The mapping sends '{field}' to the column '{column}', but the file has no such column "
                f"(columns: {_list_columns(columns)})."
            )
    question = mapping.get("instruction") or _find(columns, _MCQ_QUESTION)
    answer = mapping.get("output") or _find(columns, _MCQ_ANSWER)
    if not question or not answer:
        _require_question_and_answer(columns, {k: v for k, v in (("instruction", question), ("output", answer)) if v})
    options = sorted(
        ((c.strip().upper(), i) for i, c in enumerate(columns) if _LETTER.match(c.strip()) and c not in (question, answer)),
    )
    if len(options) < 2:
        raise ImportFileError(
            f"A multiple-choice file needs option columns named A, B, C...; found {len(options)} "
            f"(columns: {_list_columns(columns)})."
        )
    q_index, a_index = columns.index(question), columns.index(answer)
    # CMMLU: the first header cell is blank (a pandas index column).
    index_column = 0 if columns[0] == "column_1" and 0 not in (q_index, a_index) else None
    subject = path.stem
    split = path.parent.name if path.parent.name.lower() in _SPLITS else ""
    tag = f"cmmlu:{subject}" if index_column is not None else f"mcq:{subject}"
    ref_prefix = f"{split}/{subject}" if split else subject
    letters = {letter for letter, _ in options}
    effective = {"instruction": question, "output": answer}
    width = len(columns)

    def produce() -> Iterator[Item]:
        for number, cells in enumerate(rows(), 1):
            if not any(c.strip() for c in cells):
                continue
            label = f"Row {number}"
            if len(cells) < width:
                cells = cells + [""] * (width - len(cells))
            text = _clean(cells[q_index])
            key = _clean(cells[a_index]).upper().replace(" ", "").replace(",", "").replace("，", "")
            reason = empty_issue_text(text, key)
            if reason:
                yield RowIssue(number, f"{label}: {reason}", "skipped", file)
                continue
            if not key.isascii() or not set(key) <= letters:
                yield RowIssue(
                    number,
                    f"{label}: the answer '{_clean(cells[a_index])}' is not one of the options "
                    f"{', '.join(sorted(letters))}.",
                    "error",
                    file,
                )
                continue
            choices = {letter: _clean(cells[i]) for letter, i in options}
            lines = [f"{letter}. {choices[letter]}" for letter, _ in options if choices[letter]]
            extra = {"answer": key, "subject": subject, "options": choices}
            if split:
                extra["split"] = split
            ref = ""
            if index_column is not None and cells[index_column].strip():
                ref = f"{ref_prefix}#{cells[index_column].strip()}"
            yield ParsedRecord(
                row=number,
                instruction=text + "\n" + "\n".join(lines),
                output="\n".join(f"{letter}. {choices[letter]}" for letter in dict.fromkeys(key)),
                tags=[tag],
                source_ref=ref,
                file=file,
                extra=extra,
            )

    return Source(path, "mcq", encoding, columns, effective, total, produce)
