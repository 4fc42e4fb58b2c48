"""Fine-tune jobs: create, cancel, retry, merge (queued), download the adapter.

A job is a background job of kind "finetune" (``medportal.jobs``, registered in
``training.apps``; docs/fine-tuning.md has the admin's version):

* ``finetune_job_create`` validates the recipe (a preset plus overrides, through the engine's
  ``FinetuneConfig``), stores it and queues the job on the django-q2 ``gpu`` cluster once the
  transaction commits, passing the id only (``jobs.enqueue_after_commit``).
* The worker (``training.workers.finetune``) claims it with a conditional UPDATE (queued →
  running, ``attempt`` + 1), runs the engine in a child process and writes progress,
  heartbeats and the outcome on the row.
* ``finetune_job_cancel`` cancels a queued job at once; for a running one it sets
  ``cancel_requested_at`` and the worker stops the child and marks the job cancelled.
* ``finetune_job_retry`` queues a failed or cancelled job again, resuming from its last
  checkpoint when it has one (or starting afresh).
* A job whose worker went silent is reaped by ``medportal.jobs.reap_silent`` (every minute, on
  the default cluster): per its ``on_worker_death`` it is failed with the reason or queued again
  to resume from its last checkpoint.
* ``finetune_job_merge`` queues the merge of a succeeded job's adapter (kind "merge",
  ``training.workers.merge``): it never runs in the request.

Every change bumps ``version`` (the live page and the worker's conditional updates rely on
it) and pings the job's live pages through ``training.live.notify_job_changed``.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from curation.models import DatasetVersion
from medportal import jobs
from medportal.audit import audit_record
from medportal.errors import InvalidInput, InvalidTransition
from medportal.jobs import log_tail_append
from training.models import AdapterMerge, BaseModel, FineTuneJob, FineTuneMetric
from training.services import require_admin

logger = logging.getLogger(__name__)

KIND = "finetune"  # medportal.jobs kind (registered in training.apps)
MERGE_KIND = "merge"

Status = FineTuneJob.Status


# --------------------------------------------------------------------------- helpers


def job_changed(job_id: int) -> None:
    """Ping the job's live pages (after the transaction commits); never raises."""
    from training.live import notify_job_changed

    notify_job_changed(job_id)


def job_output_dir(job_id: int) -> Path:
    """The folder of one job: data, config, checkpoints, adapter and training log."""
    return Path(settings.MEDPORTAL_TRAINING_DIR) / f"job-{int(job_id)}"


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


def check_trainable_base(base_model: BaseModel, config) -> None:
    """Refuse a retired or hosted base model, or the model's own template when it has none
    (every fine-tune stage checks the same)."""
    if not base_model.is_active:
        message = _("Base model '%(name)s' is retired; pick an active one.") % {"name": base_model.name}
        raise InvalidInput(message, details={"base_model": message})
    if base_model.is_hosted:
        message = _("'%(name)s' is a hosted model: it has no local weights to fine-tune.") % {"name": base_model.name}
        raise InvalidInput(message, details={"base_model": message})
    if config.template == "default" and not base_model.has_chat_template:
        message = _("Base model '%(name)s' has no chat template of its own; choose a named template (%(names)s).") % {
            "name": base_model.name,
            "names": "llama3, qwen3, alpaca, medical_inquiry",
        }
        raise InvalidInput(message, details={"template": message})


def worker_death_policy(on_worker_death: str | None) -> str:
    """"fail" or "requeue" (default: settings.MEDPORTAL_ON_WORKER_DEATH); InvalidInput otherwise."""
    policy = on_worker_death or settings.MEDPORTAL_ON_WORKER_DEATH
    if policy not in FineTuneJob.OnWorkerDeath.values:
        message = _("Unknown policy '%(policy)s'; choose fail or requeue.") % {"policy": policy}
        raise InvalidInput(message, details={"on_worker_death": message})
    return policy


