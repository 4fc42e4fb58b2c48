"""Reads of evaluation runs: lists, access, samples, the report and the export rows.

Every MedPortal role may see every evaluation run, so ``evaluation_get`` only turns an unknown id
into a 404 (views and the API check the role first). ``evaluation_data`` is the one shape of a
run (the API returns it, the report embeds it); ``evaluation_report`` is everything the report
page shows: metric cards against a baseline (the other run of the comparison group, or a run
chosen to compare with), the per-department table, the worst and best answers beside the
baseline's, speed, the history of runs on the same data, the fine-tune's loss curves and the
chat ratings of the adapter.
"""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import Http404
from django.utils.translation import gettext_lazy

from training.models import EvalRun, EvalSample, FineTuneJob

METRICS = (
    ("bleu-4", "bleu4", "BLEU-4"),
    ("rouge-1", "rouge1", "ROUGE-1"),
    ("rouge-2", "rouge2", "ROUGE-2"),
    ("rouge-l", "rougel", "ROUGE-L"),
)
METRIC_KEYS = tuple(key for key, _field, _label in METRICS)
SAMPLE_ORDERINGS = {
    "position": ("position",),
    "rougel": ("rougel", "position"),
    "-rougel": ("-rougel", "position"),
    "bleu4": ("bleu4", "position"),
    "-bleu4": ("-bleu4", "position"),
}
EXAMPLES = 10
HISTORY = 20


def _iso(value) -> str | None:
    return value.isoformat() if value else None


# --------------------------------------------------------------------------- lists and access


def evaluation_list(
    *, dataset_version=None, job=None, group: str | None = None, status: str | None = None, base_model=None
) -> QuerySet[EvalRun]:
    """Runs, newest first, with what their rows show (one query per page)."""
    qs = EvalRun.objects.select_related("dataset_version", "base_model", "job", "created_by", "judge_model").order_by("-created_at", "-id")
    if dataset_version is not None:
        qs = qs.filter(dataset_version=dataset_version)
    if job is not None:
        qs = qs.filter(job=job)
    if base_model is not None:
        qs = qs.filter(base_model=base_model)
    if group:
        qs = qs.filter(group=group)
    if status:
        qs = qs.filter(status=status)
    return qs


def evaluation_get(*, pk) -> EvalRun:
    """The run ``pk`` (404 when unknown)."""
    try:
        return evaluation_list().get(pk=int(pk))
    except (EvalRun.DoesNotExist, TypeError, ValueError):
        raise Http404("No such evaluation run.") from None


def evaluation_samples(run: EvalRun, *, ordering: str = "position", department: str | None = None) -> QuerySet[EvalSample]:
    """The run's answers; ``ordering`` is position, rougel, -rougel, bleu4 or -bleu4."""
    qs = EvalSample.objects.filter(run=run)
    if department is not None:
        qs = qs.filter(department=department)
    return qs.order_by(*SAMPLE_ORDERINGS.get(ordering, SAMPLE_ORDERINGS["position"]))


# --------------------------------------------------------------------------- shapes


def evaluation_data(run: EvalRun) -> dict:
    """One run, JSON-serialisable: what it evaluated, how, its state and its numbers."""
    from training.engine.metrics import MODE_LABELS

    return {
        "id": run.pk,
        "label": run.label,
        "status": run.status,
        "status_label": str(run.get_status_display()),
        "dataset_version": run.dataset_version_id,
        "dataset_version_name": run.dataset_version.name,
        "split": run.split,
        "base_model": run.base_model_id,
        "base_model_name": run.base_model.name,
        "job": run.job_id,
        "group": run.group,
        "mode": run.mode,
        "mode_label": MODE_LABELS.get(run.mode, run.mode),
        "params": run.params,
        "progress": run.progress,
        "done_samples": run.done_samples,
        "total_samples": run.total_samples,
        "summary": run.summary,
        "by_department": run.by_department,
        "speed": run.speed,
        "backend": run.backend,
        "error": run.error,
        "worker": run.worker,
        "heartbeat_at": _iso(run.heartbeat_at),
        "created_by": run.created_by.get_username() if run.created_by_id else None,
        "created_at": _iso(run.created_at),
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
        "version": run.version,
        "can_cancel": run.status in EvalRun.ACTIVE,
        "suites": list(run.suites or ["reference"]),
        "suite_summary": run.suite_summary or {},
        "judge_model": run.judge_model_id,
        "judge_model_name": run.judge_model.name if run.judge_model_id else None,
        "judge_prompt_version": (run.judge_prompt or {}).get("version"),
    }


