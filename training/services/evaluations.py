"""Evaluation runs: create, cancel, run (the ``gpu`` worker's body), reap, and queue the base +
tuned evaluation of a fine-tune that succeeded.

The life of a run (docs/evaluation.md has the admin's version):

* ``evaluation_create`` (admins) validates the recipe — the split is not empty, the job is a
  succeeded fine-tune of that base model, the generation parameters are valid — stores it and
  queues the run on the django-q2 ``gpu`` cluster once the transaction commits, passing the id.
  ``evaluation_pair_create`` creates the base-model and tuned-model runs of one fine-tune in one
  comparison group; ``evaluations_after_finetune`` does that for the fine-tune worker.
* ``evaluation_run`` (the worker) claims the run with a conditional UPDATE (queued → running),
  reads the split's frozen items, generates every answer — in this process with batched generation
  (``training.engine.generation``), or, when ``MEDPORTAL_INFERENCE_URL`` names an OpenAI-compatible
  server (vLLM), with concurrent requests — then runs the response-speed test (N answers streamed
  one at a time through the inference interface: time to first token, latency, tokens/s), scores
  every answer (``training.engine.metrics.score_pairs``), and stores the samples, the summary and the
  per-department summaries. It heartbeats while it works; every write is conditional on "still
  running, claimed by me", so a run that was cancelled (or reaped) stops at its next heartbeat.
  A failure is stored on the row.
* ``evaluation_cancel`` cancels a queued or running run at once; the worker notices.
* ``evaluation_runs_reap`` fails running runs whose heartbeat stopped (a django-q2 schedule runs it
  every minute, migration 0003).
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext as _

from curation.models import DatasetItem, DatasetVersion
from medportal.audit import audit_record
from medportal.errors import InvalidInput, InvalidTransition
from training.models import BaseModel, EvalRun, EvalSample, FineTuneJob
from training.services import heartbeat_silent, require_admin

logger = logging.getLogger(__name__)

TASK = "training.tasks_eval.evaluation_task"
TASK_HOOK = "training.tasks_eval.evaluation_hook"
QUEUE = "gpu"

Status = EvalRun.Status
SPLITS = tuple(EvalRun.Split.values)
MODES = tuple(EvalRun.Mode.values)
# Keys of ``EvalRun.params`` besides the GenerationParams fields.
RUN_KEYS = ("template", "batch_size", "cutoff_len", "max_samples")
MAX_BATCH_SIZE = 512
PROGRESS_GENERATION = 0.9  # progress when every answer is generated; the speed test fills the rest
BEAT_EVERY_S = 2.0
STORE_BATCH = 500


def concurrency() -> int:
    """Requests in flight at once against an OpenAI-compatible server."""
    return max(1, int(getattr(settings, "MEDPORTAL_EVAL_CONCURRENCY", 8) or 8))


def speed_samples() -> int:
    """Answers streamed one at a time for the response-speed test."""
    return max(0, int(getattr(settings, "MEDPORTAL_EVAL_SPEED_SAMPLES", 20)))


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
    repetition_penalty, seed), template, batch_size, cutoff_len, max_samples. ``template`` given
    here wins (a tuned model is evaluated with its training template). Every bad key is reported
    in InvalidInput.details.
    """
    from chat.inference.base import GenerationParams, ParamsError
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
            transaction.on_commit(lambda pk=run.pk: evaluation_enqueue(run_id=pk))
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


def evaluations_after_finetune(job: FineTuneJob, *, enqueue: bool = True) -> list[EvalRun]:
    """Queue the base and tuned evaluation of a fine-tune that just succeeded.

    Called by the fine-tune worker after it marked the job succeeded. Does nothing (returns [])
    unless ``job.evaluate_after`` is set and the dataset version has a test split (or, failing
    that, a validation split). Never raises: a problem is logged, the fine-tune stays succeeded.
    """
    try:
        job = FineTuneJob.objects.select_related("dataset_version", "base_model", "created_by").get(pk=job.pk)
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


