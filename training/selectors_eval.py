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
    qs = EvalRun.objects.select_related("dataset_version", "base_model", "job", "created_by").order_by("-created_at", "-id")
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
    from chat.selectors import rating_summary

    return rating_summary(job_id=job.pk)


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
        "worst": _examples(run, baseline, "rougel", examples),
        "best": _examples(run, baseline, "-rougel", examples),
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


__all__ = [
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
