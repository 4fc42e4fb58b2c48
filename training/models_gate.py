"""The regression gate: a new adapter evaluated against its parent before it reaches clinicians.

``training.services.gate`` writes every row; docs/preferences.md ("Regression gate").
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from training.models import FineTuneJob

__all__ = ["AdapterGate"]


class AdapterGate(models.Model):
    """One adapter's gate: its evaluation and its parent's (the parent job's adapter, or the base
    model) on the same split with the same prompts; blocked when the paired difference of the
    chosen metric is below zero beyond its bootstrap interval. An admin may override, audited."""

    class Status(models.TextChoices):
        PENDING = "pending", _("evaluating")
        PASSED = "passed", _("passed")
        BLOCKED = "blocked", _("blocked")
        OVERRIDDEN = "overridden", _("overridden by an admin")

    job = models.OneToOneField(FineTuneJob, verbose_name=_("fine-tune job"), on_delete=models.CASCADE, related_name="gate")
    parent_job = models.ForeignKey(
        FineTuneJob, verbose_name=_("parent"), null=True, blank=True, on_delete=models.PROTECT, related_name="+", help_text=_("Empty: the base model.")
    )
    dataset_version = models.ForeignKey("curation.DatasetVersion", verbose_name=_("dataset version"), on_delete=models.PROTECT, related_name="+")
    split = models.CharField(_("split"), max_length=16)
    metric = models.CharField(_("metric"), max_length=16, default="rougel")
    candidate_run = models.ForeignKey("training.EvalRun", verbose_name=_("evaluation of the new adapter"), on_delete=models.PROTECT, related_name="+")
    parent_run = models.ForeignKey("training.EvalRun", verbose_name=_("evaluation of the parent"), on_delete=models.PROTECT, related_name="+")
    status = models.CharField(_("status"), max_length=12, choices=Status.choices, default=Status.PENDING, db_index=True)
    # {"n", "candidate_mean", "parent_mean", "delta", "low", "high", "confidence", "resamples"}
    summary = models.JSONField(_("comparison"), default=dict, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("created by"), on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    decided_at = models.DateTimeField(_("decided"), null=True, blank=True)
    overridden_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("overridden by"), null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    override_reason = models.TextField(_("reason for the override"), blank=True)

    class Meta:
        verbose_name = _("regression gate")
        verbose_name_plural = _("regression gates")

    def __str__(self) -> str:
        return f"gate of job #{self.job_id}: {self.status}"

    @property
    def allows(self) -> bool:
        return self.status in (self.Status.PASSED, self.Status.OVERRIDDEN)
