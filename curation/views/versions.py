"""Dataset-version pages: list, freeze form (with a live count), detail, zip downloads.

Every role may list, read and download versions; only curators and admins freeze them.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import FileResponse, Http404
from django.shortcuts import redirect, render
from django.urls import path
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext
from django.views.decorators.http import require_GET, require_http_methods

from curation.exports import EXPORTERS, LABELS
from curation.models import Department, Tag
from curation.selectors_versions import (
    SPLITS,
    access_version,
    approved_pairs,
    version_department_counts,
    version_list,
    version_preview,
)
from curation.services.versions import (
    DEFAULT_SPLIT,
    dataset_version_export_zip,
    dataset_version_freeze,
)
from medportal.errors import ApplicationError
from medportal.params import parse_id
from medportal.roles import CURATOR, role_required

PAGE_SIZE = 25


class VersionFilterForm(forms.Form):
    departments = forms.ModelMultipleChoiceField(
        queryset=Department.objects.order_by("name"),
        to_field_name="name",
        required=False,
        label=gettext_lazy("Departments"),
        help_text=gettext_lazy("None selected: every department."),
        widget=forms.SelectMultiple(attrs={"class": "form-select", "size": 6}),
    )
    tags = forms.ModelMultipleChoiceField(
        queryset=Tag.objects.order_by("name"),
        to_field_name="name",
        required=False,
        label=gettext_lazy("Tags"),
        help_text=gettext_lazy("Pairs with any of the selected tags; none selected: no tag filter."),
        widget=forms.SelectMultiple(attrs={"class": "form-select", "size": 6}),
    )
    synthetic = forms.ChoiceField(
        choices=[
            ("", gettext_lazy("Real and synthetic")),
            ("no", gettext_lazy("Real pairs only")),
            ("yes", gettext_lazy("Synthetic pairs only")),
        ],
        required=False,
        label=gettext_lazy("Synthetic pairs"),
        widget=forms.Select(attrs={"class": "form-select"}),
    )
    source = forms.CharField(
        max_length=255,
        required=False,
        label=gettext_lazy("Source"),
        help_text=gettext_lazy("Exact source name; empty: every source."),
        widget=forms.TextInput(attrs={"class": "form-control"}),
    )

    def selection(self) -> dict:
        data = self.cleaned_data
        return {
            "departments": [d.name for d in data.get("departments") or ()],
            "tags": [t.name for t in data.get("tags") or ()],
            "filters": {"synthetic": data.get("synthetic") or None, "source": data.get("source") or ""},
        }


def _ratio_field(label, initial):
    return forms.FloatField(
        label=label,
        initial=initial,
        min_value=0,
        max_value=1,
        widget=forms.NumberInput(attrs={"class": "form-control", "step": "0.01", "min": "0", "max": "1"}),
    )


class VersionForm(VersionFilterForm):
    name = forms.CharField(
        max_length=100,
        label=gettext_lazy("Name"),
        widget=forms.TextInput(attrs={"class": "form-control", "autofocus": True}),
    )
    description = forms.CharField(
        required=False,
        label=gettext_lazy("Description"),
        widget=forms.Textarea(attrs={"class": "form-control", "rows": 2}),
    )
    train = _ratio_field(gettext_lazy("Train"), DEFAULT_SPLIT[0])
    validation = _ratio_field(gettext_lazy("Validation"), DEFAULT_SPLIT[1])
    test = _ratio_field(gettext_lazy("Test"), DEFAULT_SPLIT[2])
    seed = forms.IntegerField(
        label=gettext_lazy("Seed"), initial=42, widget=forms.NumberInput(attrs={"class": "form-control"})
    )

    field_order = [
        "name",
        "description",
        "departments",
        "tags",
        "synthetic",
        "source",
        "train",
        "validation",
        "test",
        "seed",
    ]


def _matching_count(form: VersionFilterForm) -> tuple[int, int, int] | None:
    """(approved pairs, synthetic ones, ones with unmasked identifiers) the filters select."""
    if not form.is_valid():
        return None
    chosen = form.selection()
    synthetic = chosen["filters"]["synthetic"]
    qs = approved_pairs(
        departments=chosen["departments"],
        tags=chosen["tags"],
        synthetic=None if synthetic is None else synthetic == "yes",
        sources=[chosen["filters"]["source"]] if chosen["filters"]["source"] else [],
    )
    return qs.count(), qs.filter(synthetic=True).count(), qs.filter(has_identifiers=True).count()


@role_required()
@require_GET
def version_list_view(request):
    page = Paginator(version_list(), PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "curation/version_list.html", {"page": page, "versions": page.object_list})


@role_required(CURATOR)
@require_http_methods(["GET", "POST"])
def version_create_view(request):
    form = VersionForm(request.POST or None)
    identifier_pairs: list[dict] = []
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        # "Mask these pairs and freeze": only the pairs the user was shown are masked.
        mask = request.POST.get("mask_identifiers") == "1"
        shown = [n for n in map(parse_id, request.POST.getlist("mask_ids")) if n]
        try:
            version = dataset_version_freeze(
                user=request.user,
                name=data["name"],
                description=data["description"],
                split=(data["train"], data["validation"], data["test"]),
                seed=data["seed"],
                mask_identifiers=mask,
                expected_flagged=shown if mask else None,
                **form.selection(),
            )
        except ApplicationError as exc:
            details = exc.details if isinstance(exc.details, dict) else {}
            identifier_pairs = details.get("identifier_pairs") or []
            form.add_error(None, exc.message)
        else:
            if version.masked_pairs:
                messages.info(
                    request,
                    ngettext(
                        "Masked the identifiers of %(n)d pair before freezing.",
                        "Masked the identifiers of %(n)d pairs before freezing.",
                        len(version.masked_pairs),
                    )
                    % {"n": len(version.masked_pairs)},
                )
            messages.success(
                request,
                _("Froze dataset version “%(name)s”: %(train)s train, %(validation)s validation, %(test)s test.")
                % {"name": version.name, **version.counts},
            )
            return redirect("curation:version-detail", pk=version.pk)
    matching = _matching_count(VersionFilterForm(request.POST if request.method == "POST" else {}))
    return render(
        request,
        "curation/version_create.html",
        {
            "form": form,
            "matching": matching,
            "identifier_pairs": identifier_pairs,
            "filter_fields": [form["departments"], form["tags"]],
            "ratio_fields": [form["train"], form["validation"], form["test"]],
        },
    )


@role_required(CURATOR)
@require_GET
def version_count_view(request):
    """htmx fragment: how many approved pairs the create form's filters select."""
    return render(request, "curation/version_count.html", {"matching": _matching_count(VersionFilterForm(request.GET))})


@role_required()
@require_GET
def version_detail_view(request, pk):
    version = access_version(request.user, pk)
    preview = version_preview(version)
    return render(
        request,
        "curation/version_detail.html",
        {
            "version": version,
            "splits": [(s, version.counts.get(s, 0), preview[s]) for s in SPLITS],
            "departments": version_department_counts(version),
            "formats": list(LABELS.items()),
        },
    )


@role_required()
@require_GET
def version_export_view(request, pk, format):
    version = access_version(request.user, pk)
    if format not in EXPORTERS:
        raise Http404("Unknown export format.")
    archive, filename = dataset_version_export_zip(version=version, format=format, user=request.user)
    return FileResponse(archive, as_attachment=True, filename=filename, content_type="application/zip")


urlpatterns = [
    path("versions/", version_list_view, name="version-list"),
    path("versions/new/", version_create_view, name="version-create"),
    path("versions/new/count/", version_count_view, name="version-count"),
    path("versions/<int:pk>/", version_detail_view, name="version-detail"),
    path("versions/<int:pk>/export/<slug:format>/", version_export_view, name="version-export"),
]
