"""Helpers shared by the exporters: file names, record shapes, streaming the items."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from curation.lib.identifiers import mask_content
from curation.models import DatasetVersion
from curation.selectors_versions import SPLITS, version_items
from curation.services.core import CONTENT_FIELDS, LABEL_FIELDS

# Column order of the tabular exports (XLSX sheets, Parquet files).
COLUMNS: tuple[str, ...] = (*CONTENT_FIELDS, *LABEL_FIELDS, "qa_pair_id")

_UNSAFE = re.compile(r"[^\w.-]+")


def file_stem(version: DatasetVersion) -> str:
    """The version name made safe for file names and dataset_info keys (CJK letters kept)."""
    stem = _UNSAFE.sub("_", version.name).strip("._")
    return stem or f"version_{version.pk}"


def written_splits(version: DatasetVersion) -> list[str]:
    """The splits that hold items; empty splits get no file."""
    return [s for s in SPLITS if version.counts.get(s, 0) > 0]


def history_pairs(history) -> list[list[str]]:
    """``history`` as [[question, answer], ...] of strings (what LLaMA-Factory expects)."""
    pairs = []
    for turn in history or ():
        if isinstance(turn, (list, tuple)):
            q = turn[0] if len(turn) > 0 else ""
            a = turn[1] if len(turn) > 1 else ""
        else:
            q, a = turn, ""
        pairs.append(["" if q is None else str(q), "" if a is None else str(a)])
    return pairs


def alpaca_record(content: dict) -> dict:
    """An alpaca record: instruction / input / output / system / history."""
    return {
        "instruction": content.get("instruction", ""),
        "input": content.get("input", ""),
        "output": content.get("output", ""),
        "system": content.get("system", ""),
        "history": history_pairs(content.get("history")),
    }


def full_record(qa_pair_id: int, content: dict) -> dict:
    """Every exported field, in ``COLUMNS`` order, with list-valued labels as lists."""
    return {
        **alpaca_record(content),
        "reasoning": content.get("reasoning", ""),
        "department": content.get("department", ""),
        "tags": [str(t) for t in content.get("tags") or ()],
        "disease_codes": [str(c) for c in content.get("disease_codes") or ()],
        "difficulty": content.get("difficulty", ""),
        "qa_pair_id": qa_pair_id,
    }


def items(version: DatasetVersion, split: str) -> Iterator[tuple[int, dict]]:
    """(qa_pair_id, frozen content) of one split in position order, streamed: what every
    export and the fine-tune worker's training files read.

    Identifiers never reach an export: a freeze is refused while a pair holds any, but a
    version frozen before that rule may still hold some, so each item's text passes through
    the identifier masker (a no-op, returning the item as frozen, when there is none)."""
    for pk, content in version_items(version, split):
        yield pk, mask_content(content)


def dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False)


def write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return path
