"""QA-pair pages: list + bulk labelling, detail, create/edit, workflow actions, the review
queue and reviewer agreement. Thin: access helpers and selectors read, services write."""

from __future__ import annotations

from itertools import groupby

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.forms import Select
from django.http import HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from curation import selectors
from curation.forms import (
    BulkForm,
    CommentForm,
    PairForm,
    ReopenForm,
    ReviewForm,
    VersionForm,
)
from curation.models import Department, QAPair
from curation.services import editing, review
from medportal.errors import ApplicationError, Conflict, InvalidInput, NotAllowed
from medportal.pagination import CappedPaginator
from medportal.roles import ADMIN, CLINICIAN, CURATOR, role_required

# The list rows show a truncated question and labels: leave the long texts in the database.
LIST_DEFERRED = ("input", "output", "system", "history", "reasoning", "search_text", "identifiers", "extra", "synthetic_meta")


def _safe_next(request, fallback: str) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        return target
    return fallback


def _querystring(request, drop=("page",)) -> str:
    params = request.GET.copy()
    for name in drop:
        params.pop(name, None)
    return params.urlencode()


# --- list -------------------------------------------------------------------------------------


@role_required()
@require_GET
def pair_list(request):
    filterset = selectors.qa_pair_filter(request.GET)
    for f in filterset.form.fields.values():
        css = "form-select form-select-sm" if isinstance(f.widget, Select) else "form-control form-control-sm"
        f.widget.attrs.setdefault("class", css)
    filter_errors = None
    try:
        pairs = selectors.qa_pair_list(user=request.user, filters=request.GET)
    except InvalidInput as exc:
        pairs, filter_errors = QAPair.objects.none(), exc.details
    page_size = selectors.page_size_from(request.GET.get("page_size"))
    page = CappedPaginator(pairs.defer(*LIST_DEFERRED), page_size).get_page(request.GET.get("page"))
    return render(
        request,
        "curation/pair_list.html",
        {
            "page": page,
            "filter_form": filterset.form,
            "filter_errors": filter_errors,
            "page_size": page_size,
            "page_sizes": selectors.PAGE_SIZES,
            "querystring": _querystring(request, drop=("page", "sort")),
            "sort": request.GET.get("sort", ""),
            "bulk_form": BulkForm(),
            "departments": Department.objects.all(),
            "difficulties": QAPair.Difficulty.choices,
            "next": request.get_full_path(),
        },
    )


@role_required(CURATOR)
@require_POST
def pair_bulk(request):
    back = _safe_next(request, reverse("curation:pair-list"))
    form = BulkForm(request.POST)
    if not form.is_valid():
        for errors in form.errors.values():
            for error in errors:
                messages.error(request, error)
        return redirect(back)
    action, value = form.cleaned_data["action"], form.cleaned_data["value"].strip()
    try:
        versions = form.versions(request.POST)
        if action == "submit":
            result = review.qa_pair_bulk_submit(actor=request.user, versions=versions)
        else:
            labels = {"department": "department", "tag": "add_tag", "difficulty": "difficulty"}
            result = editing.qa_pair_bulk_label(actor=request.user, versions=versions, **{labels[action]: value})
    except NotAllowed as exc:
        raise PermissionDenied(exc.message) from None
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect(back)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect(back)
    if result.done:
        messages.success(
            request, ngettext("Updated %(n)d pair.", "Updated %(n)d pairs.", len(result.done)) % {"n": len(result.done)}
        )
    if result.skipped:
        detail = "; ".join(f"#{pk}: {why}" for pk, why in list(result.skipped.items())[:10])
        messages.warning(
            request,
            ngettext("Skipped %(n)d pair: %(detail)s", "Skipped %(n)d pairs: %(detail)s", len(result.skipped))
            % {"n": len(result.skipped), "detail": detail},
        )
    return redirect(back)


# --- detail -----------------------------------------------------------------------------------


def _detail_context(request, pair: QAPair, **forms) -> dict:
    user = request.user
    reviews = selectors.qa_pair_reviews(pair)
    rounds = [(rnd, list(items)) for rnd, items in groupby(reviews, key=lambda r: r.round)]
    review_refusal = review.review_refusal(pair, user)
    return {
        "pair": pair,
        "fields": selectors.qa_pair_content_view(pair),
        "review_rounds": rounds,
        "approvals": sum(1 for r in reviews if r.round == pair.review_round and r.decision == "approve"),
        "quorum": review.review_quorum(),
        "comments": selectors.qa_pair_comments(pair),
        "revisions": selectors.qa_pair_revisions(pair),
        "events": selectors.qa_pair_audit_events(pair),
        "tags": list(pair.tags.all()),
        "can_edit": review.edit_refusal(pair, user) is None,
        "can_submit": review.submit_refusal(pair, user) is None,
        "can_review": review_refusal is None,
        "review_refusal": review_refusal,
        "can_mask": review.mask_refusal(pair, user) is None,
        "can_reopen": review.reopen_refusal(pair, user) is None,
        "review_form": forms.get("review_form") or ReviewForm(initial={"version": pair.version}),
        "comment_form": forms.get("comment_form") or CommentForm(),
        "reopen_form": forms.get("reopen_form") or ReopenForm(initial={"version": pair.version}),
        "next": _safe_next(request, ""),
    }


