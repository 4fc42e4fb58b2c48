"""Django admin for literature: look-up only (the import and drafting services own these rows)."""

from __future__ import annotations

from django.contrib import admin

from curation.admin import ReadOnlyAdmin
from curation.models import Document, DraftRun, LiteratureImport


@admin.register(Document)
class DocumentAdmin(ReadOnlyAdmin):
    list_display = ["id", "pmid", "doi", "title", "journal", "year", "format"]
    list_filter = ["format", "year"]
    search_fields = ["=pmid", "=doi", "title"]
    exclude = ["search_text"]
    raw_id_fields = ["import_batch"]
    show_full_result_count = False


@admin.register(LiteratureImport)
class LiteratureImportAdmin(ReadOnlyAdmin):
    list_display = ["id", "filename", "format", "created_count", "duplicate_count", "skipped_count", "error_count", "created_by", "created_at"]
    list_filter = ["format"]
    list_select_related = ["created_by"]


@admin.register(DraftRun)
class DraftRunAdmin(ReadOnlyAdmin):
    list_display = ["id", "status", "model_label", "prompt_version", "total", "done", "created_count", "flagged_count", "created_by", "created_at"]
    list_filter = ["status", "prompt_version"]
    list_select_related = ["created_by"]