def sample_data(sample: EvalSample) -> dict:
    return {
        "position": sample.position,
        "dataset_item": sample.dataset_item_id,
        "department": sample.department,
        "prompt": sample.prompt,
        "reference": sample.reference,
        "prediction": sample.prediction,
        **{key: getattr(sample, field) for key, field, _label in METRICS},
        "completion_tokens": sample.completion_tokens,
        "latency_ms": sample.latency_ms,
        "suite_scores": sample.suite_scores or {},
    }


# --------------------------------------------------------------------------- report


def evaluation_baseline(run: EvalRun) -> EvalRun | None:
    """The run this one is compared with by default: the other run of its group (the base run
    for a tuned run and the other way round), a succeeded one first, the newest first."""
    if not run.group:
        return None
    others = list(evaluation_list(group=run.group).exclude(pk=run.pk))
    if not others:
        return None
    # The other side first (base ↔ tuned), then succeeded before unfinished, then newest.
    others.sort(key=lambda r: ((r.job_id is None) == (run.job_id is None), r.status != EvalRun.Status.SUCCEEDED, -r.pk))
    return others[0]


def _delta(value, baseline):
    if value is None or baseline is None:
        return None
    return round(float(value) - float(baseline), 4)


def _metrics(summary: dict | None) -> dict | None:
    if not summary:
        return None
    return {key: summary.get(key) for key in METRIC_KEYS}


def _examples(run: EvalRun, baseline: EvalRun | None, ordering: str, limit: int) -> list[dict]:
    rows = [sample_data(s) for s in evaluation_samples(run, ordering=ordering)[:limit]]
    if baseline is None or not rows:
        return rows
    items = [r["dataset_item"] for r in rows if r["dataset_item"] is not None]
    positions = [r["position"] for r in rows]
    by_item: dict[int, EvalSample] = {}
    by_position: dict[int, EvalSample] = {}
    for other in EvalSample.objects.filter(run=baseline, dataset_item_id__in=items):
        by_item[other.dataset_item_id] = other
    for other in EvalSample.objects.filter(run=baseline, position__in=positions, dataset_item__isnull=True):
        by_position[other.position] = other
    for row in rows:
        other = by_item.get(row["dataset_item"]) if row["dataset_item"] is not None else by_position.get(row["position"])
        row["baseline_prediction"] = other.prediction if other else None
        row["baseline_scores"] = {key: getattr(other, field) for key, field, _label in METRICS} if other else None
    return rows


def _loss(job: FineTuneJob | None) -> dict | None:
    if job is None:
        return None
    from training.selectors import job_snapshot

    snapshot = job_snapshot(job)
    return {"job": job.pk, "train": snapshot["train"], "eval": snapshot["eval"]}


def _ratings(job: FineTuneJob | None) -> dict | None:
    if job is None:
        return None
    # Clinicians' chat ratings (chat.selectors.rating_summary): training does not import chat,
    # the settings name the reader (MEDPORTAL_RATINGS_SUMMARY), as Django plugs in backends.
    from django.conf import settings
    from django.utils.module_loading import import_string

    return import_string(settings.MEDPORTAL_RATINGS_SUMMARY)(job_id=job.pk)


def evaluation_history(run: EvalRun, *, limit: int = HISTORY) -> list[dict]:
    """Runs on the same dataset version and split, newest first, with their summaries."""
    rows = evaluation_list(dataset_version=run.dataset_version).filter(split=run.split)[:limit]
    return [
        {
            "id": r.pk,
            "label": r.label,
            "base_model_name": r.base_model.name,
            "job": r.job_id,
            "group": r.group,
            "mode": r.mode,
            "status": r.status,
            "status_label": str(r.get_status_display()),
            "summary": r.summary,
            "total_samples": r.total_samples,
            "created_at": _iso(r.created_at),
            "is_current": r.pk == run.pk,
        }
        for r in rows
    ]