def _detail_response(request, pair, *, status=200, **forms):
    return render(request, "curation/pair_detail.html", _detail_context(request, pair, **forms), status=status)


@role_required()
@require_GET
def pair_detail(request, pk: int):
    pair = selectors.access_pair(request.user, pk)
    return _detail_response(request, pair)


def _error_status(exc: ApplicationError) -> int:
    return 409 if isinstance(exc, Conflict) or exc.http_status == 409 else 400


def _rebound(form_class, request, pair, **overrides):
    """The user's form again, carrying the pair's current version (after they saw the conflict)."""
    data = request.POST.copy()
    data["version"] = str(pair.version)
    for k, v in overrides.items():
        data[k] = v
    form = form_class(data)
    form.is_valid()
    return form


@role_required(CLINICIAN)
@require_POST
def pair_review(request, pk: int):
    pair = selectors.access_pair(request.user, pk)
    form = ReviewForm(request.POST)
    if not form.is_valid():
        return _detail_response(request, pair, review_form=form, status=400)
    try:
        done = review.qa_pair_review(
            pair=pair,
            reviewer=request.user,
            decision=form.cleaned_data["decision"],
            comment=form.cleaned_data["comment"],
            version=form.cleaned_data["version"],
        )
    except NotAllowed as exc:
        raise PermissionDenied(exc.message) from None
    except ApplicationError as exc:
        fresh = selectors.access_pair(request.user, pk)
        details = exc.details if isinstance(exc.details, dict) else {}
        if isinstance(exc, Conflict):
            messages.error(request, exc.message)
            form = _rebound(ReviewForm, request, fresh)
        elif isinstance(exc, InvalidInput) and details.get("comment"):
            form.add_error("comment", exc.message)
        else:
            messages.error(request, exc.message)
        return _detail_response(request, fresh, review_form=form, status=_error_status(exc))
    messages.success(request, _("Your review is recorded: %(decision)s.") % {"decision": done.get_decision_display()})
    return redirect(_safe_next(request, reverse("curation:pair-detail", args=[pair.pk])))


def _simple_action(request, pk, call, success: str):
    pair = selectors.access_pair(request.user, pk)
    form = VersionForm(request.POST)
    if not form.is_valid():
        messages.error(request, _("The page is out of date; reload it."))
        return _detail_response(request, pair, status=400)
    try:
        call(pair, form.cleaned_data["version"])
    except NotAllowed as exc:
        raise PermissionDenied(exc.message) from None
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return _detail_response(request, selectors.access_pair(request.user, pk), status=_error_status(exc))
    messages.success(request, success)
    return redirect(_safe_next(request, reverse("curation:pair-detail", args=[pair.pk])))


@role_required()
@require_POST
def pair_submit(request, pk: int):
    return _simple_action(
        request,
        pk,
        lambda pair, version: review.qa_pair_submit(pair=pair, actor=request.user, version=version),
        _("Submitted for review."),
    )


@role_required(CURATOR)
@require_POST
def pair_mask(request, pk: int):
    return _simple_action(
        request,
        pk,
        lambda pair, version: editing.qa_pair_mask_identifiers(pair=pair, editor=request.user, version=version),
        _("Identifiers masked."),
    )


@role_required(ADMIN)
@require_POST
def pair_reopen(request, pk: int):
    pair = selectors.access_pair(request.user, pk)
    form = ReopenForm(request.POST)
    if not form.is_valid():
        return _detail_response(request, pair, reopen_form=form, status=400)
    try:
        review.qa_pair_reopen(
            pair=pair, actor=request.user, reason=form.cleaned_data["reason"], version=form.cleaned_data["version"]
        )
    except ApplicationError as exc:
        messages.error(request, exc.message)
        fresh = selectors.access_pair(request.user, pk)
        return _detail_response(request, fresh, reopen_form=_rebound(ReopenForm, request, fresh), status=_error_status(exc))
    messages.success(request, _("Reopened as a draft."))
    return redirect("curation:pair-detail", pk=pair.pk)


@role_required()
@require_POST
def pair_comment(request, pk: int):
    pair = selectors.access_pair(request.user, pk)
    form = CommentForm(request.POST)
    if form.is_valid():
        try:
            review.comment_create(pair=pair, author=request.user, body=form.cleaned_data["body"])
        except NotAllowed as exc:
            raise PermissionDenied(exc.message) from None
        except ApplicationError as exc:
            form.add_error("body", exc.message)
    if form.errors:
        return _detail_response(request, pair, comment_form=form, status=400)
    return HttpResponseRedirect(reverse("curation:pair-detail", args=[pair.pk]) + "#comments")


