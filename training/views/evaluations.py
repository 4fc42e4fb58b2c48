"""Evaluation pages: the list of runs, the create form (admins), the report, its exports.

Every role reads runs, reports and exports; only admins create and cancel (the controls are
hidden for others and the views answer 403). The report is rendered on the server from
``selectors_eval.evaluation_report`` and works without JavaScript; the script only draws the
charts. While a run is active its page polls a small progress fragment (htmx, every 2 s) and
reloads itself when the run ends. Differences between a prediction and its reference are
computed here (``diff_html``: difflib at character level, every piece escaped).
"""

from __future__ import annotations

import difflib
import json
import re
from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import path
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, gettext_noop
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from curation.models import DatasetItem, DatasetVersion
from medportal.errors import ApplicationError, NotAllowed
from medportal.pagination import CappedPaginator
from medportal.params import page_filter_ids, prefill_id
from medportal.roles import ADMIN, is_admin, role_required
from training.engine.generation import GENERATION_PRESETS
from training.engine.metrics import METRIC_KEYS, MODE_LABELS, MODES
from training.models import BaseModel, EvalRun, FineTuneJob
from training.selectors_eval import evaluation_export_rows, evaluation_get, evaluation_list, evaluation_report
from training.views.base_models import _errors_to_form

PAGE_SIZE = 25

METRIC_LABELS = {"bleu-4": "BLEU-4", "rouge-1": "ROUGE-1", "rouge-2": "ROUGE-2", "rouge-l": "ROUGE-L"}

# The short name shown prominently on every report (the long one, from the metrics module, beside it).
MODE_SHORT = {
    "llamafactory": gettext_lazy("LLaMA-Factory-comparable"),
    "standard": gettext_lazy("standard rouge-score"),
}
# The metrics module (no Django) writes its long mode labels in English. Marked copies let
# makemessages extract them; the pages translate the engine's strings when they render
# (tests/training/test_eval_pages.py checks that the copies match the engine).
ENGINE_MODE_LABELS = {
    "llamafactory": gettext_noop(
        "llamafactory: ROUGE on jieba words as rouge-chinese computes it (distinct n-grams), BLEU-4 on characters (nltk, method3)"
    ),
    "standard": gettext_noop(
        "standard: rouge-score ROUGE (n-gram counts) on lower-cased jieba words without punctuation, BLEU-4 on characters (nltk, method3)"
    ),
}


def mode_label(mode: str) -> str:
    """The long description of a metrics mode, in the UI language."""
    text = MODE_LABELS.get(mode)
    return _(text) if text else mode


# Generation presets: the engine's ("greedy", reproducible; "vllm_infer", the defaults of
# LLaMA-Factory's scripts/vllm_infer.py, sampling), labelled here in the UI language.
GENERATION_PRESET_LABELS = {
    "greedy": gettext_lazy("Greedy (reproducible)"),
    "vllm_infer": gettext_lazy("LLaMA-Factory vllm_infer.py defaults (sampling)"),
}
PARAM_NAMES = ("max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty", "seed", "cutoff_len", "batch_size")

# Longer texts are diffed with difflib's "junk" heuristic on (quadratic work otherwise).
DIFF_EXACT_LIMIT = 3000
DIFF_LIMIT = 20000


# ---- the difference highlighter -----------------------------------------------------------


_BLANK_RUN = re.compile(r"\n(?:[ \t\r\f\v\u3000]*\n){2,}")


def collapse_blank_lines(text: str) -> str:
    """Runs of blank lines shown as one blank line (a model that answers with hundreds of empty
    lines made one example thousands of pixels tall); the stored answer and its scores are unchanged."""
    return _BLANK_RUN.sub("\n\n", text or "")


def diff_html(prediction: str, reference: str) -> tuple[SafeString, SafeString]:
    """The prediction and the reference as HTML, character by character, with what differs marked.

    In the prediction, text the reference does not have is ``<del>`` (the model wrote it);
    in the reference, text the prediction lacks is ``<ins>`` (the model should have written
    it). Everything is escaped, so markup in a model's answer stays text. Texts beyond
    ``DIFF_LIMIT`` characters are shown escaped but unmarked.
    """
    prediction, reference = collapse_blank_lines(prediction), collapse_blank_lines(reference)
    if len(prediction) > DIFF_LIMIT or len(reference) > DIFF_LIMIT:
        return mark_safe(escape(prediction)), mark_safe(escape(reference))
    exact = max(len(prediction), len(reference)) <= DIFF_EXACT_LIMIT
    matcher = difflib.SequenceMatcher(None, prediction, reference, autojunk=not exact)
    left: list[str] = []
    right: list[str] = []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        a, b = escape(prediction[i1:i2]), escape(reference[j1:j2])
        if op == "equal":
            left.append(a)
            right.append(b)
            continue
        if a:
            left.append(f"<del>{a}</del>")
        if b:
            right.append(f"<ins>{b}</ins>")
    return mark_safe("".join(left)), mark_safe("".join(right))


