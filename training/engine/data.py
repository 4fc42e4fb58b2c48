"""Training data: alpaca records → tokenized examples → (optionally packed) rows → batches.

Reads what ``curation/exports/llamafactory.py`` writes (a JSON array of alpaca records; JSON
Lines too), turns each record into chat messages with ``templates.records_to_messages`` and
into ``input_ids`` / ``labels`` with ``templates.encode_conversation`` (labels are -100 except
on answer tokens). Packing puts several examples in one row with ``position_ids`` restarting
at 0 for each: transformers (``masking_utils.find_packed_sequence_indices``) turns restarting
positions into a block-diagonal causal mask when no 2D attention mask is passed, so no token
attends to another example — the loss is the same as without packing.
Torch is imported only inside the collator.
"""

from __future__ import annotations

import bisect
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.engine import templates

IGNORE_INDEX = -100


class DataError(ValueError):
    """The data file cannot be used (unreadable, empty, no usable example)."""


@dataclass
class PreparedData:
    train: list[dict[str, list[int]]]
    eval: list[dict[str, list[int]]]
    num_train_records: int
    num_eval_records: int
    dropped: dict[str, int] = field(default_factory=dict)  # "train"/"eval" -> examples whose answer was cut off entirely
    truncated: dict[str, int] = field(default_factory=dict)  # examples shortened to cutoff_len but kept
    packed: bool = False


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """A LLaMA-Factory alpaca file: a JSON array, or JSON Lines (one record per line)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    stripped = text.lstrip()
    if not stripped:
        raise DataError(f"{path} is empty")
    try:
        if stripped.startswith("["):
            records = json.loads(stripped)
        else:
            records = [json.loads(line) for line in stripped.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is neither a JSON array nor JSON Lines: {exc}") from exc
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise DataError(f"{path} must hold alpaca records (objects)")
    return records


def split_records(records: Sequence[dict[str, Any]], val_size: float, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Seeded hold-out: the same records, seed and ratio always give the same split."""
    if not val_size or len(records) < 2:
        return list(records), []
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    n_eval = min(len(records) - 1, max(1, round(len(records) * val_size)))
    eval_idx = set(order[:n_eval])
    train = [r for i, r in enumerate(records) if i not in eval_idx]
    held = [r for i, r in enumerate(records) if i in eval_idx]
    return train, held


def encode_records(
    tokenizer: Any, template: str, records: Sequence[dict[str, Any]], cutoff_len: int
) -> tuple[list[dict[str, list[int]]], int, int]:
    """Tokenize records; returns (examples, dropped, truncated).

    Dropped = no answer to learn from: the record has none, or ``cutoff_len`` cut it off entirely.
    """
    examples: list[dict[str, list[int]]] = []
    dropped = truncated = 0
    for index, record in enumerate(records):
        try:
            messages = templates.records_to_messages(record)
            if messages[-1]["role"] != "assistant":  # no answer to learn from
                dropped += 1
                continue
            encoded = templates.encode_conversation(tokenizer, template, messages, cutoff_len)
        except templates.TemplateError as exc:
            raise DataError(f"record {index}: {exc}") from exc
        input_ids, labels = list(encoded["input_ids"]), list(encoded["labels"])
        if all(label == IGNORE_INDEX for label in labels):
            dropped += 1
            continue
        if len(input_ids) >= cutoff_len:
            truncated += 1
        examples.append({"input_ids": input_ids, "labels": labels})
    return examples, dropped, truncated


