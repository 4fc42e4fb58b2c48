"""Evaluation runs: create, cancel, and queue the base + tuned evaluation of a fine-tune that
succeeded (the ``gpu`` worker's body is ``training.workers.evaluation``).

The life of a run (docs/evaluation.md has the admin's version):

Runs are background jobs of kind "evaluation" (``medportal.jobs``, registered in
``training.apps``): enqueued after commit, claimed by one conditional UPDATE, reaped by the
schedule (failed with the reason), their failures stored on the row.

* ``evaluation_create`` (admins) validates the recipe — the split is not empty, the job is a
  succeeded fine-tune of that base model, the generation parameters are valid — stores it and
  queues the run on the django-q2 ``gpu`` cluster once the transaction commits, passing the id.
  ``evaluation_pair_create`` creates the base-model and tuned-model runs of one fine-tune in one
  comparison group; ``evaluations_after_finetune`` does that for the fine-tune worker.
* ``training.workers.evaluation.evaluation_run`` (the worker) claims the run with a conditional UPDATE (queued → running),
  reads the split's frozen items, generates every answer — in this process with batched generation
  (``training.engine.generation``), or, when ``MEDPORTAL_INFERENCE_URL`` names an OpenAI-compatible
  server (vLLM), with concurrent requests — then runs the response-speed test (N answers streamed
  one at a time through the inference interface: time to first token, latency, tokens/s), scores
  every answer (``training.engine.metrics.score_pairs``), and stores the samples, the summary and the
  per-department summaries. It heartbeats while it works; every write is conditional on "still
  running, claimed by me", so a run that was cancelled (or reaped) stops at its next heartbeat.
  A failure is stored on the row.
* ``evaluation_cancel`` cancels a queued or running run at once; the worker notices.
* A run whose worker went silent is failed by ``medportal.jobs.reap_silent`` (every minute).
"""

from __future__ import annotations

import logging
import secrets

from django.db import transaction
from django.utils.translation import gettext as _

from curation.models import DatasetVersion
from medportal import jobs
from medportal.audit import audit_record
from medportal.errors import InvalidInput, InvalidTransition
from training.models import BaseModel, EvalRun, FineTuneJob
from training.services import require_admin

logger = logging.getLogger(__name__)

KIND = "evaluation"  # medportal.jobs kind (registered in training.apps)

Status = EvalRun.Status
SPLITS = tuple(EvalRun.Split.values)
MODES = tuple(EvalRun.Mode.values)
# Keys of ``EvalRun.params`` besides the GenerationParams fields.
RUN_KEYS = ("template", "batch_size", "cutoff_len", "max_samples", "mcq_shots")
MAX_MCQ_SHOTS = 5
MAX_BATCH_SIZE = 512


# --------------------------------------------------------------------------- parameters