# ---- list ----------------------------------------------------------------------------------


def _int_param(request, name: str) -> int | None:
    """An id that only preselects something (the run to compare with, a form's choice)."""
    return prefill_id(request.GET, name)


@role_required()
@require_GET
def evaluation_list_view(request):
    ids = page_filter_ids(request, "dataset_version", "job")  # not an id: nothing listed, and a message
    version_id, job_id = (ids["dataset_version"], ids["job"]) if ids else (None, None)
    version = DatasetVersion.objects.filter(pk=version_id).first() if version_id else None
    job = FineTuneJob.objects.filter(pk=job_id).select_related("base_model", "dataset_version").first() if job_id else None
    runs = evaluation_list(dataset_version=version, job=job) if ids is not None else EvalRun.objects.none()
    page = CappedPaginator(runs, PAGE_SIZE).get_page(request.GET.get("page"))
    runs = list(page.object_list)
    for run in runs:
        run.mode_short = MODE_SHORT.get(run.mode, run.mode)
    return render(
        request,
        "training/eval_list.html",
        {
            "page": page,
            "runs": runs,
            "metric_keys": METRIC_KEYS,
            "metric_labels": METRIC_LABELS,
            "versions": DatasetVersion.objects.filter(eval_runs__isnull=False).distinct().order_by("-created_at"),
            "jobs": FineTuneJob.objects.filter(eval_runs__isnull=False).distinct().select_related("base_model").order_by("-created_at"),
            "version": version,
            "job": job,
            "any_active": any(r.status in (EvalRun.Status.QUEUED, EvalRun.Status.RUNNING) for r in runs),
        },
    )


# ---- create --------------------------------------------------------------------------------


class _JobChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, job: FineTuneJob) -> str:
        return _("#%(id)s %(model)s ← %(version)s") % {"id": job.pk, "model": job.base_model.name, "version": job.dataset_version.name}


class _ContenderChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, base_model: BaseModel) -> str:
        """A hosted model on an external endpoint says so (training.runnables.runnable_label)."""
        from training.runnables import runnable_label

        return runnable_label(base_model)


