"""Training throughput: the engine's LoRA SFT on any local model folder and alpaca file, with and without packing.

Each run is the real command line (``python -m training.engine train``) in a child process, so
the figures include nothing the worker would not do and the peak RSS is the run's own. Prints one
JSON line per run (tokens/s counted on non-pad tokens over the training steps, steps, first/last
train loss, final eval loss on the held-out split, seconds, peak RSS, peak CUDA memory) and, with
``--packing both``, one line comparing the two. The held-out examples are the same in both runs
(the split is seeded and evaluation is never packed), so the eval losses are comparable.

    .venv/bin/python bench/train_bench.py MODEL_DIR DATA_FILE                       # cpu_demo preset, packing on and off
    .venv/bin/python bench/train_bench.py MODEL_DIR DATA_FILE --steps 30 --cutoff 512 --set max_samples=none
    .venv/bin/python bench/train_bench.py MODEL_DIR DATA_FILE --preset qwen3_medical --set num_train_epochs=1   # on a GPU

DATA_FILE is a LLaMA-Factory alpaca JSON array or JSON Lines file; ``--eval FILE`` gives the
validation set instead of the preset's ``val_size`` split.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))
from _setup import emit, machine  # noqa: E402


def run_once(args: argparse.Namespace, packing: bool, workdir: Path) -> dict:
    from training.engine.config import FinetuneConfig

    sets = list(args.set)
    if args.steps is not None:
        sets.append(f"max_steps={args.steps}")
    if args.cutoff is not None:
        sets.append(f"cutoff_len={args.cutoff}")
    sets.append(f"packing={'true' if packing else 'false'}")
    config = FinetuneConfig.from_preset(args.preset, sets)
    run_dir = workdir / ("packed" if packing else "padded")
    config_file = workdir / f"config-{run_dir.name}.json"
    config_file.write_text(json.dumps(config.to_dict()))
    command = [sys.executable, "-m", "training.engine", "train", "--config", str(config_file), "--model", str(args.model)]
    command += ["--train", str(args.data), "--out", str(run_dir), "--no-resume"]
    if args.eval:
        command += ["--eval", str(args.eval)]
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL if not args.verbose else None, text=True
    )
    events = [json.loads(line) for line in proc.stdout]
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage (peak RSS)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    start = next((e for e in events if e["type"] == "start"), {})
    done = events[-1] if events and events[-1]["type"] == "done" else {}
    error = next((e for e in events if e["type"] == "error"), None)
    session_tokens = done.get("total_tokens") or 0  # --no-resume: the whole run is this session
    return {
        "bench": "train",
        "model": str(args.model),
        "data": str(args.data),
        "preset": args.preset,
        "packing": packing,
        "config": {
            k: v
            for k, v in config.to_dict().items()
            if k
            in (
                "cutoff_len",
                "per_device_train_batch_size",
                "gradient_accumulation_steps",
                "learning_rate",
                "max_steps",
                "num_train_epochs",
                "max_samples",
                "val_size",
                "bf16",
                "fp16",
            )
        },
        "status": done.get("status") or ("error" if error else f"exit {proc.returncode}"),
        "error": error["message"] if error else None,
        "steps": done.get("step"),
        "train_examples": start.get("num_train_examples"),
        "train_rows": start.get("num_train_rows"),
        "eval_examples": start.get("num_eval_examples"),
        "tokens_per_second": done.get("tokens_per_second"),
        # non-pad tokens per CPU-second of the training steps: with --threads 1 the figure that other load on the host skews least
        "tokens_per_cpu_second": round(session_tokens / done["train_cpu_seconds"], 1) if done.get("train_cpu_seconds") else None,
        "total_tokens": done.get("total_tokens"),
        "train_loss_first": done.get("train_loss_first"),
        "train_loss_last": done.get("train_loss_last"),
        "eval_loss": done.get("eval_loss"),
        "train_runtime_s": done.get("train_runtime"),
        "seconds": round(seconds, 2),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),  # the whole child: less sensitive to other load than wall time
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "peak_gpu_memory_gb": done.get("peak_gpu_memory_gb"),
        "threads": args.threads or os.cpu_count(),
        "load_avg_1m_before": round(load_before, 2),  # other work on the machine skews CPU figures
        "machine": machine(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="local Hugging Face model folder")
    parser.add_argument("data", type=Path, help="alpaca JSON array / JSON Lines")
    parser.add_argument("--eval", type=Path, default=None, help="validation file (default: the preset's val_size split)")
    parser.add_argument("--packing", choices=("both", "on", "off"), default="both")
    parser.add_argument("--steps", type=int, default=None, help="max_steps (default: the preset's epochs)")
    parser.add_argument("--cutoff", type=int, default=None, help="cutoff_len")
    parser.add_argument("--preset", default="cpu_demo")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any FinetuneConfig override (repeatable)")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the run (default: torch's choice)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the run folders here (default: a temporary folder)")
    parser.add_argument("--verbose", action="store_true", help="show the runs' stderr")
    args = parser.parse_args()

    modes = {"both": (False, True), "on": (True,), "off": (False,)}[args.packing]
    with tempfile.TemporaryDirectory(prefix="medportal-train-bench-") as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        results = []
        for packing in modes:
            result = run_once(args, packing, workdir)
            results.append(result)
            emit(result)
    if len(results) == 2 and all(r["tokens_per_second"] for r in results):
        padded, packed = results
        emit(
            {
                "bench": "train_packing_compare",
                "speedup_tokens_per_second": round(packed["tokens_per_second"] / padded["tokens_per_second"], 3),
                "speedup_tokens_per_cpu_second": round(packed["tokens_per_cpu_second"] / padded["tokens_per_cpu_second"], 3)
                if packed["tokens_per_cpu_second"] and padded["tokens_per_cpu_second"]
                else None,
                "speedup_wall": round(padded["seconds"] / packed["seconds"], 3),
                "eval_loss_padded": padded["eval_loss"],
                "eval_loss_packed": packed["eval_loss"],
                "eval_loss_diff": round(packed["eval_loss"] - padded["eval_loss"], 4)
                if padded["eval_loss"] and packed["eval_loss"]
                else None,
            }
        )
    return 0 if all(r["status"] == "succeeded" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