def evaluation_params_build(
    *,
    params: dict | None = None,
    preset: str = "",
    sets: list[str] | tuple[str, ...] = (),
    max_samples: int | None = None,
    template: str | None = None,
) -> dict:
    """The validated ``EvalRun.params``: a generation preset ("greedy" by default, or "vllm_infer")
    updated with ``params`` (typed values) and ``sets`` ("key=value" strings), plus ``max_samples``.

    Keys: the ``GenerationParams`` fields (max_new_tokens, temperature, top_p, top_k,
    repetition_penalty, seed), template, batch_size, cutoff_len, max_samples, mcq_shots (0–5 solved
    multiple-choice examples before each question of the mcq suite). ``template`` given
    here wins (a tuned model is evaluated with its training template). Every bad key is reported
    in InvalidInput.details.
    """
    from training.inference.base import GenerationParams, ParamsError
    from training.engine.generation import DEFAULT_PARAMS, GENERATION_PRESETS
    from training.engine.templates import TEMPLATE_NAMES

    preset = (preset or "").strip()
    if preset and preset not in GENERATION_PRESETS:
        message = _("Unknown generation preset '%(preset)s'; choose one of %(presets)s.") % {
            "preset": preset,
            "presets": ", ".join(GENERATION_PRESETS),
        }
        raise InvalidInput(message, details={"preset": message})
    if params is not None and not isinstance(params, dict):
        raise InvalidInput(_("The generation parameters must be an object of name → value."), details={"params": "expected an object"})
    data: dict = {**DEFAULT_PARAMS, "template": "default", "max_samples": None, **GENERATION_PRESETS.get(preset, {}), **(params or {})}
    errors: dict[str, str] = {}
    for item in sets or ():
        key, sep, value = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            errors[str(item)] = "expected KEY=VALUE"
            continue
        data[key] = value.strip()
    if max_samples is not None:
        data["max_samples"] = max_samples
    if template:
        data["template"] = template
    generation_keys = {name for name in GenerationParams.__dataclass_fields__}
    unknown = sorted(k for k in data if k not in generation_keys and k not in RUN_KEYS)
    errors.update({k: "unknown parameter" for k in unknown})
    generation = None
    try:
        generation = GenerationParams.from_dict({k: v for k, v in data.items() if k in generation_keys})
    except ParamsError as exc:
        errors.update(exc.errors)
    out: dict = {}
    for key, low, high in (("batch_size", 1, MAX_BATCH_SIZE), ("cutoff_len", 16, 1 << 20), ("max_samples", 1, 10_000_000)):
        raw = data.get(key)
        if key == "max_samples" and (raw is None or raw == ""):
            out[key] = None
            continue
        try:
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError
            value = int(raw)
            if not low <= value <= high:
                raise ValueError
            out[key] = value
        except (TypeError, ValueError):
            errors[key] = f"must be an integer between {low} and {high}"
    shots = data.get("mcq_shots")
    if shots not in (None, "", 0, "0"):
        # Solved multiple-choice examples from the version's other splits put before each question.
        try:
            if isinstance(shots, float) and not shots.is_integer():
                raise ValueError
            value = int(shots)
            if not 0 <= value <= MAX_MCQ_SHOTS:
                raise ValueError
            out["mcq_shots"] = value
        except (TypeError, ValueError):
            errors["mcq_shots"] = f"must be an integer between 0 and {MAX_MCQ_SHOTS}"
    name = str(data.get("template") or "default")
    if name not in TEMPLATE_NAMES:
        errors["template"] = f"unknown template; choose one of {', '.join(TEMPLATE_NAMES)}"
    out["template"] = name
    if errors:
        fields = ", ".join(errors)
        raise InvalidInput(_("The generation parameters are not valid (%(fields)s).") % {"fields": fields}, details=errors)
    return {**generation.to_dict(), **out}


# --------------------------------------------------------------------------- helpers


def _split_count(version: DatasetVersion, split: str) -> int:
    return int((version.counts or {}).get(split, 0) or 0)


def _job_template(job: FineTuneJob) -> str:
    return str((job.config or {}).get("template") or "default")


def _new_group(job: FineTuneJob | None = None) -> str:
    return (f"job-{job.pk}-" if job is not None else "cmp-") + secrets.token_hex(4)


def _validate(*, dataset_version: DatasetVersion, base_model: BaseModel, job: FineTuneJob | None, split: str, mode: str) -> None:
    if split not in SPLITS:
        message = _("Unknown split '%(split)s'; choose test, validation or train.") % {"split": split}
        raise InvalidInput(message, details={"split": message})
    if mode not in MODES:
        message = _("Unknown metric mode '%(mode)s'; choose llamafactory or standard.") % {"mode": mode}
        raise InvalidInput(message, details={"mode": message})
    if _split_count(dataset_version, split) < 1:
        message = _("Dataset version '%(name)s' has no %(split)s split to evaluate on.") % {"name": dataset_version.name, "split": split}
        raise InvalidInput(message, details={"split": message})
    if job is not None:
        if job.base_model_id != base_model.pk:
            message = _("Job #%(id)s fine-tuned %(job_model)s, not %(model)s.") % {
                "id": job.pk,
                "job_model": job.base_model.name,
                "model": base_model.name,
            }
            raise InvalidInput(message, details={"job": message})
        if job.status != FineTuneJob.Status.SUCCEEDED or not job.adapter_path:
            message = _("Job #%(id)s is %(status)s; only a succeeded fine-tune has an adapter to evaluate.") % {
                "id": job.pk,
                "status": job.get_status_display(),
            }
            raise InvalidInput(message, details={"job": message})
    from training.inference.base import InferenceError
    from training.runnables import runnable

    try:  # the contender can run here: its endpoint on, external ones allowed
        runnable(base_model, job)
    except InferenceError as exc:
        raise InvalidInput(str(exc), details={"base_model": str(exc)}) from None


