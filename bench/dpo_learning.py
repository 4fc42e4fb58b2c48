"""DPO learns clinicians' preferences: held-out preference accuracy and reward margin, before and after.

On the demo model (built here, no download) and real shared data (the Huatuo sample in
../shared/datasets): for each question the reference answer is *chosen* and the base model's own
greedy answer is *rejected* (what a clinician correcting the model produces); with
``--rejected other`` the rejected answer is the reference answer of another question instead (fluent
and medical, but not an answer to this question: a harder test). The pairs are split
with a seed into training and held-out pairs; ``training.engine.dpo.train_dpo`` trains a LoRA
adapter with DPO (reference = the base, adapter disabled). Figures on the held-out pairs:

* preference accuracy = share of pairs whose implicit reward margin
  β[(log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))] is above 0 (0 before training by
  definition: π = π_ref), and the mean margin;
* log-prob preference = share of pairs where the model itself gives the chosen answer the higher
  log-probability (per token, so length does not decide), before and after.

Prints one JSON line. LLaMA-Factory's ``stage: dpo`` tokens/s is not compared: LLaMA-Factory is
not installable on this machine (no network to its dependencies); say so rather than guess.

    .venv/bin/python bench/dpo_learning.py [--pairs 240] [--heldout 60] [--steps 60] [--beta 0.1]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))
from _setup import SHARED, emit, machine  # noqa: E402

DEFAULT_DATA = SHARED / "huatuo_llama_med_chinese" / "llama_data.first3000.jsonl"


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--pairs", type=int, default=240, help="Questions used (default 240).")
    p.add_argument("--heldout", type=int, default=60, help="Held-out pairs (default 60).")
    p.add_argument("--model", help="A demo-model folder this bench built before (skips the build).")
    p.add_argument("--pretrain-steps", type=int, default=None)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--cutoff", type=int, default=256)
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--rejected",
        choices=("own", "other"),
        default="own",
        help="own: the base model's own greedy answer (default); other: the reference answer of another question (a fluent, wrong answer: harder)",
    )
    p.add_argument("--out", help="Keep the run folder here (default: a temporary folder).")
    return p.parse_args()


def per_token_preference(model, rows, pad_id) -> float:
    """Share of pairs where the mean log-prob per answer token of chosen beats rejected."""
    import torch

    from training.engine.dpo import PreferenceCollator, pair_logps

    wins = 0
    model.eval()
    with torch.no_grad():
        for i in range(0, len(rows), 4):
            chunk = rows[i : i + 4]
            batch = PreferenceCollator(pad_id)(chunk)
            pc, pr = pair_logps(model, batch)
            for j, row in enumerate(chunk):
                nc = sum(1 for t in row["chosen_labels"] if t != -100)
                nr = sum(1 for t in row["rejected_labels"] if t != -100)
                wins += float(pc[j]) / nc > float(pr[j]) / nr
    return wins / len(rows) if rows else 0.0


def main() -> int:
    args = parse()
    import torch

    from training.engine import demo_model
    from training.engine.config import FinetuneConfig
    from training.engine.dpo import DPOConfig, encode_preferences, train_dpo
    from training.engine.generation import generate_batched
    from training.engine.loading import load_model

    torch.manual_seed(args.seed)
    records = []
    with open(args.data, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                r = json.loads(line)
                if r.get("instruction") and r.get("output"):
                    records.append(r)
    random.Random(args.seed).shuffle(records)
    records = records[: args.pairs]
    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="dpo-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    timings = {}

    started = time.perf_counter()
    if args.model:
        model_dir = Path(args.model)
    else:
        model_dir = work / "demo-model"
        kwargs = {"pretrain_steps": args.pretrain_steps} if args.pretrain_steps else {}
        texts = demo_model.demo_corpus() + [f"{r['instruction']}\n{r['output']}" for r in records]
        demo_model.build_demo_model(model_dir, texts, **kwargs)
    timings["model_s"] = round(time.perf_counter() - started, 1)

    started = time.perf_counter()
    conversations = [[{"role": "user", "content": "\n".join(p for p in (r["instruction"], r.get("input", "")) if p)}] for r in records]
    answers = generate_batched(model_path=str(model_dir), conversations=conversations, max_new_tokens=args.max_new_tokens, cutoff_len=args.cutoff, batch_size=16)
    timings["generate_s"] = round(time.perf_counter() - started, 1)
    pairs = []
    if args.rejected == "other":  # the next question's reference answer: fluent, on topic, wrong for this question
        answers = [{"predict": records[(i + 1) % len(records)]["output"]} for i in range(len(records))]
    for r, a in zip(records, answers, strict=True):
        own = a["predict"].strip()
        if own and " ".join(own.split()) != " ".join(r["output"].split()):
            pairs.append({"instruction": r["instruction"], "input": r.get("input", ""), "chosen": r["output"], "rejected": own})
    # The template cannot render a few of the base model's answers (text such as "</think>" that the
    # chat template treats as markup): those pairs are left out and counted.
    from training.engine.dpo import encode_preference
    from training.engine.loading import load_tokenizer

    tok = load_tokenizer(model_dir)
    usable = []
    for pair in pairs:
        try:
            encode_preference(tok, "default", pair, args.cutoff)
        except Exception:  # noqa: BLE001 - DataError / TemplateError: not renderable
            continue
        usable.append(pair)
    unrenderable, pairs = len(pairs) - len(usable), usable
    held, train = pairs[: args.heldout], pairs[args.heldout :]
    (work / "train.json").write_text(json.dumps(train, ensure_ascii=False), encoding="utf-8")
    (work / "heldout.json").write_text(json.dumps(held, ensure_ascii=False), encoding="utf-8")

    model, tokenizer = load_model(model_dir, device="cpu", dtype=torch.float32)
    held_rows, _ = encode_preferences(tokenizer, "default", held, args.cutoff)
    logprob_before = per_token_preference(model, held_rows, tokenizer.pad_token_id)
    del model

    config = DPOConfig(
        beta=args.beta,
        finetune=FinetuneConfig(
            cutoff_len=args.cutoff,
            per_device_train_batch_size=args.batch,
            gradient_accumulation_steps=1,
            learning_rate=args.lr,
            lr_scheduler_type="cosine",
            warmup_ratio=0.1,
            max_steps=args.steps,
            logging_steps=10,
            save_steps=10_000,
            lora_rank=16,
            seed=args.seed,
        ),
    )
    started = time.perf_counter()
    events: list[dict] = []
    done = train_dpo(config, model_path=model_dir, train_file=work / "train.json", eval_file=work / "heldout.json", output_dir=work / "run", on_event=events.append)
    timings["dpo_s"] = round(time.perf_counter() - started, 1)

    tuned, _tok = load_model(model_dir, done["adapter_path"], device="cpu", dtype=torch.float32)
    logprob_after = per_token_preference(tuned, held_rows, tokenizer.pad_token_id)
    logs = [e for e in events if e["type"] == "log"]
    result = {
        "bench": "dpo_learning",
        "data": Path(args.data).name,
        "pairs": {"train": len(train), "heldout": len(held), "left_out_unrenderable": unrenderable},
        "rejected": args.rejected,
        "beta": args.beta,
        "steps": done["step"],
        "heldout_before": done["eval_before"],
        "heldout_after": done["eval_after"],
        "logprob_preference": {"before": round(logprob_before, 4), "after": round(logprob_after, 4)},
        "train_log": [{k: e.get(k) for k in ("step", "loss", "reward_margin", "reward_accuracy")} for e in logs],
        "tokens_per_second": done.get("tokens_per_second"),
        "timings": timings,
        "machine": machine(),
        "llamafactory_dpo_tokens_per_second": "not measured: LLaMA-Factory is not installable here",
    }
    emit(result)
    return 0 if done["eval_after"]["reward_accuracy"] > 0.5 else 1


if __name__ == "__main__":
    sys.exit(main())
