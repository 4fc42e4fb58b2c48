"""Fine-tune jobs: create, cancel, retry, merge, and reap the jobs whose worker died.

The life of a job (docs/fine-tuning.md has the admin's version):

* ``finetune_job_create`` validates the recipe (a preset plus overrides, through the engine's
  ``FinetuneConfig``), stores it and queues the job on the django-q2 ``gpu`` cluster once the
  transaction commits, passing the id only.
* The worker (``training.worker``) claims it with a conditional UPDATE (queued → running,
  ``attempt`` + 1), runs the engine in a child process and writes progress, heartbeats and
  the outcome on the row.
* ``finetune_job_cancel`` cancels a queued job at once; for a running one it sets
  ``cancel_requested_at`` and the worker stops the child and marks the job cancelled.
* ``finetune_job_retry`` queues a failed or cancelled job again, resuming from its last
  checkpoint when it has one (or starting afresh).
* ``finetune_jobs_reap`` finds running jobs whose heartbeat stopped (the worker was killed,
  its host went down) and, per the job's ``on_worker_death``, fails them with the reason or
  queues them again to resume from their last checkpoint. A django-q2 schedule runs it every
  minute (migration 0002) and every job page / API read runs it too.

Every change bumps ``version`` (the live page and the worker's conditional updates rely on
it) and pings the job's live pages through ``training.live.notify_job_changed``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext as _

from curation.models import DatasetVersion
from medportal.audit import audit_record
from medportal.errors import ApplicationError, InvalidInput, InvalidTransition
from training.models import BaseModel, FineTuneJob, FineTuneMetric
from training.services import heartbeat_silent, require_admin

logger = logging.getLogger(__name__)

TASK = "training.tasks.finetune_job_task"
TASK_HOOK = "training.tasks.finetune_job_hook"
QUEUE = "gpu"
LOG_TAIL_LINES = 50

Status = FineTuneJob.Status


# --------------------------------------------------------------------------- helpers


def job_changed(job_id: int) -> None:
    """Ping the job's live pages (after the transaction commits); never raises."""
    from training.live import notify_job_changed

    notify_job_changed(job_id)


def job_output_dir(job_id: int) -> Path:
    """The folder of one job: data, config, checkpoints, adapter and training log."""
    return Path(settings.MEDPORTAL_TRAINING_DIR) / f"job-{int(job_id)}"


def log_tail_append(tail: str, *lines: str) -> str:
    """``tail`` with ``lines`` added, keeping the last LOG_TAIL_LINES lines."""
    kept = [line for line in (tail or "").splitlines() if line]
    kept.extend(line for line in lines if line)
    return "\n".join(kept[-LOG_TAIL_LINES:])


def _check_not_stale(job: FineTuneJob, fresh: int) -> None:
    if not fresh:
        job.refresh_from_db()
        raise InvalidTransition(
            _("Job #%(id)s changed while you acted on it (it is now %(status)s); reload the page.")
            % {"id": job.pk, "status": job.get_status_display()}
        )


# --------------------------------------------------------------------------- configuration


def finetune_config_build(*, preset: str = "", overrides: dict | None = None, sets: list[str] | tuple[str, ...] = ()):
    """The validated ``FinetuneConfig`` of a preset plus overrides.

    ``overrides`` is a dict of typed values (API, form); ``sets`` are ``key=value`` strings
    (``run_finetune --set``), coerced by each field's type. An unknown preset or any bad field
    raises InvalidInput whose ``details`` maps every bad field to its message.
    """
    from training.engine.config import PRESETS, ConfigError, FinetuneConfig

    preset = (preset or "").strip()
    if preset and preset not in PRESETS:
        message = _("Unknown preset '%(preset)s'; choose one of %(presets)s.") % {"preset": preset, "presets": ", ".join(PRESETS)}
        raise InvalidInput(message, details={"preset": message})
    if overrides is not None and not isinstance(overrides, dict):
        raise InvalidInput(_("The overrides must be an object of setting → value."), details={"overrides": "expected an object"})
    data = {**(PRESETS[preset] if preset else {}), **(overrides or {})}
    known = {f.name for f in dataclasses.fields(FinetuneConfig)}
    # Unknown names and bad values are reported together (from_dict stops at unknown names).
    errors = {key: "unknown setting" for key in data if key not in known}
    config = None
    try:
        config = FinetuneConfig.from_dict({key: value for key, value in data.items() if key in known})
        if sets:
            config = config.with_overrides(list(sets))
    except ConfigError as exc:
        errors.update(exc.errors)
    if errors:
        fields = ", ".join(errors)
        raise InvalidInput(_("The training configuration is not valid (%(fields)s).") % {"fields": fields}, details=errors)
    return config