def evaluation_enqueue(*, run_id: int) -> str | None:
    """Hand a queued run to the ``gpu`` cluster and store the task id (after commit). A broker
    that cannot be reached fails the run with the reason."""
    from django_q.tasks import async_task

    try:
        task_id = async_task(TASK, int(run_id), cluster=QUEUE, hook=TASK_HOOK, task_name=f"evaluation-run-{run_id}")
    except Exception as exc:
        logger.exception("Could not enqueue evaluation run %s", run_id)
        evaluation_fail(run_id=run_id, message=_("Could not queue the evaluation for the GPU workers: %(error)s") % {"error": exc})
        return None
    EvalRun.objects.filter(pk=run_id).update(task_id=str(task_id or "")[:64], version=F("version") + 1)
    return task_id


def evaluation_fail(*, run_id: int, message: str, task_id: str | None = None) -> bool:
    """Mark an unfinished run failed with ``message`` (task hook, broker errors). True if it was.
    With ``task_id``, only while that task is the run's task."""
    rows = EvalRun.objects.filter(pk=run_id, status__in=EvalRun.ACTIVE)
    if task_id:
        rows = rows.filter(task_id=task_id)
    changed = rows.update(status=Status.FAILED, error=str(message)[:10000], finished_at=timezone.now(), version=F("version") + 1)
    if changed:
        run = EvalRun.objects.get(pk=run_id)
        audit_record(
            actor=None, action="evaluation.fail", target=run, summary=f"#{run_id}: {str(message)[:300]}", changes={"status": "failed"}
        )
    return bool(changed)


def evaluation_cancel(*, actor, run: EvalRun) -> EvalRun:
    """Cancel a queued or running run (admins). A running run's worker stops at its next
    heartbeat (a batch of answers at most) and writes nothing more."""
    require_admin(actor, _("Only admins can cancel evaluation runs."))
    with transaction.atomic():
        changed = EvalRun.objects.filter(pk=run.pk, status__in=EvalRun.ACTIVE).update(
            status=Status.CANCELLED, finished_at=timezone.now(), version=F("version") + 1
        )
        run.refresh_from_db()
        if not changed:
            raise InvalidTransition(
                _("Evaluation run #%(id)s is %(status)s; only queued or running runs can be cancelled.")
                % {"id": run.pk, "status": run.get_status_display()}
            )
        audit_record(actor=actor, action="evaluation.cancel", target=run, summary=f"#{run.pk}: cancelled", changes={"status": run.status})
    return run


# --------------------------------------------------------------------------- reaping


def evaluation_runs_reap(*, now: datetime | None = None) -> list[int]:
    """Fail running runs whose heartbeat is older than MEDPORTAL_JOB_HEARTBEAT_TIMEOUT_S (their
    worker was killed or its host went down). Conditional, so two reapers never act twice."""
    now = now or timezone.now()
    silent = heartbeat_silent(now)
    reaped: list[int] = []
    for run in EvalRun.objects.filter(silent, status=Status.RUNNING).only("pk", "worker", "heartbeat_at", "started_at"):
        beat = run.heartbeat_at or run.started_at
        when = timezone.localtime(beat).strftime("%Y-%m-%d %H:%M:%S %Z") if beat else "?"
        reason = _("The worker %(worker)s stopped sending heartbeats at %(time)s.") % {"worker": run.worker or "?", "time": when}
        changed = EvalRun.objects.filter(silent, pk=run.pk, status=Status.RUNNING, started_at=run.started_at).update(
            status=Status.FAILED, error=reason, finished_at=now, version=F("version") + 1
        )
        if changed:
            reaped.append(run.pk)
            audit_record(
                actor=None, action="evaluation.reap", target=run, summary=f"#{run.pk}: failed: {reason}", changes={"status": "failed"}
            )
    return reaped


