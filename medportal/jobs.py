"""The one lifecycle of background work (imports, case generation, fine-tunes, evaluations,
merges, and every kind added later).

A kind of work is a ``JobKind`` registered by its app (``AppConfig.ready``): the model of its
rows, the django-q2 task that runs one row, the cluster it runs on (``None`` = the default
cluster beside the web server, ``"gpu"`` = the GPU workers), and what happens when its worker
dies (``resumable``: queued again, else failed with the reason). Every row is a
``BackgroundJob`` (or has the same fields); its life is only ever changed through this module:

* ``enqueue_after_commit(kind, pk)`` — the task is handed to the broker with the id only, once
  the surrounding transaction commits; a broker that cannot be reached fails the row.
* ``claim(kind, pk)`` — queued → running by one conditional UPDATE (attempt + 1, worker,
  started/heartbeat). A duplicate or redelivered task finds nothing to claim: never run twice.
* ``heartbeat`` / ``set_progress`` — conditional on "still running, this attempt": False means
  the row is not ours any more (cancelled, reaped, claimed again) and the worker stops.
* ``request_cancel`` — a queued row is cancelled at once; a running one gets
  ``cancel_requested_at`` (the worker stops and calls ``finish(..., CANCELLED)``), or, for kinds
  with ``cancel_running_at_once``, is cancelled at once and its worker notices at its next write.
* ``succeed`` / ``finish`` / ``fail`` — the end, with the error stored on the row under one
  truncation rule (``clip_error``: ERROR_MAX characters). ``succeed`` runs the kind's
  ``on_succeeded`` (a dotted path, in the same transaction, in a savepoint): "evaluate after
  training" is chained there.
* ``reap_silent`` — run every minute by a django-q2 Schedule (medportal migration 0003) on the
  default cluster, never by a page or API read: running rows whose heartbeat is older than the
  kind's ``silent_after`` are queued again (resumable kinds, fewer than
  MEDPORTAL_JOB_MAX_ATTEMPTS attempts), cancelled (a cancel was requested) or failed with the
  reason.
* ``task_hook`` — the django-q2 hook of every kind: a task that died outside the worker code
  (timeout, import error) still leaves its error on the row.

Status words are the same everywhere (``JobStatus``): queued, running, succeeded, failed,
cancelled. Messages stored on rows are English, like the engine's: background processes write
them whatever the reader's language. This module imports no app: kinds name their models and
tasks by dotted strings.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from django.apps import apps
from django.conf import settings
from django.db import models, transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.module_loading import import_string
from django.utils.translation import gettext_lazy as _

logger = logging.getLogger(__name__)

ERROR_MAX = 10_000
HOOK = "medportal.jobs.task_hook"


class JobStatus(models.TextChoices):
    QUEUED = "queued", _("queued")
    RUNNING = "running", _("running")
    SUCCEEDED = "succeeded", _("succeeded")
    FAILED = "failed", _("failed")
    CANCELLED = "cancelled", _("cancelled")


ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)
FINISHED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


def clip_error(text) -> str:
    """The one truncation rule for errors stored on rows: at most ERROR_MAX characters."""
    text = str(text or "")
    return text if len(text) <= ERROR_MAX else text[: ERROR_MAX - 1] + "…"


LOG_TAIL_LINES = 50


def log_tail_append(tail: str, *lines: str) -> str:
    """``tail`` with ``lines`` added, keeping the last LOG_TAIL_LINES lines."""
    kept = [line for line in (tail or "").splitlines() if line]
    kept.extend(line for line in lines if line)
    return "\n".join(kept[-LOG_TAIL_LINES:])


def die_with_worker() -> None:  # pragma: no cover - runs in a child before exec
    """``preexec_fn`` of a worker's child process (Linux): the child gets SIGTERM when its worker
    dies (kill -9 included), so no orphan keeps working on a row that is reaped."""
    import signal

    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def worker_name() -> str:
    """host:pid of this process, as stored in ``worker``."""
    return f"{socket.gethostname()}:{os.getpid()}"[:200]


class BackgroundJob(models.Model):
    """The lifecycle fields of a row of background work (abstract)."""

    Status = JobStatus
    ACTIVE = ACTIVE
    FINISHED = FINISHED

    status = models.CharField(_("status"), max_length=12, choices=JobStatus.choices, default=JobStatus.QUEUED, db_index=True)
    progress = models.FloatField(_("progress"), default=0.0)  # 0..1
    error = models.TextField(_("error"), blank=True)
    worker = models.CharField(_("worker"), max_length=200, blank=True)
    task_id = models.CharField(_("queue task"), max_length=64, blank=True)
    attempt = models.PositiveSmallIntegerField(_("attempt"), default=0)
    heartbeat_at = models.DateTimeField(_("heartbeat"), null=True, blank=True)
    started_at = models.DateTimeField(_("started"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True)
    cancel_requested_at = models.DateTimeField(_("cancel requested"), null=True, blank=True)
    # Bumped on every change: pages that poll and conditional updates rely on it.
    version = models.PositiveIntegerField(_("version"), default=1)

    class Meta:
        abstract = True

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE

    @property
    def progress_percent(self) -> int:
        return job_percent(self)


def job_percent(row) -> int:
    """0..100 for a progress bar: 100 once succeeded, at most 99 before."""
    if row.status == JobStatus.SUCCEEDED:
        return 100
    return max(0, min(99, int(100 * float(getattr(row, "progress", 0.0) or 0.0))))


# --------------------------------------------------------------------------- the registry


def _default_silent_after() -> timedelta:
    return timedelta(seconds=settings.MEDPORTAL_JOB_HEARTBEAT_TIMEOUT_S)


@dataclass(frozen=True)
class JobKind:
    """One kind of background work.

    ``resumable``: True, False, or a callable(row) → bool (a fine-tune asks its own
    ``on_worker_death``). ``on_change`` / ``on_succeeded``: dotted paths of callables taking the
    pk (live pages; the next step of a chain). ``audit``: the prefix of the audit actions
    (``<audit>.start``, ``.fail``, ``.reap``, ``.cancel``). ``reap_note``: added to the reason
    of a row failed by the reaper. ``requeue_waiting_on_reap``: after reaping, queue the
    waiting rows of the kind once more (a dead cluster may have taken their tasks with it).
    """

    name: str
    model: str
    task: str
    cluster: str | None = None
    resumable: bool | Callable = False
    silent_after: Callable[[], timedelta] = _default_silent_after
    on_change: str | None = None
    on_succeeded: str | None = None
    audit: str = ""
    reap_note: str = ""
    cancel_running_at_once: bool = False
    requeue_waiting_on_reap: bool = False

    @property
    def model_class(self) -> type[models.Model]:
        return apps.get_model(self.model)

    def is_resumable(self, row) -> bool:
        return bool(self.resumable(row) if callable(self.resumable) else self.resumable)


_KINDS: dict[str, JobKind] = {}


def register(kind: JobKind) -> JobKind:
    """Add a kind (idempotent for the same definition; a different one under a taken name is a bug)."""
    known = _KINDS.get(kind.name)
    if known is not None and known != kind:
        raise ValueError(f"A different job kind is already registered as {kind.name!r}.")
    _KINDS[kind.name] = kind
    return kind


def kind_of(name: str | JobKind) -> JobKind:
    if isinstance(name, JobKind):
        return name
    try:
        return _KINDS[name]
    except KeyError:
        raise LookupError(f"No job kind {name!r}; known: {', '.join(sorted(_KINDS))}") from None


def kinds() -> list[JobKind]:
    return list(_KINDS.values())


def _rows(kind: JobKind):
    return kind.model_class.objects


def _has(kind: JobKind, field: str) -> bool:
    try:
        kind.model_class._meta.get_field(field)
    except Exception:
        return False
    return True


def _bump(kind: JobKind) -> dict:
    return {"version": F("version") + 1} if _has(kind, "version") else {}


def _changed(kind: JobKind, pk: int) -> None:
    if kind.on_change:
        try:
            import_string(kind.on_change)(pk)
        except Exception:
            logger.exception("%s #%s: the change notification failed", kind.name, pk)


def _audit(kind: JobKind, pk: int, event: str, summary: str, changes: dict | None = None) -> None:
    from medportal.audit import audit_record

    row = _rows(kind).filter(pk=pk).first() if kind.audit else None
    if row is not None:
        audit_record(actor=None, action=f"{kind.audit}.{event}", target=row, summary=f"#{pk}: {summary}"[:500], changes=changes or {})


# --------------------------------------------------------------------------- enqueue


def enqueue(kind: str | JobKind, pk: int) -> str | None:
    """Hand row ``pk`` to its cluster now (id only) and store the task id. A broker that cannot
    be reached fails the row with the reason, so nobody waits for a row that never starts."""
    from django_q.tasks import async_task

    kind = kind_of(kind)
    options = {"hook": HOOK, "task_name": f"{kind.name}-{pk}"}
    if kind.cluster:
        options["cluster"] = kind.cluster
    try:
        task_id = async_task(kind.task, int(pk), **options)
    except Exception as exc:
        logger.exception("Could not enqueue %s #%s", kind.name, pk)
        fail(kind, pk, f"Could not queue the work for the {kind.cluster or 'background'} workers: {exc}")
        return None
    if _has(kind, "task_id"):
        # Whatever the row's status by now (a fast worker may have claimed it): the hook of this
        # task only acts on the row while this is its task.
        _rows(kind).filter(pk=pk).update(task_id=str(task_id or "")[:64], **_bump(kind))
    _changed(kind, pk)
    return task_id


def enqueue_after_commit(kind: str | JobKind, pk: int) -> None:
    """``enqueue`` once the surrounding transaction commits (at once outside one)."""
    transaction.on_commit(partial(enqueue, kind_of(kind), int(pk)))


# --------------------------------------------------------------------------- the worker side


def claim(kind: str | JobKind, pk: int, *, worker: str | None = None, **fields):
    """queued → running for this worker by one conditional UPDATE; the row as claimed, or None
    when it is not queued (any more). ``fields`` are reset with the claim (say, progress
    counters). The row's ``attempt`` is the token of every later conditional write."""
    kind = kind_of(kind)
    now = timezone.now()
    values = {
        "status": JobStatus.RUNNING,
        "worker": (worker or worker_name())[:200],
        "started_at": now,
        "heartbeat_at": now,
        "finished_at": None,
        "error": "",
        "attempt": F("attempt") + 1,
        **_bump(kind),
        **fields,
    }
    if not _rows(kind).filter(pk=pk, status=JobStatus.QUEUED).update(**values):
        return None
    row = _rows(kind).get(pk=pk)
    _audit(kind, pk, "start", f"attempt {row.attempt} on {row.worker}", {"attempt": row.attempt, "worker": row.worker})
    _changed(kind, pk)
    return row


