"""Queue (or run here) a LoRA fine-tune of a base model on a dataset version.

    python manage.py run_finetune --dataset-version 3 --base-model medportal-demo --preset cpu_demo \
        --set max_steps=20 --set learning_rate=2e-4 [--on-worker-death fail] [--sync] [--json]

Without ``--sync`` the job goes to the django-q2 ``gpu`` cluster (run one with
``Q_CLUSTER_NAME=gpu manage.py qcluster``) and the command prints its id. With ``--sync`` this
process does what a gpu worker does (claims the job, runs the engine in a child process,
records progress) and waits for the end. ``--user`` names the admin who starts it (default:
the first active admin). With ``--json`` the last line is exactly
``{"job_id", "status", "adapter_path", "train_loss_first", "train_loss_last", "tokens_per_second"}``.
A job that does not succeed under ``--sync`` also exits with status 1.
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from curation.models import DatasetVersion
from medportal.errors import ApplicationError
from training.management.commands.register_base_model import command_user
from training.models import BaseModel, FineTuneJob
from training.services.jobs import finetune_config_build, finetune_job_create


def _details(exc: ApplicationError) -> str:
    if isinstance(exc.details, dict) and exc.details:
        return exc.message + "\n" + "\n".join(f"  {key}: {value}" for key, value in exc.details.items())
    return exc.message


def add_job_arguments(parser, *, json_help: str) -> None:
    """The options ``create_job`` reads (--preset, --set, --sync) and --user, --json."""
    parser.add_argument("--preset", default="", help="llamafactory, qwen3_medical or cpu_demo (default: the engine's defaults).")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="Override one setting (repeatable), e.g. max_steps=20."
    )
    parser.add_argument("--user", help="Admin starting the job (default: the first active admin).")
    parser.add_argument("--sync", action="store_true", help="Run the job in this process and wait for it.")
    parser.add_argument("--json", action="store_true", help=json_help)


def create_job(create, opts: dict, **fields) -> FineTuneJob:
    """``create`` (finetune_job_create, dpo_job_create) with the --preset and --set settings,
    queued for the gpu workers unless --sync; a refusal as a CommandError listing its details."""
    try:
        config = finetune_config_build(preset=opts["preset"], sets=opts["set"])
        return create(preset=opts["preset"], overrides=config.to_dict(), enqueue=not opts["sync"], **fields)
    except ApplicationError as exc:
        raise CommandError(_details(exc)) from None


def job_outcome(job: FineTuneJob) -> dict:
    """What the --json line of every fine-tune stage starts with."""
    return {
        "job_id": job.pk,
        "status": job.status,
        "adapter_path": job.adapter_path or None,
        "train_loss_first": job.train_loss_first,
        "train_loss_last": job.train_loss_last,
    }


def job_result(job: FineTuneJob) -> dict:
    return {**job_outcome(job), "tokens_per_second": job.tokens_per_second}


class Command(BaseCommand):
    help = "Queue a LoRA fine-tune job on the gpu workers, or run it in this process with --sync."

    def add_arguments(self, parser):
        parser.add_argument("--dataset-version", required=True, type=int, help="Id of the dataset version (its train split is used).")
        parser.add_argument("--base-model", required=True, help="Name of a registered base model.")
        parser.add_argument("--on-worker-death", choices=["fail", "requeue"], help="Default: MEDPORTAL_ON_WORKER_DEATH.")
        parser.add_argument(
            "--evaluate", action="store_true", help="When the job succeeds, queue evaluations of the base and the tuned model."
        )
        add_job_arguments(parser, json_help="End with one JSON line: job_id, status, adapter_path, losses, tokens/s.")

    def handle(self, *args, **opts):
        user = command_user(opts["user"])
        version = DatasetVersion.objects.filter(pk=opts["dataset_version"]).first()
        if version is None:
            raise CommandError(f"No dataset version #{opts['dataset_version']}; list them with the API or the Datasets page.")
        model = BaseModel.objects.filter(name=opts["base_model"]).first()
        if model is None:
            known = ", ".join(BaseModel.objects.filter(is_active=True).values_list("name", flat=True)) or "none registered yet"
            raise CommandError(f"No base model named '{opts['base_model']}' (active models: {known}).")
        job = create_job(
            finetune_job_create,
            opts,
            actor=user,
            dataset_version=version,
            base_model=model,
            on_worker_death=opts["on_worker_death"],
            evaluate_after=opts["evaluate"],
        )
        if not opts["sync"]:
            self.stdout.write(f"Queued fine-tune job #{job.pk} ({model.name} on {version.name}) for the gpu workers.")
            if opts["json"]:
                self.stdout.write(json.dumps(job_result(job)))
            return

        from training.workers.finetune import finetune_job_run

        self.stdout.write(f"Running fine-tune job #{job.pk} ({model.name} on {version.name}) in this process …")
        job = finetune_job_run(job_id=job.pk, on_line=lambda line: self.stdout.write(f"  {line}"))
        self.stdout.write(
            f"Job #{job.pk} {job.status}: train loss {job.train_loss_first} → {job.train_loss_last}, "
            f"{job.tokens_per_second or 0:.0f} tokens/s" + (f"; adapter at {job.adapter_path}" if job.adapter_path else "")
        )
        if opts["json"]:
            self.stdout.write(json.dumps(job_result(job)))
        if job.status != FineTuneJob.Status.SUCCEEDED:
            raise CommandError(f"Job #{job.pk} {job.status}: {job.error or 'no error recorded'}")
