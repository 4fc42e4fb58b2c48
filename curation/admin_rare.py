"""Django admin for the rare-disease knowledge: look-up only (the importer owns these tables)."""

from __future__ import annotations

from django.contrib import admin

from curation.admin import ReadOnlyAdmin
from curation.models import (
    Disease,
    DiseasePhenotype,
    GenerationJob,
    HpoRelease,
    Phenotype,
)


@admin.register(HpoRelease)
class HpoReleaseAdmin(ReadOnlyAdmin):
    list_display = ["version", "imported_at", "imported_by"]
    list_select_related = ["imported_by"]


@admin.register(Phenotype)
class PhenotypeAdmin(ReadOnlyAdmin):
    list_display = ["hpo_id", "name", "name_zh", "obsolete", "replaced_by"]
    list_filter = ["obsolete"]
    search_fields = ["=hpo_id", "name", "name_zh"]
    show_full_result_count = False


@admin.register(Disease)
class DiseaseAdmin(ReadOnlyAdmin):
    list_display = ["code", "source", "name", "name_zh"]
    list_filter = ["source"]
    search_fields = ["=code", "name", "name_zh"]
    show_full_result_count = False


@admin.register(DiseasePhenotype)
class DiseasePhenotypeAdmin(ReadOnlyAdmin):
    list_display = ["disease", "phenotype", "negated", "frequency_raw", "aspect", "evidence"]
    list_filter = ["aspect", "negated", "evidence"]
    search_fields = ["=disease__code", "=phenotype__hpo_id"]
    raw_id_fields = ["disease", "phenotype"]
    list_select_related = ["disease", "phenotype"]
    show_full_result_count = False


@admin.register(GenerationJob)
class GenerationJobAdmin(ReadOnlyAdmin):
    list_display = ["id", "status", "created_by", "created_at", "total", "created_count"]
    list_filter = ["status", "created_at"]
    raw_id_fields = ["created_by"]
    list_select_related = ["created_by"]