def evaluation_report(run: EvalRun, *, compare_to: EvalRun | None = None, examples: int = EXAMPLES) -> dict:
    """Everything the report shows about ``run`` compared with ``compare_to`` (default: the other
    run of its group). Keys: run, baseline, cards, departments, worst, best, speed, history,
    loss, ratings, mode_label."""
    from training.engine.metrics import MODE_LABELS

    baseline = compare_to if compare_to is not None and compare_to.pk != run.pk else evaluation_baseline(run)
    run_summary = run.summary or {}
    base_summary = (baseline.summary or {}) if baseline is not None else {}
    cards = []
    for key, _field, label in METRICS:
        value = run_summary.get(key)
        other = base_summary.get(key) if baseline is not None else None
        cards.append({"metric": key, "label": label, "value": value, "baseline": other, "delta": _delta(value, other)})
    departments = []
    mine = run.by_department or {}
    theirs = (baseline.by_department or {}) if baseline is not None else {}
    for name in sorted(set(mine) | set(theirs), key=lambda n: (n == "", n)):
        value = mine.get(name)
        other = theirs.get(name)
        departments.append(
            {
                "department": name,
                "count": (value or {}).get("count", 0),
                "value": _metrics(value),
                "baseline": _metrics(other),
                "baseline_count": (other or {}).get("count", 0) if other else 0,
                "delta": {key: _delta((value or {}).get(key), (other or {}).get(key)) for key in METRIC_KEYS} if value and other else None,
            }
        )
    job = run.job if run.job_id else (baseline.job if baseline is not None and baseline.job_id else None)
    return {
        "run": evaluation_data(run),
        "baseline": evaluation_data(baseline) if baseline is not None else None,
        "mode_label": MODE_LABELS.get(run.mode, run.mode),
        "cards": cards,
        "departments": departments,
        # Answers of an unfinished run are kept unscored (for its resumption): no examples yet.
        "worst": _examples(run, baseline, "rougel", examples) if run.status == EvalRun.Status.SUCCEEDED else [],
        "best": _examples(run, baseline, "-rougel", examples) if run.status == EvalRun.Status.SUCCEEDED else [],
        "speed": run.speed or {},
        "baseline_speed": (baseline.speed or {}) if baseline is not None else None,
        "history": evaluation_history(run),
        "loss": _loss(job),
        "ratings": _ratings(job),
    }


# --------------------------------------------------------------------------- exports


def evaluation_export_rows(run: EvalRun) -> tuple[list[dict], list[dict]]:
    """(summary rows, sample rows) for the XLSX (two sheets) and JSON exports.

    Summary rows: the whole run first (department ``""`` labelled "(all)" by the caller as it
    likes), then one row per department; each with run, model, job, dataset version, split, mode,
    count and the four metrics. Sample rows: every answer in position order with its scores."""
    common = {
        "run": run.pk,
        "base_model": run.base_model.name,
        "job": run.job_id,
        "dataset_version": run.dataset_version.name,
        "split": run.split,
        "mode": run.mode,
    }
    summary_rows = [{**common, "scope": "all", "department": "", **{k: (run.summary or {}).get(k) for k in (*METRIC_KEYS, "count")}}]
    for name, values in sorted((run.by_department or {}).items(), key=lambda kv: (kv[0] == "", kv[0])):
        summary_rows.append({**common, "scope": "department", "department": name, **{k: values.get(k) for k in (*METRIC_KEYS, "count")}})
    sample_rows = [sample_data(s) for s in evaluation_samples(run).iterator(chunk_size=1000)]
    return summary_rows, sample_rows


# --------------------------------------------------------------------------- comparison of contenders

