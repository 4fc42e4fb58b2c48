"""Serving endpoints: where a base model (and its adapters) runs.

An endpoint is in-process (this process's transformers backend) or an OpenAI-compatible server
(vLLM, ``manage.py serve_model``, a hosted API such as OpenAI's). Its API key is never stored:
the endpoint names the environment variable that holds it. ``external`` marks a server outside
the site (data leaves the hospital): every request to it is audited and identifiers are masked
before they go (training.runnables), and ``MEDPORTAL_ALLOW_EXTERNAL_ENDPOINTS=false`` forbids it.

A base model without an endpoint runs on the default one: ``MEDPORTAL_INFERENCE_URL`` when set,
else in-process.
"""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils.translation import gettext_lazy as _

__all__ = ["InferenceEndpoint", "validate_env_name"]

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def validate_env_name(value: str) -> None:
    if value and not ENV_NAME.match(value):
        raise ValidationError(_("Give the NAME of an environment variable (letters, digits and _), never the key itself."))


class InferenceEndpoint(models.Model):
    class Kind(models.TextChoices):
        IN_PROCESS = "in_process", _("in-process")
        OPENAI = "openai", _("OpenAI-compatible server")

    name = models.SlugField(_("name"), max_length=100, unique=True)
    kind = models.CharField(_("kind"), max_length=12, choices=Kind.choices, default=Kind.OPENAI)
    base_url = models.URLField(_("base URL"), max_length=500, blank=True, help_text=_("e.g. http://gpu-host:8001 or https://api.openai.com/v1"))
    api_key_env = models.CharField(
        _("API key variable"),
        max_length=100,
        blank=True,
        validators=[validate_env_name],
        help_text=_("The name of the environment variable that holds the API key; the key itself is never stored."),
    )
    external = models.BooleanField(
        _("external"), default=False, help_text=_("Hosted outside the site: what is sent leaves the hospital (audited, identifiers masked).")
    )
    connect_timeout_s = models.FloatField(_("connect timeout (s)"), default=10.0, validators=[MinValueValidator(0.1), MaxValueValidator(600)])
    read_timeout_s = models.FloatField(
        _("read timeout (s)"), default=120.0, validators=[MinValueValidator(0.1), MaxValueValidator(3600)], help_text=_("Longest wait for the next piece of an answer.")
    )
    max_concurrent = models.PositiveSmallIntegerField(
        _("concurrent requests"), default=4, validators=[MinValueValidator(1), MaxValueValidator(256)], help_text=_("Requests at once from this process; the others wait.")
    )
    is_active = models.BooleanField(_("active"), default=True)
    last_check = models.JSONField(_("last check"), default=dict, blank=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("serving endpoint")
        verbose_name_plural = _("serving endpoints")

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.kind == self.Kind.OPENAI and not self.base_url:
            raise ValidationError({"base_url": _("An OpenAI-compatible endpoint needs its base URL.")})
        if self.kind == self.Kind.IN_PROCESS and self.external:
            raise ValidationError({"external": _("An in-process endpoint runs here: it cannot be external.")})