# --------------------------------------------------------------------------- the worker


class _Stopped(Exception):
    """The run is no longer ours (cancelled, reaped): stop and write nothing more."""


def evaluation_claim(*, run_id: int) -> EvalRun | None:
    """queued → running for this worker; None when the run is not queued (any more)."""
    from training.worker import worker_name

    now = timezone.now()
    claimed = EvalRun.objects.filter(pk=run_id, status=Status.QUEUED).update(
        status=Status.RUNNING,
        worker=worker_name()[:200],
        started_at=now,
        heartbeat_at=now,
        finished_at=None,
        error="",
        progress=0.0,
        done_samples=0,
        version=F("version") + 1,
    )
    if not claimed:
        return None
    run = EvalRun.objects.select_related("base_model", "job", "dataset_version").get(pk=run_id)
    audit_record(actor=None, action="evaluation.start", target=run, summary=f"#{run.pk}: on {run.worker}", changes={"worker": run.worker})
    return run


def evaluation_run(*, run_id: int, on_line=None) -> EvalRun | None:
    """Claim and run one evaluation to its end; returns the row as it ended (or as found).

    ``on_line`` (``run_evaluation --sync``) receives progress lines."""
    run = evaluation_claim(run_id=run_id)
    if run is None:
        logger.info("evaluation run %s: nothing to claim (not queued)", run_id)
        return EvalRun.objects.filter(pk=run_id).first()
    _Evaluation(run, on_line=on_line).execute()
    return EvalRun.objects.filter(pk=run_id).first()


def eval_samples_read(run: EvalRun) -> list[dict]:
    """The items the run answers, in split order (at most ``max_samples``): ``{"item_id",
    "position", "department", "messages" (ending with the reference answer), "prompt",
    "reference"}``."""
    from curation.exports.base import alpaca_record
    from training.engine.templates import records_to_messages

    limit = (run.params or {}).get("max_samples")
    rows = (
        DatasetItem.objects.filter(version_id=run.dataset_version_id, split=run.split)
        .select_related("qa_pair__department")
        .only("pk", "position", "content", "qa_pair__department__name")
        .order_by("position", "pk")
    )
    if limit:
        rows = rows[: int(limit)]
    samples = []
    for position, item in enumerate(rows):
        content = item.content or {}
        record = alpaca_record(content)
        reference = str(record.get("output") or "")
        messages = records_to_messages({**record, "output": ""})
        department = content.get("department")
        if department is None:
            pair_department = getattr(item.qa_pair, "department", None)
            department = pair_department.name if pair_department is not None else ""
        samples.append(
            {
                "item_id": item.pk,
                "position": position,
                "department": str(department or "")[:100],
                "messages": messages + ([{"role": "assistant", "content": reference}] if reference else []),
                "prompt": "\n\n".join(str(m["content"]) for m in messages if m["role"] == "user"),
                "reference": reference,
            }
        )
    return samples


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 2)


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, digits)


