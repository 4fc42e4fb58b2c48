"""Services of the training app: registering base models, creating, cancelling, retrying and
reaping fine-tune jobs (no training here: the worker and the commands run real ones)."""

from __future__ import annotations

import shutil
from datetime import timedelta

import pytest
from django.utils import timezone

from curation.models import DatasetVersion
from medportal.errors import InvalidInput, InvalidTransition, NotAllowed
from medportal.jobs import reap_kind
from medportal.models import AuditEvent
from training.engine.config import PRESETS
from training.models import BaseModel, FineTuneJob, FineTuneMetric
from training.services.base_models import base_model_register
from training.services.jobs import (
    finetune_job_cancel,
    finetune_job_create,
    finetune_job_retry,
)

from .ui_factories import add_points, job_update, make_base_model, make_version

pytestmark = pytest.mark.django_db

Status = FineTuneJob.Status


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


def create(admin, version, model, **kwargs) -> FineTuneJob:
    kwargs.setdefault("preset", "cpu_demo")
    return finetune_job_create(actor=admin, dataset_version=version, base_model=model, enqueue=False, **kwargs)


@pytest.fixture
def gpu_queue():
    """The tasks handed to django-q2 during the test (its ``pre_enqueue`` signal), in order.

    Read from the signal rather than from the broker: with REDIS_URL the queue is shared with
    whatever else runs, and a gpu cluster of another test may pop a task at once."""
    from django_q.signals import pre_enqueue

    tasks: list[dict] = []

    def seen(sender, task, **kwargs):
        tasks.append(dict(task))

    pre_enqueue.connect(seen, weak=False, dispatch_uid="test-training-gpu-queue")
    yield tasks
    pre_enqueue.disconnect(dispatch_uid="test-training-gpu-queue")


def queued_job_ids(tasks: list[dict]) -> list[int]:
    assert {(t["func"], t["cluster"], t["hook"]) for t in tasks} <= {
        ("training.tasks.finetune_job_task", "gpu", "medportal.jobs.task_hook")
    }
    return sorted(t["args"][0] for t in tasks)


def running(job, *, seconds_ago: float = 0, attempt: int = 1, **fields) -> FineTuneJob:
    beat = timezone.now() - timedelta(seconds=seconds_ago)
    job_update(job, status=Status.RUNNING, worker="gpu-host:4242", started_at=beat, heartbeat_at=beat, attempt=attempt, **fields)
    return job


# ---- base models -------------------------------------------------------------------------------


def test_an_admin_registers_a_model_folder_and_its_inspection_is_recorded(admin_user, demo_model_dir):
    model = base_model_register(actor=admin_user, name="demo", path=demo_model_dir, description="tiny")
    assert model.path == str(demo_model_dir.resolve())
    assert model.num_parameters > 0 and model.vocab_size > 0 and model.context_length > 0
    assert model.has_chat_template is True
    assert model.architecture and model.model_type and model.dtype
    assert model.info["hidden_size"] > 0 and model.info["num_layers"] > 0
    event = AuditEvent.objects.get(action="base_model.register")
    assert event.actor == admin_user and event.target_id == str(model.pk)


@pytest.mark.parametrize("who", ["curator", "clinician"])
def test_only_admins_register_models(request, who, demo_model_dir):
    with pytest.raises(NotAllowed):
        base_model_register(actor=request.getfixturevalue(who), name="demo", path=demo_model_dir)
    assert not BaseModel.objects.exists()


def test_a_name_or_folder_is_registered_once(admin_user, demo_model_dir):
    base_model_register(actor=admin_user, name="demo", path=demo_model_dir)
    with pytest.raises(InvalidInput, match="already registered") as by_name:
        base_model_register(actor=admin_user, name="demo", path=demo_model_dir)
    assert "name" in by_name.value.details
    with pytest.raises(InvalidInput, match="already registered as 'demo'") as by_path:
        base_model_register(actor=admin_user, name="demo-again", path=demo_model_dir)
    assert "path" in by_path.value.details


