"""Score a LLaMA-Factory ``generated_predictions.jsonl`` with BLEU-4 / ROUGE-1/2/L.

    python manage.py score_predictions saves/qwen/predict/generated_predictions.jsonl
    python manage.py score_predictions preds.jsonl --mode standard --json --per-sample scores.jsonl

The summary goes to stdout, problem lines (empty, not JSON, missing ``predict``/``label``) to stderr
with their line numbers; they are skipped, never fatal. With ``--json`` the last stdout line is
``{"bleu-4": x, "rouge-1": x, "rouge-2": x, "rouge-l": x, "count": n}``.
"""

from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from training.engine.metrics import DEFAULT_MODE, METRIC_KEYS, MODE_LABELS, MODES, score_file

_MAX_PROBLEMS_SHOWN = 50


class Command(BaseCommand):
    requires_system_checks = ()  # reads one file, needs neither the database nor the URLconf
    help = "Score LLaMA-Factory generated_predictions.jsonl (keys predict, label) with BLEU-4 and ROUGE-1/2/L."

    def add_arguments(self, parser):
        parser.add_argument("path", help="generated_predictions.jsonl (one JSON object per line).")
        parser.add_argument(
            "--mode", choices=MODES, default=DEFAULT_MODE, help="llamafactory (default, comparable with LLaMA-Factory) or standard."
        )
        parser.add_argument("--json", action="store_true", help="End stdout with one JSON line of the averages and the count.")
        parser.add_argument(
            "--per-sample", metavar="OUT.jsonl", help="Also write one line per scored sample: line, prompt, predict, label, scores."
        )

    def handle(self, *args, **opts):
        path = Path(opts["path"])
        if not path.exists():
            raise CommandError(f"File not found: {path}")
        if not path.is_file():
            raise CommandError(f"Not a file: {path}")
        try:
            result, pairs, problems = score_file(path, mode=opts["mode"])
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc.strerror or exc}") from None

        for problem in problems[:_MAX_PROBLEMS_SHOWN]:
            self.stderr.write(f"{path}: {problem}")
        if len(problems) > _MAX_PROBLEMS_SHOWN:
            self.stderr.write(f"{path}: … and {len(problems) - _MAX_PROBLEMS_SHOWN} more problems")
        summary = result["summary"]
        skipped = len({problem.line for problem in problems if problem.line})
        if summary["count"] == 0:
            raise CommandError(
                f"Nothing to score in {path}: no line has a string 'predict' and 'label'"
                + (f" ({skipped} problem line{'s' if skipped != 1 else ''} reported above)." if skipped else " (the file is empty).")
            )

        if opts["per_sample"]:
            out = Path(opts["per_sample"])
            try:
                with out.open("w", encoding="utf-8") as fh:
                    for pair, scores in zip(pairs, result["per_sample"]):
                        record = {"line": pair.line, "prompt": pair.prompt, "predict": pair.predict, "label": pair.label, **scores}
                        fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            except OSError as exc:
                raise CommandError(f"Cannot write {out}: {exc.strerror or exc}") from None

        count = summary["count"]
        self.stdout.write(
            f"{path}: {count} sample{'s' if count != 1 else ''} scored, {skipped} problem line{'s' if skipped != 1 else ''} skipped"
        )
        self.stdout.write(f"mode {MODE_LABELS[opts['mode']]}")
        for key in METRIC_KEYS:
            self.stdout.write(f"  {key:<8} {summary[key]:9.4f}")
        if opts["per_sample"]:
            self.stdout.write(f"per-sample scores written to {opts['per_sample']}")
        if opts["json"]:
            self.stdout.write(json.dumps({key: summary[key] for key in (*METRIC_KEYS, "count")}))
