"""Excel export: a ``summary`` sheet, then one sheet per non-empty split (``train``,
``validation``, ``test``) with a header row of the QA fields (``base.COLUMNS``).

Written through the one XLSX writer (``medportal.xlsx``): rows stream to disk, every text cell
is stored as text (an answer starting with "=" or "@" never becomes a formula, and keeps its
visible text) and characters XLSX cannot hold are dropped. ``history`` is JSON text
([[question, answer], ...]); ``tags`` and ``disease_codes`` are joined with ", ".
"""

from __future__ import annotations

import json
from pathlib import Path

from curation.models import DatasetVersion
from medportal.xlsx import XlsxWriter

from .base import COLUMNS, file_stem, full_record, items, written_splits

SUMMARY_SHEET = "summary"


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
    book = XlsxWriter()
    summary = book.sheet(SUMMARY_SHEET, ("field", "value"))
    for key, value in summary_rows(version):
        summary.append((key, value))
    for split in written_splits(version):
        sheet = book.sheet(split, COLUMNS)
        for pk, content in items(version, split):
            sheet.append(row_values(full_record(pk, content)))
    path = out_dir / f"{file_stem(version)}.xlsx"
    book.save(path)
    return [path]
