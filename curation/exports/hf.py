"""Hugging Face ``datasets`` export: Parquet files in the Hub's folder layout.

``data/<split>-00000-of-00001.parquet`` per non-empty split plus a ``README.md`` dataset card
whose YAML header lists the splits (``configs``), so both
``load_dataset("parquet", data_files={...})`` and ``load_dataset("<folder>")`` work. Rows are
written with pyarrow in batches, never holding a whole split in memory.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curation.models import DatasetVersion

from .base import COLUMNS, full_record, items, written_splits

BATCH_ROWS = 1000

SCHEMA = pa.schema(
    [
        ("instruction", pa.string()),
        ("input", pa.string()),
        ("output", pa.string()),
        ("system", pa.string()),
        ("history", pa.list_(pa.list_(pa.string()))),
        ("reasoning", pa.string()),
        ("department", pa.string()),
        ("tags", pa.list_(pa.string())),
        ("disease_codes", pa.list_(pa.string())),
        ("difficulty", pa.string()),
        ("qa_pair_id", pa.int64()),
    ]
)
assert tuple(SCHEMA.names) == COLUMNS


def split_path(split: str) -> str:
    return f"data/{split}-00000-of-00001.parquet"


def dataset_card(version: DatasetVersion, splits: list[str]) -> str:
    lines = ["---", "configs:", "- config_name: default", "  data_files:"]
    for split in splits:
        lines += [f"  - split: {split}", f"    path: {split_path(split)}"]
    lines += ["---", "", f"# {version.name}", ""]
    if version.description:
        lines += [version.description, ""]
    lines += [
        "MedPortal dataset version: approved medical QA pairs, frozen.",
        "",
        f"- content hash: `{version.content_hash}`",
        f"- created: {version.created_at.isoformat()}",
        f"- split ratios: {', '.join(f'{r:g}' for r in version.split_ratios)} (seed {version.seed})",
        "- rows: " + ", ".join(f"{s} {version.counts.get(s, 0)}" for s in splits),
        f"- synthetic pairs: {version.synthetic_count}",
        "",
        "Columns: " + ", ".join(COLUMNS) + ".",
        "",
    ]
    return "\n".join(lines)


def _write_split(path: Path, records) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(path, SCHEMA, compression="zstd") as writer:
        batch: list[dict] = []
        for record in records:
            batch.append(record)
            if len(batch) >= BATCH_ROWS:
                writer.write_table(pa.Table.from_pylist(batch, schema=SCHEMA))
                batch = []
        if batch:
            writer.write_table(pa.Table.from_pylist(batch, schema=SCHEMA))


def export(version: DatasetVersion, out_dir: Path) -> list[Path]:
    splits = written_splits(version)
    paths: list[Path] = []
    for split in splits:
        path = out_dir / split_path(split)
        _write_split(path, (full_record(pk, content) for pk, content in items(version, split)))
        paths.append(path)
    card = out_dir / "README.md"
    card.write_text(dataset_card(version, splits), encoding="utf-8")
    paths.append(card)
    return sorted(paths)
