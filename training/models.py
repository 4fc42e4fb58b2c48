"""Base-model registry and fine-tune jobs.

A ``BaseModel`` is a local Hugging Face folder (never a hub id). A ``FineTuneJob`` turns a
frozen dataset version into a LoRA adapter on the django-q2 ``gpu`` cluster; its live
numbers are on the row (for the job list and a reload) and its curves in ``FineTuneMetric``.
Business logic is in ``training.services``; reads in ``training.selectors``.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from medportal.jobs import BackgroundJob


class BaseModel(models.Model):
    name = models.SlugField(_("name"), max_length=100, unique=True, allow_unicode=False)
    # Empty for a hosted model (no local weights: it runs on its endpoint only).
    path = models.CharField(_("folder"), max_length=500, blank=True)
    # Where it runs (None: the default endpoint, MEDPORTAL_INFERENCE_URL or in-process), and the
    # name the endpoint knows it by (empty: ``name``). Its adapters run where it runs.
    endpoint = models.ForeignKey(
        "training.InferenceEndpoint", verbose_name=_("endpoint"), null=True, blank=True, on_delete=models.PROTECT, related_name="base_models"
    )
    remote_name = models.CharField(_("name on the endpoint"), max_length=200, blank=True)
    description = models.TextField(_("description"), blank=True)
    architecture = models.CharField(_("architecture"), max_length=100, blank=True)
    model_type = models.CharField(_("model type"), max_length=50, blank=True)
    num_parameters = models.BigIntegerField(_("parameters"), default=0)
    dtype = models.CharField(_("dtype"), max_length=20, blank=True)
    has_chat_template = models.BooleanField(_("chat template"), default=False)
    vocab_size = models.PositiveIntegerField(_("vocabulary size"), default=0)
    context_length = models.PositiveIntegerField(_("context length"), default=0)
    # Everything the inspection read (hidden size, layers, heads, files …), for the estimate.
    info = models.JSONField(_("inspection"), default=dict, blank=True)
    # A merged model remembers the job whose adapter it contains.
    source_job = models.ForeignKey(
        "training.FineTuneJob", verbose_name=_("merged from job"), null=True, blank=True, on_delete=models.SET_NULL, related_name="merged_models"
    )
    is_active = models.BooleanField(_("active"), default=True)
    registered_by = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("registered by"), on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(_("registered"), auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("base model")
        verbose_name_plural = _("base models")

    def __str__(self) -> str:
        return self.name

    @property
    def is_hosted(self) -> bool:
        """No local weights: it runs on its endpoint only (cannot be fine-tuned or merged)."""
        return not self.path

    @property
    def is_external(self) -> bool:
        return bool(self.endpoint_id and self.endpoint.external)


class FineTuneJob(BackgroundJob):
    """A LoRA fine-tune: a background job (``medportal.jobs``, kind "finetune", gpu cluster)."""

    class OnWorkerDeath(models.TextChoices):
        FAIL = "fail", _("mark failed")
        REQUEUE = "requeue", _("re-queue and resume")

    class Stage(models.TextChoices):
        SFT = "sft", _("supervised fine-tune (SFT)")
        DPO = "dpo", _("preference fine-tune (DPO)")

    # SFT trains on the train split of ``dataset_version``; DPO on the train split of
    # ``preference_version`` (``dataset_version`` is then the data it is evaluated on), from the
    # base model or on top of ``parent_job``'s adapter (training.services.dpo, docs/preferences.md).
    stage = models.CharField(_("stage"), max_length=8, choices=Stage.choices, default=Stage.SFT)
    dataset_version = models.ForeignKey("curation.DatasetVersion", verbose_name=_("dataset version"), on_delete=models.PROTECT, related_name="finetune_jobs")
    preference_version = models.ForeignKey(
        "curation.PreferenceVersion", verbose_name=_("preference version"), null=True, blank=True, on_delete=models.PROTECT, related_name="finetune_jobs"
    )
    parent_job = models.ForeignKey(
        "self", verbose_name=_("starts from"), null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    base_model = models.ForeignKey(BaseModel, verbose_name=_("base model"), on_delete=models.PROTECT, related_name="finetune_jobs")
    preset = models.CharField(_("preset"), max_length=50, blank=True)
    # training.engine.dpo.DPOConfig's own knobs (beta, label_smoothing); the rest is ``config``.
    dpo_config = models.JSONField(_("DPO settings"), default=dict, blank=True)
    # The latest DPO figures (rewards_chosen/rejected, reward_margin, reward_accuracy) and the
    # held-out ones before and after (eval_before / eval_after), from the engine's events.
    preference_metrics = models.JSONField(_("preference figures"), default=dict, blank=True)
    # training.engine.config.FinetuneConfig.to_dict(): every knob, validated on construction.
    config = models.JSONField(_("configuration"), default=dict)
    on_worker_death = models.CharField(_("if the worker dies"), max_length=10, choices=OnWorkerDeath.choices, default=OnWorkerDeath.REQUEUE)
    # When the job succeeds, queue the evaluation of the base and the tuned model on the held-out
    # split (test, else validation): the kind's on_succeeded step,
    # training.services.evaluations.evaluations_after_finetune.
    evaluate_after = models.BooleanField(
        _("evaluate when done"),
        default=False,
        help_text=_("When the job succeeds, evaluate the base model and the tuned model on the held-out split."),
    )

    step = models.PositiveIntegerField(_("step"), default=0)
    total_steps = models.PositiveIntegerField(_("total steps"), default=0)
    epoch = models.FloatField(_("epoch"), default=0.0)
    train_loss_first = models.FloatField(_("first train loss"), null=True, blank=True)
    train_loss_last = models.FloatField(_("last train loss"), null=True, blank=True)
    eval_loss = models.FloatField(_("eval loss"), null=True, blank=True)
    learning_rate = models.FloatField(_("learning rate"), null=True, blank=True)
    tokens_per_second = models.FloatField(_("tokens/s"), null=True, blank=True)
    eta_seconds = models.FloatField(_("ETA (s)"), null=True, blank=True)
    num_train_examples = models.PositiveIntegerField(_("training examples"), default=0)
    num_eval_examples = models.PositiveIntegerField(_("validation examples"), default=0)
    trainable_parameters = models.BigIntegerField(_("trainable parameters"), default=0)
    log_tail = models.TextField(_("log tail"), blank=True)

    output_dir = models.CharField(_("output folder"), max_length=500, blank=True)
    adapter_path = models.CharField(_("adapter folder"), max_length=500, blank=True)
    last_checkpoint = models.CharField(_("last checkpoint"), max_length=500, blank=True)
    # Fingerprint of the prompt template used in training; serving compares its own against it.
    template_fingerprint = models.CharField(_("template fingerprint"), max_length=64, blank=True)

    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("created by"), on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    queued_at = models.DateTimeField(_("queued"), null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "heartbeat_at"])]
        verbose_name = _("fine-tune job")
        verbose_name_plural = _("fine-tune jobs")

    def __str__(self) -> str:
        return f"#{self.pk} {self.base_model_id and self.base_model.name} ← {self.dataset_version_id and self.dataset_version.name}"

    @property
    def gate_or_none(self):
        """The job's regression gate (training.models_gate.AdapterGate), or None."""
        try:
            return self.gate
        except models.ObjectDoesNotExist:
            return None


