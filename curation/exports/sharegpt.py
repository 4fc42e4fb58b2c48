"""ShareGPT export: ``<stem>_<split>.jsonl`` (one conversation per line) + ``dataset_info.json``.

A conversation is the optional system prompt (``{"from": "system"}``, first), the history
turns, then the pair itself: ``human`` = instruction, plus "\\n" + input when there is one
(as LLaMA-Factory joins alpaca fields), ``gpt`` = output.
"""

from __future__ import annotations

from pathlib import Path

from curation.models import DatasetVersion

from .base import dumps, file_stem, history_pairs, items, write_json, written_splits

TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt", "system_tag": "system"}


def conversation(content: dict) -> dict:
    turns = []
    if content.get("system"):
        turns.append({"from": "system", "value": content["system"]})
    for question, answer in history_pairs(content.get("history")):
        turns.append({"from": "human", "value": question})
        turns.append({"from": "gpt", "value": answer})
    prompt = content.get("instruction", "")
    if content.get("input"):
        prompt = f"{prompt}\n{content['input']}"
    turns.append({"from": "human", "value": prompt})
    turns.append({"from": "gpt", "value": content.get("output", "")})
    return {"conversations": turns}


def dataset_info_entry(file_name: str) -> dict:
    return {
        "file_name": file_name,
        "formatting": "sharegpt",
        "columns": {"messages": "conversations"},
        "tags": dict(TAGS),
    }


def export(version: DatasetVersion, out_dir: Path) -> list[Path]:
    stem = file_stem(version)
    info: dict[str, dict] = {}
    paths: list[Path] = []
    for split in written_splits(version):
        path = out_dir / f"{stem}_{split}.jsonl"
        with path.open("w", encoding="utf-8", newline="\n") as fh:
            for _pk, content in items(version, split):
                fh.write(dumps(conversation(content)))
                fh.write("\n")
        info[f"{stem}_{split}"] = dataset_info_entry(path.name)
        paths.append(path)
    paths.append(write_json(out_dir / "dataset_info.json", info))
    return sorted(paths)