# --- create / edit ----------------------------------------------------------------------------


def _form_response(request, form, *, pair=None, status=200):
    return render(
        request,
        "curation/pair_form.html",
        {"form": form, "pair": pair, "department_names": Department.objects.values_list("name", flat=True)},
        status=status,
    )


@role_required(CURATOR)
@require_http_methods(["GET", "POST"])
def pair_create(request):
    if request.method == "GET":
        return _form_response(request, PairForm())
    form = PairForm(request.POST)
    if not form.is_valid():
        return _form_response(request, form, status=400)
    try:
        pair = editing.qa_pair_create(author=request.user, **form.changes())
    except NotAllowed as exc:
        raise PermissionDenied(exc.message) from None
    except ApplicationError as exc:
        form.add_service_error(exc)
        return _form_response(request, form, status=400)
    messages.success(request, _("Pair #%(pk)s created as a draft.") % {"pk": pair.pk})
    return redirect("curation:pair-detail", pk=pair.pk)


@role_required(CURATOR)
@require_http_methods(["GET", "POST"])
def pair_edit(request, pk: int):
    pair = selectors.access_pair(request.user, pk)
    if request.method == "GET":
        refusal = review.edit_refusal(pair, request.user)
        if refusal:
            messages.error(request, refusal)
            return redirect("curation:pair-detail", pk=pair.pk)
        return _form_response(request, PairForm(initial=PairForm.initial_for(pair)), pair=pair)
    form = PairForm(request.POST)
    if not form.is_valid():
        return _form_response(request, form, pair=pair, status=400)
    was = pair.status
    try:
        editing.qa_pair_update(pair=pair, editor=request.user, version=form.cleaned_data["version"], **form.changes())
    except NotAllowed as exc:
        raise PermissionDenied(exc.message) from None
    except ApplicationError as exc:
        fresh = selectors.access_pair(request.user, pk)
        if isinstance(exc, Conflict):
            # Keep what the user typed; carry the current version so that saving again is a
            # deliberate overwrite after reading who changed what.
            form = _rebound(PairForm, request, fresh)
            form.add_error(None, exc.message)
        else:
            form.add_service_error(exc)
        return _form_response(request, form, pair=fresh, status=_error_status(exc))
    if was == QAPair.Status.CHANGES_REQUESTED and pair.status == QAPair.Status.IN_REVIEW:
        messages.success(request, _("Saved and sent back to review (round %(round)s).") % {"round": pair.review_round})
    else:
        messages.success(request, _("Saved."))
    return redirect("curation:pair-detail", pk=pair.pk)


# --- review queue and agreement ---------------------------------------------------------------


@role_required(CLINICIAN)
@require_GET
def review_queue(request):
    show_all = request.GET.get("all") == "1"
    department_ids = selectors.reviewer_department_ids(request.user)
    pairs = selectors.review_queue(user=request.user, all_departments=show_all, department_ids=department_ids)
    page_size = selectors.page_size_from(request.GET.get("page_size"))
    page = CappedPaginator(pairs.defer(*LIST_DEFERRED), page_size).get_page(request.GET.get("page"))
    return render(
        request,
        "curation/review_queue.html",
        {
            "page": page,
            "show_all": show_all,
            "has_departments": bool(department_ids),
            "my_departments": Department.objects.filter(pk__in=department_ids) if department_ids else [],
            "quorum": review.review_quorum(),
            "page_sizes": selectors.PAGE_SIZES,
            "page_size": page_size,
        },
    )


@role_required()
@require_GET
def agreement(request):
    return render(request, "curation/agreement.html", {"report": selectors.review_agreement()})


urlpatterns = [
    path("pairs/", pair_list, name="pair-list"),
    path("pairs/new/", pair_create, name="pair-create"),
    path("pairs/bulk/", pair_bulk, name="pair-bulk"),
    path("pairs/<int:pk>/", pair_detail, name="pair-detail"),
    path("pairs/<int:pk>/edit/", pair_edit, name="pair-edit"),
    path("pairs/<int:pk>/submit/", pair_submit, name="pair-submit"),
    path("pairs/<int:pk>/review/", pair_review, name="pair-review"),
    path("pairs/<int:pk>/mask/", pair_mask, name="pair-mask"),
    path("pairs/<int:pk>/reopen/", pair_reopen, name="pair-reopen"),
    path("pairs/<int:pk>/comments/", pair_comment, name="pair-comment"),
    path("review/", review_queue, name="review-queue"),
    path("agreement/", agreement, name="agreement"),
]