def mine(kind: str | JobKind, pk: int, attempt: int):
    """The row while it is running under this claim (a queryset of one row, or none)."""
    return _rows(kind_of(kind)).filter(pk=pk, status=JobStatus.RUNNING, attempt=attempt)


def heartbeat(kind: str | JobKind, pk: int, attempt: int, **fields) -> bool:
    """Heartbeat (and ``fields``) while the row is ours; False once it is not (stop working)."""
    kind = kind_of(kind)
    changed = mine(kind, pk, attempt).update(heartbeat_at=timezone.now(), **_bump(kind), **fields)
    if changed:
        _changed(kind, pk)
    return bool(changed)


def set_progress(kind: str | JobKind, pk: int, attempt: int, progress: float, **fields) -> bool:
    """``heartbeat`` with the progress (0..1, clamped)."""
    return heartbeat(kind, pk, attempt, progress=max(0.0, min(1.0, float(progress))), **fields)


def cancel_requested(kind: str | JobKind, pk: int, attempt: int) -> bool | None:
    """True when a cancel was requested for this claim, None when the row is not ours any more."""
    rows = list(mine(kind, pk, attempt).values_list("cancel_requested_at", flat=True)[:1])
    return None if not rows else rows[0] is not None


def finish(kind: str | JobKind, pk: int, attempt: int, status: str, error: str = "", **fields) -> bool:
    """End this claim with ``status`` (succeeded, failed or cancelled) and the error; False when
    the row was not ours any more (nothing written)."""
    kind = kind_of(kind)
    if status not in FINISHED:
        raise ValueError(f"{status!r} is not an end status")
    now = timezone.now()
    values = {"status": status, "error": clip_error(error), "finished_at": now, "heartbeat_at": now, **_bump(kind), **fields}
    if status == JobStatus.SUCCEEDED:
        values.setdefault("progress", 1.0)
    if not mine(kind, pk, attempt).update(**values):
        return False
    _audit(kind, pk, "finish", status + (f": {error[:300]}" if error else ""), {"status": status, "attempt": attempt})
    _changed(kind, pk)
    if status == JobStatus.SUCCEEDED and kind.on_succeeded:
        _next_step(kind, pk)
    return True