# --------------------------------------------------------------------------- create


def finetune_job_create(
    *,
    actor,
    dataset_version: DatasetVersion,
    base_model: BaseModel,
    preset: str = "",
    overrides: dict | None = None,
    on_worker_death: str | None = None,
    enqueue: bool = True,
    evaluate_after: bool = False,
) -> FineTuneJob:
    """Queue a LoRA fine-tune of ``base_model`` on the train split of ``dataset_version``.

    Admins only. The configuration is ``PRESETS[preset]`` updated with ``overrides``.
    ``on_worker_death`` is "fail" or "requeue" (default: settings.MEDPORTAL_ON_WORKER_DEATH).
    ``enqueue=False`` leaves the job queued without a task (``run_finetune --sync`` runs it in
    its own process). GPU-only settings are accepted here and refused by a worker without CUDA.
    """
    require_admin(actor, _("Only admins can start fine-tune jobs."))
    config = finetune_config_build(preset=preset, overrides=overrides)
    policy = on_worker_death or settings.MEDPORTAL_ON_WORKER_DEATH
    if policy not in FineTuneJob.OnWorkerDeath.values:
        message = _("Unknown policy '%(policy)s'; choose fail or requeue.") % {"policy": policy}
        raise InvalidInput(message, details={"on_worker_death": message})
    if int((dataset_version.counts or {}).get("train", 0)) < 1:
        message = _("Dataset version '%(name)s' has no training split; freeze one with a train ratio above 0.") % {
            "name": dataset_version.name
        }
        raise InvalidInput(message, details={"dataset_version": message})
    if not base_model.is_active:
        message = _("Base model '%(name)s' is retired; pick an active one.") % {"name": base_model.name}
        raise InvalidInput(message, details={"base_model": message})
    if config.template == "default" and not base_model.has_chat_template:
        message = _("Base model '%(name)s' has no chat template of its own; choose a named template (%(names)s).") % {
            "name": base_model.name,
            "names": "llama3, qwen3, alpaca, medical_inquiry",
        }
        raise InvalidInput(message, details={"template": message})

    now = timezone.now()
    with transaction.atomic():
        job = FineTuneJob.objects.create(
            dataset_version=dataset_version,
            base_model=base_model,
            preset=(preset or "").strip(),
            config=config.to_dict(),
            on_worker_death=policy,
            evaluate_after=bool(evaluate_after),
            status=Status.QUEUED,
            queued_at=now,
            created_by=actor,
        )
        job.output_dir = str(job_output_dir(job.pk))
        job.save(update_fields=["output_dir"])
        audit_record(
            actor=actor,
            action="finetune_job.create",
            target=job,
            summary=f"#{job.pk}: {base_model.name} on {dataset_version.name}" + (f" ({job.preset})" if job.preset else ""),
            changes={
                "preset": job.preset,
                "config": job.config,
                "on_worker_death": policy,
                "evaluate_after": bool(evaluate_after),
                "dataset_version": dataset_version.pk,
                "base_model": base_model.pk,
            },
        )
        if enqueue:
            transaction.on_commit(lambda pk=job.pk: finetune_job_enqueue(job_id=pk))
    return job


