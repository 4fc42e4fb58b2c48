"""Curation data: QA pairs with their labels, review history, imports and frozen dataset versions."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from medportal.jobs import BackgroundJob, JobStatus  # noqa: F401  (JobStatus: the status words of every job row)


class Department(models.Model):
    name = models.CharField(_("name"), max_length=100, unique=True)
    reviewers = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        verbose_name=_("reviewers"),
        blank=True,
        related_name="review_departments",
        help_text=_("Clinicians whose review queue shows this department's pairs."),
    )

    class Meta:
        ordering = ["name"]
        verbose_name = _("department")
        verbose_name_plural = _("departments")

    def __str__(self) -> str:
        return self.name


class Tag(models.Model):
    name = models.CharField(_("name"), max_length=100, unique=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("tag")
        verbose_name_plural = _("tags")

    def __str__(self) -> str:
        return self.name


class ImportBatch(BackgroundJob):
    """One uploaded file and its import: a background job (``medportal.jobs``, kind "import")."""

    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("imported by"), on_delete=models.PROTECT, related_name="import_batches"
    )
    file = models.FileField(_("file"), upload_to="imports/%Y/%m/", blank=True)
    source_path = models.CharField(_("source path"), max_length=1000, blank=True, help_text=_("Path given to import_qa."))
    filename = models.CharField(_("file name"), max_length=255)
    format = models.CharField(_("format"), max_length=32, blank=True)
    encoding = models.CharField(_("encoding"), max_length=32, blank=True)
    options = models.JSONField(_("options"), default=dict, blank=True, help_text=_("format, encoding, mapping, department, status"))
    rows_total = models.PositiveIntegerField(_("rows in file"), null=True, blank=True)
    rows_done = models.PositiveIntegerField(_("rows processed"), default=0)
    created_count = models.PositiveIntegerField(_("created"), default=0)
    duplicate_count = models.PositiveIntegerField(_("duplicates"), default=0)
    near_duplicate_count = models.PositiveIntegerField(_("near-duplicates flagged"), default=0)
    skipped_count = models.PositiveIntegerField(_("skipped"), default=0)
    error_count = models.PositiveIntegerField(_("row errors"), default=0)
    identifier_count = models.PositiveIntegerField(_("pairs with identifiers"), default=0)
    issues = models.JSONField(
        _("row report"), default=list, blank=True, help_text=_('[{"row": r, "file": f, "kind": "skipped"|"error"|"duplicate", "message": m}]')
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("import batch")
        verbose_name_plural = _("import batches")

    def __str__(self) -> str:
        return f"#{self.pk} {self.filename}"


class QAPair(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", _("Draft")
        IN_REVIEW = "in_review", _("In review")
        CHANGES_REQUESTED = "changes_requested", _("Changes requested")
        APPROVED = "approved", _("Approved")
        REJECTED = "rejected", _("Rejected")

    class Difficulty(models.TextChoices):
        EASY = "easy", _("Easy")
        MEDIUM = "medium", _("Medium")
        HARD = "hard", _("Hard")

    # content (alpaca shape, plus the reasoning kept apart)
    instruction = models.TextField(_("question"))
    input = models.TextField(pgettext_lazy("qa field", "input"), blank=True)
    output = models.TextField(_("answer"))
    system = models.TextField(_("system prompt"), blank=True)
    history = models.JSONField(_("history"), default=list, blank=True, help_text=_("Earlier turns: [[question, answer], ...]"))
    reasoning = models.TextField(_("reasoning"), blank=True)

    # labels
    department = models.ForeignKey(
        Department, verbose_name=_("department"), null=True, blank=True, on_delete=models.SET_NULL, related_name="qa_pairs"
    )
    tags = models.ManyToManyField(Tag, verbose_name=_("tags"), blank=True, related_name="qa_pairs")
    disease_codes = models.JSONField(_("disease codes"), default=list, blank=True, help_text=_("ICD10:…, ORPHA:…, OMIM:…, HPO:…"))
    difficulty = models.CharField(_("difficulty"), max_length=16, choices=Difficulty.choices, blank=True)

    # workflow
    status = models.CharField(_("status"), max_length=24, choices=Status.choices, default=Status.DRAFT)
    version = models.PositiveIntegerField(_("version"), default=1, help_text=_("Optimistic lock: bumped by every change."))
    review_round = models.PositiveIntegerField(_("review round"), default=0)
    submitted_at = models.DateTimeField(_("submitted"), null=True, blank=True)
    decided_at = models.DateTimeField(_("decided"), null=True, blank=True)

    # provenance
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("author"), on_delete=models.PROTECT, related_name="authored_pairs"
    )
    source = models.CharField(_("source"), max_length=255, blank=True, db_index=True)
    source_ref = models.CharField(_("source reference"), max_length=255, blank=True)
    import_batch = models.ForeignKey(
        ImportBatch, verbose_name=_("import batch"), null=True, blank=True, on_delete=models.SET_NULL, related_name="qa_pairs"
    )
    source_row = models.PositiveIntegerField(_("source row"), null=True, blank=True)
    extra = models.JSONField(_("extra fields"), default=dict, blank=True)
    synthetic = models.BooleanField(_("synthetic"), default=False)
    synthetic_meta = models.JSONField(_("generator"), default=dict, blank=True)

    # derived, maintained by services
    content_hash = models.CharField(_("content hash"), max_length=64, unique=True)
    simhash = models.BigIntegerField(_("SimHash"), null=True, blank=True)
    near_duplicate_of = models.ForeignKey(
        "self", verbose_name=_("near-duplicate of"), null=True, blank=True, on_delete=models.SET_NULL, related_name="near_duplicates"
    )
    identifiers = models.JSONField(_("identifiers found"), default=list, blank=True)
    has_identifiers = models.BooleanField(_("identifier flag"), default=False)
    search_text = models.TextField(_("search tokens"), blank=True, editable=False)

    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        ordering = ["-id"]
        verbose_name = _("QA pair")
        verbose_name_plural = _("QA pairs")
        indexes = [
            models.Index(fields=["status", "submitted_at", "id"], name="qapair_queue"),
            models.Index(fields=["status", "-id"], name="qapair_status_id"),
            models.Index(fields=["department", "status", "-id"], name="qapair_dept_status"),
            models.Index(fields=["author", "-id"], name="qapair_author"),
            models.Index(fields=["has_identifiers", "-id"], name="qapair_identifiers"),
            models.Index(fields=["synthetic", "-id"], name="qapair_synthetic"),
        ]

    def __str__(self) -> str:
        text = self.instruction.replace("\n", " ")
        return f"#{self.pk} {text[:60]}"

    @property
    def tag_list(self) -> list[Tag]:
        """The tags, read from the prefetch cache when there is one.

        ``pair.tags.all()`` on a prefetched pair still clones a queryset, which costs more
        than the rest of a list row; list templates use this instead.
        """
        cached = getattr(self, "_prefetched_objects_cache", {}).get("tags")
        return list(cached) if cached is not None else list(self.tags.all())


class QAPairRevision(models.Model):
    """A snapshot of a pair's content after each edit; diffs are computed between neighbours."""

    qa_pair = models.ForeignKey(QAPair, verbose_name=_("QA pair"), on_delete=models.CASCADE, related_name="revisions")
    number = models.PositiveIntegerField(_("revision"))
    created_at = models.DateTimeField(_("time"), auto_now_add=True)
    editor = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("editor"), null=True, on_delete=models.SET_NULL, related_name="+")
    content = models.JSONField(_("content"))
    note = models.CharField(_("note"), max_length=255, blank=True)

    class Meta:
        ordering = ["qa_pair", "number"]
        constraints = [models.UniqueConstraint(fields=["qa_pair", "number"], name="unique_revision_number")]
        verbose_name = _("revision")
        verbose_name_plural = _("revisions")

    def __str__(self) -> str:
        return f"{self.qa_pair_id} r{self.number}"