def test_a_missing_or_empty_folder_is_refused_with_the_reason(admin_user, tmp_path):
    with pytest.raises(InvalidInput, match="does not exist"):
        base_model_register(actor=admin_user, name="ghost", path=tmp_path / "nothing-here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput, match="not a usable model folder"):
        base_model_register(actor=admin_user, name="empty", path=tmp_path / "empty")
    assert not BaseModel.objects.exists()


def test_a_folder_without_a_tokenizer_is_refused(admin_user, demo_model_dir, tmp_path):
    copy = tmp_path / "weights-only"
    shutil.copytree(demo_model_dir, copy)
    for path in copy.iterdir():
        if path.name.startswith(("tokenizer", "special_tokens", "vocab", "merges", "chat_template")):
            path.unlink()
    with pytest.raises(InvalidInput, match="tokenizer"):
        base_model_register(actor=admin_user, name="no-tokenizer", path=copy)


def test_a_name_that_is_not_a_slug_is_refused(admin_user, demo_model_dir):
    with pytest.raises(InvalidInput) as error:
        base_model_register(actor=admin_user, name="my model!", path=demo_model_dir)
    assert "name" in error.value.details


# ---- create ------------------------------------------------------------------------------------


def test_an_admin_queues_a_job_with_the_preset_and_overrides_recorded(admin_user, version, model, settings):
    settings.MEDPORTAL_ON_WORKER_DEATH = "fail"
    job = finetune_job_create(
        actor=admin_user, dataset_version=version, base_model=model, preset="cpu_demo", overrides={"max_steps": 7, "learning_rate": 2e-4}
    )
    assert job.status == Status.QUEUED and job.queued_at is not None
    assert job.preset == "cpu_demo" and job.on_worker_death == "fail"
    assert job.config["max_steps"] == 7 and job.config["learning_rate"] == 2e-4
    assert job.config["cutoff_len"] == PRESETS["cpu_demo"]["cutoff_len"]
    assert job.config["lora_rank"] == PRESETS["cpu_demo"]["lora_rank"]
    assert job.output_dir.endswith(f"job-{job.pk}")
    event = AuditEvent.objects.get(action="finetune_job.create")
    assert event.changes["config"]["max_steps"] == 7


def test_the_task_goes_to_the_gpu_cluster_with_the_job_id_after_the_commit(
    admin_user, version, model, gpu_queue, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        job = finetune_job_create(actor=admin_user, dataset_version=version, base_model=model, preset="cpu_demo")
    assert gpu_queue == []  # not before the commit
    for callback in callbacks:
        callback()
    job.refresh_from_db()
    [task] = gpu_queue
    assert (task["func"], task["args"], task["cluster"], task["id"]) == ("training.tasks.finetune_job_task", (job.pk,), "gpu", job.task_id)
    assert task["hook"] == "medportal.jobs.task_hook"


@pytest.mark.parametrize("who", ["curator", "clinician"])
def test_only_admins_create_jobs(request, who, version, model):
    with pytest.raises(NotAllowed):
        create(request.getfixturevalue(who), version, model)
    assert not FineTuneJob.objects.exists()


def test_every_bad_setting_is_reported_with_its_field(admin_user, version, model):
    with pytest.raises(InvalidInput) as error:
        create(admin_user, version, model, overrides={"learning_rate": -1, "lora_rank": 0, "warp_speed": 9})
    assert {"learning_rate", "lora_rank", "warp_speed"} <= set(error.value.details)
    assert "learning_rate" in error.value.message
    assert not FineTuneJob.objects.exists()


def test_an_unknown_preset_or_policy_is_refused(admin_user, version, model):
    with pytest.raises(InvalidInput, match="Unknown preset") as error:
        create(admin_user, version, model, preset="turbo")
    assert "preset" in error.value.details
    with pytest.raises(InvalidInput) as error:
        create(admin_user, version, model, on_worker_death="shrug")
    assert "on_worker_death" in error.value.details


def test_a_version_without_training_items_is_refused(admin_user, model):
    empty = DatasetVersion.objects.create(
        name="empty", created_by=admin_user, content_hash="0" * 64, counts={"train": 0, "validation": 3, "test": 0}
    )
    with pytest.raises(InvalidInput, match="no training split") as error:
        create(admin_user, empty, model)
    assert "dataset_version" in error.value.details


def test_a_retired_model_or_a_missing_chat_template_is_refused(admin_user, version, model):
    model.is_active = False
    model.save()
    with pytest.raises(InvalidInput, match="retired"):
        create(admin_user, version, model)
    bare = make_base_model(admin_user, name="bare", has_chat_template=False)
    with pytest.raises(InvalidInput) as error:
        create(admin_user, version, bare, overrides={"template": "default"})
    assert "template" in error.value.details
    assert create(admin_user, version, bare, overrides={"template": "qwen3"}).config["template"] == "qwen3"


def test_gpu_settings_are_accepted_when_queued(admin_user, version, model):
    job = create(admin_user, version, model, preset="qwen3_medical")
    assert job.config["bf16"] is True and job.status == Status.QUEUED


# ---- cancel ------------------------------------------------------------------------------------


def test_a_queued_job_is_cancelled_at_once(admin_user, version, model):
    job = create(admin_user, version, model)
    before = job.version
    job = finetune_job_cancel(actor=admin_user, job=job)
    assert job.status == Status.CANCELLED and job.finished_at is not None
    assert job.version > before
    assert AuditEvent.objects.filter(action="finetune_job.cancel", target_id=str(job.pk)).exists()


def test_a_running_job_gets_a_cancel_request_for_its_worker(admin_user, version, model):
    job = running(create(admin_user, version, model))
    job = finetune_job_cancel(actor=admin_user, job=job)
    assert job.status == Status.RUNNING and job.cancel_requested_at is not None
    first = job.cancel_requested_at
    assert finetune_job_cancel(actor=admin_user, job=job).cancel_requested_at == first  # asking twice is harmless


@pytest.mark.parametrize("status", [Status.SUCCEEDED, Status.FAILED, Status.CANCELLED])
def test_a_finished_job_cannot_be_cancelled(admin_user, version, model, status):
    job = create(admin_user, version, model)
    job_update(job, status=status)
    with pytest.raises(InvalidTransition):
        finetune_job_cancel(actor=admin_user, job=job)


@pytest.mark.parametrize("who", ["curator", "clinician"])
def test_only_admins_cancel(request, who, admin_user, version, model):
    job = create(admin_user, version, model)
    with pytest.raises(NotAllowed):
        finetune_job_cancel(actor=request.getfixturevalue(who), job=job)
    job.refresh_from_db()
    assert job.status == Status.QUEUED


# ---- retry -------------------------------------------------------------------------------------


def test_a_failed_job_with_a_checkpoint_is_queued_again_to_resume(
    admin_user, version, model, tmp_path, gpu_queue, django_capture_on_commit_callbacks
):
    job = create(admin_user, version, model)
    checkpoint = tmp_path / "training" / f"job-{job.pk}" / "checkpoints" / "checkpoint-4"
    checkpoint.mkdir(parents=True)
    job_update(job, status=Status.FAILED, error="boom", attempt=1, step=6, last_checkpoint=str(checkpoint), train_loss_first=3.0)
    add_points(job, train=[(2, 3.0, 1e-3, 100.0), (4, 2.5, 1e-3, 100.0)])
    with django_capture_on_commit_callbacks(execute=True):
        again = finetune_job_retry(actor=admin_user, job=job)
    assert queued_job_ids(gpu_queue) == [job.pk]
    again.refresh_from_db()
    assert again.pk == job.pk and again.status == Status.QUEUED
    assert again.error == "" and again.finished_at is None
    assert again.last_checkpoint == str(checkpoint) and again.train_loss_first == 3.0
    assert FineTuneMetric.objects.filter(job=job).count() == 2
    assert "resuming" in again.log_tail


def test_a_retry_without_resume_starts_afresh(admin_user, version, model, tmp_path):
    job = create(admin_user, version, model)
    checkpoint = tmp_path / "training" / f"job-{job.pk}" / "checkpoints" / "checkpoint-4"
    checkpoint.mkdir(parents=True)
    job_update(job, status=Status.CANCELLED, attempt=1, step=6, progress=0.5, last_checkpoint=str(checkpoint), train_loss_first=3.0)
    add_points(job, train=[(2, 3.0, 1e-3, 100.0)], evals=[(4, 2.9)])
    again = finetune_job_retry(actor=admin_user, job=job, resume=False)
    assert again.status == Status.QUEUED
    assert (again.step, again.progress, again.last_checkpoint, again.train_loss_first) == (0, 0.0, "", None)
    assert not FineTuneMetric.objects.filter(job=job).exists()
    assert not checkpoint.exists()


def test_a_retry_with_resume_but_no_checkpoint_starts_afresh(admin_user, version, model):
    job = create(admin_user, version, model)
    job_update(job, status=Status.FAILED, step=3, train_loss_first=3.0)
    add_points(job, train=[(1, 3.0, 1e-3, 100.0)])
    again = finetune_job_retry(actor=admin_user, job=job, resume=True)
    assert again.step == 0 and not FineTuneMetric.objects.filter(job=job).exists()


@pytest.mark.parametrize("status", [Status.QUEUED, Status.RUNNING, Status.SUCCEEDED])
def test_only_failed_or_cancelled_jobs_are_retried(admin_user, version, model, status):
    job = create(admin_user, version, model)
    job_update(job, status=status)
    with pytest.raises(InvalidTransition):
        finetune_job_retry(actor=admin_user, job=job)


@pytest.mark.parametrize("who", ["curator", "clinician"])
def test_only_admins_retry(request, who, admin_user, version, model):
    job = create(admin_user, version, model)
    job_update(job, status=Status.FAILED)
    with pytest.raises(NotAllowed):
        finetune_job_retry(actor=request.getfixturevalue(who), job=job)


# ---- reaping -----------------------------------------------------------------------------------


def test_a_silent_worker_fails_its_job_with_the_reason_under_the_fail_policy(admin_user, version, model, settings):
    settings.MEDPORTAL_JOB_HEARTBEAT_TIMEOUT_S = 60
    job = running(create(admin_user, version, model, on_worker_death="fail"), seconds_ago=300)
    assert reap_kind("finetune") == [job.pk]
    job.refresh_from_db()
    assert job.status == Status.FAILED and job.finished_at is not None
    assert "The worker gpu-host:4242 stopped sending heartbeats at" in job.error
    assert AuditEvent.objects.filter(action="finetune_job.reap", target_id=str(job.pk)).exists()
    assert reap_kind("finetune") == []  # nothing left to do: conditional updates only


def test_a_silent_worker_requeues_its_job_to_resume_under_the_requeue_policy(
    admin_user, version, model, settings, gpu_queue, django_capture_on_commit_callbacks
):
    settings.MEDPORTAL_JOB_HEARTBEAT_TIMEOUT_S = 60
    job = running(create(admin_user, version, model, on_worker_death="requeue"), seconds_ago=300, last_checkpoint="/x/checkpoint-5", step=7)
    with django_capture_on_commit_callbacks(execute=True):
        assert reap_kind("finetune") == [job.pk]
    assert queued_job_ids(gpu_queue) == [job.pk]  # for a worker again, after the commit
    job.refresh_from_db()
    assert job.status == Status.QUEUED and job.worker == "" and job.heartbeat_at is None
    assert job.last_checkpoint == "/x/checkpoint-5" and job.step == 7  # the next attempt resumes
    assert "stopped sending heartbeats" in job.log_tail and job.error == ""


def test_a_job_started_too_often_is_failed_instead_of_requeued(admin_user, version, model, settings):
    settings.MEDPORTAL_JOB_HEARTBEAT_TIMEOUT_S = 60
    settings.MEDPORTAL_JOB_MAX_ATTEMPTS = 2
    job = running(create(admin_user, version, model, on_worker_death="requeue"), seconds_ago=300, attempt=2)
    reap_kind("finetune")
    job.refresh_from_db()
    assert job.status == Status.FAILED
    assert "already started 2 times" in job.error


def test_a_job_with_a_recent_heartbeat_is_left_alone(admin_user, version, model, settings):
    settings.MEDPORTAL_JOB_HEARTBEAT_TIMEOUT_S = 60
    job = running(create(admin_user, version, model, on_worker_death="fail"), seconds_ago=10)
    queued = create(admin_user, version, model)
    assert reap_kind("finetune") == []
    job.refresh_from_db()
    queued.refresh_from_db()
    assert (job.status, queued.status) == (Status.RUNNING, Status.QUEUED)


def test_a_silent_job_whose_cancel_was_requested_ends_cancelled(admin_user, version, model, settings):
    settings.MEDPORTAL_JOB_HEARTBEAT_TIMEOUT_S = 60
    job = running(create(admin_user, version, model, on_worker_death="requeue"), seconds_ago=300, cancel_requested_at=timezone.now())
    reap_kind("finetune")
    job.refresh_from_db()
    assert job.status == Status.CANCELLED


def test_reaping_a_dead_worker_queues_the_waiting_jobs_once_more(
    admin_user, version, model, settings, gpu_queue, django_capture_on_commit_callbacks
):
    """The dead cluster may have taken the next job's task from the broker already."""
    settings.MEDPORTAL_JOB_HEARTBEAT_TIMEOUT_S = 60
    running(create(admin_user, version, model, on_worker_death="fail"), seconds_ago=300)
    waiting = create(admin_user, version, model)
    with django_capture_on_commit_callbacks(execute=True):
        reap_kind("finetune")
    assert queued_job_ids(gpu_queue) == [waiting.pk]
