"""Peak memory of a LoRA step with and without the fused loss, on a small model with Qwen3's real 151,936 vocabulary.

The model is built here, never downloaded: a Qwen3-shaped config (vocabulary 151,936, tied
embeddings, ``--hidden`` wide, ``--layers`` deep, random weights, seed 0) with a 32k byte-level
BPE tokenizer trained by the engine's own tokenizer trainer on the shared toyhom consultations
(as ../shared/tools/gpu-compare/prep_data.py prepares the GPU comparison). The data are those
real consultations (alpaca JSON), packed into rows of ``--cutoff`` tokens.

Each mode is the real command line (``python -m training.engine train``) in its own child
process, ``--steps`` optimizer steps of ``--batch`` packed rows, LoRA r8 on every linear layer,
fp32 on the CPU; the figure is that child's peak resident memory (``wait4``'s ``ru_maxrss``).
Modes: ``plain`` (``fused_loss=false``: transformers' loss over the full logits) and ``fused``
(the default chunked loss). A mode that would not fit in the memory available now is skipped
with the reason (``--force`` runs it anyway).

    .venv/bin/python bench/fused_loss_mem.py                                 # 8 × 1024 tokens, both modes
    .venv/bin/python bench/fused_loss_mem.py --batch 2 --modes fused,plain --threads 1
"""

from __future__ import annotations

import argparse
import csv
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
from _setup import SHARED, emit, machine  # noqa: E402

VOCAB = 151_936
TOYHOM = SHARED / "toyhom_chinese_medical_dialogue" / "样例_内科5000-6000.csv"


def toyhom_records(limit: int) -> list[dict[str, str]]:
    rows = []
    with open(TOYHOM, encoding="gb18030", newline="") as handle:
        for record in csv.DictReader(handle):
            question, answer = (record["ask"] or "").strip(), (record["answer"] or "").strip()
            if question and answer:
                rows.append({"instruction": question, "input": "", "output": answer})
            if len(rows) >= limit:
                break
    return rows


def build_model(folder: Path, records: list[dict[str, str]], hidden: int, layers: int) -> int:
    """Tokenizer (32k BPE on the records) + a random Qwen3-shaped model with the 151,936 vocabulary."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from training.engine.demo_model import ENDOFTEXT, IM_END, _train_tokenizer

    tokenizer = _train_tokenizer([r["instruction"] + "\n" + r["output"] for r in records], 32000)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(folder)
    heads = max(1, hidden // 64)
    config = Qwen3Config(
        vocab_size=VOCAB,
        hidden_size=hidden,
        intermediate_size=hidden * 3,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        head_dim=hidden // heads,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids(IM_END),
        pad_token_id=tokenizer.convert_tokens_to_ids(ENDOFTEXT),
    )
    config.architectures = ["Qwen3ForCausalLM"]
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(config)
    model.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def mem_available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024**2
    return float("nan")


def run_mode(mode: str, args, model_dir: Path, data: Path, workdir: Path) -> dict:
    from training.engine.config import FinetuneConfig

    config = FinetuneConfig(
        template="qwen3",
        cutoff_len=args.cutoff,
        packing=True,
        lora_rank=8,
        lora_alpha=16,
        lora_target="all",
        learning_rate=1e-4,
        lr_scheduler_type="constant",
        max_steps=args.steps,
        per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=1,
        logging_steps=1,
        save_steps=100000,
        fused_loss=(mode == "fused"),
    )
    config_file = workdir / f"config-{mode}.json"
    config_file.write_text(json.dumps(config.to_dict()))
    command = [sys.executable, "-m", "training.engine", "train", "--config", str(config_file), "--model", str(model_dir)]
    command += ["--train", str(data), "--out", str(workdir / mode), "--no-resume"]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    events = [json.loads(line) for line in proc.stdout]
    _, status, usage = os.wait4(proc.pid, 0)
    done = events[-1] if events and events[-1]["type"] == "done" else {}
    error = next((e for e in events if e["type"] == "error"), None)
    logs = [e for e in events if e["type"] == "log"]
    start = next((e for e in events if e["type"] == "start"), {})
    return {
        "bench": "fused_loss_mem",
        "mode": mode,
        "status": done.get("status") or (error["message"] if error else f"exit {os.waitstatus_to_exitcode(status)}"),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "steps": done.get("step"),
        "rows": start.get("num_train_rows"),
        "losses": [e["loss"] for e in logs],
        "tokens": done.get("total_tokens"),
        "train_runtime_s": done.get("train_runtime"),
        "seconds": round(time.perf_counter() - started, 1),
        "threads": args.threads,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8, help="packed rows per step (8)")
    parser.add_argument("--cutoff", type=int, default=1024, help="tokens per row (1024)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--records", type=int, default=1500, help="toyhom consultations to tokenize and pack")
    parser.add_argument("--modes", default="fused,plain")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--force", action="store_true", help="run a mode even when it may not fit in the available memory")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="medportal-fused-mem-") as tmp:
        workdir = Path(tmp)
        records = toyhom_records(args.records)
        data = workdir / "toyhom.json"
        data.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
        params = build_model(workdir / "model", records, args.hidden, args.layers)
        logits_gib = args.batch * args.cutoff * VOCAB * 4 / 1024**3
        emit({"bench": "fused_loss_mem", "model_parameters": params, "vocab": VOCAB, "batch": args.batch, "cutoff": args.cutoff,
              "fp32_logits_gib_per_copy": round(logits_gib, 2), "machine": machine()})
        results = {}
        for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
            need = (4 * logits_gib if mode == "plain" else 0.0) + 2.0
            available = mem_available_gib()
            if need > available and not args.force:
                result = {"bench": "fused_loss_mem", "mode": mode, "status": f"skipped: needs about {need:.1f} GiB, {available:.1f} GiB available"}
            else:
                result = run_mode(mode, args, workdir / "model", data, workdir)
                result["mem_available_gib_before"] = round(available, 1)
            results[mode] = result
            emit(result)
        fused, plain = results.get("fused", {}), results.get("plain", {})
        if fused.get("status") == "succeeded" and plain.get("status") == "succeeded":
            emit({
                "bench": "fused_loss_mem",
                "compare": "fused vs plain",
                "peak_rss_mb": [fused["peak_rss_mb"], plain["peak_rss_mb"]],
                "saved_mb": round(plain["peak_rss_mb"] - fused["peak_rss_mb"], 1),
                "ratio": round(fused["peak_rss_mb"] / plain["peak_rss_mb"], 3),
                "max_loss_rel_diff": max(abs(a - b) / abs(b) for a, b in zip(fused["losses"], plain["losses"], strict=True)),
                "speedup": round(plain["train_runtime_s"] / fused["train_runtime_s"], 2) if fused["train_runtime_s"] else None,
            })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
