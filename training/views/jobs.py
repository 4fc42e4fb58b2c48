"""Fine-tune job pages: list, create form (with a live estimate), the live job page, actions.

Every role may watch jobs; only admins create, cancel, retry, merge and download adapters
(the controls are hidden for others and the views answer 403). The job page renders the
current state on the server (it works without JavaScript and after a reload); the script then
follows the job over the WebSocket of ``training.consumers``.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import FileResponse
from django.shortcuts import redirect, render
from django.urls import path
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from medportal.errors import ApplicationError, NotAllowed
from medportal.pagination import CappedPaginator
from medportal.params import prefill_id
from medportal.roles import ADMIN, is_admin, role_required
from training.engine.config import PRESETS
from training.forms import (
    CONFIG_LABELS,
    FineTuneJobForm,
    all_preset_values,
    config_field_names,
    preset_label,
    preset_values,
)
from training.models import FineTuneJob
from training.selectors import (
    dataset_avg_tokens,
    finetune_estimate,
    job_get,
    job_list,
    job_snapshot,
)
from training.views.base_models import _errors_to_form

PAGE_SIZE = 25


# ---- list ----------------------------------------------------------------------------------


@role_required()
@require_GET
def job_list_view(request):
    status = request.GET.get("status") or None
    if status not in FineTuneJob.Status.values:
        status = None
    page = CappedPaginator(job_list(status=status), PAGE_SIZE).get_page(request.GET.get("page"))
    jobs = list(page.object_list)
    for job in jobs:
        job.preset_label = preset_label(job.preset)
    return render(
        request,
        "training/job_list.html",
        {
            "page": page,
            "jobs": jobs,
            "status": status,
            "statuses": FineTuneJob.Status.choices,
            "any_active": any(j.is_active for j in jobs),
        },
    )


# ---- create --------------------------------------------------------------------------------


def _form_initial(request) -> dict:
    initial = {}
    for key in ("dataset_version", "base_model"):
        value = prefill_id(request.GET, key)  # preselects only: not an id is ignored
        if value:
            initial[key] = value
    if request.GET.get("preset") in PRESETS:
        preset = request.GET["preset"]
        initial.update(preset=preset, config_preset=preset, **preset_values(preset))
    return initial


@role_required(ADMIN)
@require_http_methods(["GET", "POST"])
def job_create_view(request):
    from training.services.jobs import finetune_job_create

    form = FineTuneJobForm(request.POST or None, initial=_form_initial(request))
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            job = finetune_job_create(
                actor=request.user,
                dataset_version=data["dataset_version"],
                base_model=data["base_model"],
                preset=data["preset"],
                overrides=form.overrides,
                on_worker_death=data.get("on_worker_death") or None,
                evaluate_after=bool(data.get("evaluate_after")),
            )
        except NotAllowed:
            raise PermissionDenied from None
        except ApplicationError as exc:
            _errors_to_form(form, exc)
        else:
            messages.success(request, _("Fine-tune job #%(id)s was queued.") % {"id": job.pk})
            return redirect("training:job-detail", pk=job.pk)
    return render(
        request,
        "training/job_form.html",
        {
            "form": form,
            "estimate": _estimate(form),
            "preset_values": all_preset_values(),
            "open_advanced": request.method == "POST" and form.config_field_errors(),
        },
    )


def _estimate(form: FineTuneJobForm) -> dict | None:
    """The engine's estimate for the form's values (None while the form has errors)."""
    if not form.is_bound:
        # First render: estimate the initial values.
        form = FineTuneJobForm(_as_post({name: form[name].value() for name in form.fields}))
    if not form.is_valid() or form.config is None:
        return None
    version, model = form.cleaned_data["dataset_version"], form.cleaned_data["base_model"]
    info = model.info or {}
    if not (model.num_parameters and info.get("hidden_size") and info.get("num_layers")):
        return {"unknown_model": True, "model": model}
    result = finetune_estimate(config=form.config, base_model=model, dataset_version=version)
    avg = dataset_avg_tokens(dataset_version=version, base_model=model)
    return {**result, "avg_tokens": avg, "requires_gpu": form.config.requires_gpu, "model": model, "version": version}


def _as_post(data: dict) -> dict:
    """Initial values as a browser would post them (checkboxes: present or absent)."""
    out = {}
    for key, value in data.items():
        if value is None or value is False:
            continue
        out[key] = "on" if value is True else getattr(value, "pk", value)
    return out


@role_required(ADMIN)
@require_GET
def job_estimate_view(request):
    """htmx fragment: the estimate for the create form's current values."""
    return render(request, "training/_job_estimate.html", {"estimate": _estimate(FineTuneJobForm(request.GET))})


# ---- the live job page -------------------------------------------------------------------


def _config_rows(job: FineTuneJob) -> list[dict]:
    preset = preset_values(job.preset) if job.preset in PRESETS else {}
    config = job.config or {}
    names = [n for n in config_field_names() if n in config] + [n for n in config if n not in config_field_names()]
    return [
        {
            "name": name,
            "label": CONFIG_LABELS.get(name, name),
            "value": config[name],
            "overridden": bool(preset) and name in preset and preset[name] != config[name],
            "preset_value": preset.get(name),
        }
        for name in names
    ]


