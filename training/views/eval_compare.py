"""The comparison report of a group of evaluation runs (contenders side by side), its exports.

Every role reads; the page is rendered on the server from ``selectors_eval.evaluation_comparison``
with the chart as inline SVG (no script). docs/evaluation-suites.md describes what it shows.
"""

from __future__ import annotations


from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import path
from django.utils import timezone
from django.utils.safestring import mark_safe
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods

from medportal.errors import ApplicationError, NotAllowed
from medportal.roles import ADMIN, CLINICIAN, has_role, role_required
from training.selectors_eval import comparison_chart_svg, evaluation_compare_export_rows, evaluation_comparison


def _filename(group: str, ext: str) -> str:
    return f"comparison-{group}-{timezone.localtime().strftime('%Y%m%d-%H%M')}.{ext}"


@role_required()
@require_GET
def evaluation_compare_view(request, group):
    comparison = evaluation_comparison(group)
    runs = comparison["runs"]
    labels = {r["id"]: r["label"] for r in runs}
    judge = next((r for r in runs if r.get("judge_model_name")), None)
    return render(
        request,
        "training/eval_compare.html",
        {
            "group": group,
            "comparison": comparison,
            "chart": mark_safe(comparison_chart_svg(comparison)),  # built from escaped text only
            "labels": labels,
            "judge": judge,
            "first": runs[0] if runs else None,
            "active": any(r["status"] in ("queued", "running") for r in runs),
            "can_rate": has_role(request.user, CLINICIAN, ADMIN) and comparison["finished"] > 0,
            "criteria": CRITERIA,
        },
    )


CRITERIA = ("accuracy", "safety", "completeness", "clarity")


@role_required(CLINICIAN, ADMIN)
@require_http_methods(["GET", "POST"])
def evaluation_rate_view(request, group):
    """Blind rating: one answer of the comparison at a time, without the model's name; the
    clinician scores it on the chat rubric. POST stores the rating and shows the next answer."""
    from training.models import EvalSample
    from training.selectors_eval import evaluation_group_runs
    from training.services.eval_suites import eval_rating_next, eval_rating_record

    evaluation_group_runs(group)  # 404 for an unknown group
    errors = {}
    if request.method == "POST":
        sample = EvalSample.objects.select_related("run").filter(pk=_int(request.POST.get("sample")), run__group=group).first()
        if sample is None:
            raise Http404("No such answer in this comparison.")
        try:
            eval_rating_record(
                actor=request.user, sample=sample, scores={c: request.POST.get(c) for c in CRITERIA}, comment=request.POST.get("comment", "")
            )
        except NotAllowed:
            raise PermissionDenied from None
        except ApplicationError as exc:
            errors = exc.details if isinstance(exc.details, dict) else {}
            messages.error(request, exc.message)
        else:
            messages.success(request, _("Rating saved."))
            return redirect("training:evaluation-rate", group=group)
    sample, done, total = eval_rating_next(user=request.user, group=group)
    return render(
        request,
        "training/eval_rate.html",
        {"group": group, "sample": sample, "done": done, "total": total, "criteria": CRITERIA, "errors": errors, "scale": range(1, 6)},
    )


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@role_required()
@require_GET
def evaluation_compare_json_view(request, group):
    from training.views.evaluations import json_download

    return json_download(evaluation_comparison(group), _filename(group, "json"), default=str)


@role_required()
@require_GET
def evaluation_compare_xlsx_view(request, group):
    """Sheets: ``metrics`` (each contender's mean and 95% interval per metric), ``paired``
    (each contender against the first), ``speed``."""
    from training.views.evaluations import xlsx_download

    comparison = evaluation_comparison(group)
    metric_rows, paired_rows = evaluation_compare_export_rows(comparison)
    return xlsx_download({"metrics": metric_rows, "paired": paired_rows, "speed": comparison["speed"]}, _filename(group, "xlsx"))


urlpatterns = [
    path("evaluations/compare/<str:group>/", evaluation_compare_view, name="evaluation-compare"),
    path("evaluations/compare/<str:group>/export.json", evaluation_compare_json_view, name="evaluation-compare-json"),
    path("evaluations/compare/<str:group>/export.xlsx", evaluation_compare_xlsx_view, name="evaluation-compare-xlsx"),
    path("evaluations/compare/<str:group>/rate/", evaluation_rate_view, name="evaluation-rate"),
]