def succeed(kind: str | JobKind, pk: int, attempt: int, **fields) -> bool:
    return finish(kind, pk, attempt, JobStatus.SUCCEEDED, **fields)


def _next_step(kind: JobKind, pk: int) -> None:
    """The kind's step after a success, in the same transaction as the success (in a savepoint:
    its failure is logged and rolls back only itself; the work stays succeeded)."""
    try:
        with transaction.atomic():
            import_string(kind.on_succeeded)(pk)
    except Exception:
        logger.exception("%s #%s: the step after success failed", kind.name, pk)


def fail(kind: str | JobKind, pk: int, reason: str, *, task_id: str | None = None, attempt: int | None = None) -> bool:
    """Mark an unfinished row failed with ``reason`` (clipped). True if it was.

    ``task_id`` (the task hook): only while that task is the row's task, or no task id is
    stored yet (the hook of a fast task can land before ``enqueue`` stored it); a late failure
    of an older task leaves a row that was queued again alone. ``attempt``: only this claim."""
    kind = kind_of(kind)
    rows = _rows(kind).filter(pk=pk, status__in=list(ACTIVE))
    if attempt is not None:
        rows = rows.filter(attempt=attempt)
    if task_id is not None and _has(kind, "task_id"):
        rows = rows.filter(task_id__in=["", str(task_id)[:64]])
    message = clip_error(reason)
    if not rows.update(status=JobStatus.FAILED, error=message, finished_at=timezone.now(), **_bump(kind)):
        return False
    _audit(kind, pk, "fail", message[:300], {"status": JobStatus.FAILED, "error": message[:2000]})
    _changed(kind, pk)
    return True