def finetune_job_enqueue(*, job_id: int) -> str | None:
    """Hand a queued job to the ``gpu`` cluster and store the task id.

    Called after commit. A broker that cannot be reached fails the job with the reason, so
    the admin sees it on the job instead of a job that stays queued forever.
    """
    from django_q.tasks import async_task

    try:
        task_id = async_task(TASK, int(job_id), cluster=QUEUE, hook=TASK_HOOK, task_name=f"finetune-job-{job_id}")
    except Exception as exc:
        logger.exception("Could not enqueue fine-tune job %s", job_id)
        finetune_job_fail(job_id=job_id, message=f"Could not queue the job for the GPU workers: {exc}")
        return None
    # Whatever the job's status by now (a fast worker may have claimed it already): the hook
    # of this task only acts on the job while this is its latest task.
    FineTuneJob.objects.filter(pk=job_id).update(task_id=str(task_id or "")[:64], version=F("version") + 1)
    job_changed(job_id)
    return task_id


def finetune_job_fail(*, job_id: int, message: str, task_id: str | None = None) -> bool:
    """Mark an unfinished job failed with ``message`` (task hook, broker errors). True if it was.

    With ``task_id`` only while that task is the job's latest (a late failure of an old task
    leaves a job that was queued again alone)."""
    rows = FineTuneJob.objects.filter(pk=job_id, status__in=list(FineTuneJob.ACTIVE))
    if task_id is not None:
        rows = rows.filter(task_id__in=["", str(task_id)[:64]])
    done = rows.update(status=Status.FAILED, error=message, finished_at=timezone.now(), eta_seconds=None, version=F("version") + 1)
    if done:
        job = FineTuneJob.objects.get(pk=job_id)
        audit_record(
            actor=None,
            action="finetune_job.fail",
            target=job,
            summary=f"#{job_id}: {message}",
            changes={"status": "failed", "error": message},
        )
        job_changed(job_id)
    return bool(done)


# --------------------------------------------------------------------------- cancel / retry


def finetune_job_cancel(*, actor, job: FineTuneJob) -> FineTuneJob:
    """Cancel a job: a queued one at once; a running one when its worker stops the child
    (within a few seconds; the job shows "cancel requested" until then)."""
    require_admin(actor, _("Only admins can cancel fine-tune jobs."))
    now = timezone.now()
    with transaction.atomic():
        if FineTuneJob.objects.filter(pk=job.pk, status=Status.QUEUED).update(
            status=Status.CANCELLED, cancel_requested_at=now, finished_at=now, eta_seconds=None, version=F("version") + 1
        ):
            action = "cancelled while queued"
        elif FineTuneJob.objects.filter(pk=job.pk, status=Status.RUNNING, cancel_requested_at__isnull=True).update(
            cancel_requested_at=now, version=F("version") + 1
        ):
            action = "cancel requested"
        else:
            job.refresh_from_db()
            if job.status == Status.RUNNING:  # asked twice: the first request stands
                return job
            raise InvalidTransition(
                _("Job #%(id)s is %(status)s; only queued or running jobs can be cancelled.")
                % {"id": job.pk, "status": job.get_status_display()}
            )
        job.refresh_from_db()
        audit_record(actor=actor, action="finetune_job.cancel", target=job, summary=f"#{job.pk}: {action}", changes={"status": job.status})
        job_changed(job.pk)
    return job


def _has_checkpoint(job: FineTuneJob) -> bool:
    if job.last_checkpoint and Path(job.last_checkpoint).is_dir():
        return True
    folder = Path(job.output_dir or job_output_dir(job.pk)) / "checkpoints"
    return folder.is_dir() and any(p.name.startswith("checkpoint-") for p in folder.iterdir())


