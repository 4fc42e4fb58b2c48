"""Merge the LoRA adapter of a succeeded job into its base model; register the result.

    python manage.py merge_adapter --job 7 --name qwen3-med-v1 [--user admin] [--json]

The merge is an adapter merge (kind "merge" of ``medportal.jobs``) run here, in this process,
by its worker body (``training.workers.merge``) instead of the queue. It runs in a child process (``python -m training.engine merge``) and writes a
standalone model folder under MEDPORTAL_TRAINING_DIR/merged/<name>, registered as a new base
model whose ``source_job`` is the job. With ``--json`` the last line is
``{"base_model_id", "name", "path", "architecture", "num_parameters", "dtype", "has_chat_template", "source_job"}``.
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from medportal.errors import ApplicationError
from training.management.commands.register_base_model import command_user, model_summary
from training.models import FineTuneJob
from training.services.jobs import finetune_job_merge
from training.workers.merge import adapter_merge_run


class Command(BaseCommand):
    help = "Merge a succeeded job's adapter into its base model and register the merged folder as a base model."

    def add_arguments(self, parser):
        parser.add_argument("--job", required=True, type=int, help="Id of a succeeded fine-tune job.")
        parser.add_argument("--name", required=True, help="Name of the merged model (a slug).")
        parser.add_argument("--user", help="Admin doing it (default: the first active admin).")
        parser.add_argument("--json", action="store_true", help="End with one JSON line describing the merged model.")

    def handle(self, *args, **opts):
        user = command_user(opts["user"])
        job = FineTuneJob.objects.select_related("base_model", "dataset_version").filter(pk=opts["job"]).first()
        if job is None:
            raise CommandError(f"No fine-tune job #{opts['job']}.")
        try:
            merge = finetune_job_merge(actor=user, job=job, name=opts["name"], enqueue=False)
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        merge = adapter_merge_run(merge_id=merge.pk)
        if merge.status != merge.Status.SUCCEEDED:
            raise CommandError(merge.error or f"The merge ended {merge.status}.")
        model = merge.base_model
        self.stdout.write(f"Merged job #{job.pk} into '{model.name}' (#{model.pk}) at {model.path}: {model.num_parameters:,} parameters.")
        if opts["json"]:
            self.stdout.write(json.dumps({**model_summary(model), "source_job": job.pk}, ensure_ascii=False))