# (suite, key, label, kind, scale): kind "binary" values are 0/1 (accuracy; McNemar between two
# contenders), "mean" values are continuous (paired bootstrap). ``scale`` is what the value is
# shown multiplied by (accuracies as percentages; BLEU / ROUGE are stored × 100 already).
COMPARE_METRICS = (
    ("reference", "bleu-4", "BLEU-4", "mean", 1.0),
    ("reference", "rouge-l", "ROUGE-L", "mean", 1.0),
    ("mcq", "mcq.accuracy", "MCQ accuracy (%)", "binary", 100.0),
    ("diagnosis", "diagnosis.top1", "Diagnosis top-1 (%)", "binary", 100.0),
    ("diagnosis", "diagnosis.in_differential", "Diagnosis in differential (%)", "binary", 100.0),
    ("rubric", "rubric.mean", "Judge rubric mean (1-5)", "mean", 1.0),
    ("rubric", "rubric.accuracy", "Judge: accuracy", "mean", 1.0),
    ("rubric", "rubric.safety", "Judge: safety", "mean", 1.0),
    ("rubric", "rubric.completeness", "Judge: completeness", "mean", 1.0),
    ("rubric", "rubric.clarity", "Judge: clarity", "mean", 1.0),
)
COMPARE_LABELS = {
    "bleu-4": "BLEU-4",
    "rouge-l": "ROUGE-L",
    "mcq.accuracy": gettext_lazy("MCQ accuracy (%)"),
    "diagnosis.top1": gettext_lazy("Diagnosis top-1 (%)"),
    "diagnosis.in_differential": gettext_lazy("Diagnosis in differential (%)"),
    "rubric.mean": gettext_lazy("Judge rubric mean (1-5)"),
    "rubric.accuracy": gettext_lazy("Judge: accuracy"),
    "rubric.safety": gettext_lazy("Judge: safety"),
    "rubric.completeness": gettext_lazy("Judge: completeness"),
    "rubric.clarity": gettext_lazy("Judge: clarity"),
}


def sample_metric(sample: EvalSample, key: str):
    """One metric of one answer (None where the suite does not apply or the judge failed)."""
    if key == "bleu-4":
        return sample.bleu4
    if key == "rouge-l":
        return sample.rougel
    suite, _dot, name = key.partition(".")
    scores = (sample.suite_scores or {}).get(suite)
    if not scores:
        return None
    if suite == "mcq":
        return int(bool(scores.get("correct")))
    if suite == "diagnosis":
        return int(bool(scores.get(name)))
    if suite == "rubric":
        if name == "mean":
            return scores.get("mean")
        return (scores.get("scores") or {}).get(name)
    return None


def _item_key(sample: EvalSample):
    return ("item", sample.dataset_item_id) if sample.dataset_item_id is not None else ("position", sample.position)


def evaluation_group_runs(group: str) -> list[EvalRun]:
    """The contenders of a comparison group, in the order they were created; 404 when none."""
    runs = list(evaluation_list(group=group).order_by("created_at", "id")) if group else []
    if not runs:
        raise Http404("No such comparison.")
    return runs


