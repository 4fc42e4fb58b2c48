"""DPO on the demo model: the loss against the formula by hand, the reference with LoRA, a tiny run."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from training.engine import templates
from training.engine.config import ConfigError, FinetuneConfig
from training.engine.dpo import (
    REFERENCE_FILE,
    DPOConfig,
    PreferenceCollator,
    compute_reference_logps,
    dpo_loss,
    encode_preference,
    encode_preferences,
    pair_logps,
    train_dpo,
)
from training.engine.runner import TRAINING_INFO, _apply_lora, _load_model, _load_tokenizer

DEMO_RECORDS = Path(__file__).resolve().parents[3] / "curation" / "demo_data" / "demo_reviewed.jsonl"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def demo_preferences(n: int, offset: int = 0) -> list[dict]:
    """Reference answers chosen; another pair's answer (a plausible wrong answer) rejected."""
    records = [json.loads(line) for line in DEMO_RECORDS.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = records[offset : offset + n]
    return [
        {"instruction": r["instruction"], "input": r.get("input", ""), "chosen": r["output"], "rejected": records[offset + n + i]["output"]}
        for i, r in enumerate(rows)
    ]


TINY = FinetuneConfig(
    cutoff_len=96,
    per_device_train_batch_size=4,
    gradient_accumulation_steps=1,
    learning_rate=3e-3,
    lr_scheduler_type="constant",
    max_steps=5,
    logging_steps=1,
    save_steps=100,
    lora_rank=8,
)


def hand_logp(model, ids: list[int], labels: list[int]) -> float:
    """log π(answer | prompt) token by token, one unpadded sequence, in float64 from the logits."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    total = 0.0
    for t in range(1, len(ids)):
        if labels[t] != -100:
            total += float(torch.log_softmax(logits[t - 1], dim=-1)[ids[t]])
    return total


def test_the_dpo_loss_on_a_fixed_batch_equals_the_formula_by_hand(demo_model_dir):
    tokenizer = _load_tokenizer(str(demo_model_dir))
    model = _load_model(TINY, str(demo_model_dir)).eval()
    rows, _dropped = encode_preferences(tokenizer, "default", demo_preferences(3), 96)
    # A different "reference": log-probs invented for the test, so the loss is not at its ln 2 start.
    refs = [(-40.0, -55.5), (-61.25, -30.0), (-20.0, -20.5)]
    for row, (c, r) in zip(rows, refs, strict=True):
        row["ref_chosen_logps"], row["ref_rejected_logps"] = c, r
    batch = PreferenceCollator(tokenizer.pad_token_id)(rows)  # padded: rows of different lengths
    with torch.no_grad():
        pc, pr = pair_logps(model, batch)
        losses, cr, rr = dpo_loss(pc, pr, batch["ref_chosen_logps"], batch["ref_rejected_logps"], beta=0.1)
    for i, row in enumerate(rows):
        lc = hand_logp(model, row["chosen_input_ids"], row["chosen_labels"])
        lr = hand_logp(model, row["rejected_input_ids"], row["rejected_labels"])
        ref_c, ref_r = refs[i]
        z = 0.1 * ((lc - ref_c) - (lr - ref_r))
        expected = -math.log(1 / (1 + math.exp(-z)))
        assert float(pc[i]) == pytest.approx(lc, abs=2e-3)
        assert float(pr[i]) == pytest.approx(lr, abs=2e-3)
        assert float(losses[i]) == pytest.approx(expected, abs=1e-4)
        assert float(cr[i]) == pytest.approx(0.1 * (lc - ref_c), abs=1e-3)
        assert float(rr[i]) == pytest.approx(0.1 * (lr - ref_r), abs=1e-3)


def test_labels_cover_only_the_final_answer_and_the_prompt_is_shared(demo_model_dir):
    tokenizer = _load_tokenizer(str(demo_model_dir))
    record = {"instruction": "What is hypertension?", "history": [["Hello", "Hi, how can I help?"]], "chosen": "High blood pressure.", "rejected": "A bone disease."}
    row = encode_preference(tokenizer, "default", record, 512)
    prompt = templates.prompt_ids(tokenizer, "default", [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi, how can I help?"}, {"role": "user", "content": "What is hypertension?"}])
    assert row["chosen_input_ids"][: len(prompt)] == prompt == row["rejected_input_ids"][: len(prompt)]
    assert row["chosen_labels"][: len(prompt)] == [-100] * len(prompt)  # history answer not trained on
    assert tokenizer.decode([t for t in row["chosen_labels"] if t != -100]).startswith("High blood pressure.")
    assert tokenizer.decode([t for t in row["rejected_labels"] if t != -100]).startswith("A bone disease.")


def test_the_reference_of_a_lora_run_is_the_model_with_the_adapter_switched_off(demo_model_dir):
    tokenizer = _load_tokenizer(str(demo_model_dir))
    rows, _ = encode_preferences(tokenizer, "default", demo_preferences(2), 96)
    base = _load_model(TINY, str(demo_model_dir)).eval()
    plain = compute_reference_logps(base, rows, tokenizer.pad_token_id)
    model = _apply_lora(TINY, _load_model(TINY, str(demo_model_dir)))
    torch.manual_seed(0)
    with torch.no_grad():  # a trained-looking adapter: B is zero at initialisation
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    off = compute_reference_logps(model, rows, tokenizer.pad_token_id, disable_adapter=True)
    on = compute_reference_logps(model, rows, tokenizer.pad_token_id, disable_adapter=False)
    for (a, b), (c, d), (e, f) in zip(plain, off, on, strict=True):
        assert c == pytest.approx(a, abs=1e-3) and d == pytest.approx(b, abs=1e-3)
        assert abs(e - a) > 0.01 or abs(f - b) > 0.01  # the adapter does change the policy
    assert all(p.requires_grad for n, p in model.named_parameters() if "lora_" in n)  # the adapter is back on and trainable


def test_config_rules():
    with pytest.raises(ConfigError) as err:
        DPOConfig(beta=0)
    assert "beta" in err.value.errors
    with pytest.raises(ConfigError):
        DPOConfig(finetune=FinetuneConfig(packing=True))
    again = DPOConfig.from_dict(DPOConfig(beta=0.2, finetune=TINY).to_dict())
    assert again.beta == 0.2 and again.finetune == TINY


@pytest.fixture(scope="module")
def pref_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("prefs")
    train, held = folder / "train.json", folder / "eval.json"
    train.write_text(json.dumps(demo_preferences(4), ensure_ascii=False), encoding="utf-8")
    held.write_text(json.dumps(demo_preferences(2, offset=20), ensure_ascii=False), encoding="utf-8")
    return train, held


@pytest.fixture(scope="module")
def tiny_run(demo_model_dir, pref_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("dpo")
    events: list[dict] = []
    done = train_dpo(DPOConfig(beta=0.1, finetune=TINY), model_path=demo_model_dir, train_file=pref_files[0], eval_file=pref_files[1], output_dir=out, on_event=events.append)
    return {"events": events, "done": done, "out": out}


def test_a_tiny_dpo_run_raises_the_margin_on_its_training_pairs(tiny_run):
    logs = [e for e in tiny_run["events"] if e["type"] == "log"]
    assert len(logs) == 5
    for key in ("loss", "rewards_chosen", "rewards_rejected", "reward_margin", "reward_accuracy"):
        assert all(isinstance(e[key], float) for e in logs), key
    assert logs[0]["loss"] == pytest.approx(math.log(2), abs=1e-3)  # policy == reference at step 1
    assert logs[0]["reward_margin"] == pytest.approx(0.0, abs=1e-3)
    assert logs[-1]["loss"] < logs[0]["loss"] - 0.05
    assert logs[-1]["reward_margin"] > 0.5 and logs[-1]["reward_accuracy"] == 1.0
    done = tiny_run["done"]
    assert done["status"] == "succeeded" and done["stage"] == "dpo"
    assert done["eval_before"]["reward_margin"] == pytest.approx(0.0, abs=1e-3)
    assert done["eval_after"]["pairs"] == 2


def test_the_adapter_folder_records_the_run(tiny_run):
    adapter = tiny_run["out"] / "adapter"
    info = json.loads((adapter / TRAINING_INFO).read_text())
    assert info["stage"] == "dpo" and info["reference"] == "adapter_disabled" and info["dpo"]["beta"] == 0.1
    assert (adapter / "adapter_config.json").is_file()
    ref = json.loads((tiny_run["out"] / REFERENCE_FILE).read_text())
    assert ref["reference"] == "adapter_disabled" and len(ref["logps"]) == 6


def test_dpo_on_top_of_an_sft_adapter_uses_that_adapter_as_the_reference(tiny_run, demo_model_dir, pref_files, tmp_path):
    from training.engine.loading import load_model

    parent = tmp_path / "parent"
    shutil.copytree(tiny_run["out"] / "adapter", parent)  # any adapter stands for the SFT one
    out = tmp_path / "child"
    config = DPOConfig(beta=0.1, finetune=FinetuneConfig(**{**TINY.to_dict(), "max_steps": 1}))
    done = train_dpo(config, model_path=demo_model_dir, train_file=pref_files[0], eval_file=pref_files[1], output_dir=out, on_event=lambda e: None, adapter_path=parent)
    assert done["status"] == "succeeded"
    ref = json.loads((out / REFERENCE_FILE).read_text())
    assert ref["reference"] == "sft_adapter"
    model, tokenizer = load_model(demo_model_dir, parent, device="cpu", dtype=torch.float32)
    rows, _ = encode_preferences(tokenizer, "default", json.loads(pref_files[0].read_text()), 96)
    expected = compute_reference_logps(model, rows, tokenizer.pad_token_id)
    for (a, b), (c, d) in zip(expected, ref["logps"][:4], strict=True):
        assert c == pytest.approx(a, abs=1e-3) and d == pytest.approx(b, abs=1e-3)
    # the run starts where the parent is: step 1 has no margin against its own reference
    assert done["eval_before"]["reward_margin"] == pytest.approx(0.0, abs=1e-3)


def test_cancel_saves_a_checkpoint_and_a_resumed_run_keeps_the_stored_reference(demo_model_dir, pref_files, tmp_path):
    config = DPOConfig(beta=0.1, finetune=FinetuneConfig(**{**TINY.to_dict(), "max_steps": 4, "save_steps": 1}))
    asked = {"n": 0}

    def stop_after_two_steps() -> bool:  # asked once before loading, then at every step end
        asked["n"] += 1
        return asked["n"] > 2

    first = train_dpo(config, model_path=demo_model_dir, train_file=pref_files[0], eval_file=pref_files[1], output_dir=tmp_path, on_event=lambda e: None, should_stop=stop_after_two_steps)
    assert first["status"] == "cancelled" and first["step"] == 2
    stored = json.loads((tmp_path / REFERENCE_FILE).read_text())
    events: list[dict] = []
    done = train_dpo(config, model_path=demo_model_dir, train_file=pref_files[0], eval_file=pref_files[1], output_dir=tmp_path, on_event=events.append)
    texts = [e["text"] for e in events if e["type"] == "message"]
    assert any("resuming from checkpoint-2" in t for t in texts)
    assert any("reference log-probabilities read from the run folder" in t for t in texts)
    assert done["status"] == "succeeded" and done["step"] == 4
    assert json.loads((tmp_path / REFERENCE_FILE).read_text()) == stored


def test_the_engine_command_line_runs_dpo_and_prints_json_events(demo_model_dir, pref_files, tmp_path):
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[3]
    config = tmp_path / "dpo.json"
    config.write_text(json.dumps(DPOConfig(beta=0.2, finetune=FinetuneConfig(**{**TINY.to_dict(), "max_steps": 2})).to_dict()))
    proc = subprocess.run(
        [sys.executable, "-m", "training.engine", "dpo", "--config", str(config), "--model", str(demo_model_dir), "--train", str(pref_files[0]), "--eval", str(pref_files[1]), "--out", str(tmp_path / "run")],
        cwd=root,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    logs = [e for e in events if e["type"] == "log"]
    assert len(logs) == 2 and all("reward_margin" in e and "reward_accuracy" in e for e in logs)
    assert events[-1]["type"] == "done" and events[-1]["status"] == "succeeded" and events[-1]["eval_after"]["pairs"] == 2
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"beta": -1}))
    proc = subprocess.run(
        [sys.executable, "-m", "training.engine", "dpo", "--config", str(bad), "--model", str(demo_model_dir), "--train", str(pref_files[0]), "--out", str(tmp_path / "run2")],
        cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1 and json.loads(proc.stdout.splitlines()[-1])["errors"]["beta"]
