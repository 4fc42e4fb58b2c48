"""Evaluation runs: a model (a base model, or a base model + a fine-tune job's adapter) answers the
test (or validation) split of a frozen dataset version; its answers are scored against the
references with BLEU-4 / ROUGE (``training.engine.metrics``).

``EvalRun`` holds the recipe, the live state (claimed and heart-beaten by a ``gpu`` worker like a
fine-tune job) and the outcome: the summary, per-department summaries and the speed test.
``EvalSample`` keeps every answer with its per-sample scores, for the report's best and worst
examples and the exports. Runs of one comparison (a fine-tune's base and tuned runs) share a
``group``. Imported at the end of ``training.models``; writes in ``training.services.evaluations``,
reads in ``training.selectors_eval``.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from training.models import BaseModel, FineTuneJob

__all__ = ["EvalRun", "EvalSample"]




class EvalRun(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", _("queued")
        RUNNING = "running", _("running")
        SUCCEEDED = "succeeded", _("succeeded")
        FAILED = "failed", _("failed")
        CANCELLED = "cancelled", _("cancelled")

    class Mode(models.TextChoices):
        LLAMAFACTORY = "llamafactory", _("LLaMA-Factory (rouge-chinese, distinct n-grams)")
        STANDARD = "standard", _("standard (rouge-score, n-gram counts)")

    class Split(models.TextChoices):
        TEST = "test", _("test")
        VALIDATION = "validation", _("validation")
        TRAIN = "train", _("train")

    ACTIVE = (Status.QUEUED, Status.RUNNING)
    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    dataset_version = models.ForeignKey(
        "curation.DatasetVersion", verbose_name=_("dataset version"), on_delete=models.PROTECT, related_name="eval_runs"
    )
    split = models.CharField(_("split"), max_length=16, choices=Split.choices, default=Split.TEST)
    base_model = models.ForeignKey(BaseModel, verbose_name=_("base model"), on_delete=models.PROTECT, related_name="eval_runs")
    # The adapter evaluated on top of the base model; null = the base model alone.
    job = models.ForeignKey(
        FineTuneJob, verbose_name=_("fine-tune job"), null=True, blank=True, on_delete=models.PROTECT, related_name="eval_runs"
    )
    # Runs compared together (the base and tuned runs of one fine-tune share a group).
    group = models.CharField(_("comparison group"), max_length=64, blank=True, db_index=True)
    mode = models.CharField(_("metric mode"), max_length=16, choices=Mode.choices, default=Mode.LLAMAFACTORY)
    # GenerationParams.to_dict() + template, batch_size, cutoff_len, max_samples.
    params = models.JSONField(_("generation parameters"), default=dict, blank=True)

    status = models.CharField(_("status"), max_length=12, choices=Status.choices, default=Status.QUEUED, db_index=True)
    progress = models.FloatField(_("progress"), default=0.0)  # 0..1
    done_samples = models.PositiveIntegerField(_("answered"), default=0)
    total_samples = models.PositiveIntegerField(_("samples"), default=0)
    # {"bleu-4", "rouge-1", "rouge-2", "rouge-l", "count"} (× 100, as LLaMA-Factory prints them)
    summary = models.JSONField(_("summary"), default=dict, blank=True)
    # {department name ("" = none): summary}
    by_department = models.JSONField(_("per department"), default=dict, blank=True)
    # {"ttft_ms_p50", "ttft_ms_p95", "latency_ms_p50", "latency_ms_p95", "tokens_per_second",
    #  "samples_per_second", "batch_size", "backend", "timed_samples"}
    speed = models.JSONField(_("speed"), default=dict, blank=True)
    backend = models.CharField(_("inference backend"), max_length=20, blank=True)
    error = models.TextField(_("error"), blank=True)

    worker = models.CharField(_("worker"), max_length=200, blank=True)
    heartbeat_at = models.DateTimeField(_("heartbeat"), null=True, blank=True)
    task_id = models.CharField(_("queue task"), max_length=64, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("created by"), on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    started_at = models.DateTimeField(_("started"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True)
    # Bumped on every change (conditional updates and pages that poll rely on it).
    version = models.PositiveIntegerField(_("version"), default=1)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["status", "heartbeat_at"]),
            models.Index(fields=["dataset_version", "split", "created_at"]),
        ]
        verbose_name = _("evaluation run")
        verbose_name_plural = _("evaluation runs")

    def __str__(self) -> str:
        what = f"{self.base_model.name} + job #{self.job_id}" if self.job_id else (self.base_model.name if self.base_model_id else "?")
        return f"#{self.pk} {what} on {self.dataset_version.name if self.dataset_version_id else '?'}/{self.split}"

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE

    @property
    def label(self) -> str:
        """How reports name one side of a comparison: "job #12" or "base model"."""
        return f"job #{self.job_id}" if self.job_id else str(_("base model"))


class EvalSample(models.Model):
    run = models.ForeignKey(EvalRun, on_delete=models.CASCADE, related_name="samples")
    position = models.PositiveIntegerField(_("position"))
    dataset_item = models.ForeignKey(
        "curation.DatasetItem", verbose_name=_("dataset item"), null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    department = models.CharField(_("department"), max_length=100, blank=True)
    prompt = models.TextField(_("question"))  # the user turn(s), human-readable
    reference = models.TextField(_("reference answer"), blank=True)
    prediction = models.TextField(_("model answer"), blank=True)
    bleu4 = models.FloatField(_("BLEU-4"), default=0.0)
    rouge1 = models.FloatField(_("ROUGE-1"), default=0.0)
    rouge2 = models.FloatField(_("ROUGE-2"), default=0.0)
    rougel = models.FloatField(_("ROUGE-L"), default=0.0)
    completion_tokens = models.PositiveIntegerField(_("answer tokens"), default=0)
    # Set for the samples of the speed test (streamed one at a time): time to the whole answer.
    latency_ms = models.FloatField(_("latency (ms)"), null=True, blank=True)

    class Meta:
        ordering = ["run", "position"]
        constraints = [models.UniqueConstraint(fields=["run", "position"], name="one_eval_sample_per_position")]
        indexes = [models.Index(fields=["run", "rougel"])]
        verbose_name = _("evaluation sample")
        verbose_name_plural = _("evaluation samples")

    def __str__(self) -> str:
        return f"run #{self.run_id} sample {self.position}"