def finetune_job_retry(*, actor, job: FineTuneJob, resume: bool = True) -> FineTuneJob:
    """Queue a failed or cancelled job again (the same job, next attempt).

    With ``resume`` and a checkpoint on disk the worker resumes from it; otherwise the job
    starts afresh: its progress, metrics, checkpoints and adapter are cleared.
    """
    require_admin(actor, _("Only admins can retry fine-tune jobs."))
    if job.status not in (Status.FAILED, Status.CANCELLED):
        raise InvalidTransition(
            _("Job #%(id)s is %(status)s; only failed or cancelled jobs can be retried.")
            % {"id": job.pk, "status": job.get_status_display()}
        )
    if not job.base_model.is_active:
        raise InvalidInput(_("Base model '%(name)s' is retired; start a new job with an active one.") % {"name": job.base_model.name})
    resuming = bool(resume and _has_checkpoint(job))
    now = timezone.now()
    fields = {
        "status": Status.QUEUED,
        "error": "",
        "cancel_requested_at": None,
        "finished_at": None,
        "worker": "",
        "heartbeat_at": None,
        "eta_seconds": None,
        "queued_at": now,
        "task_id": "",
        "version": F("version") + 1,
    }
    if resuming:
        note = f"[{now:%Y-%m-%d %H:%M:%S}] retried: resuming from the last checkpoint"
    else:
        note = f"[{now:%Y-%m-%d %H:%M:%S}] retried: starting afresh"
        fields.update(
            progress=0.0,
            step=0,
            total_steps=0,
            epoch=0.0,
            train_loss_first=None,
            train_loss_last=None,
            eval_loss=None,
            learning_rate=None,
            tokens_per_second=None,
            adapter_path="",
            last_checkpoint="",
            template_fingerprint="",
        )
    fields["log_tail"] = log_tail_append(job.log_tail if resuming else "", note)
    with transaction.atomic():
        fresh = FineTuneJob.objects.filter(pk=job.pk, status__in=[Status.FAILED, Status.CANCELLED]).update(**fields)
        _check_not_stale(job, fresh)
        if not resuming:
            FineTuneMetric.objects.filter(job_id=job.pk).delete()
            _clear_outputs(job)
        job.refresh_from_db()
        audit_record(
            actor=actor,
            action="finetune_job.retry",
            target=job,
            summary=f"#{job.pk}: " + ("resume from the last checkpoint" if resuming else "start afresh"),
            changes={"resume": resuming},
        )
        transaction.on_commit(lambda pk=job.pk: finetune_job_enqueue(job_id=pk))
        job_changed(job.pk)
    return job


def _clear_outputs(job: FineTuneJob) -> None:
    """Remove the checkpoints and adapter of a job that starts afresh (its own folder only)."""
    folder = Path(job.output_dir or job_output_dir(job.pk))
    if folder.name != f"job-{job.pk}":
        return
    for name in ("checkpoints", "adapter"):
        shutil.rmtree(folder / name, ignore_errors=True)


# --------------------------------------------------------------------------- reaping


# Messages stored on the row (error, log tail) are in English, like the engine's and the
# worker's: they are written by background processes whatever the reader's language.


def _reason(job: FineTuneJob) -> str:
    beat = job.heartbeat_at or job.started_at
    when = timezone.localtime(beat).strftime("%Y-%m-%d %H:%M:%S %Z") if beat else "?"
    return f"The worker {job.worker or '?'} stopped sending heartbeats at {when}."