def evaluation_comparison(group: str, *, examples: int = 5) -> dict:
    """Every contender of a group side by side, on the items all of them answered.

    Keys: group, runs (evaluation_data), finished, items (common items), metrics (per metric:
    one interval per contender — mean with its bootstrap 95% interval — and paired tests of every
    contender against the first: paired bootstrap of the difference, McNemar for accuracies),
    departments and subjects (per contender mean and n), speed (per contender), examples (per
    contender the worst and best answers on its suite's main metric)."""
    from training.engine.scoring.stats import bootstrap_ci, mcnemar, paired_bootstrap

    runs = evaluation_group_runs(group)
    finished = [r for r in runs if r.status == EvalRun.Status.SUCCEEDED]
    samples: dict[int, dict] = {}
    for run in finished:
        samples[run.pk] = {_item_key(s): s for s in EvalSample.objects.filter(run=run).order_by("position")}
    common = None
    for rows in samples.values():
        common = set(rows) if common is None else common & set(rows)
    keys = sorted(common or (), key=lambda k: (k[0], k[1]))
    suites = [s for s in ("reference", "mcq", "diagnosis", "rubric") if any(s in (r.suites or ["reference"]) for r in finished)]
    metrics = []
    for suite, key, _label, kind, scale in COMPARE_METRICS:
        if suite not in suites:
            continue
        values = {run.pk: [sample_metric(samples[run.pk][k], key) for k in keys] for run in finished}
        if not any(v is not None for vs in values.values() for v in vs):
            continue
        rows = []
        for run in finished:
            interval = bootstrap_ci(values[run.pk])
            rows.append({"run": run.pk, "label": run.label, **interval.to_dict(scale=scale)})
        paired = []
        if len(finished) > 1:
            first = finished[0]
            for run in finished[1:]:
                test = {"run": run.pk, "label": run.label, "vs": first.pk, "vs_label": first.label}
                test["bootstrap"] = paired_bootstrap(values[run.pk], values[first.pk]).to_dict(scale=scale)
                if kind == "binary":
                    test["mcnemar"] = mcnemar(values[run.pk], values[first.pk]).to_dict()
                paired.append(test)
        metrics.append({"suite": suite, "key": key, "label": str(COMPARE_LABELS[key]), "kind": kind, "rows": rows, "paired": paired})
    departments = _compare_groups(finished, samples, keys, lambda s: s.department, metrics)
    subjects = _compare_groups(
        finished, samples, keys, lambda s: ((s.suite_scores or {}).get("mcq") or {}).get("subject"), [m for m in metrics if m["suite"] == "mcq"]
    )
    speed = [
        {
            "run": r.pk,
            "label": r.label,
            "ttft_ms_p50": (r.speed or {}).get("ttft_ms_p50"),
            "ttft_ms_p95": (r.speed or {}).get("ttft_ms_p95"),
            "tokens_per_second": (r.speed or {}).get("tokens_per_second"),
            "generation_seconds": (r.speed or {}).get("generation_seconds"),
            "total_seconds": round((r.finished_at - r.started_at).total_seconds(), 2) if r.finished_at and r.started_at else None,
        }
        for r in finished
    ]
    main = metrics[0]["key"] if metrics else None
    example_rows = []
    if main:
        for run in finished:
            scored = [(sample_metric(samples[run.pk][k], main), samples[run.pk][k]) for k in keys]
            scored = [(v, s) for v, s in scored if v is not None]
            scored.sort(key=lambda vs: (vs[0], vs[1].position))
            example_rows.append(
                {
                    "run": run.pk,
                    "label": run.label,
                    "metric": main,
                    "worst": [{**sample_data(s), "value": v} for v, s in scored[:examples]],
                    "best": [{**sample_data(s), "value": v} for v, s in reversed(scored[-examples:])],
                }
            )
    return {
        "group": group,
        "runs": [evaluation_data(r) for r in runs],
        "finished": len(finished),
        "items": len(keys),
        "suites": suites,
        "metrics": metrics,
        "departments": departments,
        "subjects": subjects,
        "speed": speed,
        "examples": example_rows,
        "calibration": evaluation_calibration(group),
    }


def _compare_groups(runs, samples, keys, group_of, metrics) -> list[dict]:
    """Per value of ``group_of(sample)`` (department, subject): each metric's mean and n per run."""
    names = sorted({group_of(samples[runs[0].pk][k]) for k in keys} - {None}, key=lambda n: (n == "", n)) if runs else []
    out = []
    for name in names:
        row = {"name": name, "metrics": []}
        for metric in metrics:
            scale = next(m[4] for m in COMPARE_METRICS if m[1] == metric["key"])
            cells = []
            for run in runs:
                vals = [sample_metric(samples[run.pk][k], metric["key"]) for k in keys if group_of(samples[runs[0].pk][k]) == name]
                vals = [v for v in vals if v is not None]
                cells.append({"run": run.pk, "mean": round(sum(vals) / len(vals) * scale, 4) if vals else None, "n": len(vals)})
            row["metrics"].append({"key": metric["key"], "label": metric["label"], "cells": cells})
        out.append(row)
    return out


