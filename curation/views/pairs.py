"""QA-pair pages: list + bulk labelling, detail, create/edit, workflow actions, the review
queue and reviewer agreement. Thin: access helpers and selectors read, services write."""

from __future__ import annotations

from itertools import groupby
from urllib.parse import urlencode, urlsplit

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.forms import Select
from django.http import HttpResponseRedirect, QueryDict
from django.shortcuts import redirect, render
from django.urls import Resolver404, path, resolve, reverse
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
from medportal.params import page_filter_ids, parse_id
from medportal.roles import ADMIN, CLINICIAN, CURATOR, has_role, role_required

# The list rows show a truncated question and labels: leave the long texts in the database.
LIST_DEFERRED = ("input", "output", "system", "history", "reasoning", "search_text", "identifiers", "extra", "synthetic_meta")


def _safe_next(request, fallback: str) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        return target
    return fallback


# --- list -------------------------------------------------------------------------------------


def _list_params(target: str) -> QueryDict:
    """The filters of the pair list at ``target`` (a local URL), or none."""
    parts = urlsplit(target or "")
    try:
        match = resolve(parts.path)
    except Resolver404:
        return QueryDict()
    return QueryDict(parts.query) if match.view_name == "curation:pair-list" else QueryDict()


def _list_response(request, params, *, selected=(), all_matching=False, confirm=None, status=200):
    """The pair list for the filters ``params``; after a refused or unconfirmed bulk action,
    with the user's selection (ticked ids, the all-matching choice) kept."""
    filterset = selectors.qa_pair_filter(params)
    for f in filterset.form.fields.values():
        css = "form-select form-select-sm" if isinstance(f.widget, Select) else "form-control form-control-sm"
        f.widget.attrs.setdefault("class", css)
    filter_errors = None
    try:
        pairs = selectors.qa_pair_list(user=request.user, filters=params)
    except InvalidInput as exc:
        pairs, filter_errors = QAPair.objects.none(), exc.details
    page_size = selectors.page_size_from(params.get("page_size"))
    page = CappedPaginator(pairs.defer(*LIST_DEFERRED), page_size).get_page(params.get("page"))
    q = params.get("q", "") if not filter_errors else ""
    for p in page:
        p.snippet = selectors.search_snippet(p.instruction, q) if q else None
    query = params.copy()
    list_url = reverse("curation:pair-list") + (f"?{query.urlencode()}" if query else "")
    query.pop("page", None)
    query.pop("sort", None)
    return render(
        request,
        "curation/pair_list.html",
        {
            "page": page,
            "filter_form": filterset.form,
            "filter_errors": filter_errors,
            "page_size": page_size,
            "page_sizes": selectors.PAGE_SIZES,
            "querystring": query.urlencode(),
            "sort": params.get("sort", ""),
            "bulk_form": BulkForm(),
            "departments": Department.objects.all(),
            "difficulties": QAPair.Difficulty.choices,
            "next": list_url,
            "selected": {int(i) for i in selected},
            "all_matching": all_matching,
            "confirm": confirm,
        },
        status=status,
    )


@role_required()
@require_GET
def pair_list(request):
    return _list_response(request, request.GET)


BULK_MAX = 10_000