class _Evaluation:
    def __init__(self, run: EvalRun, on_line=None):
        self.run = run
        self.on_line = on_line
        self.started_at = run.started_at
        self.last_beat = time.monotonic()
        self.params = dict(run.params or {})

    # ---- writing -------------------------------------------------------------------

    def echo(self, line: str) -> None:
        if self.on_line is not None:
            try:
                self.on_line(line)
            except Exception:
                self.on_line = None

    def write(self, **fields) -> None:
        """One conditional UPDATE (still running, this claim) with a heartbeat; _Stopped if not ours."""
        changed = EvalRun.objects.filter(pk=self.run.pk, status=Status.RUNNING, started_at=self.started_at).update(
            heartbeat_at=timezone.now(), version=F("version") + 1, **fields
        )
        self.last_beat = time.monotonic()
        if not changed:
            raise _Stopped()

    def beat(self) -> None:
        """A heartbeat when the last write is BEAT_EVERY_S old."""
        if time.monotonic() - self.last_beat >= BEAT_EVERY_S:
            self.write()

    def progress(self, done: int, total: int, share: float = PROGRESS_GENERATION) -> dict:
        return {"done_samples": done, "progress": round(share * done / max(1, total), 4)}

    # ---- generation ------------------------------------------------------------------

    def model_ref(self):
        from chat.inference.base import ModelRef
        from chat.inference.registry import model_ref

        run = self.run
        template = self.params.get("template") or "default"
        if run.job_id:
            ref = model_ref(run.base_model, run.job)
            return ModelRef(base_path=ref.base_path, adapter_path=ref.adapter_path, template=template, name=ref.name)
        return ModelRef(base_path=run.base_model.path, template=template, name=run.base_model.name)

    def generation_params(self):
        from chat.inference.base import GenerationParams

        keys = GenerationParams.__dataclass_fields__
        return GenerationParams.from_dict({k: v for k, v in self.params.items() if k in keys})

    def generate_local(self, backend, ref, samples: list[dict]) -> list[dict]:
        from chat.inference.local import LocalBackend
        from training.engine.generation import GenerationStopped, generate_batched, load_model

        if isinstance(backend, LocalBackend):
            loaded = backend.cache.get(ref)  # the speed test streams from the same loaded model
            pair = (loaded.model, loaded.tokenizer)
        else:
            pair = load_model(ref.base_path, ref.adapter_path)
        total = len(samples)

        def should_stop() -> bool:
            """Asked at every generated token: a heartbeat every BEAT_EVERY_S, which also tells
            whether the run is still ours."""
            if time.monotonic() - self.last_beat < BEAT_EVERY_S:
                return False
            try:
                self.write()
            except _Stopped:
                return True
            return False

        def on_progress(event: dict) -> None:
            self.write(**self.progress(event["done"], total))
            self.echo(f"{event['done']}/{total} answers ({event['elapsed_s']:.1f} s)")

        p = self.params
        try:
            return generate_batched(
                model_path=ref.base_path,
                adapter_path=ref.adapter_path,
                template=ref.template,
                conversations=[s["messages"] for s in samples],
                max_new_tokens=int(p["max_new_tokens"]),
                cutoff_len=int(p["cutoff_len"]),
                batch_size=int(p["batch_size"]),
                temperature=float(p["temperature"]),
                top_p=float(p["top_p"]),
                top_k=int(p["top_k"] or 0),
                repetition_penalty=float(p["repetition_penalty"]),
                seed=p.get("seed"),
                on_progress=on_progress,
                should_stop=should_stop,
                loaded=pair,
            )
        except GenerationStopped:
            raise _Stopped() from None

    def generate_remote(self, backend, ref, samples: list[dict]) -> list[dict]:
        import threading

        from chat.inference.base import StreamStats

        params = self.generation_params()
        cancel = threading.Event()
        total = len(samples)
        results: list[dict | None] = [None] * total

        def answer(index: int) -> dict:
            stats = StreamStats()
            messages = samples[index]["messages"]
            if messages[-1]["role"] == "assistant":
                messages = messages[:-1]
            text = "".join(backend.stream(ref, messages, params, cancel=cancel, stats=stats))
            if cancel.is_set():
                raise _Stopped()
            return {
                "predict": text,
                "prompt_tokens": stats.prompt_tokens,
                "completion_tokens": stats.completion_tokens,
                "finish_reason": stats.finish_reason,
            }

        done = 0
        with ThreadPoolExecutor(max_workers=min(concurrency(), total) or 1, thread_name_prefix=f"eval-{self.run.pk}") as pool:
            pending = {pool.submit(answer, i): i for i in range(total)}
            try:
                while pending:
                    finished, _rest = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                    for future in finished:
                        index = pending.pop(future)
                        results[index] = future.result()
                        done += 1
                    if finished and time.monotonic() - self.last_beat >= 0.5:
                        self.write(**self.progress(done, total))
                    else:
                        self.beat()
            except BaseException:
                cancel.set()
                for future in pending:
                    future.cancel()
                raise
        self.write(**self.progress(done, total))
        return results  # type: ignore[return-value]

    def speed_test(self, backend, ref, samples: list[dict]) -> tuple[dict, dict[int, float]]:
        """Stream the first N answers one at a time: TTFT, latency per answer, tokens/s."""
        from chat.inference.base import StreamStats
        from training.engine.generation import percentile

        params = self.generation_params()
        n = min(speed_samples(), len(samples))
        ttfts: list[float] = []
        latencies: list[float] = []
        decode_tokens = 0
        decode_seconds = 0.0
        by_position: dict[int, float] = {}
        for k in range(n):
            sample = samples[k]
            messages = sample["messages"][:-1] if sample["messages"][-1]["role"] == "assistant" else sample["messages"]
            stats = StreamStats()
            for _piece in backend.stream(ref, messages, params, stats=stats):
                pass
            if stats.finished_at is None:
                stats.finished_at = time.perf_counter()
            latency = stats.finished_at - stats.started
            latencies.append(latency)
            by_position[sample["position"]] = round(latency * 1000.0, 2)
            if stats.ttft_s is not None:
                ttfts.append(stats.ttft_s)
            if stats.first_token_at is not None and stats.completion_tokens >= 2:
                decode_tokens += stats.completion_tokens - 1
                decode_seconds += stats.finished_at - stats.first_token_at
            self.write(progress=round(PROGRESS_GENERATION + (1 - PROGRESS_GENERATION) * 0.9 * (k + 1) / n, 4))
            self.echo(f"speed test {k + 1}/{n}: {latency * 1000:.0f} ms")
        speed = {
            "ttft_ms_p50": _ms(percentile(ttfts, 50)),
            "ttft_ms_p95": _ms(percentile(ttfts, 95)),
            "latency_ms_p50": _ms(percentile(latencies, 50)),
            "latency_ms_p95": _ms(percentile(latencies, 95)),
            "tokens_per_second": _round(decode_tokens / decode_seconds) if decode_seconds > 0 else None,
            "timed_samples": n,
        }
        return speed, by_position

    # ---- storing -----------------------------------------------------------------------

    def score(self, samples: list[dict], results: list[dict], latencies: dict[int, float]) -> tuple[dict, dict, list[EvalSample]]:
        """(summary, per-department summaries, sample rows) of the answers."""
        from training.engine.metrics import score_pairs, summarize

        predictions = [r["predict"] for r in results]
        references = [s["reference"] for s in samples]
        scored = score_pairs(predictions, references, mode=self.run.mode)
        per_department: dict[str, list[dict]] = {}
        rows = []
        for sample, result, scores in zip(samples, results, scored["per_sample"], strict=True):
            per_department.setdefault(sample["department"], []).append(scores)
            rows.append(
                EvalSample(
                    run_id=self.run.pk,
                    position=sample["position"],
                    dataset_item_id=sample["item_id"],
                    department=sample["department"],
                    prompt=sample["prompt"],
                    reference=sample["reference"],
                    prediction=result["predict"],
                    bleu4=scores["bleu-4"],
                    rouge1=scores["rouge-1"],
                    rouge2=scores["rouge-2"],
                    rougel=scores["rouge-l"],
                    completion_tokens=int(result.get("completion_tokens") or 0),
                    latency_ms=latencies.get(sample["position"]),
                )
            )
        by_department = {name: summarize(values) for name, values in sorted(per_department.items())}
        return scored["summary"], by_department, rows

    def succeed(self, rows: list[EvalSample], **fields) -> None:
        """Store the samples and the outcome in one transaction, if the run is still ours."""
        now = timezone.now()
        with transaction.atomic():
            # Lock the row: a cancel cannot slip in between the check and the writes.
            mine = EvalRun.objects.select_for_update().filter(pk=self.run.pk, status=Status.RUNNING, started_at=self.started_at)
            if not mine.exists():
                raise _Stopped()
            EvalSample.objects.filter(run_id=self.run.pk).delete()
            for start in range(0, len(rows), STORE_BATCH):
                EvalSample.objects.bulk_create(rows[start : start + STORE_BATCH])
            mine.update(status=Status.SUCCEEDED, error="", finished_at=now, heartbeat_at=now, version=F("version") + 1, **fields)
            audit_record(
                actor=None,
                action="evaluation.finish",
                target=self.run,
                summary=f"#{self.run.pk}: succeeded",
                changes={"status": Status.SUCCEEDED, "summary": fields.get("summary")},
            )

    def fail(self, error: str) -> None:
        now = timezone.now()
        changed = EvalRun.objects.filter(pk=self.run.pk, status=Status.RUNNING, started_at=self.started_at).update(
            status=Status.FAILED, error=error[:10000], finished_at=now, heartbeat_at=now, version=F("version") + 1
        )
        if changed:
            audit_record(
                actor=None,
                action="evaluation.finish",
                target=self.run,
                summary=f"#{self.run.pk}: failed: {error[:300]}",
                changes={"status": Status.FAILED},
            )

    # ---- entry -------------------------------------------------------------------------

    def execute(self) -> None:
        from chat.inference.registry import get_backend

        try:
            samples = eval_samples_read(self.run)
            if not samples:
                self.fail(_("The %(split)s split of this dataset version is empty.") % {"split": self.run.split})
                return
            total = len(samples)
            backend = get_backend()
            ref = self.model_ref()
            self.write(total_samples=total, backend=backend.name[:20])
            self.echo(f"evaluating {total} samples with the {backend.name} backend")
            remote = backend.name != "local"
            t0 = time.perf_counter()
            results = self.generate_remote(backend, ref, samples) if remote else self.generate_local(backend, ref, samples)
            generation_s = time.perf_counter() - t0
            completion_tokens = sum(int(r.get("completion_tokens") or 0) for r in results)
            speed, latencies = self.speed_test(backend, ref, samples)
            speed.update(
                {
                    "samples_per_second": _round(total / generation_s, 3) if generation_s > 0 else None,
                    "batch_tokens_per_second": _round(completion_tokens / generation_s) if generation_s > 0 else None,
                    "generation_seconds": _round(generation_s, 3),
                    "batch_size": int(self.params.get("batch_size") or 1) if not remote else concurrency(),
                    "concurrency": concurrency() if remote else 1,
                    "backend": backend.name,
                }
            )
            summary, by_department, rows = self.score(samples, results, latencies)
            self.succeed(
                rows,
                summary=summary,
                by_department=by_department,
                speed=speed,
                progress=1.0,
                done_samples=total,
            )
            self.echo(
                "done: "
                + ", ".join(f"{k} {summary[k]:.2f}" for k in ("bleu-4", "rouge-1", "rouge-2", "rouge-l"))
                + f" over {total} samples"
            )
        except _Stopped:
            logger.info("evaluation run %s: no longer running (cancelled or reaped); stopped", self.run.pk)
            self.echo("stopped: the run was cancelled or taken over")
        except Exception as exc:
            logger.exception("evaluation run %s failed", self.run.pk)
            message = f"{type(exc).__name__}: {exc}" if not str(exc).startswith(type(exc).__name__) else str(exc)
            self.fail(message)
            self.echo(f"failed: {message}")


__all__ = [
    "concurrency",
    "eval_samples_read",
    "evaluation_cancel",
    "evaluation_claim",
    "evaluation_create",
    "evaluation_enqueue",
    "evaluation_fail",
    "evaluation_pair_create",
    "evaluation_params_build",
    "evaluation_run",
    "evaluation_runs_reap",
    "evaluation_split_for",
    "evaluations_after_finetune",
    "speed_samples",
]