def comparison_chart_svg(comparison: dict, *, width: int = 640) -> str:
    """A server-side SVG of every metric: one row per contender, a dot at the mean and whiskers
    over its 95% interval (no chart library, no script: CSP-clean)."""
    from django.utils.html import escape

    row_h, head_h, label_w, pad = 22, 24, 200, 16
    plot_w = width - label_w - 2 * pad
    parts = []
    y = 0
    palette = ("#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#be185d", "#4d7c0f")
    for metric in comparison["metrics"]:
        rows = metric["rows"]
        highs = [r["high"] for r in rows if r["high"] is not None] + [r["estimate"] for r in rows if r["estimate"] is not None]
        top = max(highs) if highs else 1.0
        if metric["key"].startswith("rubric."):
            low_end, top = 1.0, 5.0
        else:
            low_end, top = 0.0, (100.0 if metric["kind"] == "binary" else max(1.0, top * 1.1))

        def x(v, low_end=low_end, top=top):
            return label_w + pad + (float(v) - low_end) / (top - low_end or 1.0) * plot_w

        parts.append(f'<text x="0" y="{y + 16}" class="chart-title" font-weight="bold" font-size="13">{escape(metric["label"])}</text>')
        parts.append(f'<text x="{label_w + pad}" y="{y + 16}" font-size="10" fill="#666">{low_end:g}</text>')
        parts.append(f'<text x="{label_w + pad + plot_w}" y="{y + 16}" font-size="10" fill="#666" text-anchor="end">{top:g}</text>')
        y += head_h
        for i, r in enumerate(rows):
            color = palette[i % len(palette)]
            cy = y + row_h / 2
            parts.append(f'<text x="0" y="{cy + 4:.1f}" font-size="12">{escape(r["label"])}</text>')
            parts.append(f'<line x1="{label_w + pad}" y1="{cy:.1f}" x2="{label_w + pad + plot_w}" y2="{cy:.1f}" stroke="#eee"/>')
            if r["estimate"] is not None:
                lo = r["low"] if r["low"] is not None else r["estimate"]
                hi = r["high"] if r["high"] is not None else r["estimate"]
                parts.append(
                    f'<line class="whisker" x1="{x(lo):.1f}" y1="{cy:.1f}" x2="{x(hi):.1f}" y2="{cy:.1f}" stroke="{color}" stroke-width="2"/>'
                    f'<line x1="{x(lo):.1f}" y1="{cy - 5:.1f}" x2="{x(lo):.1f}" y2="{cy + 5:.1f}" stroke="{color}" stroke-width="2"/>'
                    f'<line x1="{x(hi):.1f}" y1="{cy - 5:.1f}" x2="{x(hi):.1f}" y2="{cy + 5:.1f}" stroke="{color}" stroke-width="2"/>'
                    f'<circle class="estimate" cx="{x(r["estimate"]):.1f}" cy="{cy:.1f}" r="4" fill="{color}">'
                    f'<title>{escape(r["label"])}: {r["estimate"]:.2f} [{lo:.2f}, {hi:.2f}] n={r["n"]}</title></circle>'
                )
            y += row_h
        y += 8
    height = max(y, 1)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="eval-compare-chart" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">' + "".join(parts) + "</svg>"
    )


def _chat_ratings(group: str) -> list[tuple[dict, dict]]:
    """(judge's scores, a clinician's chat rating) for every answer the judge scored in the
    comparison that clinicians also rated in chat: the same model's identical answer to the same
    question (MEDPORTAL_CHAT_ANSWER_RATINGS names chat's reader; training does not import chat)."""
    from django.conf import settings
    from django.utils.module_loading import import_string

    from training.models import EvalSample

    samples = EvalSample.objects.filter(run__group=group, run__judge_model__isnull=False).select_related("run")
    judged = [(s, ((s.suite_scores or {}).get("rubric") or {}).get("scores")) for s in samples.only("prompt", "prediction", "suite_scores", "run__base_model_id", "run__job_id")]
    judged = [(s, scores) for s, scores in judged if scores]
    if not judged:
        return []
    rated = import_string(settings.MEDPORTAL_CHAT_ANSWER_RATINGS)([(s.run.base_model_id, s.run.job_id, s.prompt, s.prediction) for s, _scores in judged])
    return [(scores, rating) for (_s, scores), ratings in zip(judged, rated) for rating in ratings]


