"""Preference-version exporters: LLaMA-Factory pairwise, TRL JSON Lines, Hugging Face Parquet.

* ``llamafactory`` — ``<stem>_<split>.json``, a JSON array of alpaca pairwise records
  (instruction, input, chosen, rejected, system, history) and ``dataset_info.json`` with one
  entry per split, ``"ranking": true`` (LLaMA-Factory's ``stage: dpo`` reads it as is).
* ``trl`` — ``<stem>_<split>.jsonl``, TRL's conversational preference format:
  ``prompt`` = the system message, the earlier turns and the question as ``{"role", "content"}``
  messages; ``chosen`` / ``rejected`` = one assistant message each.
* ``hf`` — ``data/<split>-00000-of-00001.parquet`` + a dataset card, columns ``COLUMNS``.

Every text passes the identifier masker. Each format re-imports to the same pairs through
``curation.importers.preference``.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curation.models_pref import PreferenceItem, PreferenceVersion

from .base import _UNSAFE, dumps, history_pairs, write_json
from .llamafactory import write_array

SPLITS = ("train", "validation", "test")
LF_COLUMNS = {"prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected", "system": "system", "history": "history"}
COLUMNS = ("system", "history", "prompt", "chosen", "rejected", "department", "source_kind", "chosen_model", "rejected_model", "preference_pair_id")
SCHEMA = pa.schema(
    [
        ("system", pa.string()),
        ("history", pa.list_(pa.list_(pa.string()))),
        ("prompt", pa.string()),
        ("chosen", pa.string()),
        ("rejected", pa.string()),
        ("department", pa.string()),
        ("source_kind", pa.string()),
        ("chosen_model", pa.string()),
        ("rejected_model", pa.string()),
        ("preference_pair_id", pa.int64()),
    ]
)


def file_stem(version: PreferenceVersion) -> str:
    stem = _UNSAFE.sub("_", version.name).strip("._")
    return stem or f"preference_version_{version.pk}"


def written_splits(version: PreferenceVersion) -> list[str]:
    return [s for s in SPLITS if version.counts.get(s, 0) > 0]


def items(version: PreferenceVersion, split: str):
    """(pair id, masked frozen content) of one split in position order, streamed."""
    from curation.services.preferences import mask_preference_content

    rows = PreferenceItem.objects.filter(version=version, split=split).order_by("position").values_list("pair_id", "content")
    for pk, content in rows.iterator(chunk_size=1000):
        yield pk, mask_preference_content(content)


def lf_record(content: dict) -> dict:
    return {
        "instruction": content.get("prompt", ""),
        "input": "",
        "chosen": content.get("chosen", ""),
        "rejected": content.get("rejected", ""),
        "system": content.get("system", ""),
        "history": history_pairs(content.get("history")),
    }


def trl_record(content: dict) -> dict:
    prompt = []
    if content.get("system"):
        prompt.append({"role": "system", "content": content["system"]})
    for q, a in history_pairs(content.get("history")):
        prompt += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    prompt.append({"role": "user", "content": content.get("prompt", "")})
    return {
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": content.get("chosen", "")}],
        "rejected": [{"role": "assistant", "content": content.get("rejected", "")}],
    }


def full_record(pk: int, content: dict) -> dict:
    return {
        "system": content.get("system", ""),
        "history": history_pairs(content.get("history")),
        "prompt": content.get("prompt", ""),
        "chosen": content.get("chosen", ""),
        "rejected": content.get("rejected", ""),
        "department": content.get("department", ""),
        "source_kind": content.get("source_kind", ""),
        "chosen_model": content.get("chosen_model", ""),
        "rejected_model": content.get("rejected_model", ""),
        "preference_pair_id": pk,
    }


def export_llamafactory(version: PreferenceVersion, out_dir: Path) -> list[Path]:
    stem = file_stem(version)
    info, paths = {}, []
    for split in written_splits(version):
        path = out_dir / f"{stem}_{split}.json"
        write_array(path, (lf_record(c) for _pk, c in items(version, split)))
        info[f"{stem}_{split}"] = {"file_name": path.name, "formatting": "alpaca", "ranking": True, "columns": dict(LF_COLUMNS)}
        paths.append(path)
    paths.append(write_json(out_dir / "dataset_info.json", info))
    return sorted(paths)


def export_trl(version: PreferenceVersion, out_dir: Path) -> list[Path]:
    stem = file_stem(version)
    paths = []
    for split in written_splits(version):
        path = out_dir / f"{stem}_{split}.jsonl"
        with path.open("w", encoding="utf-8", newline="\n") as fh:
            for _pk, content in items(version, split):
                fh.write(dumps(trl_record(content)) + "\n")
        paths.append(path)
    return sorted(paths)


def export_hf(version: PreferenceVersion, out_dir: Path) -> list[Path]:
    splits = written_splits(version)
    paths = []
    for split in splits:
        path = out_dir / f"data/{split}-00000-of-00001.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [full_record(pk, c) for pk, c in items(version, split)]
        pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), path, compression="zstd")
        paths.append(path)
    card = ["---", "configs:", "- config_name: default", "  data_files:"]
    for split in splits:
        card += [f"  - split: {split}", f"    path: data/{split}-00000-of-00001.parquet"]
    card += [
        "---",
        "",
        f"# {version.name}",
        "",
        "MedPortal preference version: clinician-reviewed preference pairs (prompt, chosen, rejected), frozen.",
        "",
        f"- content hash: `{version.content_hash}`",
        f"- split ratios: {', '.join(f'{r:g}' for r in version.split_ratios)} (seed {version.seed})",
        "- rows: " + ", ".join(f"{s} {version.counts.get(s, 0)}" for s in splits),
        "",
        "Columns: " + ", ".join(COLUMNS) + ".",
        "",
    ]
    path = out_dir / "README.md"
    path.write_text("\n".join(card), encoding="utf-8")
    paths.append(path)
    return sorted(paths)


PREFERENCE_EXPORTERS = {"llamafactory": export_llamafactory, "trl": export_trl, "hf": export_hf}
