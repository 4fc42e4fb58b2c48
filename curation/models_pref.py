"""Preference pairs: one prompt (with its conversation), a chosen and a rejected answer.

Built from clinicians' judgements in chat (arena votes, differently rated answers,
corrections), from rated evaluation samples, or imported from LLaMA-Factory pairwise / TRL
files. They are reviewed like QA pairs (the same status words), then frozen into
content-hashed ``PreferenceVersion`` s that DPO fine-tunes read. ``curation.services.preferences``
writes every row; see docs/preferences.md.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from curation.models import DatasetItem, Department, QAPair

__all__ = ["PreferenceImport", "PreferencePair", "PreferenceReview", "PreferenceVersion", "PreferenceItem"]


class PreferenceImport(models.Model):
    """One imported preference file and its row report (the shape of ``ImportBatch.issues``).

    Preference files are read in the request (``curation.services.preferences.preference_import``):
    all or nothing for a file-level problem, row by row otherwise."""

    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("imported by"), on_delete=models.PROTECT, related_name="+")
    filename = models.CharField(_("file name"), max_length=255)
    format = models.CharField(_("format"), max_length=32, blank=True)
    rows_total = models.PositiveIntegerField(_("rows in file"), default=0)
    created_count = models.PositiveIntegerField(_("created"), default=0)
    duplicate_count = models.PositiveIntegerField(_("duplicates"), default=0)
    near_duplicate_count = models.PositiveIntegerField(_("near-duplicates flagged"), default=0)
    skipped_count = models.PositiveIntegerField(_("skipped"), default=0)
    error_count = models.PositiveIntegerField(_("row errors"), default=0)
    identifier_count = models.PositiveIntegerField(_("pairs with identifiers"), default=0)
    issues = models.JSONField(_("row report"), default=list, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("preference import")
        verbose_name_plural = _("preference imports")

    def __str__(self) -> str:
        return f"#{self.pk} {self.filename}"


class PreferencePair(models.Model):
    Status = QAPair.Status

    class SourceKind(models.TextChoices):
        ARENA_VOTE = "arena_vote", _("arena vote")
        RATING = "rating", _("ratings of two answers")
        CORRECTION = "correction", _("correction")
        EVAL_RATING = "eval_rating", _("rated evaluation sample")
        IMPORT = "import", _("imported file")

    # content: the conversation before the answer, then the two answers
    system = models.TextField(_("system prompt"), blank=True)
    history = models.JSONField(_("history"), default=list, blank=True, help_text=_("Earlier turns: [[question, answer], ...]"))
    prompt = models.TextField(_("question"))
    chosen = models.TextField(_("chosen answer"))
    rejected = models.TextField(_("rejected answer"))

    # provenance
    source_kind = models.CharField(_("source"), max_length=16, choices=SourceKind.choices, db_index=True)
    source_ref = models.CharField(
        _("source reference"), max_length=255, blank=True, db_index=True, help_text=_("arena-battle:12, chat-message:3>5, rating:7, row 4 of a file")
    )
    judged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("judged by"), null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    chosen_model = models.CharField(_("model of the chosen answer"), max_length=200, blank=True)
    rejected_model = models.CharField(_("model of the rejected answer"), max_length=200, blank=True)
    department = models.ForeignKey(
        Department, verbose_name=_("department"), null=True, blank=True, on_delete=models.SET_NULL, related_name="preference_pairs"
    )
    author = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("author"), on_delete=models.PROTECT, related_name="+")
    import_batch = models.ForeignKey(
        PreferenceImport, verbose_name=_("import batch"), null=True, blank=True, on_delete=models.SET_NULL, related_name="pairs"
    )
    source_row = models.PositiveIntegerField(_("source row"), null=True, blank=True)
    extra = models.JSONField(_("extra fields"), default=dict, blank=True)

    # workflow (the words and rules of QA pairs)
    status = models.CharField(_("status"), max_length=24, choices=Status.choices, default=Status.DRAFT)
    version = models.PositiveIntegerField(_("version"), default=1, help_text=_("Optimistic lock: bumped by every change."))
    review_round = models.PositiveIntegerField(_("review round"), default=0)
    submitted_at = models.DateTimeField(_("submitted"), null=True, blank=True)
    decided_at = models.DateTimeField(_("decided"), null=True, blank=True)

    # derived, maintained by curation.services.preferences
    content_hash = models.CharField(_("content hash"), max_length=64, unique=True)
    prompt_key = models.CharField(_("prompt key"), max_length=64, db_index=True, help_text=_("SHA-256 of the normalised conversation before the answers."))
    simhash = models.BigIntegerField(_("SimHash"), null=True, blank=True)
    near_duplicate_of = models.ForeignKey(
        "self", verbose_name=_("near-duplicate of"), null=True, blank=True, on_delete=models.SET_NULL, related_name="near_duplicates"
    )
    identifiers = models.JSONField(_("identifiers found"), default=list, blank=True)
    has_identifiers = models.BooleanField(_("identifier flag"), default=False)

    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        ordering = ["-id"]
        verbose_name = _("preference pair")
        verbose_name_plural = _("preference pairs")
        indexes = [models.Index(fields=["status", "-id"], name="prefpair_status_id")]

    def __str__(self) -> str:
        return f"#{self.pk} {self.prompt.replace(chr(10), ' ')[:60]}"


class PreferenceReview(models.Model):
    class Decision(models.TextChoices):
        APPROVE = "approve", _("Approve")
        REJECT = "reject", _("Reject")

    pair = models.ForeignKey(PreferencePair, verbose_name=_("preference pair"), on_delete=models.CASCADE, related_name="reviews")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("reviewer"), on_delete=models.PROTECT, related_name="+")
    decision = models.CharField(_("decision"), max_length=20, choices=Decision.choices)
    comment = models.TextField(_("comment"), blank=True)
    round = models.PositiveIntegerField(_("review round"))
    created_at = models.DateTimeField(_("time"), auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [models.UniqueConstraint(fields=["pair", "reviewer", "round"], name="one_preference_review_per_round")]
        verbose_name = _("preference review")
        verbose_name_plural = _("preference reviews")


class PreferenceVersion(models.Model):
    """An immutable, content-hashed snapshot of approved preference pairs, split with a seed."""

    name = models.CharField(_("name"), max_length=100, unique=True)
    description = models.TextField(_("description"), blank=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("frozen by"), on_delete=models.PROTECT, related_name="+")
    split_ratios = models.JSONField(_("split ratios"), default=list)
    seed = models.IntegerField(_("seed"), default=42)
    content_hash = models.CharField(_("content hash"), max_length=64, db_index=True)
    counts = models.JSONField(_("counts"), default=dict)
    held_out = models.JSONField(
        _("kept out of training"), default=list, blank=True, help_text=_("Pairs whose prompt is in an evaluation test split: put in test.")
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("preference version")
        verbose_name_plural = _("preference versions")

    def __str__(self) -> str:
        return self.name

    @property
    def total(self) -> int:
        return sum(self.counts.get(k, 0) for k in ("train", "validation", "test"))


class PreferenceItem(models.Model):
    Split = DatasetItem.Split

    version = models.ForeignKey(PreferenceVersion, verbose_name=_("preference version"), on_delete=models.CASCADE, related_name="items")
    pair = models.ForeignKey(PreferencePair, verbose_name=_("preference pair"), on_delete=models.PROTECT, related_name="version_items")
    split = models.CharField(_("split"), max_length=16, choices=Split.choices)
    position = models.PositiveIntegerField(_("position"))
    prompt_key = models.CharField(_("prompt key"), max_length=64, db_index=True)
    content = models.JSONField(_("frozen content"))

    class Meta:
        ordering = ["version", "split", "position"]
        constraints = [models.UniqueConstraint(fields=["version", "pair"], name="preference_pair_once_per_version")]
        indexes = [models.Index(fields=["version", "split", "position"], name="prefitem_split_pos")]
        verbose_name = _("preference item")
        verbose_name_plural = _("preference items")
