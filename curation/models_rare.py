"""Rare-disease knowledge: HPO releases, phenotypes, diseases, their annotations, generation jobs.

Imported from the public HPO release files (hp.obo, phenotype.hpoa), the official Chinese
HPO labels, Chinese Orphanet names and China's first national rare disease list (CCRD, 121
diseases). ``curation.services.rare`` writes these tables; the Django-free engine in
``curation.rare`` reads them through ``rare_knowledge_base()``.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from medportal.jobs import BackgroundJob

__all__ = ["Disease", "DiseasePhenotype", "GenerationJob", "HpoRelease", "Phenotype"]


class HpoRelease(models.Model):
    """One imported HPO release: its version, the files it came from (name + sha256), counts."""

    version = models.CharField(_("HPO version"), max_length=64, unique=True)
    imported_at = models.DateTimeField(_("imported"))
    imported_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("imported by"), null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    files = models.JSONField(_("files"), default=list, blank=True, help_text=_('[{"kind", "name", "sha256", "bytes"}]'))
    counts = models.JSONField(_("counts"), default=dict, blank=True)
    remapped = models.JSONField(_("remapped obsolete ids"), default=list, blank=True)

    class Meta:
        ordering = ["-imported_at", "-id"]
        verbose_name = _("HPO release")
        verbose_name_plural = _("HPO releases")

    def __str__(self) -> str:
        return self.version


class Phenotype(models.Model):
    """An HPO term (also the inheritance, onset and frequency terms of the ontology)."""

    hpo_id = models.CharField(_("HPO id"), max_length=16, unique=True)
    name = models.CharField(_("name"), max_length=255)
    name_zh = models.CharField(_("Chinese name"), max_length=255, blank=True)
    definition = models.TextField(_("definition"), blank=True)
    synonyms = models.JSONField(_("synonyms"), default=list, blank=True)
    parents = models.JSONField(_("parents"), default=list, blank=True, help_text=_("HPO ids of the is_a parents."))
    alt_ids = models.JSONField(_("alternative ids"), default=list, blank=True)
    obsolete = models.BooleanField(_("obsolete"), default=False)
    replaced_by = models.CharField(_("replaced by"), max_length=16, blank=True)
    consider = models.JSONField(_("consider"), default=list, blank=True)

    class Meta:
        ordering = ["hpo_id"]
        verbose_name = _("phenotype")
        verbose_name_plural = _("phenotypes")

    def __str__(self) -> str:
        return f"{self.hpo_id} {self.name}"


class Disease(models.Model):
    class Source(models.TextChoices):
        ORPHA = "ORPHA", "Orphanet"
        OMIM = "OMIM", "OMIM"
        DECIPHER = "DECIPHER", "DECIPHER"
        CCRD = "CCRD", _("China rare disease list")

    code = models.CharField(_("disease id"), max_length=32, unique=True, help_text=_("ORPHA:558, OMIM:154700, CCRD:1 …"))
    source = models.CharField(_("source"), max_length=16, choices=Source.choices, db_index=True)
    name = models.CharField(_("name"), max_length=500, db_index=True)
    name_zh = models.CharField(_("Chinese name"), max_length=500, blank=True, db_index=True)
    synonyms = models.JSONField(_("synonyms"), default=list, blank=True)
    ccrd_ids = models.JSONField(_("CCRD ids"), default=list, blank=True, help_text=_("CCRD entries that map to this disease."))
    links = models.JSONField(
        _("mapped diseases"), default=list, blank=True, help_text=_('For CCRD entries: [{"id": "ORPHA:…", "relation": "E"|"BTNT"|"NTBT"}]')
    )

    class Meta:
        ordering = ["code"]
        verbose_name = _("rare disease")
        verbose_name_plural = _("rare diseases")

    def __str__(self) -> str:
        return f"{self.code} {self.name}"

    @property
    def ccrd_number(self) -> tuple:
        """Sort key for CCRD:82.1-style ids."""
        tail = self.code.partition(":")[2]
        return tuple(int(p) if p.isdigit() else 0 for p in tail.split("."))


class DiseasePhenotype(models.Model):
    """One annotation row: a disease has (or, negated, does not have) a phenotype."""

    disease = models.ForeignKey(Disease, verbose_name=_("disease"), on_delete=models.CASCADE, related_name="annotations")
    phenotype = models.ForeignKey(Phenotype, verbose_name=_("phenotype"), on_delete=models.CASCADE, related_name="annotations")
    original_hpo_id = models.CharField(
        _("HPO id as published"), max_length=16, blank=True, help_text=_("Set when an obsolete id was remapped.")
    )
    frequency_raw = models.CharField(_("frequency"), max_length=32, blank=True)
    probability = models.FloatField(_("probability"), null=True, blank=True)
    probability_low = models.FloatField(_("lowest probability"), null=True, blank=True)
    probability_high = models.FloatField(_("highest probability"), null=True, blank=True)
    onset = models.CharField(_("onset"), max_length=16, blank=True)
    sex = models.CharField(_("sex"), max_length=8, blank=True)
    modifier = models.CharField(_("modifier"), max_length=255, blank=True)
    negated = models.BooleanField(_("NOT"), default=False)
    evidence = models.CharField(_("evidence"), max_length=8, blank=True)
    reference = models.CharField(_("reference"), max_length=255, blank=True)
    aspect = models.CharField(_("aspect"), max_length=1, blank=True, help_text=_("P phenotype, I inheritance, C onset/course, M modifier"))

    class Meta:
        ordering = ["disease", "id"]
        indexes = [models.Index(fields=["disease", "aspect"], name="rare_annotation_disease")]
        verbose_name = _("disease phenotype")
        verbose_name_plural = _("disease phenotypes")

    def __str__(self) -> str:
        return f"{self.disease_id} {'NOT ' if self.negated else ''}{self.phenotype_id}"


class GenerationJob(BackgroundJob):
    """A background run of the rare-disease case generator (``medportal.jobs``, kind "rare_cases")."""

    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("started by"), on_delete=models.PROTECT, related_name="rare_generation_jobs"
    )
    params = models.JSONField(_("parameters"), default=dict)
    total = models.PositiveIntegerField(_("cases requested"), default=0)
    done = models.PositiveIntegerField(_("cases generated"), default=0)
    created_count = models.PositiveIntegerField(_("created"), default=0)
    duplicate_count = models.PositiveIntegerField(_("duplicates"), default=0)
    qa_pair_ids = models.JSONField(_("QA pairs"), default=list, blank=True)
    errors = models.JSONField(_("errors"), default=list, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("case generation job")
        verbose_name_plural = _("case generation jobs")

    def __str__(self) -> str:
        return f"#{self.pk} {self.status}"
