"""Django admin for the training app: for looking things up.

Base models and jobs change through MedPortal's pages, API and commands (which inspect the
folder, validate the recipe, queue the task and write the audit log), so they are read-only
here, except a base model's description and "active" flag (retiring a model hides it from
the job form without touching its jobs) and where it runs (endpoint, remote name). "Add base
model" here registers a hosted model (no local weights) on an endpoint.

Serving endpoints are managed here (training.services.endpoints); the "check" action lists the
models each serves and its latency.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from medportal.errors import ApplicationError
from training.models import BaseModel, FineTuneJob, FineTuneMetric, InferenceEndpoint


class HostedModelForm(forms.ModelForm):
    class Meta:
        model = BaseModel
        fields = ["name", "endpoint", "remote_name", "description"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["endpoint"].required = True
        self.fields["endpoint"].queryset = InferenceEndpoint.objects.filter(kind=InferenceEndpoint.Kind.OPENAI)


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
    fields.insert(2, "endpoint")
    fields.insert(3, "remote_name")
    readonly_fields = [f for f in fields if f not in ("description", "is_active", "endpoint", "remote_name")]

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:  # adding: a hosted model (folders are registered through MedPortal's pages)
            kwargs["form"] = HostedModelForm
            kwargs["fields"] = HostedModelForm.Meta.fields
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request, obj=None):
        return HostedModelForm.Meta.fields if obj is None else self.fields

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.readonly_fields

    def save_model(self, request, obj, form, change):
        from training.services.endpoints import base_model_bind, hosted_model_register

        data = form.cleaned_data
        if not change:
            created = hosted_model_register(
                actor=request.user, name=data["name"], endpoint=data["endpoint"], remote_name=data.get("remote_name", ""), description=data.get("description", "")
            )
            obj.pk = created.pk
            return
        if {"endpoint", "remote_name"} & set(form.changed_data):
            base_model_bind(actor=request.user, base_model=obj, endpoint=data.get("endpoint"), remote_name=data.get("remote_name", ""))
        obj.save(update_fields=["description", "is_active"])

    def has_delete_permission(self, request, obj=None):
        return False


class EndpointForm(forms.ModelForm):
    class Meta:
        model = InferenceEndpoint
        fields = ["name", "kind", "base_url", "api_key_env", "external", "connect_timeout_s", "read_timeout_s", "max_concurrent", "is_active"]


@admin.register(InferenceEndpoint)
class InferenceEndpointAdmin(admin.ModelAdmin):
    form = EndpointForm
    list_display = ["name", "kind", "base_url", "api_key_env", "external", "max_concurrent", "is_active", "checked"]
    list_filter = ["kind", "external", "is_active"]
    search_fields = ["name", "base_url"]
    readonly_fields = ["last_check", "created_at", "updated_at"]
    actions = ["check_endpoints"]

    def save_model(self, request, obj, form, change):
        from training.services.endpoints import endpoint_save

        saved = endpoint_save(actor=request.user, endpoint=obj if change else None, **{k: form.cleaned_data[k] for k in EndpointForm.Meta.fields})
        obj.pk = saved.pk

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description=_("last check"))
    def checked(self, obj):
        check = obj.last_check or {}
        if not check:
            return "—"
        if check.get("ok"):
            return gettext("%(n)d model(s), %(ms)s ms") % {"n": len(check.get("models") or []), "ms": check.get("latency_ms")}
        return gettext("failed: %(error)s") % {"error": (check.get("error") or "")[:120]}

    @admin.action(description=_("Check: list the served models and time the answer"))
    def check_endpoints(self, request, queryset):
        from training.runnables import endpoint_check

        for endpoint in queryset:
            try:
                result = endpoint_check(endpoint)
            except ApplicationError as exc:  # never a 500 for a bad endpoint
                self.message_user(request, f"{endpoint.name}: {exc.message}", messages.ERROR)
                continue
            if result["ok"]:
                text = gettext("%(name)s answers in %(ms)s ms and serves: %(models)s") % {
                    "name": endpoint.name,
                    "ms": result["latency_ms"],
                    "models": ", ".join(result["models"]) or "—",
                }
                self.message_user(request, text, messages.SUCCESS)
            else:
                text = gettext("%(name)s: %(error)s") % {"name": endpoint.name, "error": result["error"]}
                self.message_user(request, text, messages.ERROR)


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