def task_hook(task) -> None:
    """django-q2 hook of every kind: a task that failed outside the worker code leaves its
    error on its row (while the row is unfinished and that task is its task)."""
    if task.success:
        return
    kind = next((k for k in _KINDS.values() if k.task == getattr(task, "func", None)), None)
    try:
        pk = int(task.args[0])
    except (TypeError, ValueError, IndexError):
        pk = None
    if kind is None or pk is None:
        logger.error("task_hook: task %s (%s) names no job", getattr(task, "id", "?"), getattr(task, "func", "?"))
        return
    fail(kind, pk, f"The background worker failed: {task.result}", task_id=str(task.id))


# --------------------------------------------------------------------------- the user side


def request_cancel(kind: str | JobKind, pk: int) -> str:
    """"cancelled" (a queued row, or a running one of a ``cancel_running_at_once`` kind),
    "requested" (a running row: its worker stops and records it), "already" (asked before), or
    "" (the row is not queued or running)."""
    kind = kind_of(kind)
    now = timezone.now()
    rows = _rows(kind).filter(pk=pk)
    finished = {"status": JobStatus.CANCELLED, "finished_at": now, "cancel_requested_at": now, **_bump(kind)}
    if rows.filter(status=JobStatus.QUEUED).update(**finished):
        outcome = "cancelled"
    elif kind.cancel_running_at_once and rows.filter(status=JobStatus.RUNNING).update(**finished):
        outcome = "cancelled"
    elif rows.filter(status=JobStatus.RUNNING, cancel_requested_at__isnull=True).update(cancel_requested_at=now, **_bump(kind)):
        outcome = "requested"
    elif rows.filter(status=JobStatus.RUNNING).exists():
        return "already"
    else:
        return ""
    _changed(kind, pk)
    return outcome


def requeue(kind: str | JobKind, pk: int, *, statuses=(JobStatus.FAILED, JobStatus.CANCELLED), **fields) -> bool:
    """A finished row queued again (a retry): the lifecycle fields reset, ``fields`` written,
    the task enqueued after commit. False when the row is not in ``statuses`` any more."""
    kind = kind_of(kind)
    values = {
        "status": JobStatus.QUEUED,
        "error": "",
        "cancel_requested_at": None,
        "finished_at": None,
        "worker": "",
        "heartbeat_at": None,
        "task_id": "",
        **_bump(kind),
        **fields,
    }
    if not _rows(kind).filter(pk=pk, status__in=list(statuses)).update(**values):
        return False
    enqueue_after_commit(kind, pk)
    _changed(kind, pk)
    return True


# --------------------------------------------------------------------------- reaping


