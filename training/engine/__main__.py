"""Command line of the engine; the Django worker runs ``train`` in a child process.

stdout carries JSON lines only (one event per line, flushed): the real stdout is kept on a
private descriptor and descriptor 1 is pointed at stderr, so a stray ``print`` in a library
lands on stderr and never corrupts the stream. SIGTERM (or Ctrl-C) asks the run to stop at the
next optimizer step: a checkpoint is saved, ``done`` with status ``cancelled`` is printed and the
exit code is 0; a second signal exits at once (128 + signal). The same graceful stop happens when
the parent process dies (the process is re-parented): an orphaned run never trains on beside
the run that replaces it. Any exception prints
``{"type": "error", "message", "traceback"}`` (plus ``errors`` for a bad config) and exits 1.

    python -m training.engine train --config CFG.json --model DIR --train FILE [--eval FILE] --out DIR [--no-resume]
    python -m training.engine dpo --config CFG.json --model DIR --train FILE [--eval FILE] [--adapter DIR] --out DIR [--no-resume]
    python -m training.engine merge --base DIR --adapter DIR --out DIR
    python -m training.engine build-demo-model --out DIR [--name N] [--corpus FILE ...]
    python -m training.engine inspect DIR

Multi-GPU: ``torchrun --nproc_per_node N -m training.engine train …`` (or ``accelerate launch -m
training.engine train …``); only rank 0 prints events.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any, TextIO

# Before torch loads OpenMP: threads that wait sleep instead of spinning. On a shared CPU host (web
# server, worker, evaluation on the same two cores) spinning OpenMP threads made a training step
# 25× slower (bench/train_bench.py, docs/training-engine.md); an explicit setting is respected.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Library deprecation notices (transformers/peft talking to each other) are not the user's
# business: they would fill the job's log tail, which shows stderr.
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)


class _Stop:
    """Stop when signalled, or when the parent process is gone (a worker killed with -9 leaves an orphan)."""

    def __init__(self) -> None:
        self.requested = False
        self.parent = os.getppid()

    def __call__(self) -> bool:
        return self.requested or os.getppid() != self.parent

    def install(self) -> None:
        def handler(signum, frame):
            if self.requested:
                os._exit(128 + signum)
            self.requested = True

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.engine", description="MedPortal training engine (JSON lines on stdout).")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="LoRA SFT; one JSON event per line")
    train.add_argument("--config", required=True, help="JSON file holding FinetuneConfig.to_dict() (or a subset)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one setting (repeatable)")
    train.add_argument("--model", required=True, help="base model folder")
    train.add_argument("--train", required=True, help="alpaca JSON array / JSON Lines")
    train.add_argument("--eval", default=None, help="validation file (otherwise val_size splits --train)")
    train.add_argument("--out", required=True, help="run folder: checkpoints/, adapter/, train_log.jsonl")
    train.add_argument("--no-resume", action="store_true", help="start over even if a checkpoint exists")

    dpo = sub.add_parser("dpo", help="LoRA DPO on preference pairs (training.engine.dpo); one JSON event per line")
    dpo.add_argument("--config", required=True, help="JSON file holding DPOConfig.to_dict() (beta, label_smoothing, finetune: {...})")
    dpo.add_argument("--model", required=True, help="base model folder")
    dpo.add_argument("--train", required=True, help="LLaMA-Factory pairwise JSON / TRL JSON Lines")
    dpo.add_argument("--eval", default=None, help="held-out preference file (otherwise finetune.val_size splits --train)")
    dpo.add_argument("--adapter", default=None, help="a succeeded SFT adapter to start from (and to use as the reference)")
    dpo.add_argument("--out", required=True, help="run folder: checkpoints/, adapter/, reference_logps.json, train_log.jsonl")
    dpo.add_argument("--no-resume", action="store_true", help="start over even if a checkpoint exists")

    merge = sub.add_parser("merge", help="merge an adapter into its base model")
    merge.add_argument("--base", required=True)
    merge.add_argument("--adapter", required=True)
    merge.add_argument("--out", required=True)

    demo = sub.add_parser("build-demo-model", help="build the small local demo model")
    demo.add_argument("--out", required=True)
    demo.add_argument("--name", default=None)
    demo.add_argument("--corpus", nargs="*", default=None, help="text / JSON / JSONL files (default: the demo pre-training corpus)")
    demo.add_argument("--pretrain-steps", type=int, default=None)
    demo.add_argument("--seed", type=int, default=0)

    inspect = sub.add_parser("inspect", help="describe a model folder without loading weights")
    inspect.add_argument("path")
    return parser


def _read_corpus(paths: list[str]) -> list[str]:
    texts: list[str] = []
    for name in paths:
        path = Path(name)
        raw = path.read_text(encoding="utf-8-sig")
        if path.suffix in (".json", ".jsonl"):
            from training.engine.data import read_records

            for record in read_records(path):
                parts = [str(record.get(key) or "").strip() for key in ("instruction", "input", "output", "text")]
                text = "\n".join(part for part in parts if part)
                if text:
                    texts.append(text)
        else:
            texts += [line.strip() for line in raw.splitlines() if line.strip()]
    return texts


def _read_config(path: str) -> dict:
    """The --config file's JSON; ConfigError naming the file when it cannot be read."""
    from training.engine.config import ConfigError

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError({"config": f"cannot read {path}: {exc}"}) from exc


