from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class CurationConfig(AppConfig):
    name = "curation"
    verbose_name = _("Curation")

    def ready(self) -> None:
        from medportal import jobs

        from curation.services.imports import import_batch_stale_after

        # Imports: the write phase is one transaction with no heartbeat, so a batch counts as
        # silent only after the queue timeout; not resumable (nothing of it was stored).
        jobs.register(
            jobs.JobKind(
                name="import",
                model="curation.ImportBatch",
                task="curation.tasks.import_batch_task",
                silent_after=import_batch_stale_after,
                audit="import",
                # A cancel ends a running batch at once; its worker stops at its next progress
                # write (or its write phase rolls back): nothing of the file is stored.
                cancel_running_at_once=True,
                reap_note="Nothing from the file was stored; import the file again.",
            )
        )
        # Case generation: stores its cases in one transaction at the end; a dead worker's job
        # is failed (start it again: the same seed gives the same cases).
        jobs.register(
            jobs.JobKind(
                name="rare_cases",
                model="curation.GenerationJob",
                task="curation.tasks.rare_cases_task",
                audit="rare_cases",
                cancel_running_at_once=True,  # the worker stores nothing once it is not its job
                reap_note="No case was stored; start the generation again.",
            )
        )
        # Literature drafting: each document's candidates are stored as it finishes; a dead
        # worker's run is failed (what was stored stays in review; start a run for the rest).
        jobs.register(
            jobs.JobKind(
                name="literature_draft",
                model="curation.DraftRun",
                task="curation.tasks_literature.literature_draft_task",
                audit="literature_draft",
                reap_note="The candidates of the documents already drafted were kept; start a new run for the others.",
            )
        )