def silent(kind: JobKind, now: datetime) -> Q:
    """Rows whose worker has been silent longer than the kind allows (no heartbeat since then,
    or none at all since a start that long ago)."""
    cutoff = now - kind.silent_after()
    return Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, started_at__lt=cutoff)


def _reason(row, kind: JobKind) -> str:
    beat = row.heartbeat_at or row.started_at
    when = timezone.localtime(beat).strftime("%Y-%m-%d %H:%M:%S %Z") if beat else "?"
    return f"The worker {row.worker or '?'} stopped sending heartbeats at {when}."


def _tail(row, *lines: str) -> dict:
    if not hasattr(row, "log_tail"):
        return {}
    return {"log_tail": log_tail_append(row.log_tail, *lines)}


def reap_kind(kind: str | JobKind, *, now: datetime | None = None) -> list[int]:
    """Deal with the running rows of one kind whose worker went silent; the pks changed.

    Each change is conditional (still running, same attempt, still silent): two reapers, or a
    worker that comes back, never act on the same row twice."""
    kind = kind_of(kind)
    now = now or timezone.now()
    quiet = silent(kind, now)
    reaped: list[int] = []
    requeued: list[int] = []
    for row in _rows(kind).filter(quiet, status=JobStatus.RUNNING).order_by("pk"):
        reason = _reason(row, kind)
        still = _rows(kind).filter(quiet, pk=row.pk, status=JobStatus.RUNNING, attempt=row.attempt)
        bump = _bump(kind)
        if row.cancel_requested_at is not None:
            outcome = "cancelled"
            changed = still.update(status=JobStatus.CANCELLED, finished_at=now, **_tail(row, reason), **bump)
        elif kind.is_resumable(row) and row.attempt < settings.MEDPORTAL_JOB_MAX_ATTEMPTS:
            outcome = "requeued"
            note = f"{reason} Queued again to resume."
            changed = still.update(
                status=JobStatus.QUEUED, task_id="", worker="", heartbeat_at=None, **_tail(row, note), **bump
            )
            if changed:
                requeued.append(row.pk)
        else:
            outcome = "failed"
            error = reason
            if kind.is_resumable(row):
                error += f" Not queued again: it was already started {row.attempt} times."
            if kind.reap_note:
                error += " " + kind.reap_note
            changed = still.update(status=JobStatus.FAILED, error=clip_error(error), finished_at=now, **_tail(row, error), **bump)
        if not changed:
            continue
        reaped.append(row.pk)
        _audit(kind, row.pk, "reap", f"{outcome}: {reason}", {"status": outcome, "attempt": row.attempt})
        _changed(kind, row.pk)
    for pk in requeued:
        enqueue_after_commit(kind, pk)
    if reaped and kind.requeue_waiting_on_reap:
        # A dead cluster may have taken the task of the next queued row from the broker already
        # (django-q2 prefetches one task per worker): Redis lost it, the ORM broker hides it until
        # the retry delay. Queue every waiting row once more; the conditional claim makes the
        # extra task of a row that was not stranded a no-op.
        for pk in _rows(kind).filter(status=JobStatus.QUEUED).exclude(pk__in=requeued).values_list("pk", flat=True):
            enqueue_after_commit(kind, pk)
    return reaped


def reap_silent(*, now: datetime | None = None) -> dict[str, list[int]]:
    """``reap_kind`` for every registered kind: {kind: pks changed} (kinds with none left out)."""
    out = {}
    for kind in kinds():
        done = reap_kind(kind, now=now)
        if done:
            out[kind.name] = done
    return out


def reap_silent_task() -> dict[str, list[int]]:
    """The every-minute schedule (default cluster; medportal migration 0003)."""
    return reap_silent()


__all__ = [
    "ACTIVE",
    "ERROR_MAX",
    "FINISHED",
    "BackgroundJob",
    "JobKind",
    "JobStatus",
    "cancel_requested",
    "claim",
    "clip_error",
    "die_with_worker",
    "enqueue",
    "enqueue_after_commit",
    "fail",
    "finish",
    "heartbeat",
    "job_percent",
    "kind_of",
    "kinds",
    "log_tail_append",
    "mine",
    "reap_kind",
    "reap_silent",
    "register",
    "request_cancel",
    "requeue",
    "set_progress",
    "succeed",
    "task_hook",
    "worker_name",
]
