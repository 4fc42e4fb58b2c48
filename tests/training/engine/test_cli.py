"""``python -m training.engine``: stdout is JSON lines only, SIGTERM cancels cleanly, errors exit 1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from training.engine.config import FinetuneConfig

REPO_ROOT = Path(__file__).resolve().parents[3]
DEMO_RECORDS = REPO_ROOT / "curation" / "demo_data" / "demo_reviewed.jsonl"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}


def engine(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "training.engine", *args],
        cwd=REPO_ROOT,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]  # any non-JSON line fails here


@pytest.fixture
def run_files(tmp_path) -> dict[str, Path]:
    records = [json.loads(line) for line in DEMO_RECORDS.read_text(encoding="utf-8").splitlines() if line.strip()]
    train = tmp_path / "train.json"
    train.write_text(json.dumps(records[:12], ensure_ascii=False), encoding="utf-8")
    return {"train": train, "out": tmp_path / "run", "config": tmp_path / "config.json"}


def write_config(path: Path, **overrides) -> None:
    config = FinetuneConfig(
        cutoff_len=128,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=1,
        learning_rate=1e-3,
        val_size=0.2,
        logging_steps=1,
        **overrides,
    )
    path.write_text(json.dumps(config.to_dict()))


def test_train_prints_only_json_events_and_ends_with_done(demo_model_dir, run_files):
    write_config(run_files["config"], max_steps=2, save_steps=2)
    proc = engine(
        "train",
        "--config",
        str(run_files["config"]),
        "--model",
        str(demo_model_dir),
        "--train",
        str(run_files["train"]),
        "--out",
        str(run_files["out"]),
    )
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    events = json_lines(stdout)
    kinds = [e["type"] for e in events]
    assert "start" in kinds and kinds.count("log") == 2 and kinds[-1] == "done"
    assert events[-1]["status"] == "succeeded" and Path(events[-1]["adapter_path"]).is_dir()
    assert (run_files["out"] / "train_log.jsonl").read_text(encoding="utf-8").count("\n") == len(events)


def test_sigterm_stops_at_the_next_step_with_a_checkpoint_and_exit_code_zero(demo_model_dir, run_files):
    write_config(run_files["config"], max_steps=500, save_steps=1000)
    proc = engine(
        "train",
        "--config",
        str(run_files["config"]),
        "--model",
        str(demo_model_dir),
        "--train",
        str(run_files["train"]),
        "--out",
        str(run_files["out"]),
    )
    events = []
    for line in proc.stdout:
        events.append(json.loads(line))
        if events[-1]["type"] == "log":
            proc.send_signal(signal.SIGTERM)
            break
    rest, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    events += json_lines(rest)
    done = events[-1]
    assert done["type"] == "done" and done["status"] == "cancelled" and done["adapter_path"] is None
    assert 1 <= done["step"] < 500
    checkpoint = [e for e in events if e["type"] == "checkpoint"][-1]
    assert checkpoint["step"] == done["step"] and Path(checkpoint["path"]).is_dir()


def test_a_bad_config_is_an_error_event_and_exit_code_one(demo_model_dir, run_files):
    write_config(run_files["config"])
    proc = engine(
        "train",
        "--config",
        str(run_files["config"]),
        "--set",
        "cutoff_len=4",
        "--set",
        "lora_rank=0",
        "--model",
        str(demo_model_dir),
        "--train",
        str(run_files["train"]),
        "--out",
        str(run_files["out"]),
    )
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1
    (event,) = json_lines(stdout)
    assert event["type"] == "error" and set(event["errors"]) == {"cutoff_len", "lora_rank"} and "Traceback" in event["traceback"]


def test_a_missing_training_file_is_an_error_event(demo_model_dir, run_files):
    write_config(run_files["config"], max_steps=1)
    proc = engine(
        "train",
        "--config",
        str(run_files["config"]),
        "--model",
        str(demo_model_dir),
        "--train",
        "/nonexistent.json",
        "--out",
        str(run_files["out"]),
    )
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert json_lines(stdout)[-1]["type"] == "error"


def test_inspect_prints_one_json_line(demo_model_dir):
    proc = engine("inspect", str(demo_model_dir))
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    (event,) = json_lines(stdout)
    assert event["type"] == "model" and event["num_parameters"] > 1_000_000 and event["model_type"] == "qwen3"


def test_an_orphaned_run_stops_with_a_checkpoint_when_its_parent_dies(demo_model_dir, run_files):
    """A worker killed with -9 leaves its training child behind: the child notices and stops by itself."""
    write_config(run_files["config"], max_steps=500, save_steps=1000)
    command = " ".join(
        [sys.executable, "-m", "training.engine", "train", "--config", str(run_files["config"]), "--model", str(demo_model_dir)]
        + ["--train", str(run_files["train"]), "--out", str(run_files["out"])]
    )
    # The shell starts the run, waits for its first event, then exits: the run is re-parented.
    parent = subprocess.Popen(
        ["sh", "-c", f"{command} > {run_files['out']}.events & while [ ! -s {run_files['out']}.events ]; do sleep 0.2; done"],
        cwd=REPO_ROOT,
        env=ENV,
    )
    assert parent.wait(timeout=120) == 0
    log = run_files["out"] / "train_log.jsonl"
    for _ in range(600):
        lines = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
        if lines and json.loads(lines[-1])["type"] == "done":
            break
        time.sleep(0.2)
    done = json.loads(lines[-1])
    assert done["type"] == "done" and done["status"] == "cancelled" and 1 <= done["step"] < 500
    assert (run_files["out"] / "checkpoints" / f"checkpoint-{done['step']}").is_dir()