class EvaluationForm(forms.Form):
    dataset_version = forms.ModelChoiceField(
        label=gettext_lazy("Dataset version"), queryset=DatasetVersion.objects.order_by("-created_at"), empty_label=None
    )
    split = forms.ChoiceField(
        label=gettext_lazy("Split"),
        choices=[
            (DatasetItem.Split.TEST, gettext_lazy("test")),
            (DatasetItem.Split.VALIDATION, gettext_lazy("validation")),
            (DatasetItem.Split.TRAIN, gettext_lazy("train")),
        ],
        initial=DatasetItem.Split.TEST,
        help_text=gettext_lazy("Held-out answers the model never saw: the test split (or validation)."),
    )
    base_model = _ContenderChoiceField(
        label=gettext_lazy("Base model"),
        queryset=BaseModel.objects.filter(is_active=True).select_related("endpoint"),
        required=False,
        help_text=gettext_lazy("Taken from the fine-tune job when one is chosen."),
    )
    job = _JobChoiceField(
        label=gettext_lazy("Fine-tune job (adapter)"),
        queryset=FineTuneJob.objects.filter(status=FineTuneJob.Status.SUCCEEDED).select_related("base_model", "dataset_version"),
        required=False,
        empty_label=gettext_lazy("— none: the base model alone —"),
    )
    also_base = forms.BooleanField(
        label=gettext_lazy("Also evaluate the base model"),
        required=False,
        initial=True,
        help_text=gettext_lazy("Queues a second run without the adapter, so the report compares base and tuned."),
    )
    more_models = forms.ModelMultipleChoiceField(
        label=gettext_lazy("More contenders"),
        queryset=BaseModel.objects.filter(is_active=True).select_related("endpoint"),
        required=False,
        help_text=gettext_lazy("Other models (hosted ones included) answering the same items, side by side in one comparison."),
    )
    suites = forms.MultipleChoiceField(
        label=gettext_lazy("Suites"),
        choices=[
            ("reference", gettext_lazy("Reference answers (BLEU / ROUGE)")),
            ("mcq", gettext_lazy("Multiple choice")),
            ("diagnosis", gettext_lazy("Diagnosis")),
            ("rubric", gettext_lazy("Rubric judge")),
        ],
        initial=["reference"],
        required=False,  # none ticked: the reference answers
        widget=forms.CheckboxSelectMultiple,
    )
    judge_model = _ContenderChoiceField(
        label=gettext_lazy("Judge model"),
        queryset=BaseModel.objects.filter(is_active=True).select_related("endpoint"),
        required=False,
        help_text=gettext_lazy("Scores every answer 1-5 on the chat rubric (the rubric suite)."),
    )
    mcq_shots = forms.IntegerField(
        label=gettext_lazy("Multiple-choice shots"),
        required=False,
        min_value=0,
        max_value=5,
        initial=0,
        help_text=gettext_lazy("0-5 solved questions from the version's other splits put before each multiple-choice question."),
    )
    mode = forms.ChoiceField(
        label=gettext_lazy("Metrics"), choices=[(m, MODE_SHORT[m]) for m in MODES], initial="llamafactory", widget=forms.RadioSelect
    )
    max_samples = forms.IntegerField(
        label=gettext_lazy("Maximum samples"),
        required=False,
        min_value=1,
        help_text=gettext_lazy("Empty: the whole split."),
    )
    generation = forms.ChoiceField(
        label=gettext_lazy("Generation preset"),
        choices=list(GENERATION_PRESET_LABELS.items()),
        initial="greedy",
        widget=forms.RadioSelect,
    )
    max_new_tokens = forms.IntegerField(label=gettext_lazy("Maximum new tokens"), min_value=1, max_value=32768)
    temperature = forms.FloatField(label=gettext_lazy("Temperature"), min_value=0.0, max_value=5.0, help_text=gettext_lazy("0 = greedy."))
    top_p = forms.FloatField(label=gettext_lazy("Top-p"), min_value=0.0, max_value=1.0)
    top_k = forms.IntegerField(label=gettext_lazy("Top-k"), min_value=0, help_text=gettext_lazy("0 = off."))
    repetition_penalty = forms.FloatField(label=gettext_lazy("Repetition penalty"), min_value=0.5, max_value=3.0)
    seed = forms.IntegerField(
        label=gettext_lazy("Seed"), min_value=0, required=False, help_text=gettext_lazy("Empty: not fixed (sampling only).")
    )
    cutoff_len = forms.IntegerField(label=gettext_lazy("Prompt cutoff (tokens)"), min_value=16, max_value=131072)
    batch_size = forms.IntegerField(label=gettext_lazy("Batch size"), min_value=1, max_value=1024)

    PARAM_FIELDS = PARAM_NAMES

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name, field in self.fields.items():
            widget = field.widget
            if isinstance(widget, (forms.RadioSelect, forms.CheckboxSelectMultiple)):
                continue
            if isinstance(widget, forms.CheckboxInput):
                widget.attrs.setdefault("class", "form-check-input")
            elif isinstance(widget, forms.Select):
                widget.attrs.setdefault("class", "form-select")
            else:
                widget.attrs.setdefault("class", "form-control")
            if name in PARAM_NAMES:
                widget.attrs["data-param"] = name
                if isinstance(field, forms.FloatField):
                    widget.attrs["step"] = "any"

    def clean(self):
        data = super().clean()
        job, base = data.get("job"), data.get("base_model")
        if job is not None:
            if base is not None and base.pk != job.base_model_id:
                self.add_error(
                    "base_model", _("The job was trained on %(name)s; choose that model or leave it empty.") % {"name": job.base_model.name}
                )
            data["base_model"] = job.base_model
        elif base is None and "base_model" not in self.errors:
            self.add_error("base_model", _("Choose a base model or a fine-tune job."))
        if data.get("also_base") and job is None:
            data["also_base"] = False
        version = data.get("dataset_version")
        if data.get("also_base") and version is not None and version.pk != job.dataset_version_id:
            # The base + tuned pair is the fine-tune's own held-out split (evaluation_pair_create).
            self.add_error(
                "dataset_version",
                _("A base-and-tuned comparison runs on the job's own dataset version (%(name)s); choose it, or untick “%(also)s”.")
                % {"name": job.dataset_version.name, "also": self.fields["also_base"].label},
            )
        return data

    @property
    def params(self) -> dict:
        params = {name: self.cleaned_data.get(name) for name in PARAM_NAMES}
        if self.cleaned_data.get("mcq_shots"):
            params["mcq_shots"] = self.cleaned_data["mcq_shots"]  # only the mcq suite reads it
        return params

    def param_fields(self):
        return [self[name] for name in PARAM_NAMES]