def _live_labels() -> dict:
    """The strings the page's script shows, in the page's language."""
    return {
        "status": {value: str(label) for value, label in FineTuneJob.Status.choices},
        "train_loss": _("train loss"),
        "eval_loss": _("eval loss"),
        "learning_rate": _("learning rate"),
        "loss": _("loss"),
        "step": _("step"),
        "states": {
            "static": _("not live"),
            "connecting": _("connecting…"),
            "live": _("live"),
            "reconnecting": _("reconnecting…"),
            "offline": _("not live"),
            "refused": _("live updates refused"),
        },
        # The same strings as the ``duration`` template filter.
        "duration": {"s": _("%(s)d s"), "m": _("%(m)d min %(s)02d s"), "h": _("%(h)d h %(m)02d min"), "d": _("%(d)d d %(h)d h")},
    }


def _render_job_detail(request, job: FineTuneJob, *, merge_name: str | None = None, merge_error: str = "", status: int = 200):
    snapshot = job_snapshot(job)
    return render(
        request,
        "training/job_detail.html",
        {
            "job": job,
            "snap": snapshot,
            "config_rows": _config_rows(job),
            "preset_label": preset_label(job.preset),
            "live_labels": _live_labels(),
            "ws_path": f"/ws/training/jobs/{job.pk}/",
            "merge_name": merge_name if merge_name is not None else f"{job.base_model.name}-job{job.pk}"[:100],
            "merge_error": merge_error,
            "can_download": is_admin(request.user),
            **_merges_context(job),
        },
        status=status,
    )


def _merges_context(job: FineTuneJob) -> dict:
    merges = list(job.merges.select_related("base_model").order_by("-created_at", "-id"))
    return {"merges": merges, "merges_active": any(m.is_active for m in merges)}


@role_required()
@require_GET
def job_detail_view(request, pk):
    return _render_job_detail(request, job_get(pk=pk))


@role_required()
@require_GET
def job_merges_view(request, pk):
    """The merges of a job (status, progress, error), polled by the job page while one is active."""
    job = job_get(pk=pk)
    return render(request, "training/_job_merges.html", {"job": job, **_merges_context(job)})


def _act(request, pk, action, success: str):
    job = job_get(pk=pk)
    try:
        result = action(job)
    except NotAllowed:
        raise PermissionDenied from None
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return None, job
    messages.success(request, success % {"id": job.pk})
    return result, job


@role_required(ADMIN)
@require_POST
def job_cancel_view(request, pk):
    from training.services.jobs import finetune_job_cancel

    _act(request, pk, lambda job: finetune_job_cancel(actor=request.user, job=job), _("Cancellation of job #%(id)s was requested."))
    return redirect("training:job-detail", pk=pk)


@role_required(ADMIN)
@require_POST
def job_retry_view(request, pk):
    from training.services.jobs import finetune_job_retry

    resume = request.POST.get("resume", "1") != "0"
    done = (
        _("Job #%(id)s was queued again; it resumes from its last checkpoint if it has one.")
        if resume
        else _("Job #%(id)s was queued again from scratch.")
    )
    _act(request, pk, lambda job: finetune_job_retry(actor=request.user, job=job, resume=resume), done)
    return redirect("training:job-detail", pk=pk)


@role_required(ADMIN)
@require_POST
def job_merge_view(request, pk):
    from training.services.jobs import finetune_job_merge

    name = request.POST.get("name", "").strip()
    job = job_get(pk=pk)
    try:
        finetune_job_merge(actor=request.user, job=job, name=name)
    except NotAllowed:
        raise PermissionDenied from None
    except ApplicationError as exc:
        if job.status != FineTuneJob.Status.SUCCEEDED:  # no merge form on the page: the page's message area
            messages.error(request, exc.message)
            return redirect("training:job-detail", pk=pk)
        # Under the name field of the merge form, with the name as typed (not in the page's message
        # area, far above the form).
        return _render_job_detail(request, job_get(pk=pk), merge_name=name, merge_error=exc.message, status=400)
    messages.success(request, _("The merge of job #%(id)s was queued; this page shows its progress.") % {"id": job.pk})
    return redirect("training:job-detail", pk=pk)



@role_required(ADMIN)
@require_GET
def job_adapter_view(request, pk):
    """The adapter folder and training log as a .zip (admins: adapters are model weights)."""
    from training.services.jobs import finetune_job_adapter_archive

    job = job_get(pk=pk)
    try:
        archive, filename = finetune_job_adapter_archive(actor=request.user, job=job)
    except NotAllowed:
        raise PermissionDenied from None
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("training:job-detail", pk=pk)
    return FileResponse(archive.open("rb"), as_attachment=True, filename=filename, content_type="application/zip")


urlpatterns = [
    path("jobs/", job_list_view, name="job-list"),
    path("jobs/new/", job_create_view, name="job-create"),
    path("jobs/new/estimate/", job_estimate_view, name="job-estimate"),
    path("jobs/<int:pk>/", job_detail_view, name="job-detail"),
    path("jobs/<int:pk>/cancel/", job_cancel_view, name="job-cancel"),
    path("jobs/<int:pk>/retry/", job_retry_view, name="job-retry"),
    path("jobs/<int:pk>/merge/", job_merge_view, name="job-merge"),
    path("jobs/<int:pk>/merges/", job_merges_view, name="job-merges"),
    path("jobs/<int:pk>/adapter.zip", job_adapter_view, name="job-adapter"),
]
