"""LLaMA-Factory alpaca export: ``<stem>_<split>.json`` (a JSON array) + ``dataset_info.json``.

Each record has instruction / input / output / system / history (LLaMA-Factory joins
instruction and input as "instruction\\ninput"; history responses are trained on too).
``dataset_info.json`` registers one dataset per split, named ``<stem>_<split>``, with the
column mapping of LLaMA-Factory's data/README: copy the folder as ``dataset_dir`` and train
with ``dataset: <stem>_train`` (``eval_dataset: <stem>_validation``).
"""

from __future__ import annotations

from pathlib import Path

from curation.models import DatasetVersion

from .base import alpaca_record, dumps, file_stem, items, write_json, written_splits

COLUMNS = {"prompt": "instruction", "query": "input", "response": "output", "system": "system", "history": "history"}


def dataset_info_entry(file_name: str) -> dict:
    return {"file_name": file_name, "formatting": "alpaca", "columns": dict(COLUMNS)}


def write_array(path: Path, records) -> int:
    """Stream ``records`` into ``path`` as a JSON array, one record per line; returns the count."""
    n = 0
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        fh.write("[")
        for record in records:
            fh.write(",\n" if n else "\n")
            fh.write(dumps(record))
            n += 1
        fh.write("\n]\n" if n else "]\n")
    return n


def export(version: DatasetVersion, out_dir: Path) -> list[Path]:
    stem = file_stem(version)
    info: dict[str, dict] = {}
    paths: list[Path] = []
    for split in written_splits(version):
        path = out_dir / f"{stem}_{split}.json"
        write_array(path, (alpaca_record(content) for _pk, content in items(version, split)))
        info[f"{stem}_{split}"] = dataset_info_entry(path.name)
        paths.append(path)
    paths.append(write_json(out_dir / "dataset_info.json", info))
    return sorted(paths)