def _create(
    *,
    created_by,
    actor,
    dataset_version: DatasetVersion,
    base_model: BaseModel,
    job: FineTuneJob | None,
    split: str,
    mode: str,
    params: dict | None,
    preset: str,
    sets: list[str] | tuple[str, ...],
    max_samples: int | None,
    group: str,
    enqueue: bool,
) -> EvalRun:
    _validate(dataset_version=dataset_version, base_model=base_model, job=job, split=split, mode=mode)
    template = _job_template(job) if job is not None else None
    clean = evaluation_params_build(params=params, preset=preset, sets=sets, max_samples=max_samples, template=template)
    if clean["template"] == "default" and not base_model.has_chat_template:
        message = _("Base model '%(name)s' has no chat template of its own; choose a named template (%(names)s).") % {
            "name": base_model.name,
            "names": "llama3, qwen3, alpaca, medical_inquiry",
        }
        raise InvalidInput(message, details={"template": message})
    group = str(group or "").strip()
    if len(group) > 64:
        raise InvalidInput(_("The comparison group is longer than 64 characters."), details={"group": "at most 64 characters"})
    total = _split_count(dataset_version, split)
    if clean["max_samples"]:
        total = min(total, clean["max_samples"])
    with transaction.atomic():
        run = EvalRun.objects.create(
            dataset_version=dataset_version,
            split=split,
            base_model=base_model,
            job=job,
            group=group,
            mode=mode,
            params=clean,
            status=Status.QUEUED,
            total_samples=total,
            created_by=created_by,
        )
        what = f"{base_model.name}" + (f" + job #{job.pk}" if job else "")
        audit_record(
            actor=actor,
            action="evaluation.create",
            target=run,
            summary=f"#{run.pk}: {what} on {dataset_version.name}/{split} ({total} samples, {mode})",
            changes={
                "dataset_version": dataset_version.pk,
                "split": split,
                "base_model": base_model.pk,
                "job": job.pk if job else None,
                "mode": mode,
                "params": clean,
                "group": group,
            },
        )
        if enqueue:
            jobs.enqueue_after_commit(KIND, run.pk)
    return run


# --------------------------------------------------------------------------- create


def evaluation_create(
    *,
    actor,
    dataset_version: DatasetVersion,
    base_model: BaseModel,
    job: FineTuneJob | None = None,
    split: str = "test",
    mode: str = "llamafactory",
    params: dict | None = None,
    preset: str = "",
    sets: list[str] | tuple[str, ...] = (),
    max_samples: int | None = None,
    group: str = "",
    enqueue: bool = True,
) -> EvalRun:
    """Queue the evaluation of ``base_model`` (+ the adapter of ``job``) on a split of a version.

    Admins only (NotAllowed). InvalidInput for an empty split, a job that has not succeeded or
    fine-tuned another base model, a bad mode or bad generation parameters. A tuned model is
    prompted with its training template. ``enqueue=False`` leaves the run queued without a task
    (``run_evaluation --sync`` runs it in its own process).
    """
    require_admin(actor, _("Only admins can start evaluation runs."))
    return _create(
        created_by=actor,
        actor=actor,
        dataset_version=dataset_version,
        base_model=base_model,
        job=job,
        split=split,
        mode=mode,
        params=params,
        preset=preset,
        sets=sets,
        max_samples=max_samples,
        group=group,
        enqueue=enqueue,
    )


