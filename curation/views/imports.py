"""Import pages: list, upload (with a column-mapping step for tables), detail with live progress.

Views are thin: forms parse the request, services do the work, selectors fetch what the
user may see (``access_import_batch``).
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, JsonResponse
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET, require_http_methods

from curation.importers import FORMATS, QA_FIELDS, ImportFileError
from curation.models import Department, ImportBatch
from curation.selectors_imports import (
    access_import_batch,
    import_batch_list,
    import_batch_progress,
)
from curation.services.imports import (
    import_batch_create_from_staged,
    import_batch_dispatch,
    import_batch_file_download,
    import_file_error_text,
    import_options_check,
    import_preview,
    import_staged_discard,
    import_staged_path,
    import_upload_stage,
)
from curation.validators import validate_text_encoding
from medportal.errors import ApplicationError
from medportal.roles import CURATOR, is_admin, role_required

# Formats whose columns the user maps by hand before importing.
MAPPED_FORMATS = ("csv", "tsv", "xlsx")
SESSION_KEY = "import_staged"
ISSUES_PER_PAGE = 100

ENCODING_CHOICES = [
    ("", gettext_lazy("Detect automatically")),
    ("utf-8", "UTF-8"),
    ("gb18030", "GB18030 / GBK / GB2312"),
    ("utf-16", "UTF-16"),
    ("big5", "Big5"),
    ("latin-1", "Latin-1"),
]

FIELD_LABELS = {
    "instruction": gettext_lazy("Question (instruction)"),
    "input": gettext_lazy("Input / context"),
    "output": gettext_lazy("Answer (output)"),
    "system": gettext_lazy("System prompt"),
    "history": gettext_lazy("History (earlier turns)"),
    "reasoning": gettext_lazy("Reasoning"),
    "department": gettext_lazy("Department"),
    "tags": gettext_lazy("Tags"),
    "disease_codes": gettext_lazy("Disease codes"),
    "source_ref": gettext_lazy("Source reference"),
}


class ImportOptionsForm(forms.Form):
    format = forms.ChoiceField(
        label=gettext_lazy("Format"),
        required=False,
        choices=[("", gettext_lazy("Detect automatically")), *((f, f) for f in FORMATS)],
    )
    encoding = forms.ChoiceField(label=gettext_lazy("Encoding"), required=False, choices=ENCODING_CHOICES)
    department = forms.CharField(
        label=gettext_lazy("Department"),
        required=False,
        max_length=100,
        help_text=gettext_lazy("Used for rows that name no department."),
    )
    status = forms.ChoiceField(
        label=gettext_lazy("Status of the new pairs"),
        choices=[("draft", gettext_lazy("Draft (to be reviewed)")), ("approved", gettext_lazy("Approved, without review (admins only)"))],
        initial="draft",
        required=False,
    )

    def __init__(self, *args, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        if user is not None and not is_admin(user):
            self.fields["status"].choices = [c for c in self.fields["status"].choices if c[0] == "draft"]

    def clean_status(self):
        return self.cleaned_data.get("status") or "draft"

    def options(self) -> dict:
        data = self.cleaned_data
        return {
            "format": data.get("format") or None,
            "encoding": data.get("encoding") or None,
            "department": data.get("department") or "",
            "status": data.get("status") or "draft",
        }


class ImportUploadForm(ImportOptionsForm):
    file = forms.FileField(label=gettext_lazy("File"))
    field_order = ["file", "format", "encoding", "department", "status"]


class ImportMappingForm(ImportOptionsForm):
    """Step 2 for tables: one select per QA field, plus the options of step 1 carried along."""

    token = forms.CharField(widget=forms.HiddenInput)
    # Detected in step 1 and carried along as they are (e.g. "utf-8-sig").
    format = forms.CharField(required=False, widget=forms.HiddenInput)
    encoding = forms.CharField(required=False, max_length=32, widget=forms.HiddenInput, validators=[validate_text_encoding])

    def __init__(self, *args, columns=(), mapping=None, **kwargs):
        super().__init__(*args, **kwargs)
        for name in ("department", "status"):
            self.fields[name].widget = forms.HiddenInput()
        choices = [("", gettext_lazy("— not imported —")), *((c, c) for c in columns)]
        for qa_field in QA_FIELDS:
            self.fields[f"map_{qa_field}"] = forms.ChoiceField(
                label=FIELD_LABELS.get(qa_field, qa_field),
                required=False,
                choices=choices,
                initial=(mapping or {}).get(qa_field, ""),
            )

    def mapping(self) -> dict[str, str]:
        return {f: self.cleaned_data.get(f"map_{f}") or "" for f in QA_FIELDS}

    def mapping_fields(self):
        return [self[f"map_{f}"] for f in QA_FIELDS]


def _remember(request, token: str) -> None:
    tokens = [t for t in request.session.get(SESSION_KEY, []) if import_staged_path(t)]
    request.session[SESSION_KEY] = [*tokens[-9:], token]


def _owns(request, token: str) -> bool:
    return token in request.session.get(SESSION_KEY, [])


def _forget(request, token: str) -> None:
    request.session[SESSION_KEY] = [t for t in request.session.get(SESSION_KEY, []) if t != token]
    import_staged_discard(token)


def _start(request, batch: ImportBatch):
    """Run or enqueue a created batch and send the user to its page."""
    if batch.status == ImportBatch.Status.FAILED:
        messages.error(request, _("The file could not be imported: %(error)s") % {"error": batch.error})
        return redirect("curation:import-detail", pk=batch.pk)
    batch = import_batch_dispatch(batch=batch)
    if batch.status == ImportBatch.Status.SUCCEEDED:
        messages.success(
            request,
            _("Imported %(created)d pairs (%(duplicates)d duplicates, %(skipped)d skipped, %(errors)d row errors).")
            % {"created": batch.created_count, "duplicates": batch.duplicate_count, "skipped": batch.skipped_count, "errors": batch.error_count},
        )
    elif batch.status == ImportBatch.Status.FAILED:
        messages.error(request, _("The file could not be imported: %(error)s") % {"error": batch.error})
    else:
        messages.info(request, _("The import was queued; this page shows its progress."))
    return redirect("curation:import-detail", pk=batch.pk)


@role_required(CURATOR)
@require_GET
def import_list(request):
    page = Paginator(import_batch_list(user=request.user), 25).get_page(request.GET.get("page"))
    return render(request, "curation/import_list.html", {"page": page, "show_owner": is_admin(request.user)})


@role_required(CURATOR)
@require_http_methods(["GET", "POST"])
def import_create(request):
    if request.method == "POST" and "token" in request.POST:
        return _mapping_step(request)
    form = ImportUploadForm(request.POST or None, request.FILES or None, user=request.user)
    if request.method == "POST" and form.is_valid():
        options = form.options()
        try:
            import_options_check(user=request.user, **options)
            token = import_upload_stage(upload=form.cleaned_data["file"])
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            _remember(request, token)
            path = import_staged_path(token)
            try:
                preview = import_preview(path=path, format=options["format"], encoding=options["encoding"])
            except ImportFileError:
                # Keep a record of the failed file: the batch carries the exact error.
                batch = import_batch_create_from_staged(user=request.user, token=token, **options)
                _forget(request, token)
                return _start(request, batch)
            if preview.format in MAPPED_FORMATS:
                mapping_form = ImportMappingForm(
                    initial={**options, "format": preview.format, "encoding": preview.encoding, "token": token},
                    columns=preview.columns,
                    mapping=preview.mapping,
                    user=request.user,
                )
                return _render_mapping(request, mapping_form, preview, path.name)
            batch = import_batch_create_from_staged(user=request.user, token=token, **options)
            _forget(request, token)
            return _start(request, batch)
    departments = Department.objects.values_list("name", flat=True)
    return render(request, "curation/import_create.html", {"form": form, "departments": departments})


def _render_mapping(request, form, preview, filename, error: str = ""):
    return render(
        request,
        "curation/import_mapping.html",
        {"form": form, "preview": preview, "filename": filename, "error": error, "qa_fields": QA_FIELDS},
    )


def _mapping_step(request):
    token = request.POST.get("token", "")
    path = import_staged_path(token) if _owns(request, token) else None
    if path is None:
        messages.error(request, _("The uploaded file has expired; upload it again."))
        return redirect("curation:import-create")
    if "cancel" in request.POST:
        _forget(request, token)
        messages.info(request, _("The upload was discarded."))
        return redirect("curation:import-create")
    # Columns come from the file itself, so the selects only accept real column names.
    fmt = request.POST.get("format") or None
    encoding = request.POST.get("encoding") or None
    try:
        base = import_preview(path=path, format=fmt, encoding=encoding)
    except ImportFileError as exc:
        messages.error(request, import_file_error_text(exc))
        _forget(request, token)
        return redirect("curation:import-create")
    form = ImportMappingForm(request.POST, columns=base.columns, mapping=base.mapping, user=request.user)
    if not form.is_valid():
        return _render_mapping(request, form, base, path.name)
    options = form.options()
    mapping = form.mapping()
    try:
        import_options_check(user=request.user, mapping=mapping, **options)
        preview = import_preview(path=path, mapping=mapping, format=options["format"], encoding=options["encoding"])
    except (ApplicationError, ImportFileError) as exc:
        message = exc.message if isinstance(exc, ApplicationError) else import_file_error_text(exc)
        return _render_mapping(request, form, base, path.name, error=message)
    if "confirm" not in request.POST:
        return _render_mapping(request, form, preview, path.name)
    batch = import_batch_create_from_staged(user=request.user, token=token, mapping=mapping, **options)
    _forget(request, token)
    return _start(request, batch)


@role_required(CURATOR)
@require_GET
def import_detail(request, pk: int):
    batch = access_import_batch(user=request.user, pk=pk)
    kind = request.GET.get("kind", "")
    issues = batch.issues or []
    if kind in ("skipped", "error", "duplicate"):
        issues = [i for i in issues if i.get("kind") == kind]
    page = Paginator(issues, ISSUES_PER_PAGE).get_page(request.GET.get("page"))
    return render(
        request,
        "curation/import_detail.html",
        {
            "batch": batch,
            "page": page,
            "kind": kind,
            "progress_url": reverse("curation:import-progress", args=[batch.pk]),
            "running": batch.status in (ImportBatch.Status.QUEUED, ImportBatch.Status.RUNNING),
            "mapping": (batch.options or {}).get("mapping") or {},
            "file_url": reverse("curation:import-file", args=[batch.pk]) if batch.file else "",
        },
    )


@role_required(CURATOR)
@require_GET
def import_file(request, pk: int):
    """The uploaded file of a batch, as an attachment, for its owner and admins (404 for anyone
    else, the same answer as for a batch that does not exist). Uploads are never served from
    MEDIA_URL; every download is in the audit log."""
    batch = access_import_batch(user=request.user, pk=pk, with_issues=False)
    handle = import_batch_file_download(user=request.user, batch=batch)
    if handle is None:
        raise Http404("No uploaded file.")
    return FileResponse(handle, as_attachment=True, filename=batch.filename or "upload")


@role_required(CURATOR)
@require_GET
def import_progress(request, pk: int):
    batch = access_import_batch(user=request.user, pk=pk, with_issues=False)
    return JsonResponse(import_batch_progress(batch))


urlpatterns = [
    path("imports/", import_list, name="import-list"),
    path("imports/new/", import_create, name="import-create"),
    path("imports/<int:pk>/", import_detail, name="import-detail"),
    path("imports/<int:pk>/progress/", import_progress, name="import-progress"),
    path("imports/<int:pk>/file/", import_file, name="import-file"),
]
