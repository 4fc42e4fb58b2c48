"""Excel export: a ``summary`` sheet, then one sheet per non-empty split (``train``,
``validation``, ``test``) with a header row of the QA fields (``base.COLUMNS``).

Written with openpyxl in write-only mode (rows stream to disk). Every text cell is stored as
text, so an answer starting with "=" never becomes a formula. ``history`` is JSON text
([[question, answer], ...]); ``tags`` and ``disease_codes`` are joined with ", ". Control
characters that XLSX cannot hold (U+0000–U+001F except tab and newlines) are dropped.
"""

from __future__ import annotations

import json
from pathlib import Path

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.styles import Font

from curation.models import DatasetVersion

from .base import COLUMNS, file_stem, full_record, items, written_splits

SUMMARY_SHEET = "summary"


def _text_cell(ws, value: str) -> WriteOnlyCell:
    cell = WriteOnlyCell(ws, value=ILLEGAL_CHARACTERS_RE.sub("", value))
    cell.data_type = "s"  # never a formula
    return cell


def _cell(ws, value):
    if isinstance(value, str):
        return _text_cell(ws, value)
    return WriteOnlyCell(ws, value=value)


def _header(ws, names) -> list[WriteOnlyCell]:
    bold = Font(bold=True)
    cells = []
    for name in names:
        cell = _text_cell(ws, name)
        cell.font = bold
        cells.append(cell)
    return cells


def row_values(record: dict) -> list:
    values = []
    for column in COLUMNS:
        value = record[column]
        if column == "history":
            value = json.dumps(value, ensure_ascii=False) if value else ""
        elif column in ("tags", "disease_codes"):
            value = ", ".join(value)
        values.append(value)
    return values


def summary_rows(version: DatasetVersion) -> list[tuple[str, object]]:
    total = version.total
    share = f"{100 * version.synthetic_count / total:.1f}%" if total else "0.0%"
    return [
        ("name", version.name),
        ("description", version.description),
        ("content_hash", version.content_hash),
        ("created", version.created_at.isoformat()),
        ("frozen_by", version.created_by.get_username() if version.created_by_id else ""),
        ("train", version.counts.get("train", 0)),
        ("validation", version.counts.get("validation", 0)),
        ("test", version.counts.get("test", 0)),
        ("total", total),
        ("synthetic", version.synthetic_count),
        ("synthetic_share", share),
        ("split_ratios", ", ".join(f"{r:g}" for r in version.split_ratios)),
        ("seed", version.seed),
        ("filters", json.dumps(version.filters, ensure_ascii=False, sort_keys=True)),
    ]


def export(version: DatasetVersion, out_dir: Path) -> list[Path]:
    wb = Workbook(write_only=True)
    summary = wb.create_sheet(SUMMARY_SHEET)
    summary.append(_header(summary, ("field", "value")))
    for key, value in summary_rows(version):
        summary.append([_text_cell(summary, key), _cell(summary, value)])
    for split in written_splits(version):
        ws = wb.create_sheet(split)
        ws.append(_header(ws, COLUMNS))
        for pk, content in items(version, split):
            ws.append([_cell(ws, v) for v in row_values(full_record(pk, content))])
    path = out_dir / f"{file_stem(version)}.xlsx"
    wb.save(path)
    return [path]