def _run(args: argparse.Namespace, emit, stop: _Stop) -> int:
    if args.command in ("train", "dpo"):
        data = _read_config(args.config)
        if args.command == "train":
            from training.engine.config import FinetuneConfig
            from training.engine.runner import train as run

            config, stage = FinetuneConfig.from_dict(data).with_overrides(args.set), {}
        else:
            from training.engine.dpo import DPOConfig, train_dpo as run

            config, stage = DPOConfig.from_dict(data), {"adapter_path": args.adapter}
        stop.install()
        run(
            config,
            model_path=args.model,
            train_file=args.train,
            eval_file=args.eval,
            output_dir=args.out,
            on_event=emit,
            should_stop=stop,
            resume=not args.no_resume,
            **stage,
        )
        return 0
    if args.command == "merge":
        from training.engine.merge import merge_adapter

        emit({"type": "merged", **merge_adapter(base_path=args.base, adapter_path=args.adapter, out_dir=args.out)})
        return 0
    if args.command == "build-demo-model":
        from training.engine import demo_model

        texts = _read_corpus(args.corpus) if args.corpus else demo_model.demo_corpus()
        kwargs: dict[str, Any] = {"seed": args.seed}
        if args.name:
            kwargs["name"] = args.name
        if args.pretrain_steps is not None:
            kwargs["pretrain_steps"] = args.pretrain_steps
        emit({"type": "built", **demo_model.build_demo_model(args.out, texts, **kwargs)})
        return 0
    if args.command == "inspect":
        from training.engine.modelinfo import inspect_model_dir

        emit({"type": "model", **inspect_model_dir(args.path)})
        return 0
    raise AssertionError(args.command)  # argparse rejects unknown commands


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    args = _parser().parse_args(argv)
    if out is None:
        sys.stdout.flush()
        out = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
        os.dup2(2, 1)  # anything else written to stdout goes to stderr
    main_rank = int(os.environ.get("RANK", "0")) == 0

    def emit(event: dict[str, Any]) -> None:
        if main_rank:
            out.write(json.dumps(event, ensure_ascii=False, default=str) + "\n")
            out.flush()

    stop = _Stop()
    try:
        return _run(args, emit, stop)
    except Exception as exc:  # noqa: BLE001 - every failure becomes the error event the worker stores
        event: dict[str, Any] = {"type": "error", "message": str(exc) or type(exc).__name__, "traceback": traceback.format_exc()}
        errors = getattr(exc, "errors", None)
        if isinstance(errors, dict):
            event["errors"] = errors
        print(event["traceback"], file=sys.stderr)
        try:
            emit(event)
        except OSError:  # nobody reads stdout any more (the worker died): stderr has it
            pass
        return 1


if __name__ == "__main__":
    sys.exit(main())
