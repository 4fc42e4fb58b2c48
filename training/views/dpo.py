"""Start a DPO fine-tune (admins): preference version, starting point, evaluation data, β.

The job is a ``FineTuneJob`` of stage "dpo" (training.services.dpo); its page is the usual
job page (live figures, cancel, retry, merge, regression gate).
"""

from __future__ import annotations

from django import forms
from django.shortcuts import redirect, render
from django.urls import path
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_http_methods

from curation.models import DatasetVersion
from curation.models_pref import PreferenceVersion
from medportal.errors import ApplicationError
from medportal.roles import ADMIN, role_required
from training.engine.config import PRESET_LABELS, PRESETS
from training.models import BaseModel, FineTuneJob
from training.services.dpo import dpo_job_create


class DPOJobForm(forms.Form):
    preference_version = forms.ModelChoiceField(PreferenceVersion.objects.order_by("-created_at"), label=_("Preference version"))
    base_model = forms.ModelChoiceField(
        BaseModel.objects.filter(is_active=True).order_by("name"), required=False, label=_("Base model"), help_text=_("A fresh LoRA adapter; the reference is the base model.")
    )
    parent_job = forms.ModelChoiceField(
        FineTuneJob.objects.filter(status=FineTuneJob.Status.SUCCEEDED).exclude(adapter_path="").order_by("-id"),
        required=False,
        label=_("Starts from"),
        help_text=_("Or a succeeded fine-tune: its adapter is trained further and is the reference."),
    )
    dataset_version = forms.ModelChoiceField(
        DatasetVersion.objects.order_by("-created_at"), required=False, label=_("Dataset version"), help_text=_("Evaluation data (default: the parent's).")
    )
    beta = forms.FloatField(label="β", initial=0.1, min_value=0.001, max_value=10)
    preset = forms.ChoiceField(choices=[("", "—"), *[(k, PRESET_LABELS.get(k, k)) for k in PRESETS]], required=False, label=_("Preset"))
    max_steps = forms.IntegerField(required=False, min_value=1, label=_("Max steps"))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            field.widget.attrs.setdefault("class", "form-select" if isinstance(field.widget, forms.Select) else "form-control")


@role_required(ADMIN)
@require_http_methods(["GET", "POST"])
def dpo_job_create_view(request):
    initial = {"preference_version": request.GET.get("preference_version")}
    form = DPOJobForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            job = dpo_job_create(
                actor=request.user,
                preference_version=data["preference_version"],
                base_model=data["base_model"],
                parent_job=data["parent_job"],
                dataset_version=data["dataset_version"],
                preset=data["preset"],
                overrides={"max_steps": data["max_steps"]} if data["max_steps"] else None,
                beta=data["beta"],
            )
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            return redirect("training:job-detail", pk=job.pk)
    return render(request, "training/dpo_job_form.html", {"form": form}, status=400 if form.errors else 200)


urlpatterns = [path("jobs/new-dpo/", dpo_job_create_view, name="dpo-job-create")]