class AdapterMerge(BackgroundJob):
    """Merging a succeeded job's adapter into its base model: a background job
    (``medportal.jobs``, kind "merge"); the folder is registered as a new base model."""

    job = models.ForeignKey(FineTuneJob, verbose_name=_("fine-tune job"), on_delete=models.CASCADE, related_name="merges")
    name = models.SlugField(_("name"), max_length=100)
    path = models.CharField(_("folder"), max_length=500)
    base_model = models.ForeignKey(
        BaseModel, verbose_name=_("merged model"), null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("created by"), on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("adapter merge")
        verbose_name_plural = _("adapter merges")

    def __str__(self) -> str:
        return f"#{self.pk} job #{self.job_id} → {self.name}"


class FineTuneMetric(models.Model):
    """One logged point of a job's curves: a training log step or an evaluation."""

    class Kind(models.TextChoices):
        TRAIN = "train", _("train")
        EVAL = "eval", _("eval")

    job = models.ForeignKey(FineTuneJob, on_delete=models.CASCADE, related_name="metrics")
    kind = models.CharField(max_length=5, choices=Kind.choices)
    step = models.PositiveIntegerField()
    epoch = models.FloatField(default=0.0)
    loss = models.FloatField(null=True)
    learning_rate = models.FloatField(null=True)
    tokens_per_second = models.FloatField(null=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["job", "kind", "step"]
        constraints = [models.UniqueConstraint(fields=["job", "kind", "step"], name="one_metric_per_step")]
from training.models_eval import *  # noqa: E402,F401,F403
from training.models_endpoints import *  # noqa: E402,F401,F403
from training.models_gate import *  # noqa: E402,F401,F403
