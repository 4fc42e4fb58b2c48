"""Literature: imported documents (PubMed abstracts and others), the imports that brought them.

A ``Document`` keeps the abstract's sections as published (``sections``) and the numbered
sentences they were split into at import (``sentences``): drafted candidates cite those numbers.
Documents are unique by PMID and by DOI (each when present). ``curation.services.literature``
writes them; docs/literature.md.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from medportal.jobs import BackgroundJob

__all__ = ["Document", "DraftRun", "LiteratureImport"]


class LiteratureImport(models.Model):
    """One literature file (or E-utilities fetch) and its row report."""

    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("imported by"), on_delete=models.PROTECT, related_name="literature_imports"
    )
    filename = models.CharField(_("file name"), max_length=255)
    format = models.CharField(_("format"), max_length=32, blank=True)
    query = models.CharField(_("PubMed query"), max_length=1000, blank=True, help_text=_("Set for documents fetched with fetch_pubmed."))
    rows_total = models.PositiveIntegerField(_("rows in file"), default=0)
    created_count = models.PositiveIntegerField(_("created"), default=0)
    duplicate_count = models.PositiveIntegerField(_("duplicates"), default=0)
    skipped_count = models.PositiveIntegerField(_("skipped"), default=0)
    error_count = models.PositiveIntegerField(_("row errors"), default=0)
    issues = models.JSONField(_("row report"), default=list, blank=True, help_text=_('[{"row", "kind", "ref", "message"}]'))
    error = models.TextField(_("file-level error"), blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("literature import")
        verbose_name_plural = _("literature imports")

    def __str__(self) -> str:
        return f"#{self.pk} {self.filename}"

    @property
    def failed(self) -> bool:
        return bool(self.error)


class Document(models.Model):
    class Format(models.TextChoices):
        PUBMED_XML = "pubmed_xml", _("PubMed XML")
        MEDLINE = "medline", _("MEDLINE text")
        PUBMEDQA = "pubmedqa", _("PubMedQA JSON")
        TEXT = "text", _("Plain text / Markdown")

    pmid = models.CharField(_("PMID"), max_length=12, blank=True)
    doi = models.CharField(_("DOI"), max_length=255, blank=True)
    title = models.TextField(_("title"))
    abstract = models.TextField(_("abstract"))
    sections = models.JSONField(_("abstract sections"), default=list, blank=True, help_text=_('[{"label": "BACKGROUND", "text": …}]'))
    sentences = models.JSONField(_("sentences"), default=list, blank=True, help_text=_('[{"n": 1, "section": 0, "text": …}]'))
    mesh_terms = models.JSONField(_("MeSH terms"), default=list, blank=True)
    journal = models.CharField(_("journal"), max_length=500, blank=True)
    year = models.PositiveSmallIntegerField(_("year"), null=True, blank=True)
    language = models.CharField(_("language"), max_length=8, blank=True)
    format = models.CharField(_("format"), max_length=16, choices=Format.choices)
    source_file = models.CharField(_("source file"), max_length=255, blank=True)
    source_row = models.PositiveIntegerField(_("source row"), null=True, blank=True)
    import_batch = models.ForeignKey(
        LiteratureImport, verbose_name=_("import"), null=True, blank=True, on_delete=models.SET_NULL, related_name="documents"
    )
    extra = models.JSONField(_("extra fields"), default=dict, blank=True)
    search_text = models.TextField(_("search tokens"), blank=True, editable=False)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        verbose_name = _("document")
        verbose_name_plural = _("documents")
        constraints = [
            models.UniqueConstraint(fields=["pmid"], condition=~Q(pmid=""), name="document_unique_pmid"),
            models.UniqueConstraint(fields=["doi"], condition=~Q(doi=""), name="document_unique_doi"),
        ]
        indexes = [models.Index(fields=["year", "-id"], name="document_year")]

    def __str__(self) -> str:
        ref = f"PMID {self.pmid}" if self.pmid else (f"DOI {self.doi}" if self.doi else f"#{self.pk}")
        return f"{ref} {self.title[:60]}"

    @property
    def reference(self) -> str:
        return f"PMID {self.pmid}" if self.pmid else (f"DOI {self.doi}" if self.doi else f"#{self.pk}")


class DraftRun(BackgroundJob):
    """A background run in which a model drafts QA candidates from chosen documents
    (``medportal.jobs``, kind "literature_draft"). The prompt it used is stored with it."""

    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("started by"), on_delete=models.PROTECT, related_name="literature_draft_runs"
    )
    model_key = models.CharField(_("model"), max_length=100, help_text=_("The runnable model: base model id, or base:job."))
    model_label = models.CharField(_("model name"), max_length=300, blank=True)
    document_ids = models.JSONField(_("documents"), default=list)
    params = models.JSONField(_("parameters"), default=dict, help_text=_("per_document, types, lang, max_new_tokens, temperature, seed"))
    prompt_version = models.CharField(_("prompt version"), max_length=64)
    prompt = models.JSONField(_("prompt"), default=dict, help_text=_("The prompt templates as used by this run."))
    total = models.PositiveIntegerField(_("candidates requested"), default=0)
    done = models.PositiveIntegerField(_("candidates drafted"), default=0)
    created_count = models.PositiveIntegerField(_("created"), default=0)
    flagged_count = models.PositiveIntegerField(_("flagged by the grounding check"), default=0)
    duplicate_count = models.PositiveIntegerField(_("duplicates"), default=0)
    qa_pair_ids = models.JSONField(_("QA pairs"), default=list, blank=True)
    errors = models.JSONField(_("errors"), default=list, blank=True, help_text=_('[{"document": id, "message": …}]'))

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("drafting run")
        verbose_name_plural = _("drafting runs")

    def __str__(self) -> str:
        return f"#{self.pk} {self.status}"
