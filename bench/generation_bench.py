"""Batched generation against one-by-one generation on the same model and prompts (goal ≥ 4×).

The prompts are the questions of the project's demo corpus (or of an alpaca / JSON Lines file with
``--data``), rendered with the model's chat template as evaluation renders them. Both sides run
``training.engine.generation.generate_batched`` on one loaded model, greedy, with the same
``max_new_tokens``: one-by-one is ``batch_size=1`` (no padding), batched is ``--batch-size``. The
bench checks that every batched answer is token for token the one-by-one answer, and prints one
JSON line: seconds of each side, answers/s, generated tokens/s, the ratio, identical answers, the
machine and the load average.

    .venv/bin/python bench/generation_bench.py MODEL_DIR [--n 64] [--batch-size 16] [--max-new-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))
from _setup import emit, machine  # noqa: E402


def questions(data: str | None, n: int) -> list[str]:
    if data:
        text = Path(data).read_text(encoding="utf-8")
        records = json.loads(text) if text.lstrip().startswith("[") else [json.loads(line) for line in text.splitlines() if line.strip()]
        found = ["\n".join(p for p in (r.get("instruction"), r.get("input")) if p) for r in records]
    else:
        from training.engine.demo_model import demo_corpus

        found = [text.split("\n", 1)[0] for text in demo_corpus()]
    found = [q for q in dict.fromkeys(found) if q.strip()]
    if not found:
        raise SystemExit("no questions found")
    return [found[i % len(found)] for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="A local model folder (e.g. the demo model built by build_demo_model).")
    parser.add_argument("--n", type=int, default=64, help="Prompts (default 64).")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--template", default="default")
    parser.add_argument("--data", help="Alpaca JSON array or JSON Lines file to take the questions from (default: the demo corpus).")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice).")
    args = parser.parse_args()

    import torch

    from training.engine.generation import generate_batched, load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    conversations = [[{"role": "user", "content": q}] for q in questions(args.data, args.n)]
    loaded = load_model(args.model)
    common = {"model_path": args.model, "template": args.template, "max_new_tokens": args.max_new_tokens, "loaded": loaded}
    generate_batched(conversations=conversations[:2], batch_size=2, **common)  # warm-up (kernels, allocator)

    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    single = [generate_batched(conversations=[c], batch_size=1, **common)[0] for c in conversations]
    single_s = time.perf_counter() - started
    started = time.perf_counter()
    batched = generate_batched(conversations=conversations, batch_size=args.batch_size, **common)
    batched_s = time.perf_counter() - started
    tokens = sum(r["completion_tokens"] for r in batched)
    identical = sum(a == b for a, b in zip(single, batched, strict=True))
    emit(
        {
            "bench": "generation",
            "model": str(Path(args.model).resolve()),
            "num_parameters": sum(p.numel() for p in loaded[0].parameters()),
            "device": str(next(loaded[0].parameters()).device),
            "prompts": len(conversations),
            "batch_size": args.batch_size,
            "max_new_tokens": args.max_new_tokens,
            "generated_tokens": tokens,
            "one_by_one_s": round(single_s, 3),
            "batched_s": round(batched_s, 3),
            "one_by_one_answers_per_s": round(len(conversations) / single_s, 3),
            "batched_answers_per_s": round(len(conversations) / batched_s, 3),
            "one_by_one_tokens_per_s": round(sum(r["completion_tokens"] for r in single) / single_s, 1),
            "batched_tokens_per_s": round(tokens / batched_s, 1),
            "speedup": round(single_s / batched_s, 2),
            "goal": 4.0,
            "identical_answers": identical,
            "all_identical": identical == len(conversations),
            "torch_threads": torch.get_num_threads(),
            "load_avg_before": round(load_before, 2),
            "load_avg_after": round(os.getloadavg()[0], 2),
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
