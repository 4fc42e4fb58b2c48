from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


def _requeue_on_death(job) -> bool:
    """A fine-tune resumes from its last checkpoint when its own policy says so."""
    return job.on_worker_death == "requeue"


class TrainingConfig(AppConfig):
    name = "training"
    verbose_name = _("Training")

    def ready(self) -> None:
        from medportal import jobs

        # The kinds of background work of this app (medportal.jobs; docs/architecture.md).
        jobs.register(
            jobs.JobKind(
                name="finetune",
                model="training.FineTuneJob",
                task="training.tasks.finetune_job_task",
                cluster="gpu",
                resumable=_requeue_on_death,
                on_change="training.live.notify_job_changed",
                # "Evaluate when done" and a DPO adapter's regression gate: chained here, not
                # called back from the worker.
                on_succeeded="training.services.gate.after_finetune",
                audit="finetune_job",
                requeue_waiting_on_reap=True,
            )
        )
        jobs.register(
            jobs.JobKind(
                name="evaluation",
                model="training.EvalRun",
                task="training.tasks.evaluation_task",
                cluster="gpu",
                # A regression gate waiting on this run decides once both of its runs succeeded.
                on_succeeded="training.services.gate.gate_after_evaluation",
                # A killed worker's run is queued again and keeps the answers it stored.
                resumable=True,
                audit="evaluation",
                cancel_running_at_once=True,
                reap_note="Start the evaluation again.",
            )
        )
        jobs.register(
            jobs.JobKind(
                name="merge",
                model="training.AdapterMerge",
                task="training.tasks.adapter_merge_task",
                audit="adapter_merge",
                reap_note="Nothing was registered; merge again.",
            )
        )
