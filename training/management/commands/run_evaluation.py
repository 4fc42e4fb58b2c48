"""Queue (or run here) the evaluation of a base model, or of a fine-tune's adapter, on a split.

    python manage.py run_evaluation --dataset-version 3 --base-model medportal-demo [--job 7] \
        [--split test|validation] [--mode llamafactory|standard] [--max-samples 200] \
        [--preset greedy|vllm_infer] [--set max_new_tokens=128 --set batch_size=16] [--pair] [--sync] [--json]
        [--suite reference|mcq|diagnosis|rubric ...] [--contender base:NAME|job:ID ...] [--judge NAME] [--judge-lang zh|en]

Without ``--sync`` the run goes to the django-q2 ``gpu`` cluster and the command prints its id.
With ``--sync`` this process does what a gpu worker does and waits for the end. ``--pair`` (with
``--job``) evaluates the base model and the tuned model in one comparison group. With ``--json``
the last line is ``{"run_id", "status", "bleu-4", "rouge-1", "rouge-2", "rouge-l", "count",
"speed"}`` (with ``--pair``: one such line per run, the tuned run last). A run that does not
succeed under ``--sync`` makes the command exit with status 1.

``--suite`` (repeatable) picks the suites scored (docs/evaluation-suites.md; default: reference);
``--contender`` (repeatable) compares several models in one group — ``base:<name>`` for a
registered base model (a hosted one included), ``job:<id>`` for a succeeded fine-tune's adapter on
its base model — the first being the baseline of the paired tests; ``--judge <name>`` is the
rubric suite's judge model. With contenders, ``--json`` ends with one line per run and a last line
``{"group", "comparison": {metric: [{"label", "estimate", "low", "high", "n"}]}}``.
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from curation.models import DatasetVersion
from medportal.errors import ApplicationError
from training.management.commands.register_base_model import command_user
from training.management.commands.run_finetune import _details
from training.models import BaseModel, EvalRun, FineTuneJob
from training.services.evaluations import evaluation_create, evaluation_pair_create
from training.workers.evaluation import evaluation_run


def comparison_result(group: str) -> dict:
    from training.selectors_eval import evaluation_comparison

    comparison = evaluation_comparison(group)
    return {
        "group": group,
        "comparison": {
            m["key"]: [{k: r[k] for k in ("label", "estimate", "low", "high", "n")} for r in m["rows"]] for m in comparison["metrics"]
        },
        "paired": {
            m["key"]: [{"contender": t["label"], "versus": t["vs_label"], **t["bootstrap"], "mcnemar": t.get("mcnemar")} for t in m["paired"]]
            for m in comparison["metrics"]
            if m["paired"]
        },
    }


def run_result(run: EvalRun) -> dict:
    summary = run.summary or {}
    return {
        "run_id": run.pk,
        "status": run.status,
        "bleu-4": summary.get("bleu-4"),
        "rouge-1": summary.get("rouge-1"),
        "rouge-2": summary.get("rouge-2"),
        "rouge-l": summary.get("rouge-l"),
        "count": summary.get("count"),
        "speed": run.speed or {},
        "suites": run.suites or ["reference"],
        "suite_summary": run.suite_summary or {},
    }


class Command(BaseCommand):
    help = "Queue an evaluation run (BLEU-4 / ROUGE on a dataset split) on the gpu workers, or run it here with --sync."

    def add_arguments(self, parser):
        parser.add_argument("--dataset-version", type=int, help="Id of the dataset version (default with --job: the job's).")
        parser.add_argument("--base-model", help="Name of a registered base model (default with --job: the job's).")
        parser.add_argument("--job", type=int, help="A succeeded fine-tune job: evaluate its adapter on the base model.")
        parser.add_argument("--split", default="test", choices=["test", "validation", "train"])
        parser.add_argument("--mode", default="llamafactory", choices=["llamafactory", "standard"])
        parser.add_argument("--max-samples", type=int, help="Evaluate at most this many items of the split (in split order).")
        parser.add_argument(
            "--preset", default="", help="greedy (default) or vllm_infer (LLaMA-Factory's vllm_infer.py sampling defaults)."
        )
        parser.add_argument(
            "--set", action="append", default=[], metavar="KEY=VALUE", help="Generation parameter (repeatable), e.g. max_new_tokens=128."
        )
        parser.add_argument("--pair", action="store_true", help="With --job: evaluate the base model and the tuned model together.")
        parser.add_argument("--user", help="Admin starting the run (default: the first active admin).")
        parser.add_argument("--sync", action="store_true", help="Run in this process and wait for the result.")
        parser.add_argument("--json", action="store_true", help="End with one JSON line per run.")
        parser.add_argument(
            "--suite", action="append", default=[], choices=["reference", "mcq", "diagnosis", "rubric"], help="Suite to score (repeatable)."
        )
        parser.add_argument(
            "--contender", action="append", default=[], metavar="base:NAME|job:ID", help="A model compared in one group (repeatable)."
        )
        parser.add_argument("--judge", help="The rubric suite's judge: a registered base model name.")
        parser.add_argument("--judge-lang", default="zh", choices=["zh", "en"], help="Language of the judge prompt (default zh).")

    def _contenders(self, specs: list[str]) -> list[tuple[BaseModel, FineTuneJob | None]]:
        out = []
        for spec in specs:
            kind, _sep, value = spec.partition(":")
            if kind == "base" and value:
                model = BaseModel.objects.filter(name=value).first()
                if model is None:
                    known = ", ".join(BaseModel.objects.values_list("name", flat=True)) or "none registered yet"
                    raise CommandError(f"No base model named '{value}' (registered: {known}).")
                out.append((model, None))
            elif kind == "job" and value.isdigit():
                job = FineTuneJob.objects.select_related("base_model").filter(pk=int(value)).first()
                if job is None:
                    raise CommandError(f"No fine-tune job #{value}.")
                out.append((job.base_model, job))
            else:
                raise CommandError(f"--contender {spec!r}: expected base:<model name> or job:<id>.")
        return out

    def _compare(self, opts, user) -> list[EvalRun]:
        from training.services.eval_suites import evaluation_compare_create

        if opts["pair"] or opts["job"] is not None or opts["base_model"]:
            raise CommandError("--contender replaces --base-model, --job and --pair; give every model as a --contender.")
        if opts["dataset_version"] is None:
            raise CommandError("Give --dataset-version with --contender.")
        version = DatasetVersion.objects.filter(pk=opts["dataset_version"]).first()
        if version is None:
            raise CommandError(f"No dataset version #{opts['dataset_version']}.")
        judge = None
        if opts["judge"]:
            judge = BaseModel.objects.filter(name=opts["judge"]).first()
            if judge is None:
                raise CommandError(f"No base model named '{opts['judge']}' to judge with.")
        try:
            return evaluation_compare_create(
                actor=user,
                dataset_version=version,
                contenders=self._contenders(opts["contender"]),
                suites=opts["suite"] or ["reference"],
                judge_model=judge,
                judge_lang=opts["judge_lang"],
                split=opts["split"],
                mode=opts["mode"],
                preset=opts["preset"],
                sets=opts["set"],
                max_samples=opts["max_samples"],
                enqueue=not opts["sync"],
            )
        except ApplicationError as exc:
            raise CommandError(_details(exc)) from None

    def handle(self, *args, **opts):
        user = command_user(opts["user"])
        if opts["contender"]:
            return self._finish(opts, self._compare(opts, user))
        if opts["suite"] and opts["suite"] != ["reference"] or opts["judge"]:
            # One model with suites: a comparison of one contender.
            if opts["base_model"] is None and opts["job"] is None:
                raise CommandError("Give --base-model, --job or --contender.")
            if opts["job"] is not None:
                opts["contender"] = [f"job:{opts['job']}"]
                job = FineTuneJob.objects.filter(pk=opts["job"]).first()
                if opts["dataset_version"] is None and job is not None:
                    opts["dataset_version"] = job.dataset_version_id
            else:
                opts["contender"] = [f"base:{opts['base_model']}"]
            opts["job"], opts["base_model"] = None, None
            return self._finish(opts, self._compare(opts, user))
        job = None
        if opts["job"] is not None:
            job = FineTuneJob.objects.select_related("dataset_version", "base_model").filter(pk=opts["job"]).first()
            if job is None:
                raise CommandError(f"No fine-tune job #{opts['job']}.")
        if opts["dataset_version"] is not None:
            version = DatasetVersion.objects.filter(pk=opts["dataset_version"]).first()
            if version is None:
                raise CommandError(f"No dataset version #{opts['dataset_version']}.")
        elif job is not None:
            version = job.dataset_version
        else:
            raise CommandError("Give --dataset-version (or --job, whose dataset version is used).")
        if opts["base_model"]:
            model = BaseModel.objects.filter(name=opts["base_model"]).first()
            if model is None:
                known = ", ".join(BaseModel.objects.values_list("name", flat=True)) or "none registered yet"
                raise CommandError(f"No base model named '{opts['base_model']}' (registered: {known}).")
        elif job is not None:
            model = job.base_model
        else:
            raise CommandError("Give --base-model (or --job, whose base model is used).")
        if opts["pair"] and job is None:
            raise CommandError("--pair needs --job.")

        common = {
            "actor": user,
            "split": opts["split"],
            "mode": opts["mode"],
            "preset": opts["preset"],
            "sets": opts["set"],
            "max_samples": opts["max_samples"],
            "enqueue": not opts["sync"],
        }
        try:
            if opts["pair"]:
                if job.dataset_version_id != version.pk or job.base_model_id != model.pk:
                    raise CommandError(
                        "--pair evaluates the job's own base model on the job's dataset version; drop --dataset-version/--base-model."
                    )
                runs = list(evaluation_pair_create(job=job, **common))
            else:
                runs = [evaluation_create(dataset_version=version, base_model=model, job=job, **common)]
        except ApplicationError as exc:
            raise CommandError(_details(exc)) from None

        return self._finish(opts, runs)

    def _finish(self, opts, runs: list[EvalRun]):
        if not opts["sync"]:
            for run in runs:
                self.stdout.write(f"Queued evaluation run #{run.pk} ({run}) for the gpu workers.")
            if opts["json"]:
                for run in runs:
                    self.stdout.write(json.dumps(run_result(run), ensure_ascii=False))
            return

        finished = []
        for run in runs:
            self.stdout.write(f"Running evaluation run #{run.pk} ({run}, {run.total_samples} samples) in this process …")
            finished.append(evaluation_run(run_id=run.pk, on_line=lambda line: self.stdout.write(f"  {line}")))
        failed = []
        for run in finished:
            summary = run.summary or {}
            scores = ", ".join(f"{k} {summary[k]:.4f}" for k in ("bleu-4", "rouge-1", "rouge-2", "rouge-l") if summary.get(k) is not None)
            self.stdout.write(f"Run #{run.pk} {run.status}" + (f": {scores} over {summary.get('count')} samples" if scores else ""))
            suites = run.suite_summary or {}
            if suites.get("mcq", {}).get("n"):
                m = suites["mcq"]
                self.stdout.write(f"  mcq: accuracy {m['accuracy']:.4f} over {m['n']} questions, unparseable {m['unparseable_rate']:.4f}, chance {m['chance']:.4f}")
            if suites.get("diagnosis", {}).get("n"):
                d = suites["diagnosis"]
                self.stdout.write(f"  diagnosis: top-1 {d['top1']:.4f}, in differential {d['in_differential']:.4f} over {d['n']} cases")
            if "rubric" in suites:
                r = suites["rubric"]
                mean = "-" if r.get("mean") is None else f"{r['mean']:.2f}"
                self.stdout.write(f"  rubric ({r.get('judge')}, {r.get('prompt_version')}): mean {mean} over {r['n']} answers, {r['failed']} unparseable")
            if run.status != EvalRun.Status.SUCCEEDED:
                failed.append(run)
        if opts["json"]:
            for run in finished:
                self.stdout.write(json.dumps(run_result(run), ensure_ascii=False))
            if opts["contender"] and finished:
                self.stdout.write(json.dumps(comparison_result(finished[0].group), ensure_ascii=False))
        if failed:
            raise CommandError("; ".join(f"Run #{r.pk} {r.status}: {r.error or 'no error recorded'}" for r in failed))
