"""What a ``gpu`` worker does with one fine-tune job (kind "finetune" of ``medportal.jobs``,
run by ``training.tasks.finetune_job_task``).

1. **Claim** with ``jobs.claim``: a conditional UPDATE (queued → running, ``attempt`` + 1,
   worker name, heartbeat). A redelivered or duplicate task finds nothing to claim and returns: a job is
   never trained twice at once. Every later write of this run is conditional on "still
   running, same attempt", so a run whose job was reaped and handed to another worker
   notices at its next write, stops its child and writes nothing more.
2. **Prepare** in the job folder (MEDPORTAL_TRAINING_DIR/job-<id>): the train and validation
   splits of the dataset version as LLaMA-Factory alpaca arrays (``curation.exports``), and
   ``config.json``. A GPU-only configuration on a host without CUDA fails here, before
   anything is spawned, with a message naming the settings.
3. **Run** ``python -m training.engine train …`` in a child process in its own session (so
   a cancel can signal its whole process group, and GPU memory is freed when it exits; on
   Linux it also gets SIGTERM if this worker dies). A reader thread turns its JSON-line
   stdout into events, another keeps its stderr; the main thread applies them to the row in
   coalesced writes (progress, curves in ``FineTuneMetric``, log tail), heartbeats every few
   seconds even while the child is silent (model loading), and polls for a cancel request:
   SIGTERM to the child's group (the engine stops at the next step), SIGKILL after a grace
   period.
4. **Finish** from what the child said and how it exited: succeeded / cancelled from its
   ``done`` event; failed with its ``error`` event's message, or with the end of its stderr
   when it died without one (a signal, a segfault, the OOM killer). Nothing the child does
   takes the worker down. "Evaluate when done" is the kind's ``on_succeeded`` step
   (``jobs.succeed`` runs it): this module never calls the evaluation code.

The first attempt starts afresh (``--no-resume``, stale outputs removed); a later attempt
(re-queued after a worker death, or retried with resume) lets the runner resume from the
last checkpoint in ``checkpoints/``. Every write bumps ``version`` and pings the live page.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from curation.exports.base import alpaca_record, items
from curation.exports.llamafactory import write_array
from medportal import jobs
from medportal.jobs import LOG_TAIL_LINES
from training.models import FineTuneJob, FineTuneMetric
from training.services.jobs import job_output_dir

logger = logging.getLogger(__name__)

Status = FineTuneJob.Status

HEARTBEAT_EVERY_S = 5.0
MIN_WRITE_INTERVAL_S = 0.5
CANCEL_POLL_S = 1.0
CANCEL_GRACE_S = 30.0
LINE_MAX = 500


KIND = "finetune"


def heartbeat_every() -> float:
    """Seconds between heartbeats: a quarter of the timeout, at most HEARTBEAT_EVERY_S."""
    return max(0.5, min(HEARTBEAT_EVERY_S, settings.MEDPORTAL_JOB_HEARTBEAT_TIMEOUT_S / 4))


# --------------------------------------------------------------------------- claim


def finetune_job_claim(*, job_id: int) -> FineTuneJob | None:
    """queued → running for this worker, or None when the job is not queued (any more)."""
    if jobs.claim(KIND, job_id, eta_seconds=None) is None:
        return None
    return FineTuneJob.objects.select_related("base_model", "dataset_version").get(pk=job_id)


def finetune_job_run(*, job_id: int, on_line: Callable[[str], None] | None = None) -> FineTuneJob | None:
    """Claim and run one job to its end; returns the row as it ended (or as found).

    ``on_line`` (``run_finetune --sync``) receives the log lines and the loss of each logged step."""
    job = finetune_job_claim(job_id=job_id)
    if job is None:
        logger.info("fine-tune job %s: nothing to claim (not queued)", job_id)
        return FineTuneJob.objects.filter(pk=job_id).first()
    _Run(job, on_line=on_line).execute()
    return FineTuneJob.objects.filter(pk=job_id).first()


# --------------------------------------------------------------------------- the run


class _Refused(Exception):
    """The job cannot run on this worker; the message is stored as its error."""


def _cuda_available() -> bool:
    """Asked in a child process, so that this worker never initialises CUDA itself (and only
    when the host shows a GPU device at all: importing torch to hear "no" costs seconds)."""
    if not (any(Path("/dev").glob("nvidia[0-9]*")) or Path("/dev/kfd").exists() or shutil.which("nvidia-smi")):
        return False
    probe = "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 3)"
    try:
        return subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=300).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _finite(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _int(value, default: int = 0) -> int:
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return default


def _clean_line(raw: str) -> str:
    line = raw.rstrip("\r\n").split("\r")[-1].rstrip()  # progress bars: keep the last state
    return line[:LINE_MAX]


def _pump_stdout(stream, events: queue.Queue) -> None:
    try:
        for raw in iter(stream.readline, b""):
            text = raw.decode("utf-8", errors="replace").strip()
            if not text:
                continue
            try:
                event = json.loads(text)
            except ValueError:
                events.put(("line", text))
                continue
            events.put(("event", event) if isinstance(event, dict) else ("line", text))
    finally:
        events.put(("eof", None))


def _pump_stderr(stream, events: queue.Queue) -> None:
    for raw in iter(stream.readline, b""):
        line = _clean_line(raw.decode("utf-8", errors="replace"))
        if line:
            events.put(("stderr", line))


# The DPO figures of the engine's log events (training.engine.dpo), kept on the job for its page.
PREFERENCE_KEYS = ("rewards_chosen", "rewards_rejected", "reward_margin", "reward_accuracy")


class _Run:
    def __init__(self, job: FineTuneJob, on_line: Callable[[str], None] | None = None):
        self.job = job
        self.on_line = on_line
        self.attempt = job.attempt
        self.tail: deque[str] = deque((job.log_tail or "").splitlines(), maxlen=LOG_TAIL_LINES)
        self.stderr_tail: deque[str] = deque(maxlen=20)
        self.tail_dirty = False
        self.pending: dict = {}
        self.metrics: dict[tuple[str, int], FineTuneMetric] = {}
        self.drop_metrics_after: int | None = None
        self.first_loss = job.train_loss_first
        self.preference: dict = dict(job.preference_metrics or {})
        self.total_steps = job.total_steps
        self.done: dict | None = None
        self.error: dict | None = None
        self.urgent = False
        self.lost = False
        self.proc: subprocess.Popen | None = None
        self.cancel_sent_at: float | None = None
        self.killed = False

    # ---- writing -----------------------------------------------------------------------

    def note(self, text: str) -> None:
        line = f"[{timezone.localtime():%H:%M:%S}] {text}"[:LINE_MAX]
        self.tail.append(line)
        self.tail_dirty = True
        self.echo(line)

    def echo(self, line: str) -> None:
        if self.on_line is not None:
            try:
                self.on_line(line)
            except Exception:  # a closed terminal must not stop the job
                self.on_line = None

    def write(self, **fields) -> bool:
        """One conditional UPDATE (still running, this attempt) with the pending changes, the
        log tail and a heartbeat, plus the new metric rows. False once the job is not ours."""
        if self.lost:
            return False
        values = {**self.pending, **fields}
        if self.tail_dirty:
            values["log_tail"] = "\n".join(self.tail)
        with transaction.atomic():
            status = values.pop("status", None)
            if status is None:
                changed = jobs.heartbeat(KIND, self.job.pk, self.attempt, **values)
            else:
                changed = jobs.finish(KIND, self.job.pk, self.attempt, status, values.pop("error", ""), **values)
            if changed:
                if self.drop_metrics_after is not None:
                    FineTuneMetric.objects.filter(job_id=self.job.pk, step__gt=self.drop_metrics_after).delete()
                    self.drop_metrics_after = None
                if self.metrics:
                    FineTuneMetric.objects.bulk_create(list(self.metrics.values()), ignore_conflicts=True)
        self.pending.clear()
        self.metrics.clear()
        self.tail_dirty = False
        self.urgent = False
        if not changed:
            self.lost = True
            logger.warning("fine-tune job %s: no longer ours (reaped, cancelled or re-queued); stopping", self.job.pk)
            return False
        return True

    def finish(self, status: str, error: str = "") -> None:
        """The end of this attempt through ``jobs.finish`` (audited; a success runs the kind's
        next step, the evaluation when the job asked for it)."""
        if error:
            self.note(error.splitlines()[0])
        extra = {"progress": 1.0} if status == Status.SUCCEEDED else {}
        self.write(status=status, error=error, eta_seconds=None, **extra)

    # ---- preparing ---------------------------------------------------------------------

    def prepare(self) -> list[str]:
        from training.engine.config import ConfigError, FinetuneConfig

        job = self.job
        try:
            config = FinetuneConfig.from_dict(job.config)
        except ConfigError as exc:
            raise _Refused(f"The stored configuration is not valid: {exc}") from None
        gpu_only = config.gpu_only_fields()
        if gpu_only and not _cuda_available():
            reasons = "; ".join(f"{key}: {why}" for key, why in gpu_only.items())
            raise _Refused(
                f"This job needs a CUDA GPU ({', '.join(gpu_only)}) but the worker {job.worker} has none. "
                f"Run a gpu worker on a GPU host, or start a new job with these settings off — {reasons}."
            )
        model_path = Path(job.base_model.path)
        if not model_path.is_dir():
            raise _Refused(f"The base model folder {model_path} does not exist on the worker {job.worker}.")

        out = Path(job.output_dir or job_output_dir(job.pk))
        resume = self.attempt > 1
        if not resume and out.name == f"job-{job.pk}":
            for name in ("checkpoints", "adapter", "data"):
                shutil.rmtree(out / name, ignore_errors=True)
            (out / "train_log.jsonl").unlink(missing_ok=True)
        data = out / "data"
        data.mkdir(parents=True, exist_ok=True)
        if job.stage == FineTuneJob.Stage.DPO:
            return self.prepare_dpo(config, model_path, out, data, resume)
        version = job.dataset_version
        train = data / "train.json"
        n_train = write_array(train, (alpaca_record(content) for _pk, content in items(version, "train")))
        if not n_train:
            raise _Refused(f"Dataset version '{version.name}' has no training items.")
        command = [
            sys.executable,
            "-m",
            "training.engine",
            "train",
            "--config",
            str(out / "config.json"),
            "--model",
            str(model_path),
            "--train",
            str(train),
        ]
        if int((version.counts or {}).get("validation", 0)) > 0:
            evaluation = data / "validation.json"
            if write_array(evaluation, (alpaca_record(content) for _pk, content in items(version, "validation"))):
                command += ["--eval", str(evaluation)]
        (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        command += ["--out", str(out)]
        if not resume:
            command.append("--no-resume")
        self.note(
            f"attempt {self.attempt} on {job.worker}: {n_train} training records"
            + (", resuming from the last checkpoint" if resume else "")
        )
        if not job.output_dir:
            self.pending["output_dir"] = str(out)
        return command

    def prepare_dpo(self, config, model_path: Path, out: Path, data: Path, resume: bool) -> list[str]:
        """The DPO run: the preference version's train split (validation held out) as
        LLaMA-Factory pairwise arrays, ``DPOConfig`` (β from the job) and, on top of a parent
        job, its adapter as the starting point and the reference."""
        from curation.exports.preference import items as preference_items
        from curation.exports.preference import lf_record
        from training.engine.dpo import DPOConfig

        job = self.job
        version = job.preference_version
        if version is None:
            raise _Refused("This DPO job has no preference version.")
        train = data / "preferences_train.json"
        n_train = write_array(train, (lf_record(content) for _pk, content in preference_items(version, "train")))
        if not n_train:
            raise _Refused(f"Preference version '{version.name}' has no training pairs.")
        (out / "dpo_config.json").write_text(
            json.dumps(DPOConfig(**(job.dpo_config or {}), finetune=config).to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        command = [sys.executable, "-m", "training.engine", "dpo", "--config", str(out / "dpo_config.json"), "--model", str(model_path), "--train", str(train)]
        if int((version.counts or {}).get("validation", 0)) > 0:
            held = data / "preferences_validation.json"
            if write_array(held, (lf_record(content) for _pk, content in preference_items(version, "validation"))):
                command += ["--eval", str(held)]
        if job.parent_job_id:
            parent = job.parent_job
            if not parent.adapter_path or not Path(parent.adapter_path).is_dir():
                raise _Refused(f"The adapter of job #{parent.pk} ({parent.adapter_path or 'none'}) is not on the worker {job.worker}.")
            command += ["--adapter", parent.adapter_path]
        command += ["--out", str(out)]
        if not resume:
            command.append("--no-resume")
        self.note(
            f"attempt {self.attempt} on {job.worker}: DPO on {n_train} preference pairs, beta {(job.dpo_config or {}).get('beta', 0.1)}"
            + (f", from the adapter of job #{job.parent_job_id}" if job.parent_job_id else ", from the base model")
            + (", resuming from the last checkpoint" if resume else "")
        )
        if not job.output_dir:
            self.pending["output_dir"] = str(out)
        return command

    # ---- events --------------------------------------------------------------------------

    def apply(self, kind: str, payload) -> None:
        if kind == "stderr":
            self.stderr_tail.append(payload)
            self.tail.append(payload)
            self.tail_dirty = True
            return
        if kind == "line":
            self.tail.append(_clean_line(payload))
            self.tail_dirty = True
            return
        event: dict = payload
        kind = event.get("type")
        p = self.pending
        if kind == "start":
            p["total_steps"] = self.total_steps = _int(event.get("total_steps"))
            p["num_train_examples"] = _int(event.get("num_train_examples"))
            p["num_eval_examples"] = _int(event.get("num_eval_examples"))
            p["trainable_parameters"] = _int(event.get("trainable_parameters"))
            if event.get("template_fingerprint"):
                p["template_fingerprint"] = str(event["template_fingerprint"])[:64]
            resumed = _int(event.get("resumed_from_step"))
            self.drop_metrics_after = resumed  # points logged after the checkpoint are logged again
            if resumed:
                p["step"] = resumed
            else:
                self.first_loss = None
                p["train_loss_first"] = None
            self.note(
                f"training {p['num_train_examples']} examples ({p['num_eval_examples']} for validation), {p['total_steps']} steps"
                + (f"; resumed from step {resumed}" if resumed else "")
            )
            self.urgent = True
        elif kind == "log":
            step = _int(event.get("step"))
            loss = _finite(event.get("loss"))
            p["step"] = step
            p["epoch"] = _finite(event.get("epoch")) or 0.0
            if event.get("progress") is not None:
                p["progress"] = min(1.0, max(0.0, _finite(event.get("progress")) or 0.0))
            p["eta_seconds"] = _finite(event.get("eta_seconds"))
            p["learning_rate"] = _finite(event.get("learning_rate"))
            p["tokens_per_second"] = _finite(event.get("tokens_per_second"))
            if loss is not None:
                p["train_loss_last"] = loss
                if self.first_loss is None:
                    self.first_loss = loss
                    p["train_loss_first"] = loss
            figures = {k: _finite(event.get(k)) for k in PREFERENCE_KEYS if k in event}
            if figures:
                p["preference_metrics"] = self.preference = {**self.preference, **figures, "step": step}
            if loss is not None:
                self.echo(f"step {step}/{self.total_steps or '?'}: loss {loss:.4f}, {p['tokens_per_second'] or 0:.0f} tokens/s")
            self.metrics[("train", step)] = FineTuneMetric(
                job_id=self.job.pk,
                kind=FineTuneMetric.Kind.TRAIN,
                step=step,
                epoch=p["epoch"],
                loss=loss,
                learning_rate=p["learning_rate"],
                tokens_per_second=p["tokens_per_second"],
            )
        elif kind == "eval":
            step = _int(event.get("step"))
            loss = _finite(event.get("eval_loss"))
            p["eval_loss"] = loss
            self.metrics[("eval", step)] = FineTuneMetric(
                job_id=self.job.pk, kind=FineTuneMetric.Kind.EVAL, step=step, epoch=_finite(event.get("epoch")) or 0.0, loss=loss
            )
            self.note(f"step {step}: eval loss {loss:.4f}" if loss is not None else f"step {step}: eval")
        elif kind == "checkpoint":
            p["last_checkpoint"] = str(event.get("path") or "")[:500]
            self.note(f"checkpoint at step {_int(event.get('step'))}")
            self.urgent = True
        elif kind == "message":
            level = str(event.get("level") or "info").lower()
            text = str(event.get("text") or "")
            self.note(text if level == "info" else f"{level}: {text}")
        elif kind == "done":
            self.done = event
            held = {k: event[k] for k in ("eval_before", "eval_after") if isinstance(event.get(k), dict)}
            if held:
                p["preference_metrics"] = self.preference = {**self.preference, **held}
            if event.get("adapter_path"):
                p["adapter_path"] = str(event["adapter_path"])[:500]
            if self.first_loss is None and _finite(event.get("train_loss_first")) is not None:
                p["train_loss_first"] = self.first_loss = _finite(event.get("train_loss_first"))
            for key in ("train_loss_last", "eval_loss", "tokens_per_second"):
                if _finite(event.get(key)) is not None:
                    p[key] = _finite(event.get(key))
            self.note(f"done: {event.get('status')}")
            self.urgent = True
        elif kind == "error":
            self.error = event
            message = str(event.get("message") or "error")
            self.note(f"error: {message}")
            for line in str(event.get("traceback") or "").strip().splitlines()[-8:]:
                self.tail.append(line[:LINE_MAX])
            self.urgent = True
        else:
            self.note(json.dumps(event, ensure_ascii=False)[:LINE_MAX])

    # ---- the child -----------------------------------------------------------------------

    def signal_child(self, sig: int) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)  # its own session: the engine and anything it started

    def stop_child(self, grace: float = 10.0) -> None:
        self.signal_child(signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.signal_child(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def poll_cancel(self) -> None:
        asked = jobs.cancel_requested(KIND, self.job.pk, self.attempt)
        if asked is None:
            self.lost = True
            return
        if asked and self.cancel_sent_at is None:
            self.note("cancel requested: stopping the training process")
            self.cancel_sent_at = time.monotonic()
            self.signal_child(signal.SIGTERM)
            self.urgent = True

    def watch(self, command: list[str]) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
        self.proc = subprocess.Popen(
            command,
            cwd=settings.BASE_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=jobs.die_with_worker if sys.platform.startswith("linux") else None,
        )
        events: queue.Queue = queue.Queue()
        readers = [
            threading.Thread(target=_pump_stdout, args=(self.proc.stdout, events), daemon=True, name=f"finetune-{self.job.pk}-stdout"),
            threading.Thread(target=_pump_stderr, args=(self.proc.stderr, events), daemon=True, name=f"finetune-{self.job.pk}-stderr"),
        ]
        for reader in readers:
            reader.start()
        self.note(f"training process started (pid {self.proc.pid})")
        self.urgent = True
        beat = heartbeat_every()
        last_write = last_poll = 0.0
        eof = False
        while True:
            batch = []
            try:
                batch.append(events.get(timeout=0.25))
                while len(batch) < 5000:
                    batch.append(events.get_nowait())
            except queue.Empty:
                pass
            for kind, payload in batch:
                if kind == "eof":
                    eof = True
                else:
                    self.apply(kind, payload)
            now = time.monotonic()
            changed = bool(self.pending or self.metrics or self.tail_dirty)
            if self.urgent or now - last_write >= beat or (changed and now - last_write >= MIN_WRITE_INTERVAL_S):
                if not self.write():
                    break
                last_write = now
            if now - last_poll >= CANCEL_POLL_S:
                self.poll_cancel()
                last_poll = now
                if self.lost:
                    break
            if self.cancel_sent_at is not None and not self.killed and now - self.cancel_sent_at > CANCEL_GRACE_S:
                self.note(f"the training process did not stop within {CANCEL_GRACE_S:.0f} s: killed")
                self.signal_child(signal.SIGKILL)
                self.killed = True
            if eof and self.proc.poll() is not None:
                break
        if self.lost:
            self.stop_child()
            return
        self.proc.wait()
        for reader in readers:
            reader.join(timeout=5)
        while True:
            try:
                kind, payload = events.get_nowait()
            except queue.Empty:
                break
            if kind != "eof":
                self.apply(kind, payload)
        self.conclude(self.proc.returncode)

    def conclude(self, code: int) -> None:
        done_status = (self.done or {}).get("status")
        if code == 0 and done_status == "succeeded":  # finished before a late cancel landed
            self.finish(Status.SUCCEEDED)
        elif self.cancel_sent_at is not None or done_status == "cancelled":
            self.finish(Status.CANCELLED)
        elif self.error is not None:
            self.finish(Status.FAILED, str(self.error.get("message") or "The training process failed."))
        else:
            tail = "\n".join(self.stderr_tail) or "(no output on stderr)"
            if code < 0:
                try:
                    name = signal.Signals(-code).name
                except ValueError:
                    name = f"signal {-code}"
                why = f"The training process was killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "") + "."
            elif code != 0:
                why = f"The training process exited with code {code}."
            else:
                why = "The training process ended without reporting a result."
            self.finish(Status.FAILED, f"{why}\n{tail}")

    # ---- entry ---------------------------------------------------------------------------

    def execute(self) -> None:
        try:
            command = self.prepare()
        except _Refused as exc:
            self.finish(Status.FAILED, str(exc))
            return
        except Exception as exc:
            logger.exception("fine-tune job %s: preparing failed", self.job.pk)
            self.finish(Status.FAILED, f"Could not prepare the job: {exc}")
            return
        try:
            self.watch(command)
        except BaseException as exc:
            logger.exception("fine-tune job %s: the worker failed while watching the training process", self.job.pk)
            if self.proc is not None and self.proc.poll() is None:
                self.signal_child(signal.SIGKILL)
            try:
                self.finish(Status.FAILED, f"The worker failed while watching the training process: {exc!r}")
            except Exception:
                logger.exception("fine-tune job %s: could not record the failure", self.job.pk)
            if not isinstance(exc, Exception):
                raise
        finally:
            if self.proc is not None and self.proc.poll() is None:
                self.signal_child(signal.SIGKILL)
                self.proc.wait(timeout=30)


__all__ = ["finetune_job_claim", "finetune_job_run", "heartbeat_every"]