def _form_initial(request) -> dict:
    initial: dict[str, Any] = {"generation": "greedy", **GENERATION_PRESETS["greedy"]}
    job_id = _int_param(request, "job")
    job = FineTuneJob.objects.filter(pk=job_id, status=FineTuneJob.Status.SUCCEEDED).first() if job_id else None
    if job is not None:
        initial.update(job=job.pk, base_model=job.base_model_id, dataset_version=job.dataset_version_id)
    for key in ("dataset_version", "base_model"):
        value = _int_param(request, key)
        if value:
            initial[key] = value
    return initial


@role_required(ADMIN)
@require_http_methods(["GET", "POST"])
def evaluation_create_view(request):
    from training.services.evaluations import evaluation_create, evaluation_pair_create

    form = EvaluationForm(request.POST or None, initial=_form_initial(request))
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        common = {
            "actor": request.user,
            "split": data["split"],
            "mode": data["mode"],
            "params": form.params,
            "preset": data["generation"],
            "max_samples": data.get("max_samples"),
        }
        try:
            suites = data.get("suites") or ["reference"]
            if set(suites) != {"reference"} or data.get("more_models") or data.get("judge_model"):
                from training.services.eval_suites import evaluation_compare_create

                contenders = [(data["base_model"], None)] if data["also_base"] and data["job"] is not None else []
                contenders.append((data["base_model"], data["job"]))
                contenders += [(m, None) for m in data.get("more_models") or () if (m, None) not in contenders]
                runs = evaluation_compare_create(
                    dataset_version=data["dataset_version"], contenders=contenders, suites=suites, judge_model=data.get("judge_model"), **common
                )
                messages.success(request, _("%(n)s evaluation runs were queued in one comparison.") % {"n": len(runs)})
                return redirect("training:evaluation-compare", group=runs[0].group)
            if data["also_base"] and data["job"] is not None:
                _base_run, run = evaluation_pair_create(job=data["job"], **common)
                done = _("Two evaluation runs were queued: the base model (#%(base)s) and the fine-tuned one (#%(id)s).") % {
                    "base": _base_run.pk,
                    "id": run.pk,
                }
            else:
                run = evaluation_create(dataset_version=data["dataset_version"], base_model=data["base_model"], job=data["job"], **common)
                done = _("Evaluation run #%(id)s was queued.") % {"id": run.pk}
        except NotAllowed:
            raise PermissionDenied from None
        except ApplicationError as exc:
            _errors_to_form(form, exc)
        else:
            messages.success(request, done)
            return redirect("training:evaluation-detail", pk=run.pk)
    return render(
        request,
        "training/eval_form.html",
        {
            "form": form,
            "presets": GENERATION_PRESETS,
            "mode_help": {mode: mode_label(mode) for mode in MODES},
        },
    )


# ---- the report ----------------------------------------------------------------------------


def _example(sample: dict) -> dict:
    """A worst/best example (``selectors_eval.sample_data`` + the baseline's answer) with its
    differences from the reference highlighted."""
    reference = sample.get("reference") or ""
    pred_html, ref_html = diff_html(sample.get("prediction") or "", reference)
    baseline = sample.get("baseline_prediction")
    out = {
        **sample,
        "scores": {key: sample.get(key) for key in METRIC_KEYS},
        "prediction_html": pred_html,
        "reference_html": ref_html,
        "has_baseline": baseline is not None,
    }
    if baseline is not None:
        out["baseline_html"] = diff_html(baseline, reference)[0]
        out["baseline_rougel"] = (sample.get("baseline_scores") or {}).get("rouge-l")
    return out


def _split_examples(worst: list[dict], best: list[dict]) -> tuple[list[dict], list[dict]]:
    """With few answers the worst and best lists overlap: show each answer once, the lower half
    as the worst and the upper half as the best."""
    positions = {e["position"] for e in worst} | {e["position"] for e in best}
    if len(positions) >= len(worst) + len(best):
        return worst, best
    k = (len(positions) + 1) // 2
    shown = {e["position"] for e in worst[:k]}
    return worst[:k], [e for e in best if e["position"] not in shown][: len(positions) - k]


