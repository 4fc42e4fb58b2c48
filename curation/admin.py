"""Django admin for curation data.

The admin is for looking things up and for the few tables that have no page of their own
(departments and their reviewers, tags). Everything with a workflow, a history or a frozen
snapshot is read-only here: pairs change through the MedPortal pages and API, which keep the
version, the derived fields, the revisions and the audit log in step; revisions, reviews,
comments, imports and dataset versions are records of what happened.
"""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from curation.models import (
    Comment,
    DatasetItem,
    DatasetVersion,
    Department,
    ImportBatch,
    QAPair,
    QAPairRevision,
    Review,
    Tag,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    """View-only: no add, change or delete (superusers still see the change page read-only)."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Department)
class DepartmentAdmin(admin.ModelAdmin):
    list_display = ["name", "reviewer_count"]
    search_fields = ["name"]
    filter_horizontal = ["reviewers"]

    def get_queryset(self, request):
        from django.db.models import Count

        return super().get_queryset(request).annotate(_reviewers=Count("reviewers", distinct=True))

    @admin.display(description=_("reviewers"), ordering="_reviewers")
    def reviewer_count(self, obj):
        return obj._reviewers


@admin.register(Tag)
class TagAdmin(admin.ModelAdmin):
    list_display = ["name"]
    search_fields = ["name"]


@admin.register(ImportBatch)
class ImportBatchAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "filename",
        "format",
        "status",
        "created_by",
        "created_at",
        "created_count",
        "duplicate_count",
        "error_count",
    ]
    list_filter = ["status", "format", "created_at"]
    search_fields = ["filename", "source_path", "created_by__username"]
    raw_id_fields = ["created_by"]
    list_select_related = ["created_by"]
    date_hierarchy = "created_at"
    # Uploads are never served from MEDIA_URL: the file links to the access-checked download.
    exclude = ["file"]
    readonly_fields = ["uploaded_file"]

    @admin.display(description=_("file"))
    def uploaded_file(self, batch):
        if not batch.file:
            return "—"
        return format_html('<a href="{}">{}</a>', reverse("curation:import-file", args=[batch.pk]), batch.filename)


class RevisionInline(ReadOnlyInline):
    model = QAPairRevision
    fields = ["number", "created_at", "editor", "note"]
    readonly_fields = fields


class ReviewInline(ReadOnlyInline):
    model = Review
    fields = ["round", "reviewer", "decision", "comment", "created_at"]
    readonly_fields = fields


@admin.register(QAPair)
class QAPairAdmin(ReadOnlyAdmin):
    list_display = ["id", "short_instruction", "status", "department", "author", "has_identifiers", "synthetic", "updated_at"]
    list_filter = ["status", "department", "difficulty", "has_identifiers", "synthetic", "source"]
    search_fields = ["=id", "instruction", "output", "source", "source_ref", "author__username"]
    raw_id_fields = ["department", "author", "import_batch", "near_duplicate_of", "tags"]
    list_select_related = ["department", "author"]
    readonly_fields = ["open_in_app"]
    inlines = [ReviewInline, RevisionInline]
    date_hierarchy = "created_at"
    show_full_result_count = False

    @admin.display(description=_("question"))
    def short_instruction(self, obj):
        return obj.instruction[:80]

    @admin.display(description=_("page"))
    def open_in_app(self, obj):
        if not obj.pk:
            return "—"
        return format_html('<a href="{}">{}</a>', reverse("curation:pair-detail", args=[obj.pk]), _("Edit in MedPortal"))


@admin.register(QAPairRevision)
class QAPairRevisionAdmin(ReadOnlyAdmin):
    list_display = ["qa_pair", "number", "editor", "created_at", "note"]
    search_fields = ["=qa_pair__id", "note", "editor__username"]
    list_filter = ["created_at"]
    raw_id_fields = ["qa_pair", "editor"]
    list_select_related = ["qa_pair", "editor"]


@admin.register(Review)
class ReviewAdmin(ReadOnlyAdmin):
    list_display = ["qa_pair", "reviewer", "decision", "round", "created_at"]
    list_filter = ["decision", "round", "created_at"]
    search_fields = ["=qa_pair__id", "reviewer__username", "comment"]
    raw_id_fields = ["qa_pair", "reviewer"]
    list_select_related = ["qa_pair", "reviewer"]


@admin.register(Comment)
class CommentAdmin(ReadOnlyAdmin):
    list_display = ["qa_pair", "author", "short_body", "created_at"]
    list_filter = ["created_at"]
    search_fields = ["=qa_pair__id", "author__username", "body"]
    raw_id_fields = ["qa_pair", "author"]
    list_select_related = ["qa_pair", "author"]

    @admin.display(description=_("comment"))
    def short_body(self, obj):
        return obj.body[:80]


@admin.register(DatasetVersion)
class DatasetVersionAdmin(ReadOnlyAdmin):
    list_display = ["name", "created_by", "created_at", "content_hash", "synthetic_count"]
    list_filter = ["created_at"]
    search_fields = ["name", "description", "content_hash"]
    raw_id_fields = ["created_by"]
    list_select_related = ["created_by"]


@admin.register(DatasetItem)
class DatasetItemAdmin(ReadOnlyAdmin):
    list_display = ["version", "split", "position", "qa_pair"]
    list_filter = ["split", "version"]
    search_fields = ["=qa_pair__id", "version__name"]
    raw_id_fields = ["version", "qa_pair"]
    list_select_related = ["version", "qa_pair"]
    show_full_result_count = False
from curation import admin_rare  # noqa: E402,F401
from curation import admin_literature  # noqa: E402,F401