def _pair(*, created_by, actor, job: FineTuneJob, split, mode, params, preset, sets, max_samples, enqueue) -> tuple[EvalRun, EvalRun]:
    group = _new_group(job)
    # Both sides get the tuned model's template, so that they are asked the same prompts.
    merged = {**(params or {}), "template": _job_template(job)}
    common = {
        "created_by": created_by,
        "actor": actor,
        "dataset_version": job.dataset_version,
        "base_model": job.base_model,
        "split": split,
        "mode": mode,
        "params": merged,
        "preset": preset,
        "sets": sets,
        "max_samples": max_samples,
        "group": group,
        "enqueue": enqueue,
    }
    with transaction.atomic():
        base = _create(job=None, **common)
        tuned = _create(job=job, **common)
    return base, tuned


def evaluation_pair_create(
    *,
    actor,
    job: FineTuneJob,
    split: str = "test",
    mode: str = "llamafactory",
    params: dict | None = None,
    preset: str = "",
    sets: list[str] | tuple[str, ...] = (),
    max_samples: int | None = None,
    enqueue: bool = True,
) -> tuple[EvalRun, EvalRun]:
    """The base-model run and the tuned-model run of a succeeded fine-tune, in one comparison
    group, same split, parameters and prompt template. Admins only."""
    require_admin(actor, _("Only admins can start evaluation runs."))
    return _pair(
        created_by=actor,
        actor=actor,
        job=job,
        split=split,
        mode=mode,
        params=params,
        preset=preset,
        sets=sets,
        max_samples=max_samples,
        enqueue=enqueue,
    )


def evaluation_split_for(version: DatasetVersion) -> str | None:
    """The held-out split an automatic evaluation uses: test, else validation, else None."""
    for split in ("test", "validation"):
        if _split_count(version, split) > 0:
            return split
    return None


def evaluations_after_finetune(job: FineTuneJob | int, *, enqueue: bool = True) -> list[EvalRun]:
    """Queue the base and tuned evaluation of a fine-tune that just succeeded.

    The "finetune" kind's ``on_succeeded`` step (``medportal.jobs.succeed`` runs it with the
    job's id after the success commits): the worker never calls it. Does nothing (returns [])
    unless ``job.evaluate_after`` is set and the dataset version has a test split (or, failing
    that, a validation split). Never raises: a problem is logged, the fine-tune stays succeeded.
    """
    try:
        job = FineTuneJob.objects.select_related("dataset_version", "base_model", "created_by").get(pk=getattr(job, "pk", job))
        if not job.evaluate_after or job.status != FineTuneJob.Status.SUCCEEDED:
            return []
        split = evaluation_split_for(job.dataset_version)
        if split is None:
            logger.info("fine-tune job %s: no test or validation split, no evaluation queued", job.pk)
            return []
        base, tuned = _pair(
            created_by=job.created_by,
            actor=None,
            job=job,
            split=split,
            mode="llamafactory",
            params=None,
            preset="",
            sets=(),
            max_samples=None,
            enqueue=enqueue,
        )
        return [base, tuned]
    except Exception:
        logger.exception("fine-tune job %s: could not queue its evaluation", getattr(job, "pk", job))
        return []


def evaluation_cancel(*, actor, run: EvalRun) -> EvalRun:
    """Cancel a queued or running run (admins). A running run's worker stops at its next
    heartbeat (a batch of answers at most) and writes nothing more."""
    require_admin(actor, _("Only admins can cancel evaluation runs."))
    with transaction.atomic():
        changed = jobs.request_cancel(KIND, run.pk) == "cancelled"  # the kind cancels running runs at once
        run.refresh_from_db()
        if not changed:
            raise InvalidTransition(
                _("Evaluation run #%(id)s is %(status)s; only queued or running runs can be cancelled.")
                % {"id": run.pk, "status": run.get_status_display()}
            )
        audit_record(actor=actor, action="evaluation.cancel", target=run, summary=f"#{run.pk}: cancelled", changes={"status": run.status})
    return run


__all__ = [
    "evaluation_cancel",
    "evaluation_create",
    "evaluation_pair_create",
    "evaluation_params_build",
    "evaluation_split_for",
    "evaluations_after_finetune",
]