def train_eval_records(
    config: Any, train_file: str | Path, eval_file: str | Path | None, read: Callable[[str | Path], list[dict[str, Any]]] = read_records
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, eval) records: the first ``config.max_samples`` of ``train_file``, and ``eval_file``
    when given, else a ``config.val_size`` share split off by ``config.seed``. ``read`` reads a file
    (SFT records by default; DPO passes its preference reader)."""
    records = read(train_file)
    if config.max_samples is not None:
        records = records[: config.max_samples]
    if eval_file:
        return records, read(eval_file)
    return split_records(records, config.val_size, config.seed)


def prepare_data(
    config: Any,
    tokenizer: Any,
    *,
    train_file: str | Path,
    eval_file: str | Path | None = None,
    on_message: Callable[[str, str], None] | None = None,
) -> PreparedData:
    """max_samples → validation split → tokenization → (packing). ``config`` is a FinetuneConfig."""
    train_records, eval_records = train_eval_records(config, train_file, eval_file)
    train, dropped_train, trunc_train = encode_records(tokenizer, config.template, train_records, config.cutoff_len)
    held, dropped_eval, trunc_eval = encode_records(tokenizer, config.template, eval_records, config.cutoff_len)
    if not train:
        raise DataError(f"no usable training example in {train_file} (cutoff_len {config.cutoff_len} leaves no answer token)")
    data = PreparedData(
        train=train,
        eval=held,
        num_train_records=len(train_records),
        num_eval_records=len(eval_records),
        dropped={"train": dropped_train, "eval": dropped_eval},
        truncated={"train": trunc_train, "eval": trunc_eval},
    )
    if on_message is not None:
        if dropped_train or dropped_eval:
            on_message(
                "warning",
                f"dropped {dropped_train} training and {dropped_eval} validation examples without an answer token "
                f"(empty answer, or cut off by cutoff_len={config.cutoff_len})",
            )
        if trunc_train or trunc_eval:
            on_message("info", f"truncated {trunc_train} training and {trunc_eval} validation examples to cutoff_len={config.cutoff_len}")
    if config.packing:
        data.train = pack_examples(train, config.cutoff_len)
        data.packed = True
        if on_message is not None:
            on_message("info", f"packed {len(train)} training examples into {len(data.train)} rows of at most {config.cutoff_len} tokens")
    return data


def pack_examples(examples: Sequence[dict[str, list[int]]], cutoff_len: int) -> list[dict[str, list[int]]]:
    """Best-fit-decreasing packing into rows of ≤ cutoff_len tokens.

    Each row has ``input_ids``, ``labels`` and ``position_ids`` that restart at 0 for every example.
    The first label of every example is -100 so that no token learns to predict across a boundary
    (templates already mask prompts; this only guards against an answer-first template). The
    result does not depend on the input order beyond ties, and is deterministic.
    """
    order = sorted(range(len(examples)), key=lambda i: (-len(examples[i]["input_ids"]), i))
    rows: list[list[int]] = []
    # (remaining capacity, row index), kept sorted: best fit = smallest capacity that still fits.
    free: list[tuple[int, int]] = []
    for i in order:
        length = min(len(examples[i]["input_ids"]), cutoff_len)
        pos = bisect.bisect_left(free, (length, -1))
        if pos < len(free):
            remaining, row = free.pop(pos)
            rows[row].append(i)
            bisect.insort(free, (remaining - length, row))
        else:
            rows.append([i])
            bisect.insort(free, (cutoff_len - length, len(rows) - 1))
    packed: list[dict[str, list[int]]] = []
    for members in rows:
        input_ids: list[int] = []
        labels: list[int] = []
        position_ids: list[int] = []
        for i in sorted(members):
            ids = examples[i]["input_ids"][:cutoff_len]
            lab = list(examples[i]["labels"][:cutoff_len])
            lab[0] = IGNORE_INDEX
            input_ids += ids
            labels += lab
            position_ids += range(len(ids))
        packed.append({"input_ids": input_ids, "labels": labels, "position_ids": position_ids})
    return packed


class SFTCollator:
    """Right-padding collator for both row kinds.

    Plain examples → ``input_ids`` (pad id), ``attention_mask`` (0 on pads), ``labels`` (-100 on pads).
    Packed rows (they carry ``position_ids``) → no attention mask at all, so transformers detects the
    packed format from the restarting positions; a row's padding gets its own positions 0..k-1 and
    therefore forms its own block that no real token can see, with labels -100.
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        self.pad_token_id = int(pad_token_id)
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: Sequence[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        packed = "position_ids" in features[0]
        input_ids, labels, extra = [], [], []
        for f in features:
            n = len(f["input_ids"])
            pad = width - n
            input_ids.append(list(f["input_ids"]) + [self.pad_token_id] * pad)
            labels.append(list(f["labels"]) + [IGNORE_INDEX] * pad)
            if packed:
                extra.append(list(f["position_ids"]) + list(range(pad)))
            else:
                extra.append([1] * n + [0] * pad)
        batch = {"input_ids": torch.tensor(input_ids, dtype=torch.long), "labels": torch.tensor(labels, dtype=torch.long)}
        if packed:
            batch["position_ids"] = torch.tensor(extra, dtype=torch.long)
        else:
            batch["attention_mask"] = torch.tensor(extra, dtype=torch.long)
        return batch


class ListDataset:
    """The minimal map-style dataset the Trainer needs (``__len__`` + ``__getitem__``)."""

    def __init__(self, rows: Sequence[dict[str, list[int]]]):
        self.rows = list(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        return self.rows[index]
