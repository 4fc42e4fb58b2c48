"""The regression gate: a new adapter must not be worse than its parent before clinicians get it.

``gate_open`` queues two evaluation runs in one comparison group — the new adapter and its
parent (the parent job's adapter, or the base model) — on the same split of the job's dataset
version with the same prompts and template. When both have succeeded (the evaluation kind's
``on_succeeded`` step calls ``gate_after_evaluation``), ``gate_decide`` pairs their samples by
position and computes the mean difference of the metric (ROUGE-L by default) with a seeded
paired-bootstrap interval: **blocked** when the whole interval is below zero (worse beyond the
interval), **passed** otherwise. An admin may override a blocked gate with a reason (audited).

While a gate is pending or blocked its adapter is not runnable (``training.runnables``):
not in the arena, not in chat. A DPO adapter needs a passed (or overridden) gate before it is
runnable; an SFT adapter is gated only when a gate was opened for it.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from medportal.audit import audit_record
from medportal.errors import InvalidInput, InvalidTransition
from training.models import AdapterGate, EvalRun, EvalSample, FineTuneJob
from training.services import require_admin

logger = logging.getLogger(__name__)
G = AdapterGate.Status
METRICS = ("rougel", "rouge1", "rouge2", "bleu4")
CONFIDENCE = 0.95
RESAMPLES = 2000


def paired_bootstrap(deltas: Sequence[float], *, resamples: int = RESAMPLES, confidence: float = CONFIDENCE, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high) of the mean of ``deltas`` with a percentile bootstrap interval."""
    n = len(deltas)
    if n == 0:
        raise ValueError("no paired samples")
    mean = sum(deltas) / n
    rng = random.Random(seed)
    means = sorted(sum(deltas[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    tail = (1 - confidence) / 2
    low = means[int(tail * resamples)]
    high = means[min(resamples - 1, int((1 - tail) * resamples))]
    return mean, low, high


def gate_open(*, actor, job: FineTuneJob, split: str | None = None, metric: str = "rougel", max_samples: int | None = None, enqueue: bool = True) -> AdapterGate:
    """Queue the gate's two evaluation runs (admins). A gate already decided is refused; a
    pending one whose runs failed or were cancelled is opened again with new runs."""
    from training.services.evaluations import evaluation_create, evaluation_split_for

    require_admin(actor, _("Only admins can start evaluation runs."))
    if job.status != FineTuneJob.Status.SUCCEEDED or not job.adapter_path:
        raise InvalidInput(_("Job #%(pk)s has no adapter yet: only a succeeded fine-tune can be gated.") % {"pk": job.pk})
    if metric not in METRICS:
        raise InvalidInput(_("Unknown metric %(m)s; choose %(choices)s.") % {"m": metric, "choices": ", ".join(METRICS)})
    existing = AdapterGate.objects.filter(job=job).select_related("candidate_run", "parent_run").first()
    if existing is not None:
        runs_dead = any(r.status in (EvalRun.Status.FAILED, EvalRun.Status.CANCELLED) for r in (existing.candidate_run, existing.parent_run))
        if existing.status != G.PENDING or not runs_dead:
            raise InvalidTransition(_("Job #%(pk)s already has a gate (%(status)s).") % {"pk": job.pk, "status": existing.get_status_display()})
    version = job.dataset_version
    split = split or evaluation_split_for(version)
    if not split:
        raise InvalidInput(_("Dataset version '%(name)s' has no test or validation split to evaluate on.") % {"name": version.name})
    group = f"gate-{job.pk}-{timezone.now():%Y%m%d%H%M%S}"
    params = {"template": str((job.config or {}).get("template") or "default")}
    common = {"actor": actor, "dataset_version": version, "base_model": job.base_model, "split": split, "params": params, "max_samples": max_samples, "group": group, "enqueue": enqueue}
    with transaction.atomic():
        candidate = evaluation_create(job=job, **common)
        parent = evaluation_create(job=job.parent_job, **common)
        fields = {"parent_job": job.parent_job, "dataset_version": version, "split": split, "metric": metric, "candidate_run": candidate, "parent_run": parent, "status": G.PENDING, "summary": {}, "decided_at": None, "created_by": actor}
        if existing is None:
            gate = AdapterGate.objects.create(job=job, **fields)
        else:
            for key, value in fields.items():
                setattr(existing, key, value)
            existing.save()
            gate = existing
        audit_record(
            actor=actor,
            action="adapter_gate.open",
            target=job,
            summary=f"Gate of job #{job.pk} against " + (f"job #{job.parent_job_id}" if job.parent_job_id else "the base model") + f" on {version.name}/{split} ({metric})",
            changes={"candidate_run": candidate.pk, "parent_run": parent.pk, "metric": metric},
        )
    return gate


def gate_decide(gate: AdapterGate) -> AdapterGate:
    """Decide a pending gate whose two runs have succeeded (no-op otherwise)."""
    gate.refresh_from_db()
    runs = EvalRun.objects.filter(pk__in=[gate.candidate_run_id, gate.parent_run_id]).values_list("pk", "status")
    if gate.status != G.PENDING or any(status != EvalRun.Status.SUCCEEDED for _pk, status in runs):
        return gate
    metric = gate.metric
    new = dict(EvalSample.objects.filter(run_id=gate.candidate_run_id).values_list("position", metric))
    old = dict(EvalSample.objects.filter(run_id=gate.parent_run_id).values_list("position", metric))
    common = sorted(set(new) & set(old))
    if not common:
        summary = {"n": 0, "note": "no paired samples"}
        status = G.BLOCKED
    else:
        deltas = [float(new[p]) - float(old[p]) for p in common]
        mean, low, high = paired_bootstrap(deltas)
        summary = {
            "n": len(common),
            "candidate_mean": round(sum(float(new[p]) for p in common) / len(common), 4),
            "parent_mean": round(sum(float(old[p]) for p in common) / len(common), 4),
            "delta": round(mean, 4),
            "low": round(low, 4),
            "high": round(high, 4),
            "confidence": CONFIDENCE,
            "resamples": RESAMPLES,
        }
        status = G.BLOCKED if high < 0 else G.PASSED
    with transaction.atomic():
        updated = AdapterGate.objects.filter(pk=gate.pk, status=G.PENDING).update(status=status, summary=summary, decided_at=timezone.now())
        if updated:
            audit_record(
                actor=None,
                action=f"adapter_gate.{status}",
                target=gate.job,
                summary=f"Gate of job #{gate.job_id}: {status} ({metric} Δ {summary.get('delta')} [{summary.get('low')}, {summary.get('high')}], n={summary['n']})",
                changes=summary,
            )
    gate.refresh_from_db()
    return gate


def after_finetune(job_id: int) -> None:
    """The "finetune" kind's ``on_succeeded`` step: the evaluations the job asked for
    (``evaluations_after_finetune``), then, for a DPO job, its regression gate, opened in the
    name of the admin who started the job. Never raises: the fine-tune stays succeeded."""
    from training.services.evaluations import evaluations_after_finetune

    evaluations_after_finetune(job_id)
    try:
        job = FineTuneJob.objects.select_related("created_by", "dataset_version", "base_model").get(pk=job_id)
        if job.stage == FineTuneJob.Stage.DPO and not AdapterGate.objects.filter(job=job).exists():
            gate_open(actor=job.created_by, job=job)
    except Exception:
        logger.exception("fine-tune job %s: could not open its regression gate", job_id)


def gate_after_evaluation(run_id: int) -> None:
    """The evaluation kind's ``on_succeeded`` step: decide the gates waiting on this run."""
    from django.db.models import Q

    for gate in AdapterGate.objects.filter(Q(candidate_run_id=run_id) | Q(parent_run_id=run_id), status=G.PENDING):
        gate_decide(gate)


def gate_override(*, actor, gate: AdapterGate, reason: str) -> AdapterGate:
    """A blocked gate let through by an admin, with the reason (audited)."""
    require_admin(actor, _("Only admins can override the regression gate."))
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput(_("Give the reason for letting this adapter through."), details={"reason": [_("This field is required.")]})
    with transaction.atomic():
        if not AdapterGate.objects.filter(pk=gate.pk, status=G.BLOCKED).update(status=G.OVERRIDDEN, overridden_by=actor, override_reason=reason[:2000]):
            raise InvalidTransition(_("Only a blocked gate can be overridden."))
        audit_record(
            actor=actor,
            action="adapter_gate.override",
            target=gate.job,
            summary=f"Gate of job #{gate.job_id} overridden: {reason}"[:200],
            changes={"reason": reason, "summary": gate.summary},
        )
    gate.refresh_from_db()
    return gate
