"""The LoRA runner on the demo model: learning, events, files, cancel, resume — real tiny runs."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch

from training.engine import templates
from training.engine.config import ConfigError, FinetuneConfig
from training.engine.runner import LOG_FILE, TRAINING_INFO, last_valid_checkpoint, train

DEMO_RECORDS = Path(__file__).resolve().parents[3] / "curation" / "demo_data" / "demo_reviewed.jsonl"

# Four records, one batch: every step sees the same rows, so the loss must fall step after step.
# 3e-3: at 5e-3 constant, Adam overshoots on the sixth step with the demo model pre-trained on its
# own corpus (7.14 → … 6.70 → 6.72), which says nothing about the runner.
TINY_LR = 3e-3
TINY = FinetuneConfig(
    cutoff_len=128,
    per_device_train_batch_size=4,
    gradient_accumulation_steps=1,
    learning_rate=TINY_LR,
    lr_scheduler_type="constant",
    max_steps=6,
    logging_steps=1,
    save_steps=2,
    eval_steps=3,
    save_total_limit=2,
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Two cores shared by every helper: one intra-op thread avoids oversubscription stalls.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    records = [json.loads(line) for line in DEMO_RECORDS.read_text(encoding="utf-8").splitlines() if line.strip()]
    folder = tmp_path_factory.mktemp("data")
    paths = {"train": folder / "train.json", "eval": folder / "eval.json", "ten": folder / "ten.json"}
    paths["train"].write_text(json.dumps(records[:4], ensure_ascii=False), encoding="utf-8")
    paths["eval"].write_text(json.dumps(records[4:6], ensure_ascii=False), encoding="utf-8")
    paths["ten"].write_text(json.dumps(records[:10], ensure_ascii=False), encoding="utf-8")
    return paths


def run(config, model_dir, files, out, **kwargs) -> tuple[list[dict], dict]:
    events: list[dict] = []
    done = train(
        config, model_path=model_dir, train_file=files["train"], eval_file=files["eval"], output_dir=out, on_event=events.append, **kwargs
    )
    return events, done


@pytest.fixture(scope="module")
def reference(demo_model_dir, files, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    events, done = run(TINY, demo_model_dir, files, out)
    return {"events": events, "done": done, "out": out}


def of_type(events, kind):
    return [e for e in events if e["type"] == kind]


def test_a_tiny_run_lowers_the_training_loss_step_after_step(reference):
    losses = [e["loss"] for e in of_type(reference["events"], "log")]
    assert len(losses) == 6
    assert all(later < earlier for earlier, later in itertools.pairwise(losses))
    done = reference["done"]
    assert done["status"] == "succeeded"
    assert done["train_loss_last"] < done["train_loss_first"] == losses[0]


def test_the_events_follow_the_contract_in_order(reference):
    events = reference["events"]
    kinds = [e["type"] for e in events]
    assert kinds[-1] == "done" and kinds.count("done") == 1 and kinds.count("start") == 1
    assert set(kinds[: kinds.index("start")]) <= {"message"}
    start = of_type(events, "start")[0]
    for key in ("total_steps", "num_train_examples", "num_eval_examples", "trainable_parameters", "all_parameters", "template_fingerprint"):
        assert start[key]
    assert start["resumed_from_step"] == 0 and start["total_steps"] == 6
    assert (start["num_train_examples"], start["num_eval_examples"]) == (4, 2)
    assert 0 < start["trainable_parameters"] < start["all_parameters"]

    logs = of_type(events, "log")
    assert [e["step"] for e in logs] == [1, 2, 3, 4, 5, 6]
    assert logs[-1]["progress"] == 1.0 and logs[-1]["eta_seconds"] == 0.0
    assert all(e["tokens_per_second"] > 0 and e["learning_rate"] == pytest.approx(TINY_LR) for e in logs)
    assert [e["step"] for e in of_type(events, "eval")] == [3, 6]
    assert all(e["eval_loss"] > 0 for e in of_type(events, "eval"))
    assert [e["step"] for e in of_type(events, "checkpoint")] == [2, 4, 6]

    done = events[-1]
    assert done["adapter_path"] == str(reference["out"] / "adapter")
    assert done["eval_loss"] == of_type(events, "eval")[-1]["eval_loss"]
    assert done["tokens_per_second"] > 0 and done["total_tokens"] > 0 and done["train_runtime"] > 0
    json.dumps(events)


def test_train_log_jsonl_holds_every_event(reference):
    lines = (reference["out"] / LOG_FILE).read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == reference["events"]
    assert (reference["out"] / "adapter" / LOG_FILE).read_text(encoding="utf-8").splitlines() == lines


def test_the_adapter_folder_loads_with_peft_and_describes_its_run(reference, demo_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = reference["out"] / "adapter"
    info = json.loads((adapter / TRAINING_INFO).read_text(encoding="utf-8"))
    tokenizer = AutoTokenizer.from_pretrained(adapter)
    assert info["config"] == TINY.to_dict() and info["template"] == "default"
    assert info["template_fingerprint"] == templates.template_fingerprint(tokenizer, "default")
    assert info["base_model_path"] == str(Path(demo_model_dir).resolve())
    assert info["global_step"] == 6

    base = AutoModelForCausalLM.from_pretrained(demo_model_dir)
    ids = torch.tensor([tokenizer("高血压患者饮食", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        before = base(input_ids=ids).logits
        model = PeftModel.from_pretrained(base, adapter)
        after = model(input_ids=ids).logits
    assert model.peft_config["default"].r == 8
    assert not torch.allclose(before, after)


def test_old_checkpoints_are_rotated_and_the_last_one_is_valid(reference):
    kept = sorted(p.name for p in (reference["out"] / "checkpoints").iterdir())
    assert kept == ["checkpoint-4", "checkpoint-6"]
    assert last_valid_checkpoint(reference["out"] / "checkpoints").name == "checkpoint-6"


def test_a_half_written_checkpoint_is_not_resumed_from(tmp_path):
    (tmp_path / "checkpoint-2").mkdir()
    (tmp_path / "checkpoint-2" / "trainer_state.json").write_text(json.dumps({"global_step": 2}))
    (tmp_path / "checkpoint-4").mkdir()  # killed before trainer_state.json was written
    assert last_valid_checkpoint(tmp_path).name == "checkpoint-2"
    assert last_valid_checkpoint(tmp_path / "missing") is None


def test_cancel_saves_a_checkpoint_and_resume_finishes_exactly_like_an_uninterrupted_run(reference, demo_model_dir, files, tmp_path):
    events: list[dict] = []

    def stop_after_two_steps() -> bool:  # asked at every step end: step 1 has been logged when step 2 ends
        return len(of_type(events, "log")) >= 1

    done = train(
        TINY,
        model_path=demo_model_dir,
        train_file=files["train"],
        eval_file=files["eval"],
        output_dir=tmp_path,
        on_event=events.append,
        should_stop=stop_after_two_steps,
    )
    assert done["status"] == "cancelled" and done["adapter_path"] is None and done["step"] == 2
    assert of_type(events, "checkpoint")[-1]["step"] == 2
    assert last_valid_checkpoint(tmp_path / "checkpoints").name == "checkpoint-2"
    assert not (tmp_path / "adapter").exists()

    events, done = run(TINY, demo_model_dir, files, tmp_path)
    start = of_type(events, "start")[0]
    assert start["resumed_from_step"] == 2
    assert [e["step"] for e in of_type(events, "log")] == [3, 4, 5, 6]
    assert done["status"] == "succeeded" and done["step"] == reference["done"]["step"] == 6
    # Optimizer, scheduler, RNG and data order come back with the checkpoint: the same adapter, bit for bit.
    from safetensors.torch import load_file

    resumed = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    straight = load_file(reference["out"] / "adapter" / "adapter_model.safetensors")
    assert resumed.keys() == straight.keys()
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=1e-6)
    assert done["train_loss_first"] == reference["done"]["train_loss_first"]
    assert done["eval_loss"] == pytest.approx(reference["done"]["eval_loss"], abs=1e-6)
    # the log of the run tells the whole story: both attempts, one after the other
    logged = [json.loads(line)["type"] for line in (tmp_path / LOG_FILE).read_text(encoding="utf-8").splitlines()]
    assert logged.count("start") == 2 and logged.count("done") == 2


def test_a_changed_config_starts_over_instead_of_resuming(demo_model_dir, files, tmp_path):
    first = FinetuneConfig.from_dict({**TINY.to_dict(), "max_steps": 1, "save_steps": 1})
    run(first, demo_model_dir, files, tmp_path)
    assert last_valid_checkpoint(tmp_path / "checkpoints") is not None
    changed = FinetuneConfig.from_dict({**first.to_dict(), "learning_rate": 1e-3, "max_steps": 2})
    events, done = run(changed, demo_model_dir, files, tmp_path)
    assert of_type(events, "start")[0]["resumed_from_step"] == 0
    assert any(e["type"] == "message" and "starting over" in e["text"] for e in events)
    assert done["step"] == 2


def test_no_resume_starts_over_even_with_a_checkpoint(reference, demo_model_dir, files, tmp_path):
    import shutil

    shutil.copytree(reference["out"], tmp_path, dirs_exist_ok=True)
    events, _ = run(FinetuneConfig.from_dict({**TINY.to_dict(), "max_steps": 1}), demo_model_dir, files, tmp_path, resume=False)
    assert of_type(events, "start")[0]["resumed_from_step"] == 0
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["checkpoint-1"]


def test_packing_trains_on_fewer_rows_than_examples(demo_model_dir, files, tmp_path):
    config = FinetuneConfig.from_dict({**TINY.to_dict(), "packing": True, "cutoff_len": 512, "max_steps": 2, "val_size": 0.2})
    events: list[dict] = []
    done = train(config, model_path=demo_model_dir, train_file=files["ten"], output_dir=tmp_path, on_event=events.append)
    start = of_type(events, "start")[0]
    assert start["num_train_rows"] < start["num_train_examples"] == 8 and start["num_eval_examples"] == 2
    assert any(e["type"] == "message" and "packed" in e["text"] for e in events)
    assert done["status"] == "succeeded" and done["eval_loss"] > 0


def test_a_stop_requested_before_the_first_step_trains_nothing(demo_model_dir, files, tmp_path):
    events, done = run(TINY, demo_model_dir, files, tmp_path, should_stop=lambda: True)
    assert done["status"] == "cancelled" and done["step"] == 0
    assert not of_type(events, "start") and not (tmp_path / "checkpoints").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_gpu_only_settings_are_refused_on_a_cpu_machine_and_logged(demo_model_dir, files, tmp_path):
    config = FinetuneConfig.from_dict({**TINY.to_dict(), "fp16": True, "quantization_bit": 4})
    with pytest.raises(ConfigError) as caught:
        run(config, demo_model_dir, files, tmp_path)
    assert set(caught.value.errors) == {"fp16", "quantization_bit"}
    (line,) = (tmp_path / LOG_FILE).read_text(encoding="utf-8").splitlines()
    assert json.loads(line)["type"] == "error"
