"""The gpu worker's side of a job: the claim, refusals before spawning, a child that fails or
dies, and the task hook. A successful real run is in test_commands (``run_finetune --sync``)
and, through a real cluster, in test_qcluster_finetune."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
import time

import pytest
from django_q.models import Task

from medportal.models import AuditEvent
from training.models import FineTuneJob
from training.services.base_models import base_model_register
from medportal.jobs import task_hook, worker_name
from training.tasks import finetune_job_task
from training.workers.finetune import finetune_job_claim, finetune_job_run

from .ui_factories import job_update, make_base_model, make_job, make_version

pytestmark = pytest.mark.django_db

Status = FineTuneJob.Status
TINY = {"max_steps": 2, "cutoff_len": 64, "max_samples": 8, "save_steps": 50, "eval_steps": None, "val_size": 0.0}


@pytest.fixture(autouse=True)
def training_dir(settings, tmp_path):
    settings.MEDPORTAL_TRAINING_DIR = tmp_path / "training"
    return settings.MEDPORTAL_TRAINING_DIR


@pytest.fixture
def version(curator, make_pair):
    return make_version(curator, make_pair)


@pytest.fixture
def model(admin_user):
    return make_base_model(admin_user)


def test_a_job_is_claimed_once_however_often_its_task_is_delivered(admin_user, version, model):
    job = make_job(admin_user, version, model)
    claimed = finetune_job_claim(job_id=job.pk)
    assert claimed is not None
    assert (claimed.status, claimed.attempt, claimed.worker) == (Status.RUNNING, 1, worker_name())
    assert claimed.started_at is not None and claimed.heartbeat_at is not None
    assert finetune_job_claim(job_id=job.pk) is None  # the duplicate finds nothing to claim
    claimed.refresh_from_db()
    assert claimed.attempt == 1
    assert AuditEvent.objects.filter(action="finetune_job.start", target_id=str(job.pk)).count() == 1


def test_a_redelivered_task_leaves_a_running_or_finished_job_untouched(admin_user, version, model):
    job = make_job(admin_user, version, model)
    for status in (Status.RUNNING, Status.SUCCEEDED, Status.CANCELLED):
        job_update(job, status=status)
        result = finetune_job_task(job.pk)
        fresh = FineTuneJob.objects.get(pk=job.pk)
        assert result["status"] == status and fresh.version == job.version and fresh.attempt == 0


def test_a_task_for_a_deleted_job_returns_quietly():
    assert finetune_job_task(987654)["status"] is None


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this host may have CUDA")
def test_gpu_settings_on_a_host_without_cuda_fail_the_job_before_anything_is_spawned(admin_user, version, model, training_dir):
    job = make_job(admin_user, version, model, overrides={"bf16": True})
    job = finetune_job_run(job_id=job.pk)
    assert job.status == Status.FAILED and job.finished_at is not None
    assert "needs a CUDA GPU (bf16)" in job.error and worker_name() in job.error
    assert not (training_dir / f"job-{job.pk}" / "data").exists()  # nothing prepared, nothing spawned


def test_a_missing_model_folder_fails_the_job_with_the_path(admin_user, version, model):
    job = finetune_job_run(job_id=make_job(admin_user, version, model).pk)
    assert job.status == Status.FAILED
    assert "/nonexistent/medportal-test-model does not exist" in job.error


@pytest.fixture
def broken_model(admin_user, demo_model_dir, tmp_path):
    """A registered copy of the demo model whose weights are then cut short."""
    copy = tmp_path / "broken-model"
    shutil.copytree(demo_model_dir, copy)
    model = base_model_register(actor=admin_user, name="broken", path=copy)
    for weights in copy.glob("*.safetensors"):
        weights.write_bytes(weights.read_bytes()[:64])
    return model


def test_an_engine_error_fails_the_job_with_its_message_and_the_worker_goes_on(admin_user, version, broken_model, training_dir):
    job = finetune_job_run(job_id=make_job(admin_user, version, broken_model, overrides=TINY).pk)
    assert job.status == Status.FAILED and job.finished_at is not None
    assert job.error and "Traceback" not in job.error  # the error event's message, not a raw dump
    assert "error:" in job.log_tail
    data = training_dir / f"job-{job.pk}" / "data"
    assert (data / "train.json").is_file() and (training_dir / f"job-{job.pk}" / "config.json").is_file()
    assert AuditEvent.objects.filter(action="finetune_job.finish", target_id=str(job.pk)).exists()


def _kill_the_engine_when_it_starts(deadline: float) -> threading.Thread:
    import psutil

    def hunt():
        me = psutil.Process(os.getpid())
        while time.monotonic() < deadline:
            for child in me.children(recursive=True):
                try:
                    if "training.engine" in " ".join(child.cmdline()):
                        time.sleep(0.5)
                        child.send_signal(signal.SIGKILL)
                        return
                except psutil.Error:
                    continue
            time.sleep(0.05)

    thread = threading.Thread(target=hunt, daemon=True)
    thread.start()
    return thread


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux process handling")
def test_an_engine_killed_by_a_signal_fails_the_job_with_the_signal_name(admin_user, version, demo_model_dir):
    model = base_model_register(actor=admin_user, name="demo", path=demo_model_dir)
    job = make_job(admin_user, version, model, overrides={**TINY, "max_steps": 500})
    hunter = _kill_the_engine_when_it_starts(time.monotonic() + 60)
    job = finetune_job_run(job_id=job.pk)
    hunter.join(timeout=1)
    assert job.status == Status.FAILED
    assert job.error.startswith("The training process was killed by SIGKILL")


def test_a_task_that_died_outside_the_worker_fails_its_job_with_the_reason(admin_user, version, model):
    job = make_job(admin_user, version, model)
    job_update(job, task_id="task-1")
    task_hook(Task(func="training.tasks.finetune_job_task", id="task-1", args=(job.pk,), success=False, result="MemoryError : Traceback …"))
    job.refresh_from_db()
    assert job.status == Status.FAILED
    assert job.error == "The background worker failed: MemoryError : Traceback …"


def test_the_hook_leaves_a_job_alone_when_the_task_succeeded_or_is_not_its_latest(admin_user, version, model):
    job = make_job(admin_user, version, model)
    job_update(job, task_id="task-2")
    task_hook(Task(func="training.tasks.finetune_job_task", id="task-2", args=(job.pk,), success=True, result={}))
    task_hook(Task(func="training.tasks.finetune_job_task", id="task-1", args=(job.pk,), success=False, result="old news"))
    job.refresh_from_db()
    assert job.status == Status.QUEUED and job.error == ""
