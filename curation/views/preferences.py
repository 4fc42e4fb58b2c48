"""Preference-pair pages: list, detail with review actions, file import with its row report,
preference versions (freeze, detail, downloads).

Every role reads; curators import, submit, mask and freeze; clinicians review; admins reopen.
Collecting pairs from chat is a chat page (chat:preference-collect): curation never imports chat.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods

from curation.exports.preference import PREFERENCE_EXPORTERS
from curation.models_pref import PreferenceImport, PreferencePair, PreferenceVersion
from curation.services import preferences as prefs
from medportal.errors import ApplicationError
from medportal.params import parse_id
from medportal.roles import CURATOR, has_role, role_required

PAGE_SIZE = 25
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
FORMAT_LABELS = {"llamafactory": "LLaMA-Factory (pairwise, ranking: true)", "trl": "TRL (JSON Lines)", "hf": "Hugging Face datasets (Parquet)"}


def _pair(pk) -> PreferencePair:
    number = parse_id(pk)
    if number is None:
        raise Http404
    return get_object_or_404(PreferencePair.objects.select_related("author", "judged_by", "department", "near_duplicate_of"), pk=number)


@role_required()
@require_GET
def preference_list_view(request):
    qs = PreferencePair.objects.select_related("judged_by").order_by("-id")
    status = request.GET.get("status", "")
    source = request.GET.get("source", "")
    if status in PreferencePair.Status.values:
        qs = qs.filter(status=status)
    if source in PreferencePair.SourceKind.values:
        qs = qs.filter(source_kind=source)
    if request.GET.get("has_identifiers") == "1":
        qs = qs.filter(has_identifiers=True)
    batch = parse_id(request.GET.get("import_batch", ""))
    if batch:
        qs = qs.filter(import_batch_id=batch)
    page = Paginator(qs, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(
        request,
        "curation/preference_list.html",
        {
            "page": page,
            "pairs": page.object_list,
            "statuses": PreferencePair.Status.choices,
            "sources": PreferencePair.SourceKind.choices,
            "status": status,
            "source": source,
            "is_curator": has_role(request.user, CURATOR),
        },
    )


@role_required()
@require_http_methods(["GET", "POST"])
def preference_detail_view(request, pk):
    pair = _pair(pk)
    if request.method == "POST":
        action = request.POST.get("action", "")
        version = request.POST.get("version")
        try:
            if action == "submit":
                prefs.preference_pair_submit(pair=pair, actor=request.user, version=version)
                messages.success(request, _("Submitted for review."))
            elif action in ("approve", "reject"):
                prefs.preference_pair_review(
                    pair=pair,
                    reviewer=request.user,
                    decision=action,
                    comment=request.POST.get("comment", ""),
                    version=version,
                    confirm_identifiers=request.POST.get("confirm_identifiers") == "1",
                )
                messages.success(request, _("Your review is recorded."))
            elif action == "reopen":
                prefs.preference_pair_reopen(pair=pair, actor=request.user, reason=request.POST.get("reason", ""), version=version)
                messages.success(request, _("Reopened."))
            elif action == "mask":
                prefs.preference_pair_mask_identifiers(pair=pair, actor=request.user, version=version)
                messages.success(request, _("The identifiers are masked."))
            else:
                messages.error(request, _("Unknown action."))
        except ApplicationError as exc:
            messages.error(request, exc.message)
        return redirect("curation:preference-detail", pk=pair.pk)
    user = request.user
    return render(
        request,
        "curation/preference_detail.html",
        {
            "pair": pair,
            "reviews": pair.reviews.select_related("reviewer"),
            "can_submit": prefs.submit_refusal(pair, user) is None,
            "can_review": prefs.review_refusal(pair, user) is None,
            "can_reopen": prefs.reopen_refusal(pair, user) is None,
            "can_mask": prefs.mask_refusal(pair, user) is None,
            "identifier_warning": prefs.identifier_warning(pair),
        },
    )


@role_required(CURATOR)
@require_http_methods(["GET", "POST"])
def preference_import_view(request):
    error = ""
    if request.method == "POST":
        upload = request.FILES.get("file")
        if upload is None:
            error = _("Choose a file to import.")
        elif upload.size > MAX_UPLOAD_BYTES:
            error = _("The file is larger than %(n)s MB.") % {"n": MAX_UPLOAD_BYTES // (1024 * 1024)}
        else:
            with tempfile.TemporaryDirectory(prefix="medportal-pref-import-") as tmp:
                target = Path(tmp) / "upload"
                with target.open("wb") as fh:
                    for chunk in upload.chunks():
                        fh.write(chunk)
                try:
                    batch = prefs.preference_import(
                        user=request.user,
                        path=target,
                        filename=upload.name,
                        format=request.POST.get("format") or None,
                        submit=request.POST.get("submit") == "1",
                    )
                except ApplicationError as exc:
                    error = exc.message
                else:
                    return redirect("curation:preference-import-detail", pk=batch.pk)
    imports = PreferenceImport.objects.select_related("created_by")[:20]
    return render(request, "curation/preference_import.html", {"error": error, "imports": imports}, status=400 if error else 200)


@role_required(CURATOR)
@require_GET
def preference_import_detail_view(request, pk):
    batch = get_object_or_404(PreferenceImport.objects.select_related("created_by"), pk=parse_id(pk) or 0)
    kind = request.GET.get("kind", "")
    issues = [i for i in batch.issues if not kind or i.get("kind") == kind]
    return render(request, "curation/preference_import_detail.html", {"batch": batch, "issues": issues, "kind": kind})


@role_required()
@require_http_methods(["GET", "POST"])
def preference_version_list_view(request):
    error = ""
    if request.method == "POST":
        if not has_role(request.user, CURATOR):
            from django.core.exceptions import PermissionDenied

            raise PermissionDenied
        try:
            version = prefs.preference_version_freeze(
                user=request.user,
                name=request.POST.get("name", ""),
                description=request.POST.get("description", ""),
                split=request.POST.get("split", "0.8,0.1,0.1"),
                seed=request.POST.get("seed", "42"),
            )
        except ApplicationError as exc:
            error = exc.message
        else:
            messages.success(request, _("Froze preference version “%(name)s”.") % {"name": version.name})
            return redirect("curation:preference-version-detail", pk=version.pk)
    page = Paginator(PreferenceVersion.objects.select_related("created_by"), PAGE_SIZE).get_page(request.GET.get("page"))
    return render(
        request,
        "curation/preference_version_list.html",
        {
            "page": page,
            "versions": page.object_list,
            "error": error,
            "is_curator": has_role(request.user, CURATOR),
            "approved": PreferencePair.objects.filter(status=PreferencePair.Status.APPROVED).count(),
            "form": request.POST if request.method == "POST" else {},
        },
        status=400 if error else 200,
    )


def _version(pk) -> PreferenceVersion:
    return get_object_or_404(PreferenceVersion.objects.select_related("created_by"), pk=parse_id(pk) or 0)


@role_required()
@require_GET
def preference_version_detail_view(request, pk):
    version = _version(pk)
    return render(request, "curation/preference_version_detail.html", {"version": version, "formats": list(FORMAT_LABELS.items())})


@role_required()
@require_GET
def preference_version_export_view(request, pk, format):
    version = _version(pk)
    if format not in PREFERENCE_EXPORTERS:
        raise Http404("Unknown export format.")
    archive, filename = prefs.preference_version_export_zip(version=version, format=format, user=request.user)
    return FileResponse(archive, as_attachment=True, filename=filename, content_type="application/zip")


urlpatterns = [
    path("preferences/", preference_list_view, name="preference-list"),
    path("preferences/<int:pk>/", preference_detail_view, name="preference-detail"),
    path("preferences/import/", preference_import_view, name="preference-import"),
    path("preferences/imports/<int:pk>/", preference_import_detail_view, name="preference-import-detail"),
    path("preferences/versions/", preference_version_list_view, name="preference-version-list"),
    path("preferences/versions/<int:pk>/", preference_version_detail_view, name="preference-version-detail"),
    path("preferences/versions/<int:pk>/export/<slug:format>/", preference_version_export_view, name="preference-version-export"),
]

