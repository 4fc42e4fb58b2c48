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

from medportal.jobs import BackgroundJob
from training.models import BaseModel, FineTuneJob

__all__ = ["EvalRating", "EvalRun", "EvalSample", "default_suites"]

SUITES = ("reference", "mcq", "diagnosis", "rubric")


def default_suites() -> list[str]:
    return ["reference"]


class EvalRun(BackgroundJob):
    """One evaluation run: a background job (``medportal.jobs``, kind "evaluation")."""

    class Mode(models.TextChoices):
        LLAMAFACTORY = "llamafactory", _("LLaMA-Factory (rouge-chinese, distinct n-grams)")
        STANDARD = "standard", _("standard (rouge-score, n-gram counts)")

    class Split(models.TextChoices):
        TEST = "test", _("test")
        VALIDATION = "validation", _("validation")
        TRAIN = "train", _("train")

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
    # The suites scored (docs/evaluation-suites.md): reference, mcq, diagnosis, rubric.
    suites = models.JSONField(_("suites"), default=default_suites, blank=True)
    # The rubric suite's judge: any registered model (a hosted one included); null = no judge.
    judge_model = models.ForeignKey(
        BaseModel, verbose_name=_("judge model"), null=True, blank=True, on_delete=models.PROTECT, related_name="judged_eval_runs"
    )
    # {"version", "lang", "system", "user", "reference", "retry"}: the judge prompt as used.
    judge_prompt = models.JSONField(_("judge prompt"), default=dict, blank=True)
    # {suite: summary} of the suites other than reference (see training.services.eval_suites).
    suite_summary = models.JSONField(_("suite summary"), default=dict, blank=True)

    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("created by"), on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

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
    def label(self) -> str:
        """How reports name one side of a comparison: "job #12", "base model", or a hosted
        contender's own label ("gpt-4o (external)")."""
        if self.job_id:
            return f"job #{self.job_id}"
        if self.base_model.is_hosted or self.base_model.is_external:
            from training.runnables import runnable_label

            return runnable_label(self.base_model)
        return str(_("base model"))


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
    # {"mcq": {...}, "diagnosis": {...}, "rubric": {...}}: this answer's score in each suite.
    suite_scores = models.JSONField(_("suite scores"), default=dict, blank=True)

    class Meta:
        ordering = ["run", "position"]
        constraints = [models.UniqueConstraint(fields=["run", "position"], name="one_eval_sample_per_position")]
        indexes = [models.Index(fields=["run", "rougel"])]
        verbose_name = _("evaluation sample")
        verbose_name_plural = _("evaluation samples")

    def __str__(self) -> str:
        return f"run #{self.run_id} sample {self.position}"


def _score_field(label):
    from django.core.validators import MaxValueValidator, MinValueValidator

    return models.PositiveSmallIntegerField(label, validators=[MinValueValidator(1), MaxValueValidator(5)])


class EvalRating(models.Model):
    """A clinician's blind rating of one evaluation answer on the chat rubric (1–5 each): the
    ground truth the rubric judge is calibrated against (docs/evaluation-suites.md)."""

    sample = models.ForeignKey(EvalSample, verbose_name=_("answer"), on_delete=models.CASCADE, related_name="ratings")
    rater = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("rated by"), on_delete=models.CASCADE, related_name="+")
    accuracy = _score_field(_("accuracy"))
    safety = _score_field(_("safety"))
    completeness = _score_field(_("completeness"))
    clarity = _score_field(_("clarity"))
    comment = models.TextField(_("comment"), blank=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        ordering = ["sample", "created_at"]
        constraints = [models.UniqueConstraint(fields=["sample", "rater"], name="one_eval_rating_per_rater")]
        verbose_name = _("evaluation rating")
        verbose_name_plural = _("evaluation ratings")

    def __str__(self) -> str:
        return f"rating of sample {self.sample_id} by {self.rater_id}"
