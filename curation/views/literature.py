"""Literature pages: documents (list with search, document page), imports (upload, report).

Every role reads documents; curators and admins import them. Views are thin: selectors read
(``curation.selectors_literature``), services write (``curation.services.literature``).
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from curation.literature.drafting import QUESTION_TYPES
from curation.literature.parsers import MAX_BYTES
from curation.models import Document
from curation.selectors_literature import (
    access_document,
    access_draft_run,
    access_literature_import,
    document_candidates,
    document_list,
    document_sections,
    documents_by_ids,
    draft_run_list,
    draft_run_progress,
    literature_import_list,
)
from curation.services.literature import documents_import
from curation.services.literature_drafting import MAX_PER_DOCUMENT, draft_model_choices, draft_run_cancel, draft_run_start
from medportal.errors import ApplicationError
from medportal.roles import CURATOR, has_role, role_required

PAGE_SIZE = 25
ISSUES_PER_PAGE = 100


class DocumentImportForm(forms.Form):
    file = forms.FileField(label=gettext_lazy("File"), widget=forms.ClearableFileInput(attrs={"class": "form-control"}))
    format = forms.ChoiceField(
        label=gettext_lazy("Format"),
        required=False,
        choices=[("", gettext_lazy("Detect automatically")), *Document.Format.choices],
        widget=forms.Select(attrs={"class": "form-select"}),
    )

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > MAX_BYTES:
            raise forms.ValidationError(gettext_lazy("The file is larger than %(mb)d MB.") % {"mb": MAX_BYTES // (1024 * 1024)})
        return upload


def _draft_url(request) -> str:
    return reverse("curation:literature-draft") if has_role(request.user, CURATOR) else ""


@role_required()
@require_GET
def document_list_view(request):
    q = request.GET.get("q", "").strip()[:500]
    year = request.GET.get("year", "").strip()
    year_value = int(year) if year.isdigit() and len(year) == 4 else None
    page = Paginator(document_list(user=request.user, q=q, year=year_value), PAGE_SIZE).get_page(request.GET.get("page"))
    return render(
        request,
        "curation/literature/document_list.html",
        {"page": page, "q": q, "year": year_value or "", "can_import": has_role(request.user, CURATOR), "draft_url": _draft_url(request)},
    )


@role_required()
@require_GET
def document_detail(request, pk: int):
    document = access_document(user=request.user, pk=pk)
    return render(
        request,
        "curation/literature/document_detail.html",
        {"document": document, "sections": document_sections(document), "draft_url": _draft_url(request), "candidates": document_candidates(document)},
    )


@role_required(CURATOR)
@require_http_methods(["GET", "POST"])
def document_import(request):
    if request.method == "POST":
        form = DocumentImportForm(request.POST, request.FILES)
        if form.is_valid():
            upload = form.cleaned_data["file"]
            try:
                batch = documents_import(user=request.user, name=upload.name, data=upload.read(), format=form.cleaned_data["format"] or None)
            except ApplicationError as exc:
                form.add_error(None, exc.message)
            else:
                return redirect("curation:literature-import", pk=batch.pk)
    else:
        form = DocumentImportForm()
    imports = literature_import_list(user=request.user)[:10]
    return render(request, "curation/literature/import_form.html", {"form": form, "imports": imports})


@role_required(CURATOR)
@require_GET
def import_detail(request, pk: int):
    batch = access_literature_import(user=request.user, pk=pk)
    kind = request.GET.get("kind", "")
    issues = [i for i in batch.issues if not kind or i.get("kind") == kind]
    page = Paginator(issues, ISSUES_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "curation/literature/import_detail.html", {"batch": batch, "page": page, "kind": kind})


QUESTION_TYPE_LABELS = {
    "fact": gettext_lazy("Fact"),
    "mechanism": gettext_lazy("Mechanism"),
    "treatment": gettext_lazy("Treatment"),
    "scenario": gettext_lazy("Clinical scenario"),
}


class DraftForm(forms.Form):
    documents = forms.CharField(required=False, widget=forms.HiddenInput)
    model = forms.ChoiceField(label=gettext_lazy("Model"), widget=forms.Select(attrs={"class": "form-select"}))
    per_document = forms.IntegerField(
        label=gettext_lazy("Candidates per document"),
        min_value=1,
        max_value=MAX_PER_DOCUMENT,
        initial=2,
        widget=forms.NumberInput(attrs={"class": "form-control"}),
    )
    types = forms.MultipleChoiceField(
        label=gettext_lazy("Question types"),
        choices=[(t, QUESTION_TYPE_LABELS[t]) for t in QUESTION_TYPES],
        initial=list(QUESTION_TYPES),
        widget=forms.CheckboxSelectMultiple,
    )
    lang = forms.ChoiceField(
        label=gettext_lazy("Answer language"),
        choices=[("zh", gettext_lazy("Chinese")), ("en", gettext_lazy("English"))],
        initial="zh",
        widget=forms.Select(attrs={"class": "form-select"}),
    )
    seed = forms.IntegerField(
        label=gettext_lazy("Seed"), initial=0, min_value=0, max_value=2**31 - 1, widget=forms.NumberInput(attrs={"class": "form-control"})
    )

    def __init__(self, *args, model_choices=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["model"].choices = list(model_choices)

    def document_ids(self) -> list[int]:
        return [int(p) for p in (self.cleaned_data.get("documents") or "").split(",") if p.strip().isdigit()]


@role_required(CURATOR)
@require_http_methods(["GET", "POST"])
def draft_create(request):
    choices = draft_model_choices()
    if request.method == "POST":
        form = DraftForm(request.POST, model_choices=choices)
        ids = [p for p in request.POST.get("documents", "").split(",") if p.strip()]
        if form.is_valid():
            data = form.cleaned_data
            try:
                run = draft_run_start(
                    user=request.user,
                    document_ids=form.document_ids(),
                    model_key=data["model"],
                    per_document=data["per_document"],
                    types=data["types"],
                    lang=data["lang"],
                    seed=data["seed"],
                )
            except ApplicationError as exc:
                form.add_error(None, exc.message)
            else:
                messages.info(request, _("The drafting run was queued; this page shows its progress."))
                return redirect("curation:literature-run", pk=run.pk)
    else:
        ids = request.GET.getlist("document")
        form = DraftForm(initial={"documents": ",".join(i for i in ids if i.strip().isdigit())}, model_choices=choices)
    documents = documents_by_ids(user=request.user, ids=ids)
    return render(
        request,
        "curation/literature/draft_form.html",
        {"form": form, "documents": documents, "runs": draft_run_list(user=request.user)[:10], "has_models": bool(choices)},
    )


@role_required(CURATOR)
@require_GET
def draft_run_detail(request, pk: int):
    run = access_draft_run(user=request.user, pk=pk)
    return render(
        request,
        "curation/literature/draft_run.html",
        {
            "run": run,
            "progress_url": reverse("curation:literature-run-progress", args=[run.pk]),
            "running": run.is_active,
            "type_labels": [QUESTION_TYPE_LABELS.get(t, t) for t in run.params.get("types", [])],
        },
    )


@role_required(CURATOR)
@require_GET
def draft_run_progress_view(request, pk: int):
    return JsonResponse(draft_run_progress(access_draft_run(user=request.user, pk=pk)))


@role_required(CURATOR)
@require_POST
def draft_run_cancel_view(request, pk: int):
    run = access_draft_run(user=request.user, pk=pk)
    try:
        draft_run_cancel(user=request.user, run=run)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.info(request, _("Cancel requested: the run stops after the candidate it is drafting."))
    return redirect("curation:literature-run", pk=run.pk)


urlpatterns = [
    path("literature/draft/", draft_create, name="literature-draft"),
    path("literature/runs/<int:pk>/", draft_run_detail, name="literature-run"),
    path("literature/runs/<int:pk>/progress/", draft_run_progress_view, name="literature-run-progress"),
    path("literature/runs/<int:pk>/cancel/", draft_run_cancel_view, name="literature-run-cancel"),
    path("literature/", document_list_view, name="literature-documents"),
    path("literature/documents/<int:pk>/", document_detail, name="literature-document"),
    path("literature/import/", document_import, name="literature-import-create"),
    path("literature/imports/<int:pk>/", import_detail, name="literature-import"),
]
