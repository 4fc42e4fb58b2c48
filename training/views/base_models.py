"""Base-model pages: list, detail, register (admins).

Every role may read the registry; only admins register (the button is hidden for others and
the view answers 403).
"""

from __future__ import annotations

from django.contrib import messages
from django.shortcuts import redirect, render
from django.urls import path
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods

from medportal.errors import ApplicationError
from medportal.pagination import CappedPaginator
from medportal.roles import ADMIN, role_required
from training.forms import BaseModelRegisterForm
from training.selectors import base_model_get, base_model_list, job_list

PAGE_SIZE = 25
INFO_KEYS = ("model_type", "hidden_size", "num_layers", "num_attention_heads", "vocab_size", "context_length", "has_tokenizer")


@role_required()
@require_GET
def model_list_view(request):
    page = CappedPaginator(base_model_list(), PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "training/model_list.html", {"page": page, "models": page.object_list})


@role_required()
@require_GET
def model_detail_view(request, pk):
    model = base_model_get(pk=pk)
    info = model.info or {}
    return render(
        request,
        "training/model_detail.html",
        {
            "model": model,
            "info": [(key, info[key]) for key in INFO_KEYS if key in info],
            "files": info.get("files") or [],
            "jobs": job_list().filter(base_model=model)[:20],
            "merged": base_model_list().filter(source_job__base_model=model),
        },
    )


@role_required(ADMIN)
@require_http_methods(["GET", "POST"])
def model_create_view(request):
    from training.services.base_models import base_model_register

    form = BaseModelRegisterForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            model = base_model_register(actor=request.user, name=data["name"], path=data["path"], description=data["description"])
        except ApplicationError as exc:
            _errors_to_form(form, exc)
        else:
            messages.success(request, _("Registered base model “%(name)s”.") % {"name": model.name})
            return redirect("training:model-detail", pk=model.pk)
    return render(request, "training/model_form.html", {"form": form})


def _errors_to_form(form, exc: ApplicationError, *, default_field: str | None = None) -> None:
    """Put a service error on the fields its ``details`` name, else on ``default_field``."""
    details = exc.details if isinstance(exc.details, dict) else {}
    placed = False
    for key, message in details.items():
        if key in form.fields:
            form.add_error(key, str(message))
            placed = True
    if not placed:
        form.add_error(default_field if default_field in form.fields else None, exc.message)


urlpatterns = [
    path("models/", model_list_view, name="model-list"),
    path("models/new/", model_create_view, name="model-create"),
    path("models/<int:pk>/", model_detail_view, name="model-detail"),
]