class Review(models.Model):
    class Decision(models.TextChoices):
        APPROVE = "approve", _("Approve")
        REJECT = "reject", _("Reject")
        REQUEST_CHANGES = "request_changes", _("Request changes")

    qa_pair = models.ForeignKey(QAPair, verbose_name=_("QA pair"), on_delete=models.CASCADE, related_name="reviews")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("reviewer"), on_delete=models.PROTECT, related_name="reviews")
    decision = models.CharField(_("decision"), max_length=20, choices=Decision.choices)
    comment = models.TextField(_("comment"), blank=True)
    round = models.PositiveIntegerField(_("review round"))
    created_at = models.DateTimeField(_("time"), auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [models.UniqueConstraint(fields=["qa_pair", "reviewer", "round"], name="one_review_per_round")]
        indexes = [models.Index(fields=["reviewer", "created_at"])]
        verbose_name = _("review")
        verbose_name_plural = _("reviews")

    def __str__(self) -> str:
        return f"{self.reviewer} {self.decision} #{self.qa_pair_id}"


class Comment(models.Model):
    qa_pair = models.ForeignKey(QAPair, verbose_name=_("QA pair"), on_delete=models.CASCADE, related_name="comments")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("author"), on_delete=models.PROTECT, related_name="+")
    body = models.TextField(_("comment"))
    created_at = models.DateTimeField(_("time"), auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name = _("comment")
        verbose_name_plural = _("comments")

    def __str__(self) -> str:
        return f"{self.author}: {self.body[:40]}"


class DatasetVersion(models.Model):
    """An immutable, content-hashed snapshot of approved pairs, split train/validation/test."""

    name = models.CharField(_("name"), max_length=100, unique=True)
    description = models.TextField(_("description"), blank=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("frozen by"), on_delete=models.PROTECT, related_name="+")
    filters = models.JSONField(_("filters"), default=dict, blank=True)
    split_ratios = models.JSONField(_("split ratios"), default=list)
    seed = models.IntegerField(_("seed"), default=42)
    content_hash = models.CharField(_("content hash"), max_length=64, db_index=True)
    counts = models.JSONField(_("counts"), default=dict)
    synthetic_count = models.PositiveIntegerField(_("synthetic pairs"), default=0)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("dataset version")
        verbose_name_plural = _("dataset versions")

    def __str__(self) -> str:
        return self.name

    @property
    def total(self) -> int:
        return sum(self.counts.get(k, 0) for k in ("train", "validation", "test"))


class DatasetItem(models.Model):
    class Split(models.TextChoices):
        TRAIN = "train", _("train")
        VALIDATION = "validation", _("validation")
        TEST = "test", _("test")

    version = models.ForeignKey(DatasetVersion, verbose_name=_("dataset version"), on_delete=models.CASCADE, related_name="items")
    qa_pair = models.ForeignKey(QAPair, verbose_name=_("QA pair"), on_delete=models.PROTECT, related_name="dataset_items")
    split = models.CharField(_("split"), max_length=16, choices=Split.choices)
    position = models.PositiveIntegerField(_("position"))
    content = models.JSONField(_("frozen content"))

    class Meta:
        ordering = ["version", "split", "position"]
        constraints = [models.UniqueConstraint(fields=["version", "qa_pair"], name="pair_once_per_version")]
        indexes = [models.Index(fields=["version", "split", "position"])]
        verbose_name = _("dataset item")
        verbose_name_plural = _("dataset items")
from curation.models_rare import *  # noqa: E402,F401,F403
from curation.models_pref import *  # noqa: E402,F401,F403
from curation.models_literature import *  # noqa: E402,F401,F403