def finetune_jobs_reap(*, now: datetime | None = None) -> list[int]:
    """Deal with running jobs whose heartbeat is older than MEDPORTAL_JOB_HEARTBEAT_TIMEOUT_S.

    Per the job's ``on_worker_death``: "fail" marks it failed with the reason; "requeue"
    queues it again to resume from its last checkpoint, until it has been started
    MEDPORTAL_JOB_MAX_ATTEMPTS times, then fails it. A job whose cancel was requested is
    cancelled. Each change is a conditional UPDATE (still running, same attempt, still
    silent), so two reapers, or a worker that comes back, never act on the same job twice.
    Returns the ids of the jobs it changed.
    """
    now = now or timezone.now()
    silent = heartbeat_silent(now)
    stale = list(
        FineTuneJob.objects.filter(silent, status=Status.RUNNING).only(
            "pk", "worker", "heartbeat_at", "started_at", "attempt", "on_worker_death", "cancel_requested_at", "log_tail", "version"
        )
    )
    reaped: list[int] = []
    for job in stale:
        reason = _reason(job)
        still = FineTuneJob.objects.filter(silent, pk=job.pk, status=Status.RUNNING, attempt=job.attempt)
        common = {"eta_seconds": None, "version": F("version") + 1}
        requeue = False
        if job.cancel_requested_at is not None:
            outcome = "cancelled"
            changed = still.update(status=Status.CANCELLED, finished_at=now, log_tail=log_tail_append(job.log_tail, reason), **common)
        elif job.on_worker_death == FineTuneJob.OnWorkerDeath.REQUEUE and job.attempt < settings.MEDPORTAL_JOB_MAX_ATTEMPTS:
            outcome = "requeued"
            requeue = True
            note = f"{reason} Queued again to resume from the last checkpoint."
            changed = still.update(
                status=Status.QUEUED,
                queued_at=now,
                task_id="",
                worker="",
                heartbeat_at=None,
                log_tail=log_tail_append(job.log_tail, note),
                **common,
            )
        else:
            outcome = "failed"
            error = reason
            if job.on_worker_death == FineTuneJob.OnWorkerDeath.REQUEUE:
                error += f" Not queued again: the job was already started {job.attempt} times."
            changed = still.update(
                status=Status.FAILED, error=error, finished_at=now, log_tail=log_tail_append(job.log_tail, error), **common
            )
        if not changed:
            continue
        reaped.append(job.pk)
        audit_record(
            actor=None,
            action="finetune_job.reap",
            target=job,
            summary=f"#{job.pk}: {outcome}: {reason}",
            changes={"status": outcome, "attempt": job.attempt},
        )
        if requeue:
            transaction.on_commit(lambda pk=job.pk: finetune_job_enqueue(job_id=pk))
        job_changed(job.pk)
    if reaped:
        # A dead gpu cluster may have taken the task of the next queued job from the broker
        # already (django-q2 prefetches one task per worker): Redis lost it, the ORM broker
        # hides it until the retry delay. Queue every waiting job once more; the conditional
        # claim makes the extra task of a job that was not stranded a no-op.
        for pk in FineTuneJob.objects.filter(status=Status.QUEUED).exclude(pk__in=reaped).values_list("pk", flat=True):
            transaction.on_commit(lambda pk=pk: finetune_job_enqueue(job_id=pk))
    return reaped


# --------------------------------------------------------------------------- merge


def _merge_dir(name: str) -> Path:
    return Path(settings.MEDPORTAL_TRAINING_DIR) / "merged" / name