def _department_rows(departments: list[dict]) -> list[dict]:
    rows = []
    for d in departments:
        value, baseline = d.get("value") or {}, d.get("baseline") or {}
        cells = []
        for key in METRIC_KEYS:
            v, b = value.get(key), baseline.get(key)
            cells.append({"key": key, "value": v, "baseline": b, "delta": None if v is None or b is None else v - b})
        rows.append({"department": d.get("department") or "", "count": d.get("count"), "cells": cells, "has_baseline": bool(baseline)})
    return rows


def _run_label(data: dict | None) -> str:
    """How a run is named beside another (``selectors_eval.evaluation_data``)."""
    if not data:
        return ""
    if data.get("job"):
        return _("%(model)s + job #%(job)s") % {"model": data["base_model_name"], "job": data["job"]}
    return _("%(model)s (base)") % {"model": data["base_model_name"]}


def _history(rows: list[dict]) -> list[dict]:
    return [
        {**row, "mode_short": MODE_SHORT.get(row["mode"], row["mode"]), "created": parse_datetime(row["created_at"] or "")} for row in rows
    ]


def _chart_data(report: dict) -> dict:
    run, baseline = report["run"], report.get("baseline")
    cards = report.get("cards") or []
    return {
        "metrics": [METRIC_LABELS.get(c["metric"], c["metric"]) for c in cards],
        "run": {"label": _run_label(run), "values": [c.get("value") for c in cards]},
        "baseline": {"label": _run_label(baseline), "values": [c.get("baseline") for c in cards]} if baseline is not None else None,
        "departments": [
            {
                "name": d.get("department") or _("(no department)"),
                "run": (d.get("value") or {}).get("rouge-l"),
                "baseline": (d.get("baseline") or {}).get("rouge-l"),
            }
            for d in report.get("departments") or []
        ],
        "loss": report.get("loss"),
        "labels": {
            "score": _("score (0–100)"),
            "train_loss": _("train loss"),
            "eval_loss": _("eval loss"),
            "step": _("step"),
            "loss": _("loss"),
            "rouge_l": "ROUGE-L",
        },
    }


def _run_context(run: EvalRun) -> dict:
    """What the progress fragment shows."""
    active = run.status in (EvalRun.Status.QUEUED, EvalRun.Status.RUNNING)
    return {"run": run, "active": active}


def _compare_url(run: EvalRun) -> str | None:
    """The comparison page of the run's group (docs/evaluation-suites.md), when it has one."""
    from django.urls import NoReverseMatch, reverse

    if not run.group:
        return None
    try:
        return reverse("training:evaluation-compare", kwargs={"group": run.group})
    except NoReverseMatch:
        return None


@role_required()
@require_GET
def evaluation_detail_view(request, pk):
    run = evaluation_get(pk=pk)
    compare_to = None
    compare_id = _int_param(request, "compare")
    if compare_id and compare_id != run.pk:
        compare_to = EvalRun.objects.filter(pk=compare_id).select_related("base_model", "job", "dataset_version").first()
    report = evaluation_report(run, compare_to=compare_to)
    baseline = report.get("baseline")
    # No cards (and no chart) before the run has scores.
    cards = (
        [{**card, "label": METRIC_LABELS.get(card["metric"], card["metric"])} for card in report.get("cards") or []] if run.summary else []
    )
    print_view = request.GET.get("print") == "1"
    worst, best = _split_examples(report.get("worst") or [], report.get("best") or [])
    worst, best = [_example(s) for s in worst], [_example(s) for s in best]
    return render(
        request,
        "training/eval_report.html",
        {
            **_run_context(run),
            "report": report,
            "baseline": baseline,
            "run_label": _run_label(report["run"]),
            "baseline_label": _run_label(baseline),
            "cards": cards,
            "departments": _department_rows(report.get("departments") or []),
            "worst": worst,
            "best": best,
            "example_groups": [
                {"id": "worst", "title": _("Worst answers"), "examples": worst},
                {"id": "best", "title": _("Best answers"), "examples": best},
            ],
            "speed": report.get("speed") or {},
            "baseline_speed": report.get("baseline_speed") or {},
            "history": _history(report.get("history") or []),
            "ratings": report.get("ratings"),
            "loss": report.get("loss"),
            "chart_data": _chart_data(report),
            "metric_keys": METRIC_KEYS,
            "metric_labels": METRIC_LABELS,
            "mode_short": MODE_SHORT.get(run.mode, run.mode),
            "mode_long": mode_label(run.mode),
            "print_view": print_view,
            "compare_url": _compare_url(run),
            "can_cancel": is_admin(request.user) and run.status in (EvalRun.Status.QUEUED, EvalRun.Status.RUNNING),
        },
    )


