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
    """The label users see (training.runnables.runnable_label: a hosted model says external)."""
    from training.runnables import runnable_label

    return runnable_label(base_model, job)


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
    # One generation per chat at a time, across processes: claimed by a conditional UPDATE
    # (chat.services.chat_claim), refreshed while it streams, free again when released or
    # when its process died (no heartbeat for CLAIM_STALE_SECONDS).
    busy_token = models.CharField(max_length=32, blank=True, editable=False)
    busy_since = models.DateTimeField(null=True, blank=True, editable=False)

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

    class Status(models.TextChoices):
        COMPLETE = "complete", _("complete")  # finished, or stopped by the user (stats.finish_reason "cancelled")
        INTERRUPTED = "interrupted", _("interrupted")  # the socket closed mid-answer: the part said so far
        FAILED = "failed", _("failed")  # the model could not answer: ``error`` says why

    session = models.ForeignKey(ChatSession, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(_("role"), max_length=10, choices=Role.choices)
    content = models.TextField(_("content"), blank=True)
    # An assistant answer replaced by "regenerate" stays for the record but leaves the history.
    superseded = models.BooleanField(_("superseded"), default=False)
    status = models.CharField(_("status"), max_length=12, choices=Status.choices, default=Status.COMPLETE)
    error = models.TextField(_("error"), blank=True)
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


class ArenaBattleQuerySet(models.QuerySet):
    def counted(self):
        """The battles the leaderboard counts: voted blind, and not void."""
        return self.filter(vote_counts=True, voided_at__isnull=True).exclude(vote="")


class ArenaBattle(models.Model):
    """One prompt answered by two contestants the system drew, names hidden until the vote.

    A battle ends with a vote, or void: by its voter instead of voting (an answer gave away
    which model wrote it), or by an admin afterwards. Void battles never count."""

    class Vote(models.TextChoices):
        A = "a", _("A is better")
        B = "b", _("B is better")
        TIE = "tie", _("tie")
        BOTH_BAD = "both_bad", _("both bad")

    class VoidReason(models.TextChoices):
        IDENTITY = "identity", _("an answer revealed which model it is")
        OTHER = "other", _("other reason")

    objects = ArenaBattleQuerySet.as_manager()

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
    # False when the vote came after the names were shown (battles from before the arena was
    # fully blind): it is kept but not counted.
    vote_counts = models.BooleanField(_("vote counts"), default=False)
    voided_at = models.DateTimeField(_("voided"), null=True, blank=True)
    voided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("voided by"), null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    void_reason = models.CharField(_("void reason"), max_length=10, choices=VoidReason.choices, blank=True)
    void_note = models.TextField(_("void note"), blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("arena battle")
        verbose_name_plural = _("arena battles")

    @property
    def is_over(self) -> bool:
        """Voted or void: the names may be shown."""
        return bool(self.vote) or self.voided_at is not None

    @property
    def label_a(self) -> str:
        return contestant_label(self.model_a, self.job_a)

    @property
    def label_b(self) -> str:
        return contestant_label(self.model_b, self.job_b)
