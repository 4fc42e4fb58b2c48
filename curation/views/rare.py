"""Rare-disease pages: disease search, disease page, the CCRD catalogue, case generation.

Every role may read the knowledge pages; only curators and admins generate cases. Views are
thin: selectors read (``curation.selectors_rare``), services write (``curation.services.rare``).
"""

from __future__ import annotations

import re

from django import forms
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET, require_http_methods

from curation.models import Disease
from curation.selectors_rare import (
    FREQUENCY_CLASSES,
    access_disease,
    access_generation_job,
    ccrd_catalogue,
    disease_page,
    disease_search,
    generation_job_list,
    generation_job_progress,
    hpo_release_current,
)
from curation.services.rare import MAX_CASES, rare_cases_start
from medportal.errors import ApplicationError
from medportal.roles import CURATOR, has_role, role_required

PAGE_SIZE = 25
_ID_SPLIT = re.compile(r"[\s,;，；]+")


def _context(request, **extra) -> dict:
    return {"release": hpo_release_current(), "can_generate": has_role(request.user, CURATOR), **extra}


@role_required()
@require_GET
def rare_search(request):
    q = request.GET.get("q", "").strip()
    source = request.GET.get("source", "")
    if source not in Disease.Source.values:
        source = ""
    page = Paginator(disease_search(user=request.user, q=q, source=source), PAGE_SIZE).get_page(request.GET.get("page"))
    return render(
        request,
        "curation/rare_search.html",
        _context(request, page=page, q=q, source=source, sources=Disease.Source.choices),
    )


@role_required()
@require_GET
def rare_disease(request, code: str):
    disease = access_disease(user=request.user, code=code)
    return render(request, "curation/rare_disease.html", _context(request, view=disease_page(disease), disease=disease))


@role_required()
@require_GET
def rare_ccrd(request):
    q = request.GET.get("q", "").strip()
    return render(request, "curation/rare_ccrd.html", _context(request, diseases=ccrd_catalogue(user=request.user, q=q), q=q))


class GenerateForm(forms.Form):
    diseases = forms.CharField(
        label=gettext_lazy("Diseases"),
        widget=forms.Textarea(attrs={"rows": 3, "class": "form-control font-monospace"}),
        help_text=gettext_lazy("Disease ids separated by spaces or commas, e.g. ORPHA:558 CCRD:1."),
    )
    count = forms.IntegerField(
        label=gettext_lazy("Cases per disease"),
        min_value=1,
        max_value=MAX_CASES,
        initial=5,
        widget=forms.NumberInput(attrs={"class": "form-control"}),
    )
    lang = forms.ChoiceField(
        label=gettext_lazy("Language"),
        choices=[("zh", gettext_lazy("Chinese")), ("en", gettext_lazy("English"))],
        initial="zh",
        widget=forms.Select(attrs={"class": "form-select"}),
    )
    task = forms.ChoiceField(
        label=gettext_lazy("Task"),
        choices=[
            ("diagnosis", gettext_lazy("Most likely diagnosis")),
            ("next_test", gettext_lazy("Next test")),
            ("differential", gettext_lazy("Differential diagnosis")),
        ],
        initial="diagnosis",
        widget=forms.Select(attrs={"class": "form-select"}),
    )
    seed = forms.IntegerField(
        label=gettext_lazy("Seed"),
        initial=0,
        help_text=gettext_lazy("The same seed and parameters give the same cases."),
        widget=forms.NumberInput(attrs={"class": "form-control"}),
    )

    rewrite = forms.BooleanField(
        label=gettext_lazy("Rewrite each vignette with the model"),
        required=False,
        help_text=gettext_lazy("Paraphrased by the configured inference model; the original text is kept and the pair is marked as rewritten."),
        widget=forms.CheckboxInput(attrs={"class": "form-check-input"}),
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from curation.services.rare_rewrite import rewrite_available

        if not rewrite_available():
            del self.fields["rewrite"]

    def disease_ids(self) -> list[str]:
        return [p for p in _ID_SPLIT.split(self.cleaned_data.get("diseases") or "") if p]


@role_required(CURATOR)
@require_http_methods(["GET", "POST"])
def rare_generate(request):
    if request.method == "POST":
        form = GenerateForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                job = rare_cases_start(
                    user=request.user,
                    disease_ids=form.disease_ids(),
                    count=data["count"],
                    lang=data["lang"],
                    task=data["task"],
                    seed=data["seed"],
                    rewrite=bool(data.get("rewrite")),
                )
            except ApplicationError as exc:
                form.add_error(None, exc.message)
            else:
                messages.info(request, _("The generation was queued; this page shows its progress."))
                return redirect("curation:rare-job", pk=job.pk)
    else:
        picked = [d for d in request.GET.getlist("disease") if d.strip()]
        form = GenerateForm(initial={"diseases": " ".join(picked)} if picked else None)
    jobs = generation_job_list(user=request.user)[:10]
    return render(request, "curation/rare_generate.html", _context(request, form=form, jobs=jobs))


@role_required(CURATOR)
@require_GET
def rare_job(request, pk: int):
    job = access_generation_job(user=request.user, pk=pk)
    return render(
        request,
        "curation/rare_job.html",
        _context(
            request,
            job=job,
            progress_url=reverse("curation:rare-job-progress", args=[job.pk]),
            running=job.is_active,
        ),
    )


@role_required(CURATOR)
@require_GET
def rare_job_progress(request, pk: int):
    return JsonResponse(generation_job_progress(access_generation_job(user=request.user, pk=pk)))


urlpatterns = [
    path("rare/", rare_search, name="rare-search"),
    path("rare/diseases/<str:code>/", rare_disease, name="rare-disease"),
    path("rare/ccrd/", rare_ccrd, name="rare-ccrd"),
    path("rare/generate/", rare_generate, name="rare-generate"),
    path("rare/jobs/<int:pk>/", rare_job, name="rare-job"),
    path("rare/jobs/<int:pk>/progress/", rare_job_progress, name="rare-job-progress"),
]

__all__ = ["FREQUENCY_CLASSES", "urlpatterns"]