def finetune_job_insert(*, actor, summary: str, changes: dict, enqueue: bool, **fields) -> FineTuneJob:
    """Create a queued FineTuneJob of any stage with ``fields``, its output folder and its
    ``finetune_job.create`` audit record (summary after "#<id>: "), and queue its task after
    commit unless ``enqueue`` is False."""
    with transaction.atomic():
        job = FineTuneJob.objects.create(status=Status.QUEUED, queued_at=timezone.now(), created_by=actor, **fields)
        job.output_dir = str(job_output_dir(job.pk))
        job.save(update_fields=["output_dir"])
        audit_record(actor=actor, action="finetune_job.create", target=job, summary=f"#{job.pk}: {summary}", changes=changes)
        if enqueue:
            jobs.enqueue_after_commit(KIND, job.pk)
    return job


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
    policy = worker_death_policy(on_worker_death)
    if int((dataset_version.counts or {}).get("train", 0)) < 1:
        message = _("Dataset version '%(name)s' has no training split; freeze one with a train ratio above 0.") % {
            "name": dataset_version.name
        }
        raise InvalidInput(message, details={"dataset_version": message})
    check_trainable_base(base_model, config)

    preset = (preset or "").strip()
    config = config.to_dict()
    return finetune_job_insert(
        actor=actor,
        summary=f"{base_model.name} on {dataset_version.name}" + (f" ({preset})" if preset else ""),
        changes={
            "preset": preset,
            "config": config,
            "on_worker_death": policy,
            "evaluate_after": bool(evaluate_after),
            "dataset_version": dataset_version.pk,
            "base_model": base_model.pk,
        },
        enqueue=enqueue,
        dataset_version=dataset_version,
        base_model=base_model,
        preset=preset,
        config=config,
        on_worker_death=policy,
        evaluate_after=bool(evaluate_after),
    )


# --------------------------------------------------------------------------- cancel / retry


def finetune_job_cancel(*, actor, job: FineTuneJob) -> FineTuneJob:
    """Cancel a job: a queued one at once; a running one when its worker stops the child
    (within a few seconds; the job shows "cancel requested" until then)."""
    require_admin(actor, _("Only admins can cancel fine-tune jobs."))
    with transaction.atomic():
        outcome = jobs.request_cancel(KIND, job.pk)
        job.refresh_from_db()
        if outcome == "already":  # asked twice: the first request stands
            return job
        if not outcome:
            raise InvalidTransition(
                _("Job #%(id)s is %(status)s; only queued or running jobs can be cancelled.")
                % {"id": job.pk, "status": job.get_status_display()}
            )
        if outcome == "cancelled":
            FineTuneJob.objects.filter(pk=job.pk).update(eta_seconds=None)
        action = "cancelled while queued" if outcome == "cancelled" else "cancel requested"
        audit_record(actor=actor, action="finetune_job.cancel", target=job, summary=f"#{job.pk}: {action}", changes={"status": job.status})
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
    fields = {"eta_seconds": None, "queued_at": now}
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
        fresh = jobs.requeue(KIND, job.pk, **fields)
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
    return job


def _clear_outputs(job: FineTuneJob) -> None:
    """Remove the checkpoints and adapter of a job that starts afresh (its own folder only)."""
    folder = Path(job.output_dir or job_output_dir(job.pk))
    if folder.name != f"job-{job.pk}":
        return
    for name in ("checkpoints", "adapter"):
        shutil.rmtree(folder / name, ignore_errors=True)


# --------------------------------------------------------------------------- merge


def merge_dir(name: str) -> Path:
    """The folder of a merged model."""
    return Path(settings.MEDPORTAL_TRAINING_DIR) / "merged" / name


def finetune_job_merge(*, actor, job: FineTuneJob, name: str, enqueue: bool = True) -> AdapterMerge:
    """Queue the merge of a succeeded job's adapter into its base model (kind "merge").

    Checked here (InvalidTransition / InvalidInput): the job succeeded and its adapter folder
    exists, the name is a free slug and its folder MEDPORTAL_TRAINING_DIR/merged/<name> does not
    exist. The worker (``training.workers.merge``) runs ``python -m training.engine merge`` in a
    child process and registers the folder as a new base model whose ``source_job`` is the job.
    ``enqueue=False`` leaves it queued without a task (``merge_adapter`` runs it in its own
    process).
    """
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
    if AdapterMerge.objects.filter(name=name, status__in=list(AdapterMerge.ACTIVE)).exists():
        message = _("A merge into '%(name)s' is already queued or running.") % {"name": name}
        raise InvalidInput(message, details={"name": message})
    out = merge_dir(name)
    if out.exists():
        message = _("The folder %(path)s already exists; choose another name.") % {"path": out}
        raise InvalidInput(message, details={"name": message})
    with transaction.atomic():
        merge = AdapterMerge.objects.create(job=job, name=name, path=str(out), created_by=actor)
        audit_record(
            actor=actor,
            action="finetune_job.merge",
            target=job,
            summary=f"#{job.pk} → {name}: queued (merge #{merge.pk})",
            changes={"merge": merge.pk, "name": name},
        )
        if enqueue:
            jobs.enqueue_after_commit(MERGE_KIND, merge.pk)
        job_changed(job.pk)
    return merge


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
    "finetune_job_merge",
    "finetune_job_retry",
    "merge_dir",
    "job_changed",
    "job_output_dir",
]