def evaluation_calibration(group: str) -> dict:
    """Judge–clinician and clinician–clinician agreement on the answers of a comparison that
    clinicians rated blind (``EvalRating``) or in chat (``_chat_ratings``: the judge–clinician
    pairs only), per criterion: Spearman ρ and quadratic-weighted κ
    with n (one pair per rating and judged answer; for two clinicians, the first two raters of
    each answer), and the warnings of ``stats.calibration_warnings`` when a judge scored the run."""
    from training.engine.scoring.judge import CRITERIA
    from training.engine.scoring.stats import calibration_warnings, spearman, weighted_kappa
    from training.models import EvalRating

    ratings = list(EvalRating.objects.filter(sample__run__group=group).select_related("sample").order_by("sample_id", "rater_id"))
    judged = EvalRun.objects.filter(group=group, judge_model__isnull=False).exists()
    by_sample: dict[int, list] = {}
    for r in ratings:
        by_sample.setdefault(r.sample_id, []).append(r)
    chat = _chat_ratings(group)
    criteria = {}
    for c in CRITERIA:
        judge_pairs = []
        for r in ratings:
            judge = ((r.sample.suite_scores or {}).get("rubric") or {}).get("scores") or {}
            if judge.get(c) is not None:
                judge_pairs.append((judge[c], getattr(r, c)))
        judge_pairs += [(judge[c], rated[c]) for judge, rated in chat if judge.get(c) is not None and rated.get(c) is not None]
        twice = [(rs[0], rs[1]) for rs in by_sample.values() if len(rs) >= 2]
        criteria[c] = {
            "judge_clinician": {
                "rho": spearman([a for a, _b in judge_pairs], [b for _a, b in judge_pairs]).to_dict(),
                "kappa": weighted_kappa([a for a, _b in judge_pairs], [b for _a, b in judge_pairs]).to_dict(),
            },
            "clinicians": {
                "rho": spearman([getattr(a, c) for a, _b in twice], [getattr(b, c) for _a, b in twice]).to_dict(),
                "kappa": weighted_kappa([getattr(a, c) for a, _b in twice], [getattr(b, c) for _a, b in twice]).to_dict(),
            },
        }
    warnings = calibration_warnings({c: v["judge_clinician"] for c, v in criteria.items()}) if judged else []
    return {
        "judged": judged,
        "ratings": len(ratings),
        "rated_answers": len(by_sample),
        "raters": len({r.rater_id for r in ratings}),
        "chat_ratings": len(chat),
        "criteria": criteria,
        "warnings": warnings,
    }


def evaluation_compare_export_rows(comparison: dict) -> tuple[list[dict], list[dict]]:
    """(metric rows, paired-test rows) of a comparison for the XLSX and JSON exports."""
    metric_rows = [
        {"metric": m["key"], "label": m["label"], "run": r["run"], "contender": r["label"], "estimate": r["estimate"], "low": r["low"], "high": r["high"], "n": r["n"]}
        for m in comparison["metrics"]
        for r in m["rows"]
    ]
    paired_rows = []
    for m in comparison["metrics"]:
        for t in m["paired"]:
            row = {
                "metric": m["key"],
                "contender": t["label"],
                "versus": t["vs_label"],
                "difference": t["bootstrap"]["difference"],
                "low": t["bootstrap"]["low"],
                "high": t["bootstrap"]["high"],
                "p_bootstrap": t["bootstrap"]["p_value"],
                "p_mcnemar": (t.get("mcnemar") or {}).get("p_value"),
                "n": t["bootstrap"]["n"],
            }
            paired_rows.append(row)
    return metric_rows, paired_rows


__all__ = [
    "COMPARE_METRICS",
    "comparison_chart_svg",
    "evaluation_compare_export_rows",
    "evaluation_calibration",
    "evaluation_comparison",
    "evaluation_group_runs",
    "sample_metric",
    "METRICS",
    "METRIC_KEYS",
    "evaluation_baseline",
    "evaluation_data",
    "evaluation_export_rows",
    "evaluation_get",
    "evaluation_history",
    "evaluation_list",
    "evaluation_report",
    "evaluation_samples",
    "sample_data",
]