@role_required()
@require_GET
def evaluation_progress_view(request, pk):
    """htmx fragment: the progress of an active run. When the run has ended, tells htmx to
    reload the page (which then renders the finished report)."""
    run = evaluation_get(pk=pk)
    context = _run_context(run)
    response = render(request, "training/_eval_progress.html", context)
    if not context["active"]:
        response["HX-Refresh"] = "true"
    return response


@role_required(ADMIN)
@require_POST
def evaluation_cancel_view(request, pk):
    from training.services.evaluations import evaluation_cancel

    run = evaluation_get(pk=pk)
    try:
        evaluation_cancel(actor=request.user, run=run)
    except NotAllowed:
        raise PermissionDenied from None
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, _("Cancellation of evaluation run #%(id)s was requested.") % {"id": run.pk})
    return redirect("training:evaluation-detail", pk=pk)


# ---- exports -------------------------------------------------------------------------------


def _filename(run: EvalRun, ext: str) -> str:
    return f"evaluation-{run.pk}-{timezone.localtime().strftime('%Y%m%d-%H%M')}.{ext}"


# Run-level figures added to the summary's first row (scope "all") of both exports.
SPEED_KEYS = ("ttft_ms_p50", "ttft_ms_p95", "latency_ms_p50", "latency_ms_p95", "tokens_per_second", "samples_per_second", "backend")


def _export_rows(run: EvalRun) -> tuple[list[dict], list[dict]]:
    """``evaluation_export_rows`` with the run's speed figures and generation settings on the
    summary row of the whole run."""
    summary_rows, sample_rows = evaluation_export_rows(run)
    speed = run.speed or {}
    for row in summary_rows:
        if row.get("scope") == "all":
            row.update({key: speed.get(key) for key in SPEED_KEYS})
            row["params"] = json.dumps(run.params or {}, ensure_ascii=False, sort_keys=True)
    return summary_rows, sample_rows


@role_required()
@require_GET
def evaluation_export_json_view(request, pk):
    run = evaluation_get(pk=pk)
    summary_rows, sample_rows = _export_rows(run)
    return json_download({"run": run.pk, "summary": summary_rows, "samples": sample_rows}, _filename(run, "json"))


def xlsx_download(sheets: dict[str, list[dict]], filename: str) -> HttpResponse:
    """An XLSX attachment with one sheet per entry (title: rows of dicts; the columns are the
    keys in their first order), written by the one writer: formula-like text stays text,
    illegal characters are dropped."""
    from medportal.xlsx import MIME_TYPE, XlsxWriter

    book = XlsxWriter()
    for title, rows in sheets.items():
        columns: list[str] = []
        for row in rows:
            columns.extend(k for k in row if k not in columns)
        sheet = book.sheet(title, columns or ["field"])
        for row in rows:
            sheet.append(row.get(c) for c in columns)
    response = HttpResponse(book.getvalue(), content_type=MIME_TYPE)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def json_download(body, filename: str, **dumps) -> HttpResponse:
    """A JSON attachment (UTF-8, indented)."""
    response = HttpResponse(json.dumps(body, ensure_ascii=False, indent=1, **dumps), content_type="application/json; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@role_required()
@require_GET
def evaluation_export_xlsx_view(request, pk):
    """Two sheets: ``summary`` (the whole run, then one row per department: metrics; the run's
    row also has its speed and settings) and ``samples`` (one row per answer with its scores)."""
    run = evaluation_get(pk=pk)
    summary_rows, sample_rows = _export_rows(run)
    return xlsx_download({"summary": summary_rows, "samples": sample_rows}, _filename(run, "xlsx"))


urlpatterns = [
    path("evaluations/", evaluation_list_view, name="evaluation-list"),
    path("evaluations/new/", evaluation_create_view, name="evaluation-create"),
    path("evaluations/<int:pk>/", evaluation_detail_view, name="evaluation-detail"),
    path("evaluations/<int:pk>/progress/", evaluation_progress_view, name="evaluation-progress"),
    path("evaluations/<int:pk>/cancel/", evaluation_cancel_view, name="evaluation-cancel"),
    path("evaluations/<int:pk>/export.json", evaluation_export_json_view, name="evaluation-export-json"),
    path("evaluations/<int:pk>/export.xlsx", evaluation_export_xlsx_view, name="evaluation-export-xlsx"),
]
