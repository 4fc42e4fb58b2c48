"""Data loading, the validation split, packing and the collator — and the proof that packing leaves the loss alone."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch

from training.engine.config import FinetuneConfig
from training.engine.data import (
    IGNORE_INDEX,
    DataError,
    SFTCollator,
    encode_records,
    pack_examples,
    prepare_data,
    read_records,
    split_records,
)

DEMO_RECORDS = Path(__file__).resolve().parents[3] / "curation" / "demo_data" / "demo_reviewed.jsonl"


def demo_records() -> list[dict]:
    return [json.loads(line) for line in DEMO_RECORDS.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Two cores shared by every helper: one intra-op thread avoids oversubscription stalls.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def example(length: int, first_label: int = IGNORE_INDEX, token: int = 7) -> dict[str, list[int]]:
    return {"input_ids": [token] * length, "labels": [first_label] + [token] * (length - 1)}


@pytest.fixture(scope="module")
def model_and_tokenizer(demo_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(demo_model_dir)
    model = AutoModelForCausalLM.from_pretrained(demo_model_dir, attn_implementation="sdpa", dtype=torch.float32)
    model.eval()
    model.config.use_cache = False  # as the runner sets it: packed positions are only read without a cache
    return model, tokenizer


@pytest.fixture(scope="module")
def encoded(model_and_tokenizer):
    _, tokenizer = model_and_tokenizer
    examples, dropped, _ = encode_records(tokenizer, "default", demo_records()[:6], 256)
    assert dropped == 0
    return examples


# ---- reading and splitting -------------------------------------------------------------------


def test_a_json_array_and_json_lines_read_the_same(tmp_path):
    records = demo_records()[:3]
    array, lines = tmp_path / "a.json", tmp_path / "a.jsonl"
    array.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    lines.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", encoding="utf-8")
    assert read_records(array) == read_records(lines) == records


@pytest.mark.parametrize("content", ["", "{not json", '{"a": 1}\n[1, 2]', '"text"'])
def test_unusable_files_are_data_errors(tmp_path, content):
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError):
        read_records(path)


def test_the_validation_split_is_seeded_and_disjoint():
    records = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(50)]
    train, held = split_records(records, 0.2, seed=1)
    assert len(held) == 10 and len(train) == 40
    assert {r["instruction"] for r in train}.isdisjoint({r["instruction"] for r in held})
    assert split_records(records, 0.2, seed=1) == (train, held)
    assert split_records(records, 0.2, seed=2)[1] != held
    assert split_records(records, 0.0, seed=1) == (records, [])


def test_prepare_data_applies_max_samples_then_split_and_reports_dropped_examples(tmp_path, model_and_tokenizer):
    _, tokenizer = model_and_tokenizer
    records = demo_records()[:10] + [{"instruction": "没有回答的问题", "input": "", "output": ""}]
    path = tmp_path / "train.json"
    path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    messages: list[tuple[str, str]] = []
    config = FinetuneConfig(cutoff_len=128, val_size=0.2, max_samples=11, seed=3)
    data = prepare_data(config, tokenizer, train_file=path, on_message=lambda level, text: messages.append((level, text)))
    assert data.num_train_records + data.num_eval_records == 11
    assert data.num_eval_records == 2
    assert sum(data.dropped.values()) == 1 and len(data.train) + len(data.eval) == 10
    assert any(level == "warning" and "dropped" in text for level, text in messages)
    assert all(len(row["input_ids"]) <= 128 for row in data.train + data.eval)


def test_an_eval_file_replaces_the_split(tmp_path, model_and_tokenizer):
    _, tokenizer = model_and_tokenizer
    train, held = tmp_path / "train.json", tmp_path / "eval.json"
    train.write_text(json.dumps(demo_records()[:8], ensure_ascii=False), encoding="utf-8")
    held.write_text(json.dumps(demo_records()[8:11], ensure_ascii=False), encoding="utf-8")
    data = prepare_data(FinetuneConfig(cutoff_len=256, val_size=0.5), tokenizer, train_file=train, eval_file=held)
    assert (data.num_train_records, data.num_eval_records) == (8, 3)


def test_a_file_without_any_answer_is_refused(tmp_path, model_and_tokenizer):
    _, tokenizer = model_and_tokenizer
    path = tmp_path / "train.json"
    path.write_text(json.dumps([{"instruction": "q", "output": ""}]), encoding="utf-8")
    with pytest.raises(DataError):
        prepare_data(FinetuneConfig(cutoff_len=64), tokenizer, train_file=path)


# ---- packing ---------------------------------------------------------------------------------


def test_packing_keeps_every_example_once_within_the_cutoff():
    lengths = [50, 30, 70, 20, 90, 10, 60, 40]
    examples = [example(n, token=i + 1) for i, n in enumerate(lengths)]
    rows = pack_examples(examples, 100)
    assert all(len(row["input_ids"]) <= 100 for row in rows)
    assert len(rows) == 4  # 370 tokens: best-fit decreasing needs the minimum of 4 rows of 100
    seen = sorted(len(segment) for row in rows for segment in _segments(row))
    assert seen == sorted(lengths)
    assert sorted(tok for row in rows for tok in row["input_ids"]) == sorted(tok for e in examples for tok in e["input_ids"])
    assert pack_examples(examples, 100) == rows


def test_packed_positions_restart_and_no_label_crosses_an_example_boundary():
    rows = pack_examples([example(5, first_label=99), example(3, first_label=99)], 16)
    (row,) = rows
    assert row["position_ids"] == [0, 1, 2, 3, 4, 0, 1, 2]
    assert row["labels"][0] == IGNORE_INDEX and row["labels"][5] == IGNORE_INDEX


def test_the_padded_collator_pads_right_with_masked_labels():
    batch = SFTCollator(pad_token_id=0)([example(3), example(5)])
    assert batch["input_ids"].tolist()[0] == [7, 7, 7, 0, 0]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["labels"].tolist()[0][3:] == [IGNORE_INDEX, IGNORE_INDEX]
    assert "position_ids" not in batch


def test_the_packed_collator_gives_padding_its_own_block_and_no_attention_mask():
    rows = [pack_examples([example(4), example(2)], 6)[0], pack_examples([example(3)], 6)[0]]
    batch = SFTCollator(pad_token_id=0)(rows)
    assert "attention_mask" not in batch
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1], [0, 1, 2, 0, 1, 2]]
    assert batch["labels"].tolist()[1][3:] == [IGNORE_INDEX] * 3


# ---- the proof on the demo model -------------------------------------------------------------


def _segments(row: dict[str, list[int]]) -> list[list[int]]:
    starts = [i for i, p in enumerate(row["position_ids"]) if p == 0] + [len(row["input_ids"])]
    return [row["input_ids"][a:b] for a, b in itertools.pairwise(starts)]


def _alone(model, collator, ex):
    with torch.no_grad():
        out = model(**collator([ex]))
    n = sum(1 for label in ex["labels"][1:] if label != IGNORE_INDEX)
    return out.loss.item(), n, out.logits[0]


def test_a_packed_row_has_the_token_weighted_loss_of_its_examples_computed_alone(model_and_tokenizer, encoded):
    model, tokenizer = model_and_tokenizer
    collator = SFTCollator(tokenizer.pad_token_id)
    examples = encoded[:3]
    (row,) = pack_examples(examples, sum(len(e["input_ids"]) for e in examples))
    with torch.no_grad():
        packed = model(**collator([row]))
    alone = [_alone(model, collator, e) for e in examples]
    expected = sum(loss * n for loss, n, _ in alone) / sum(n for _, n, _ in alone)
    assert packed.loss.item() == pytest.approx(expected, rel=1e-5)

    # The row keeps the examples in their original order: the second one starts after the first.
    start, length = len(examples[0]["input_ids"]), len(examples[1]["input_ids"])
    assert row["input_ids"][start : start + length] == examples[1]["input_ids"]
    torch.testing.assert_close(packed.logits[0, start : start + length], alone[1][2], rtol=1e-4, atol=1e-4)


def test_a_batch_of_packed_rows_with_padding_matches_the_examples_alone(model_and_tokenizer, encoded):
    model, tokenizer = model_and_tokenizer
    collator = SFTCollator(tokenizer.pad_token_id)
    rows = pack_examples(encoded, 300)
    assert len(rows) >= 2 and len({len(r["input_ids"]) for r in rows}) > 1  # padding is exercised
    with torch.no_grad():
        packed = model(**collator(rows)).loss.item()
    alone = [_alone(model, collator, e) for e in encoded]
    expected = sum(loss * n for loss, n, _ in alone) / sum(n for _, n, _ in alone)
    assert packed == pytest.approx(expected, rel=1e-5)


def test_without_the_isolation_the_same_row_gives_another_loss(model_and_tokenizer, encoded):
    """The control: attending across examples (a plain attention mask) does change the loss."""
    model, tokenizer = model_and_tokenizer
    collator = SFTCollator(tokenizer.pad_token_id)
    examples = encoded[:3]
    (row,) = pack_examples(examples, 1024)
    batch = collator([row])
    batch.pop("position_ids")
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    alone = [_alone(model, collator, e) for e in examples]
    expected = sum(loss * n for loss, n, _ in alone) / sum(n for _, n, _ in alone)
    with torch.no_grad():
        leaky = model(**batch).loss.item()
    assert abs(leaky - expected) / expected > 1e-3
