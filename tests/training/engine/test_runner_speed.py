"""The runner's memory and speed settings: the fused loss in real runs, no host reads in a plain step,
the exact token count read back only at logs, and a CPU run that never imports a CUDA-only package."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from training.engine.config import ConfigError, FinetuneConfig
from training.engine.runner import train

REPO = Path(__file__).resolve().parents[3]
DEMO_RECORDS = REPO / "curation" / "demo_data" / "demo_reviewed.jsonl"

BASE = FinetuneConfig(
    cutoff_len=128,
    per_device_train_batch_size=2,
    gradient_accumulation_steps=2,
    learning_rate=3e-3,
    lr_scheduler_type="constant",
    max_steps=4,
    logging_steps=1,
    save_steps=1000,
    save_total_limit=1,
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def train_file(tmp_path_factory) -> Path:
    records = [json.loads(line) for line in DEMO_RECORDS.read_text(encoding="utf-8").splitlines() if line.strip()]
    path = tmp_path_factory.mktemp("data") / "train.json"
    path.write_text(json.dumps(records[:8], ensure_ascii=False), encoding="utf-8")
    return path


def run(config, model_dir, train_file, out):
    events: list[dict] = []
    done = train(config, model_path=model_dir, train_file=train_file, output_dir=out, on_event=events.append, resume=False)
    return events, done


def adapter(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(out / "adapter" / "adapter_model.safetensors"))


@pytest.mark.parametrize("packing", [False, True])
def test_a_run_with_the_fused_loss_ends_with_the_plain_runs_adapter(demo_model_dir, train_file, tmp_path, packing):
    config = BASE.with_overrides([f"packing={packing}"])
    plain_events, plain = run(config.with_overrides(["fused_loss=false"]), demo_model_dir, train_file, tmp_path / "plain")
    fused_events, fused = run(config, demo_model_dir, train_file, tmp_path / "fused")
    assert any("loss chunked" in e.get("text", "") for e in fused_events)
    assert any("loss plain" in e.get("text", "") for e in plain_events)
    plain_losses = [e["loss"] for e in plain_events if e["type"] == "log"]
    fused_losses = [e["loss"] for e in fused_events if e["type"] == "log"]
    assert len(plain_losses) == 4 and fused_losses == pytest.approx(plain_losses, rel=1e-5)
    a, b = adapter(tmp_path / "plain"), adapter(tmp_path / "fused")
    assert a.keys() == b.keys()
    # Adam divides by the root of the squared gradients, so an entry whose gradient is near zero turns
    # a 1e-7 difference into a visible one: each weight stays within a tenth of one step (lr 3e-3),
    # and each tensor within 1e-3 of its norm. Adam is blind to the gradient's scale, so the scale is
    # checked on the gradient norms the log events carry.
    for name in a:
        assert float((a[name] - b[name]).abs().max()) < 3e-4, name
        assert float((a[name] - b[name]).norm() / a[name].norm()) < 1e-3, name
    plain_norms = [e["grad_norm"] for e in plain_events if e["type"] == "log"]
    assert [e["grad_norm"] for e in fused_events if e["type"] == "log"] == pytest.approx(plain_norms, rel=1e-4)
    # The LoRA weights did move away from their initialisation (B starts at zero).
    assert any(float(t.abs().max()) > 1e-3 for n, t in b.items() if "lora_B" in n)
    assert fused["total_tokens"] == plain["total_tokens"]


def expected_tokens(model_dir, train_file, config) -> int:
    """Non-padding tokens of every micro-batch: the rows one epoch holds, over the epochs the run covers."""
    from transformers import AutoTokenizer

    from training.engine.data import prepare_data

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    data = prepare_data(config, tokenizer, train_file=train_file)
    rows = [len(r["input_ids"]) for r in data.train]
    per_step = config.per_device_train_batch_size * config.gradient_accumulation_steps
    assert (config.max_steps * per_step) % len(rows) == 0  # whole epochs: every row counted the same number of times
    return sum(rows) * (config.max_steps * per_step // len(rows))


def test_the_token_count_is_exact_though_read_back_only_at_logs(demo_model_dir, train_file, tmp_path):
    config = BASE.with_overrides(["max_steps=6", "logging_steps=4"])  # 6 steps × 4 rows = 3 epochs of 8 examples
    events, done = run(config, demo_model_dir, train_file, tmp_path / "run")
    assert done["total_tokens"] == expected_tokens(demo_model_dir, train_file, config)
    logs = [e for e in events if e["type"] == "log"]
    assert [e["step"] for e in logs] == [1, 4]
    assert all(e["tokens_per_second"] > 0 for e in logs)


def host_reads(model_dir, train_file, out, steps: int, packing: bool) -> list[str]:
    """Where a run of ``steps`` steps reads a scalar back from a tensor (``.item()``, ``bool(tensor)``),
    leaving out transformers' attention-mask construction (one read per micro-batch, model code) and
    the data loader's per-epoch seed."""
    import traceback

    from torch.utils._python_dispatch import TorchDispatchMode

    reads: list[str] = []

    class Reads(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._local_scalar_dense.default:
                frames = [f"{Path(f.filename).name}:{f.lineno}" for f in traceback.extract_stack()[:-1]]
                if not any(name.startswith(("masking_utils.py", "dataloader.py")) for name in frames):
                    reads.append(" <- ".join(reversed(frames[-4:])))
            return func(*args, **(kwargs or {}))

    config = BASE.with_overrides([f"max_steps={steps}", "logging_steps=1000", f"packing={packing}"])
    with Reads():
        run(config, model_dir, train_file, out)
    return reads


@pytest.mark.parametrize("packing", [False, True])
def test_a_step_that_does_not_log_reads_nothing_back_from_the_device(demo_model_dir, train_file, tmp_path, packing):
    # Step 1 and the last step log either way; the steps between them must add no host read
    # (transformers alone reads the loss's NaN check and the token count back after every micro-batch).
    short = host_reads(demo_model_dir, train_file, tmp_path / "short", 3, packing)
    long = host_reads(demo_model_dir, train_file, tmp_path / "long", 7, packing)
    assert len(long) == len(short), long


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU refusal")
def test_liger_on_a_cpu_is_refused_before_anything_loads(demo_model_dir, train_file, tmp_path):
    with pytest.raises(ConfigError) as info:
        run(BASE.with_overrides(["use_liger_kernel=true"]), demo_model_dir, train_file, tmp_path / "run")
    assert "use_liger_kernel" in info.value.errors
    assert "CUDA" in info.value.errors["use_liger_kernel"]


CUDA_ONLY = ("liger_kernel", "bitsandbytes", "deepspeed", "triton")


def test_a_cpu_run_never_imports_a_cuda_only_package(demo_model_dir, train_file, tmp_path):
    code = f"""
import json, sys
from training.engine.config import FinetuneConfig
from training.engine.runner import train
config = FinetuneConfig.from_dict({BASE.to_dict()!r})
done = train(config, model_path={str(demo_model_dir)!r}, train_file={str(train_file)!r}, output_dir={str(tmp_path / "run")!r}, on_event=lambda e: None)
loaded = sorted({{name.split(".")[0] for name in sys.modules}} & set({CUDA_ONLY!r}))
print(json.dumps({{"status": done["status"], "loaded": loaded}}))
"""
    # CUDA_VISIBLE_DEVICES="": the CPU path also on a host that has a GPU.
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "HOME": str(tmp_path), "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"status": "succeeded", "loaded": []}


def test_the_fused_loss_is_on_by_default_and_liger_is_a_gpu_setting():
    config = FinetuneConfig()
    assert config.fused_loss is True and config.use_liger_kernel is False and config.torch_compile is False
    assert not config.requires_gpu
    liger = FinetuneConfig(use_liger_kernel=True)
    assert liger.requires_gpu and "use_liger_kernel" in liger.gpu_only_fields()
    assert FinetuneConfig().with_overrides(["fused_loss=false"]).fused_loss is False


def test_the_estimate_counts_one_chunk_of_logits_with_the_fused_loss():
    from training.engine.config import estimate

    kwargs = {"num_parameters": 596_049_920, "hidden_size": 1024, "num_layers": 28, "vocab_size": 151_936, "num_examples": 1000, "avg_tokens": 1024}
    config = FinetuneConfig.from_preset("qwen3_medical", ["per_device_train_batch_size=8", "packing=true"])
    fused, plain = estimate(config, **kwargs), estimate(config.with_overrides(["fused_loss=false"]), **kwargs)
    assert plain["breakdown_gb"]["logits"] == pytest.approx(8 * 1024 * 151_936 * 8 / 2**30, rel=1e-3)  # 9.3 GiB
    assert fused["breakdown_gb"]["logits"] < 0.25
    assert plain["gpu_memory_gb"] - fused["gpu_memory_gb"] > 9


def test_a_cancelled_and_resumed_run_counts_the_same_tokens_as_a_straight_one(demo_model_dir, train_file, tmp_path):
    # Logs only at step 1 and the end: the count travels through the checkpoint between them.
    config = BASE.with_overrides(["max_steps=6", "logging_steps=1000", "save_steps=3"])
    _, straight = run(config, demo_model_dir, train_file, tmp_path / "straight")
    events: list[dict] = []
    cancelled = train(
        config,
        model_path=demo_model_dir,
        train_file=train_file,
        output_dir=tmp_path / "resumed",
        on_event=events.append,
        should_stop=lambda: any(e["type"] == "checkpoint" for e in events),  # at the end of step 4
    )
    assert cancelled["status"] == "cancelled" and cancelled["step"] == 4
    done = train(config, model_path=demo_model_dir, train_file=train_file, output_dir=tmp_path / "resumed", on_event=lambda e: None)
    assert done["status"] == "succeeded"
    assert done["total_tokens"] == straight["total_tokens"] == expected_tokens(demo_model_dir, train_file, config)
