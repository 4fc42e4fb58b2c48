"""What a worker does with one adapter merge (kind "merge" of ``medportal.jobs``, run by
``training.tasks.adapter_merge_task`` on the default cluster, or by ``merge_adapter``).

Claims the merge, runs ``python -m training.engine merge`` in a child process (the weights never
load in the worker itself), heart-beating while it runs and stopping it when a cancel is
requested, then registers the folder as a new base model whose ``source_job`` is the job — in
the transaction that ends with the conditional ``succeed``. A failed merge leaves no folder.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from django.conf import settings
from django.db import transaction

from medportal import jobs
from medportal.jobs import JobStatus
from training.models import AdapterMerge

logger = logging.getLogger(__name__)

KIND = "merge"
POLL_S = 1.0


def heartbeat_every() -> float:
    return max(0.5, min(5.0, settings.MEDPORTAL_JOB_HEARTBEAT_TIMEOUT_S / 4))


def child_error(stdout: str, stderr: str) -> str:
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


def adapter_merge_run(*, merge_id: int) -> AdapterMerge | None:
    """Claim and run one merge to its end; the row as it ended (or as found, None if gone)."""
    merge = jobs.claim(KIND, merge_id, progress=0.0)
    if merge is None:
        return AdapterMerge.objects.filter(pk=merge_id).first()
    merge = AdapterMerge.objects.select_related("job__base_model", "job__dataset_version", "created_by").get(pk=merge_id)
    job, out = merge.job, Path(merge.path)
    try:
        if out.exists():
            raise RuntimeError(f"The folder {out} already exists.")
        if not job.adapter_path or not Path(job.adapter_path).is_dir():
            raise RuntimeError(f"The adapter folder of job #{job.pk} is missing ({job.adapter_path or '-'}).")
        out.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "training.engine", "merge", "--base", job.base_model.path, "--adapter", job.adapter_path, "--out", str(out)]
        outcome = _watch(merge, command)
        if outcome is None:  # not ours any more, or cancelled
            shutil.rmtree(out, ignore_errors=True)
            if jobs.cancel_requested(KIND, merge.pk, merge.attempt):
                jobs.finish(KIND, merge.pk, merge.attempt, JobStatus.CANCELLED)
            return AdapterMerge.objects.get(pk=merge_id)
        code, stdout, stderr = outcome
        if code != 0:
            shutil.rmtree(out, ignore_errors=True)
            jobs.finish(KIND, merge.pk, merge.attempt, JobStatus.FAILED, f"Merging failed: {child_error(stdout, stderr)}")
            return AdapterMerge.objects.get(pk=merge_id)
        _register(merge)
    except Exception as exc:
        logger.exception("adapter merge %s failed", merge_id)
        shutil.rmtree(out, ignore_errors=True)
        jobs.fail(KIND, merge.pk, f"Merging failed: {exc.__class__.__name__}: {exc}", attempt=merge.attempt)
    return AdapterMerge.objects.get(pk=merge_id)


def _watch(merge: AdapterMerge, command: list[str]) -> tuple[int, str, str] | None:
    """Run the engine; heartbeat and poll for a cancel. (code, stdout, stderr), or None when the
    merge stopped being ours or a cancel was requested (the child is stopped)."""
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(
            command,
            cwd=settings.BASE_DIR,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
            preexec_fn=jobs.die_with_worker if sys.platform.startswith("linux") else None,
        )
        last_beat = time.monotonic()
        try:
            while proc.poll() is None:
                time.sleep(POLL_S if heartbeat_every() > POLL_S else 0.2)
                if time.monotonic() - last_beat >= heartbeat_every():
                    last_beat = time.monotonic()
                    if not jobs.set_progress(KIND, merge.pk, merge.attempt, 0.5):
                        return None
                if jobs.cancel_requested(KIND, merge.pk, merge.attempt) is not False:
                    return None
        finally:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=30)
        stdout.seek(0)
        stderr.seek(0)
        return proc.returncode, stdout.read().decode(errors="replace"), stderr.read().decode(errors="replace")


def _register(merge: AdapterMerge) -> None:
    from medportal.audit import audit_record
    from training.services.base_models import base_model_register

    job = merge.job
    with transaction.atomic():
        model = base_model_register(
            actor=merge.created_by,
            name=merge.name,
            path=Path(merge.path),
            description=f"The adapter of job #{job.pk} merged into {job.base_model.name} (dataset version {job.dataset_version.name}).",
            source_job=job,
        )
        if not jobs.succeed(KIND, merge.pk, merge.attempt, base_model=model):
            raise RuntimeError("The merge was cancelled or taken over while registering the model.")
        audit_record(
            actor=merge.created_by,
            action="finetune_job.merged",
            target=job,
            summary=f"#{job.pk} → {model.name} at {model.path}",
            changes={"base_model": model.pk, "merge": merge.pk},
        )