@role_required(CURATOR)
@require_POST
def pair_bulk(request):
    back = _safe_next(request, reverse("curation:pair-list"))
    params = _list_params(back)
    form = BulkForm(request.POST)
    ids = [i for i in request.POST.getlist("ids") if parse_id(i)]
    all_matching = request.POST.get("all_matching") in ("on", "1", "true")

    def refused(message: str, status: int = 400):
        messages.error(request, message)
        return _list_response(request, params, selected=ids, all_matching=all_matching, status=status)

    if not form.is_valid():
        return refused(" ".join(str(e) for errors in form.errors.values() for e in errors))
    action, value = form.cleaned_data["action"], form.cleaned_data["value"]
    try:
        if all_matching:
            matching = selectors.qa_pair_list(user=request.user, filters=params)
            count = matching.count()
            if count > BULK_MAX:
                return refused(_("The filter matches %(n)d pairs; narrow it to at most %(max)d.") % {"n": count, "max": BULK_MAX})
            if not form.cleaned_data["confirmed"]:
                if count == 0:
                    return refused(_("No pair matches the filter."))
                shown = str(dict(QAPair.Difficulty.choices).get(value, value)) if action == "difficulty" else value
                confirm = {"action": action, "label": dict(BulkForm.ACTIONS)[action], "value": value, "shown": shown, "count": count}
                return _list_response(request, params, selected=ids, all_matching=True, confirm=confirm)
            if form.cleaned_data["expected"] != count:
                return refused(
                    _("The filter now matches %(n)d pairs, not the %(expected)d you confirmed; check and confirm again.")
                    % {"n": count, "expected": form.cleaned_data["expected"] or 0}
                )
            versions = dict(matching.order_by().values_list("pk", "version"))
        else:
            versions = form.versions(request.POST)
        if action == "submit":
            result = review.qa_pair_bulk_submit(actor=request.user, versions=versions)
        else:
            labels = {"department": "department", "tag": "add_tag", "difficulty": "difficulty"}
            result = editing.qa_pair_bulk_label(actor=request.user, versions=versions, **{labels[action]: value})
    except NotAllowed as exc:
        return refused(exc.message, status=403)
    except ApplicationError as exc:
        return refused(exc.message, status=_error_status(exc))
    except ValidationError as exc:
        return refused(" ".join(exc.messages))
    if result.done:
        messages.success(
            request, ngettext("Updated %(n)d pair.", "Updated %(n)d pairs.", len(result.done)) % {"n": len(result.done)}
        )
    flagged = getattr(result, "flagged", ())
    if flagged:
        messages.warning(
            request,
            ngettext(
                "%(n)d submitted pair holds unmasked personal identifiers (%(ids)s); it cannot be frozen until it is masked.",
                "%(n)d submitted pairs hold unmasked personal identifiers (%(ids)s); they cannot be frozen until they are masked.",
                len(flagged),
            )
            % {"n": len(flagged), "ids": ", ".join(f"#{pk}" for pk in flagged[:20])},
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


def _nav_list(request, target: str):
    """The ordered list a pair page was opened from (the review queue or a filtered pair
    list, named by ``next``), or None."""
    parts = urlsplit(target or "")
    try:
        match = resolve(parts.path)
    except Resolver404:
        return None
    params = QueryDict(parts.query)
    if match.view_name == "curation:review-queue":
        if not has_role(request.user, CLINICIAN):
            return None
        return selectors.review_queue(user=request.user, **_queue_scope(params))
    if match.view_name == "curation:pair-list":
        try:
            return selectors.qa_pair_list(user=request.user, filters=params)
        except InvalidInput:
            return None
    return None


def _position(request) -> int | None:
    raw = request.POST.get("pos") or request.GET.get("pos") or ""
    return int(raw) if raw.isdigit() and raw.isascii() and len(raw) < 10 else None


def _pair_url(pk: int, target: str, position: int) -> str:
    return reverse("curation:pair-detail", args=[pk]) + "?" + urlencode({"next": target, "pos": position})


def _navigation(request, pair_pk: int) -> dict | None:
    """Previous / next pair in the list the page was opened from, with their links."""
    target = _safe_next(request, "")
    qs = _nav_list(request, target) if target else None
    if qs is None:
        return None
    n = selectors.queue_neighbours(qs, pk=pair_pk, position=_position(request))
    return {
        "list_url": target,
        "position": n.position,
        "number": n.position + 1,
        "previous_url": _pair_url(n.previous[0], target, n.previous[1]) if n.previous else "",
        "next_url": _pair_url(n.next[0], target, n.next[1]) if n.next else "",
    }


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
        "events": selectors.qa_pair_event_views(pair),
        "extra_rows": selectors.key_values(pair.extra) if pair.extra else [],
        "generator_rows": selectors.key_values(pair.synthetic_meta, first=("generator",)) if pair.synthetic else [],
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
        "nav": _navigation(request, pair.pk),
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
            confirm_identifiers=form.cleaned_data["confirm_identifiers"],
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
        elif isinstance(exc, InvalidInput) and details.get("confirm_identifiers"):
            form.add_error("confirm_identifiers", exc.message)
        else:
            messages.error(request, exc.message)
        return _detail_response(request, fresh, review_form=form, status=_error_status(exc))
    messages.success(request, _("Your review is recorded: %(decision)s.") % {"decision": done.get_decision_display()})
    if request.POST.get("and_next"):
        # "Record and next": the pair after this one in the list it was opened from (the
        # review queue by default), in that list's order.
        target = _safe_next(request, reverse("curation:review-queue"))
        qs = _nav_list(request, target)
        if qs is not None:
            n = selectors.queue_neighbours(qs, pk=pair.pk, position=_position(request))
            if n.next:
                return redirect(_pair_url(n.next[0], target, n.next[1]))
            messages.info(request, _("That was the last pair of this list."))
            return redirect(target)
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
    def submit(pair, version):
        review.qa_pair_submit(pair=pair, actor=request.user, version=version)
        warning = review.identifier_warning(pair)
        if warning:
            messages.warning(request, warning)

    return _simple_action(request, pk, submit, _("Submitted for review."))


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


def _queue_scope(params) -> dict:
    """The queue's own filters; a department that is not an id is dropped (see review_queue)."""
    return {"all_departments": params.get("all") == "1", "department": parse_id(params.get("department"))}


@role_required(CLINICIAN)
@require_GET
def review_queue(request):
    valid = page_filter_ids(request, "department") is not None  # not an id: nothing listed, and a message
    scope = _queue_scope(request.GET)
    show_all = scope["all_departments"]
    department_ids = selectors.reviewer_department_ids(request.user)
    pairs = selectors.review_queue(user=request.user, department_ids=department_ids, **scope)
    if not valid:
        pairs = pairs.none()
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
            "department_counts": selectors.review_queue_department_counts(user=request.user, department_ids=department_ids),
            "department": scope["department"],
            "next": request.get_full_path(),
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
