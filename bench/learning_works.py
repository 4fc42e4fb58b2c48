"""Learning works: real data → dataset version → demo model → LoRA fine-tune → base vs tuned evaluation.

End to end through MedPortal's own code paths, on a throwaway SQLite database:

1. import the Huatuo alpaca sample from ../shared/datasets (``curation.services.imports``, as an
   admin importing approved pairs; exact duplicates are dropped by the importer);
2. freeze a dataset version with a held-out test split of about ``--test`` items
   (``dataset_version_freeze``, grouped near-duplicates stay on one side);
3. build the demo model (``training.engine.demo_model.build_demo_model``, the default pre-training)
   on the demo corpus plus the texts of the train split, and register it;
4. fine-tune it with the ``cpu_demo`` preset (+ the overrides below) through the fine-tune service
   and the gpu worker's code (``finetune_job_run``: the engine in a child process);
5. evaluate the base model and the tuned model on the test split (``evaluation_pair_create`` +
   ``evaluation_run``: batched greedy generation, BLEU-4 / ROUGE as LLaMA-Factory computes them,
   the response-speed test).

Prints both summaries, the deltas and the timings as one JSON line; exits 1 when the tuned model
does not beat its base on BLEU-4 and on every ROUGE.

    .venv/bin/python bench/learning_works.py [--limit 3000] [--test 200] [--steps 200] [--max-new-tokens 128]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))
from _setup import SHARED, emit, machine  # noqa: E402

DEFAULT_DATA = SHARED / "huatuo_llama_med_chinese" / "llama_data.first3000.jsonl"
METRICS = ("bleu-4", "rouge-1", "rouge-2", "rouge-l")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="Alpaca JSON Lines / JSON file (default: the Huatuo sample).")
    parser.add_argument("--limit", type=int, default=3000, help="Import at most this many records (default 3000).")
    parser.add_argument("--test", type=int, default=200, help="Target size of the test split (default 200).")
    parser.add_argument("--validation", type=int, default=100, help="Target size of the validation split (default 100).")
    parser.add_argument("--pretrain-steps", type=int, default=None, help="Demo model pre-training steps (default: the builder's).")
    parser.add_argument(
        "--model", help="Reuse a demo model this bench built before (its demo-model folder: same data, same split) instead of building one."
    )
    parser.add_argument("--steps", type=int, default=200, help="Fine-tune max_steps (default 200).")
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--cutoff", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4, help="per_device_train_batch_size (default 4).")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="More fine-tune overrides.")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--eval-batch", type=int, default=16)
    parser.add_argument("--speed-samples", type=int, default=20)
    parser.add_argument("--workdir", help="Keep everything here (default: a temporary folder, removed at the end).")
    parser.add_argument("--verbose", action="store_true")
    return parser.parse_args()


def log(args, text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main() -> int:
    args = parse()
    data = Path(args.data)
    if not data.is_file():
        raise SystemExit(f"{data} not found (the shared datasets live in ../shared/datasets)")
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="medportal-learning-works-"))
    workdir.mkdir(parents=True, exist_ok=True)
    from _setup import throwaway_django

    throwaway_django(workdir)
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.core.management import call_command

    from curation.models import QAPair
    from curation.services.imports import import_batch_create, import_batch_dispatch
    from curation.services.versions import dataset_version_freeze
    from training.engine.demo_model import build_demo_model, demo_corpus
    from training.models import FineTuneJob
    from training.services.base_models import base_model_register
    from training.services.evaluations import evaluation_pair_create
    from training.workers.evaluation import evaluation_run
    from training.services.jobs import finetune_job_create
    from training.workers.finetune import finetune_job_run

    settings.MEDPORTAL_EVAL_SPEED_SAMPLES = args.speed_samples
    timings: dict[str, float] = {}
    started = time.perf_counter()
    try:
        call_command("migrate", verbosity=0)
        admin = get_user_model().objects.create_user(username="bench-admin", password="x")
        admin.groups.add(Group.objects.get_or_create(name="admin")[0])

        # 1. import
        t0 = time.perf_counter()
        source = data
        if args.limit:
            lines = [line for line in data.read_text(encoding="utf-8").splitlines() if line.strip()]
            if data.suffix == ".jsonl" and len(lines) > args.limit:
                source = workdir / data.name
                source.write_text("\n".join(lines[: args.limit]) + "\n", encoding="utf-8")
        batch = import_batch_create(user=admin, path_or_upload=source, filename=data.name, status=QAPair.Status.APPROVED)
        batch = import_batch_dispatch(batch=batch, inline=True)
        imported = QAPair.objects.filter(status=QAPair.Status.APPROVED).count()
        timings["import_s"] = round(time.perf_counter() - t0, 2)
        log(args, f"imported {imported} approved pairs from {data.name} ({batch.status}) in {timings['import_s']} s")

        # 2. freeze
        t0 = time.perf_counter()
        test = min(0.4, args.test / imported)
        validation = min(0.2, args.validation / imported)
        version = dataset_version_freeze(
            user=admin, name="learning-works", split=(round(1 - test - validation, 6), validation, test), seed=42
        )
        timings["freeze_s"] = round(time.perf_counter() - t0, 2)
        log(args, f"dataset version {version.name}: {version.counts}")

        # 3. demo model on the demo corpus + the train split
        t0 = time.perf_counter()
        train_texts = [
            "\n".join(p for p in (item.content.get("instruction"), item.content.get("input"), item.content.get("output")) if p)
            for item in version.items.filter(split="train").only("content")
        ]
        if args.model:
            from training.engine.demo_model import METADATA_FILE

            built = json.loads((Path(args.model) / METADATA_FILE).read_text(encoding="utf-8"))
            built["path"] = str(Path(args.model).resolve())
        else:
            build_kwargs = {} if args.pretrain_steps is None else {"pretrain_steps": args.pretrain_steps}
            built = build_demo_model(workdir / "demo-model", demo_corpus() + train_texts, **build_kwargs)
        base = base_model_register(actor=admin, name="demo-learning-works", path=built["path"])
        timings["build_model_s"] = round(time.perf_counter() - t0, 2)
        log(
            args,
            f"demo model: {built['num_parameters']:,} parameters, pre-train loss {built['initial_loss']:.3f} → {built['final_loss']:.3f}",
        )

        # 4. fine-tune through the worker's code path
        t0 = time.perf_counter()
        overrides = {
            "max_samples": None,
            "max_steps": args.steps,
            "num_train_epochs": args.epochs,
            "learning_rate": args.lr,
            "cutoff_len": args.cutoff,
            "per_device_train_batch_size": args.batch,
            "save_steps": max(50, args.steps),
            "eval_steps": max(25, args.steps // 4),
        }
        for item in args.set:
            key, _, value = item.partition("=")
            try:
                overrides[key.strip()] = json.loads(value)
            except ValueError:
                overrides[key.strip()] = value
        job = finetune_job_create(
            actor=admin, dataset_version=version, base_model=base, preset="cpu_demo", overrides=overrides, enqueue=False
        )
        FineTuneJob.objects.filter(pk=job.pk).update(evaluate_after=False)  # evaluated below with the bench's settings
        job = finetune_job_run(job_id=job.pk, on_line=(lambda line: log(args, "  " + line)) if args.verbose else None)
        timings["finetune_s"] = round(time.perf_counter() - t0, 2)
        if job.status != FineTuneJob.Status.SUCCEEDED:
            raise SystemExit(f"fine-tune job {job.status}: {job.error}")
        log(
            args,
            f"fine-tune: loss {job.train_loss_first:.3f} → {job.train_loss_last:.3f} (eval {job.eval_loss}), {timings['finetune_s']} s",
        )

        # 5. evaluate base and tuned on the test split
        t0 = time.perf_counter()
        params = {"max_new_tokens": args.max_new_tokens, "batch_size": args.eval_batch}
        runs = evaluation_pair_create(actor=admin, job=job, split="test", params=params, enqueue=False)
        ended = [evaluation_run(run_id=run.pk) for run in runs]
        timings["evaluate_s"] = round(time.perf_counter() - t0, 2)
        for run in ended:
            if run.status != "succeeded":
                raise SystemExit(f"evaluation run #{run.pk} {run.status}: {run.error}")
        before, after = ended
        delta = {k: round(after.summary[k] - before.summary[k], 4) for k in METRICS}
        better = all(v > 0 for v in delta.values())
        timings["total_s"] = round(time.perf_counter() - started, 2)
        emit(
            {
                "bench": "learning_works",
                "data": str(data),
                "imported_pairs": imported,
                "dataset_version": version.counts,
                "model": {k: built[k] for k in ("num_parameters", "vocab_size", "steps", "initial_loss", "final_loss")} | {"reused": bool(args.model)},
                "finetune": {
                    "preset": "cpu_demo",
                    "overrides": overrides,
                    "train_loss_first": job.train_loss_first,
                    "train_loss_last": job.train_loss_last,
                    "eval_loss": job.eval_loss,
                    "steps": job.step,
                    "tokens_per_second": job.tokens_per_second,
                },
                "evaluation": {"split": "test", "mode": before.mode, "params": before.params},
                "base": before.summary,
                "tuned": after.summary,
                "delta": delta,
                "tuned_beats_base": better,
                "speed_base": before.speed,
                "speed_tuned": after.speed,
                "examples": [
                    {"question": s.prompt, "reference": s.reference, "base": b.prediction, "tuned": s.prediction}
                    for s, b in zip(after.samples.order_by("position")[:2], before.samples.order_by("position")[:2], strict=True)
                ],
                "timings": timings,
                "machine": machine(),
                "load_avg": round(os.getloadavg()[0], 2),
            }
        )
        return 0 if better else 1
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
