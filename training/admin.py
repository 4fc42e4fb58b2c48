"""Django admin for the training app: for looking things up.

Base models and jobs change through MedPortal's pages, API and commands (which inspect the
folder, validate the recipe, queue the task and write the audit log), so they are read-only
here, except a base model's description and "active" flag (retiring a model hides it from
the job form without touching its jobs).
"""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from training.models import BaseModel, FineTuneJob, FineTuneMetric


@admin.register(BaseModel)
class BaseModelAdmin(admin.ModelAdmin):
    list_display = ["name", "architecture", "num_parameters", "dtype", "has_chat_template", "is_active", "registered_by", "created_at"]
    list_filter = ["is_active", "architecture", "has_chat_template"]
    search_fields = ["name", "path", "description"]
    list_select_related = ["registered_by"]
    fields = [
        "name",
        "path",
        "description",
        "is_active",
        "architecture",
        "model_type",
        "num_parameters",
        "dtype",
        "has_chat_template",
        "vocab_size",
        "context_length",
        "info",
        "source_job",
        "registered_by",
        "created_at",
    ]
    readonly_fields = [f for f in fields if f not in ("description", "is_active")]

    def has_add_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class MetricInline(admin.TabularInline):
    model = FineTuneMetric
    fields = ["kind", "step", "epoch", "loss", "learning_rate", "tokens_per_second", "at"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    max_num = 0

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(FineTuneJob)
class FineTuneJobAdmin(admin.ModelAdmin):
    list_display = ["id", "base_model", "dataset_version", "status", "progress", "attempt", "worker", "created_by", "created_at"]
    list_filter = ["status", "on_worker_death", "preset", "created_at"]
    search_fields = ["=id", "base_model__name", "dataset_version__name", "worker", "error"]
    raw_id_fields = ["dataset_version", "base_model", "created_by"]
    list_select_related = ["base_model", "dataset_version", "created_by"]
    readonly_fields = ["open_in_app"]
    inlines = [MetricInline]
    date_hierarchy = "created_at"

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description=_("page"))
    def open_in_app(self, obj):
        if not obj.pk:
            return "—"
        return format_html('<a href="{}">{}</a>', reverse("training:job-detail", args=[obj.pk]), _("Open in MedPortal"))
