"""Queue (or run here) a DPO fine-tune on a preference version.

    python manage.py run_dpo --preference-version 2 (--base-model medportal-demo --dataset-version 3 | --parent-job 12) \
        [--beta 0.1] [--preset cpu_demo] [--set max_steps=60] [--sync] [--json]

From a base model (a fresh LoRA adapter; the reference is the base) or on top of a succeeded
job's adapter (``--parent-job``: trained further; the reference is that adapter). The job is a
``FineTuneJob`` of stage "dpo" on the gpu workers (``Q_CLUSTER_NAME=gpu manage.py qcluster``);
``--sync`` runs it in this process. docs/preferences.md.
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from curation.models import DatasetVersion
from curation.models_pref import PreferenceVersion
from training.management.commands.register_base_model import command_user
from training.management.commands.run_finetune import add_job_arguments, create_job, job_outcome
from training.models import BaseModel, FineTuneJob
from training.services.dpo import dpo_job_create


def dpo_result(job: FineTuneJob) -> dict:
    figures = job.preference_metrics or {}
    return {**job_outcome(job), "eval_before": figures.get("eval_before"), "eval_after": figures.get("eval_after")}


def _found(obj, message: str):
    """``obj``, or CommandError(message) when the lookup found nothing."""
    if obj is None:
        raise CommandError(message)
    return obj


class Command(BaseCommand):
    help = "Queue a DPO fine-tune on a preference version for the gpu workers, or run it here with --sync."

    def add_arguments(self, parser):
        parser.add_argument("--preference-version", required=True, type=int, help="Id of the preference version (its train split is used).")
        parser.add_argument("--base-model", help="Name of a registered base model (a fresh LoRA adapter).")
        parser.add_argument("--parent-job", type=int, help="Id of a succeeded fine-tune whose adapter DPO continues.")
        parser.add_argument("--dataset-version", type=int, help="Dataset version the adapter is evaluated on (default: the parent's).")
        parser.add_argument("--beta", type=float, default=0.1)
        add_job_arguments(parser, json_help="End with one JSON line.")

    def handle(self, *args, **opts):
        user = command_user(opts["user"])
        version = _found(PreferenceVersion.objects.filter(pk=opts["preference_version"]).first(), f"No preference version #{opts['preference_version']}.")
        model = parent = dataset = None
        if opts["base_model"]:
            model = _found(BaseModel.objects.filter(name=opts["base_model"]).first(), f"No base model named '{opts['base_model']}'.")
        if opts["parent_job"]:
            parent = _found(FineTuneJob.objects.filter(pk=opts["parent_job"]).first(), f"No fine-tune job #{opts['parent_job']}.")
        if opts["dataset_version"]:
            dataset = _found(DatasetVersion.objects.filter(pk=opts["dataset_version"]).first(), f"No dataset version #{opts['dataset_version']}.")
        job = create_job(
            dpo_job_create,
            opts,
            actor=user,
            preference_version=version,
            base_model=model,
            parent_job=parent,
            dataset_version=dataset,
            beta=opts["beta"],
        )
        if not opts["sync"]:
            self.stdout.write(f"Queued DPO job #{job.pk} on {version.name} for the gpu workers.")
        else:
            from training.workers.finetune import finetune_job_run

            self.stdout.write(f"Running DPO job #{job.pk} on {version.name} in this process …")
            job = finetune_job_run(job_id=job.pk, on_line=lambda line: self.stdout.write(f"  {line}"))
            self.stdout.write(f"Job #{job.pk} {job.status}" + (f"; adapter at {job.adapter_path}" if job.adapter_path else ""))
        if opts["json"]:
            self.stdout.write(json.dumps(dpo_result(job), ensure_ascii=False))
        if opts["sync"] and job.status != FineTuneJob.Status.SUCCEEDED:
            raise CommandError(f"Job #{job.pk} {job.status}: {job.error or 'no error recorded'}")