def finetune_job_merge(*, actor, job: FineTuneJob, name: str) -> BaseModel:
    """Merge the adapter of a succeeded job into its base model and register the result.

    Runs ``python -m training.engine merge`` in a child process (the weights never load in
    the web or worker process), writes a standalone model folder under
    MEDPORTAL_TRAINING_DIR/merged/<name> and registers it as a new base model whose
    ``source_job`` is the job.
    """
    from training.services.base_models import base_model_register

    require_admin(actor, _("Only admins can merge adapters."))
    if job.status != Status.SUCCEEDED:
        raise InvalidTransition(
            _("Job #%(id)s is %(status)s; only a succeeded job has an adapter to merge.")
            % {"id": job.pk, "status": job.get_status_display()}
        )
    if not job.adapter_path or not Path(job.adapter_path).is_dir():
        raise InvalidInput(_("The adapter folder of job #%(id)s is missing (%(path)s).") % {"id": job.pk, "path": job.adapter_path or "-"})
    name = str(name or "").strip()
    try:
        validate_slug(name)
    except ValidationError:
        message = _("Name the merged model with letters, digits, hyphens and underscores only (for example qwen3-med-v1).")
        raise InvalidInput(message, details={"name": message}) from None
    if len(name) > BaseModel._meta.get_field("name").max_length:
        message = _("The name is longer than 100 characters.")
        raise InvalidInput(message, details={"name": message})
    if BaseModel.objects.filter(name=name).exists():
        message = _("A base model named '%(name)s' is already registered.") % {"name": name}
        raise InvalidInput(message, details={"name": message})
    out = _merge_dir(name)
    if out.exists():
        message = _("The folder %(path)s already exists; choose another name.") % {"path": out}
        raise InvalidInput(message, details={"name": message})
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "training.engine",
        "merge",
        "--base",
        job.base_model.path,
        "--adapter",
        job.adapter_path,
        "--out",
        str(out),
    ]
    done = subprocess.run(command, cwd=settings.BASE_DIR, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if done.returncode != 0:
        shutil.rmtree(out, ignore_errors=True)
        raise ApplicationError(_("Merging failed: %(error)s") % {"error": _child_error(done.stdout, done.stderr)})
    model = base_model_register(
        actor=actor,
        name=name,
        path=out,
        description=f"The adapter of job #{job.pk} merged into {job.base_model.name} (dataset version {job.dataset_version.name}).",
        source_job=job,
    )
    audit_record(
        actor=actor,
        action="finetune_job.merge",
        target=job,
        summary=f"#{job.pk} → {model.name} at {model.path}",
        changes={"base_model": model.pk},
    )
    return model


def _child_error(stdout: str, stderr: str) -> str:
    """The message of the engine's error event, else the end of its stderr."""
    for line in reversed((stdout or "").splitlines()):
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("type") == "error":
            return str(event.get("message") or "unknown error")
    tail = [line for line in (stderr or "").splitlines() if line.strip()][-5:]
    return "\n".join(tail) or "the engine exited without a message"


# --------------------------------------------------------------------------- adapter archive


def finetune_job_adapter_archive(*, actor, job: FineTuneJob) -> tuple[Path, str]:
    """A .zip of the job's adapter folder and training log (admins only): (path, filename).

    Built once per job under the job folder and reused.
    """
    require_admin(actor, _("Only admins can download adapters."))
    if job.status != Status.SUCCEEDED or not job.adapter_path or not Path(job.adapter_path).is_dir():
        raise InvalidTransition(_("Job #%(id)s has no adapter to download.") % {"id": job.pk})
    adapter = Path(job.adapter_path)
    folder = Path(job.output_dir or adapter.parent)
    archive = folder / f"adapter-job-{job.pk}.zip"
    if not archive.exists() or archive.stat().st_mtime < adapter.stat().st_mtime:
        import zipfile

        partial = archive.with_suffix(".zip.part")
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(adapter.rglob("*")):
                if path.is_file():
                    zf.write(path, Path("adapter") / path.relative_to(adapter))
            log = folder / "train_log.jsonl"
            if log.is_file():
                zf.write(log, "train_log.jsonl")
            config = folder / "config.json"
            if config.is_file():
                zf.write(config, "config.json")
        partial.replace(archive)
    audit_record(actor=actor, action="finetune_job.download", target=job, summary=f"#{job.pk}: adapter archive")
    return archive, f"{job.base_model.name}-job-{job.pk}-adapter.zip"


__all__ = [
    "finetune_config_build",
    "finetune_job_adapter_archive",
    "finetune_job_cancel",
    "finetune_job_create",
    "finetune_job_enqueue",
    "finetune_job_fail",
    "finetune_job_merge",
    "finetune_job_retry",
    "finetune_jobs_reap",
    "job_changed",
    "job_output_dir",
]
