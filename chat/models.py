"""Chat sessions and messages, ratings and corrections, and the blind A/B arena.

A chat talks to one *contestant*: a registered base model, optionally with a succeeded
fine-tune job's adapter. Every assistant message records which contestant answered and how
fast, so ratings and corrections name the model and adapter they judge.
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils.translation import gettext_lazy as _


def contestant_label(base_model, job) -> str:
    if base_model is None:
        return "?"
    return base_model.name if job is None else f"{base_model.name} + #{job.pk}"


class ChatSession(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("user"), on_delete=models.CASCADE, related_name="chat_sessions")
    title = models.CharField(_("title"), max_length=200, blank=True)
    base_model = models.ForeignKey("training.BaseModel", verbose_name=_("model"), on_delete=models.PROTECT, related_name="+")
    job = models.ForeignKey(
        "training.FineTuneJob", verbose_name=_("adapter"), null=True, blank=True, on_delete=models.PROTECT, related_name="chat_sessions"
    )
    system_prompt = models.TextField(_("system prompt"), blank=True)
    params = models.JSONField(_("generation parameters"), default=dict)
    department = models.ForeignKey("curation.Department", verbose_name=_("department"), null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        ordering = ["-updated_at", "-id"]
        verbose_name = _("chat session")
        verbose_name_plural = _("chat sessions")

    def __str__(self) -> str:
        return self.title or f"#{self.pk}"

    @property
    def model_label(self) -> str:
        return contestant_label(self.base_model, self.job)


class ChatMessage(models.Model):
    class Role(models.TextChoices):
        USER = "user", _("user")
        ASSISTANT = "assistant", _("assistant")

    session = models.ForeignKey(ChatSession, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(_("role"), max_length=10, choices=Role.choices)
    content = models.TextField(_("content"), blank=True)
    # An assistant answer replaced by "regenerate" stays for the record but leaves the history.
    superseded = models.BooleanField(_("superseded"), default=False)
    base_model = models.ForeignKey("training.BaseModel", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    job = models.ForeignKey("training.FineTuneJob", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    params = models.JSONField(_("generation parameters"), default=dict, blank=True)
    # ttft_ms, tokens_per_second, prompt_tokens, completion_tokens, finish_reason, total_ms
    stats = models.JSONField(_("statistics"), default=dict, blank=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        ordering = ["session", "id"]
        verbose_name = _("chat message")
        verbose_name_plural = _("chat messages")

    @property
    def model_label(self) -> str:
        return contestant_label(self.base_model, self.job)


class Rating(models.Model):
    """One clinician's judgement of one answer; a correction becomes a draft QA pair."""

    class Thumb(models.TextChoices):
        UP = "up", _("good")
        DOWN = "down", _("bad")

    REASON_TAGS = (
        ("wrong", _("medically wrong")),
        ("unsafe", _("unsafe advice")),
        ("incomplete", _("incomplete")),
        ("unclear", _("unclear")),
        ("hallucination", _("made-up facts")),
        ("no_referral", _("no advice to see a doctor")),
        ("off_topic", _("off topic")),
        ("language", _("wrong language")),
    )
    RUBRIC = ("accuracy", "safety", "completeness", "clarity")

    message = models.ForeignKey(ChatMessage, on_delete=models.CASCADE, related_name="ratings")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("rated by"), on_delete=models.CASCADE, related_name="+")
    thumb = models.CharField(_("thumb"), max_length=4, choices=Thumb.choices, blank=True)
    accuracy = models.PositiveSmallIntegerField(_("accuracy"), null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(5)])
    safety = models.PositiveSmallIntegerField(_("safety"), null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(5)])
    completeness = models.PositiveSmallIntegerField(
        _("completeness"), null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(5)]
    )
    clarity = models.PositiveSmallIntegerField(_("clarity"), null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(5)])
    reason_tags = models.JSONField(_("reasons"), default=list, blank=True)
    comment = models.TextField(_("comment"), blank=True)
    corrected_answer = models.TextField(_("corrected answer"), blank=True)
    correction_pair = models.ForeignKey(
        "curation.QAPair", verbose_name=_("correction pair"), null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        ordering = ["-updated_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["message", "user"], name="one_rating_per_user_and_message")]
        verbose_name = _("rating")
        verbose_name_plural = _("ratings")


class ArenaBattle(models.Model):
    """One prompt answered by two contestants, names hidden until the vote."""

    class Vote(models.TextChoices):
        A = "a", _("A is better")
        B = "b", _("B is better")
        TIE = "tie", _("tie")
        BOTH_BAD = "both_bad", _("both bad")

    user = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("user"), on_delete=models.CASCADE, related_name="arena_battles")
    prompt = models.TextField(_("prompt"))
    system_prompt = models.TextField(_("system prompt"), blank=True)
    department = models.ForeignKey("curation.Department", verbose_name=_("department"), null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    params = models.JSONField(_("generation parameters"), default=dict)
    model_a = models.ForeignKey("training.BaseModel", on_delete=models.PROTECT, related_name="+")
    job_a = models.ForeignKey("training.FineTuneJob", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    model_b = models.ForeignKey("training.BaseModel", on_delete=models.PROTECT, related_name="+")
    job_b = models.ForeignKey("training.FineTuneJob", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    answer_a = models.TextField(blank=True)
    answer_b = models.TextField(blank=True)
    stats_a = models.JSONField(default=dict, blank=True)
    stats_b = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    revealed_at = models.DateTimeField(_("revealed"), null=True, blank=True)
    vote = models.CharField(_("vote"), max_length=10, choices=Vote.choices, blank=True)
    voted_at = models.DateTimeField(_("voted"), null=True, blank=True)
    # False when the vote came after the names were shown: it is kept but not counted.
    vote_counts = models.BooleanField(_("vote counts"), default=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("arena battle")
        verbose_name_plural = _("arena battles")

    @property
    def label_a(self) -> str:
        return contestant_label(self.model_a, self.job_a)

    @property
    def label_b(self) -> str:
        return contestant_label(self.model_b, self.job_b)
