"""Evaluation runs: who may start them, what is refused, the claim, cancel and reaping, the worker
end to end on the demo model (in-process batched generation and an OpenAI-compatible server with
concurrent requests), the base + tuned pair a fine-tune queues, and ``run_evaluation``."""

from __future__ import annotations

import io
import json
import threading
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from medportal.errors import InvalidInput, InvalidTransition, NotAllowed
from medportal.jobs import reap_kind, task_hook
from medportal.models import AuditEvent
from tests.chat.conftest import lora_adapter_dir  # noqa: F401  (session fixture: a real LoRA adapter on the demo model)
from training.engine.metrics import score_pairs
from training.models import BaseModel, EvalRun, EvalSample, FineTuneJob
from training.services.evaluations import (
    evaluation_cancel,
    evaluation_create,
    evaluation_pair_create,
    evaluations_after_finetune,
)
from training.tasks import evaluation_task
from training.workers.evaluation import evaluation_claim, evaluation_run

from .ui_factories import job_update, make_job

pytestmark = pytest.mark.django_db

Status = EvalRun.Status
FAST = {"max_new_tokens": 6, "batch_size": 4}
DEPARTMENTS = ("心血管科", "消化科")


@pytest.fixture(autouse=True)
def _settings(settings, tmp_path):
    from training.runnables import reset_backends

    settings.MEDPORTAL_TRAINING_DIR = tmp_path / "training"
    settings.MEDPORTAL_INFERENCE_URL = ""
    settings.MEDPORTAL_EVAL_SPEED_SAMPLES = 3
    reset_backends()
    yield
    reset_backends()


def make_eval_version(curator, make_pair, *, pairs: int = 10, split=(0.4, 0.2, 0.4), name: str = "eval-v1"):
    from curation.models import QAPair
    from curation.services.versions import dataset_version_freeze

    questions = ["头痛三天怎么办？", "胃痛吃什么药？", "高血压能喝酒吗？", "咳嗽有痰怎么办？", "失眠多梦如何调理？"]
    for i in range(pairs):
        make_pair(
            curator,
            status=QAPair.Status.APPROVED,
            instruction=f"{questions[i % len(questions)]}（病例{name}-{i}）",
            output=f"建议多休息，清淡饮食，症状持续请及时就医。编号{i}",
            department=DEPARTMENTS[i % 2],
        )
    return dataset_version_freeze(user=curator, name=name, split=split, seed=3)


@pytest.fixture
def version(curator, make_pair):
    return make_eval_version(curator, make_pair)


@pytest.fixture
def model(admin_user, demo_model_dir):
    return BaseModel.objects.create(
        name="demo", path=str(demo_model_dir), architecture="Qwen3ForCausalLM", has_chat_template=True, registered_by=admin_user
    )


@pytest.fixture
def tuned_job(admin_user, version, model, lora_adapter_dir):  # noqa: F811
    job = make_job(admin_user, version, model)
    job_update(job, status=FineTuneJob.Status.SUCCEEDED, adapter_path=str(lora_adapter_dir))
    return job


# --------------------------------------------------------------------------- creating


def test_only_admins_start_or_cancel_evaluation_runs(curator, clinician, admin_user, version, model):
    for user in (curator, clinician):
        with pytest.raises(NotAllowed):
            evaluation_create(actor=user, dataset_version=version, base_model=model, enqueue=False)
    run = evaluation_create(actor=admin_user, dataset_version=version, base_model=model, enqueue=False)
    with pytest.raises(NotAllowed):
        evaluation_cancel(actor=clinician, run=run)
    assert EvalRun.objects.count() == 1


def test_a_run_is_refused_for_an_empty_split_an_unfinished_or_foreign_job_and_bad_parameters(
    admin_user, curator, make_pair, version, model
):
    no_test = make_eval_version(curator, make_pair, pairs=4, split=(0.5, 0.5, 0.0), name="no-test")
    with pytest.raises(InvalidInput) as err:
        evaluation_create(actor=admin_user, dataset_version=no_test, base_model=model, split="test", enqueue=False)
    assert "split" in err.value.details
    job = make_job(admin_user, version, model)
    with pytest.raises(InvalidInput) as err:
        evaluation_create(actor=admin_user, dataset_version=version, base_model=model, job=job, enqueue=False)
    assert "job" in err.value.details
    job_update(job, status=FineTuneJob.Status.SUCCEEDED, adapter_path="/tmp/adapter")
    other = BaseModel.objects.create(name="other", path="/nonexistent", has_chat_template=True, registered_by=admin_user)
    with pytest.raises(InvalidInput) as err:
        evaluation_create(actor=admin_user, dataset_version=version, base_model=other, job=job, enqueue=False)
    assert "job" in err.value.details
    with pytest.raises(InvalidInput) as err:
        evaluation_create(
            actor=admin_user,
            dataset_version=version,
            base_model=model,
            params={"temperature": -1, "batch_size": 0, "beam_width": 3, "template": "nope"},
            enqueue=False,
        )
    assert set(err.value.details) == {"temperature", "batch_size", "beam_width", "template"}
    with pytest.raises(InvalidInput) as err:
        evaluation_create(actor=admin_user, dataset_version=version, base_model=model, mode="bleurt", enqueue=False)
    assert "mode" in err.value.details
    assert not EvalRun.objects.exists()


@pytest.fixture
def gpu_queue():
    """The tasks handed to django-q2 during the test (its ``pre_enqueue`` signal): with REDIS_URL
    the broker is shared with whatever else runs."""
    from django_q.signals import pre_enqueue

    tasks: list[dict] = []

    def seen(sender, task, **kwargs):
        tasks.append(dict(task))

    pre_enqueue.connect(seen, weak=False, dispatch_uid="test-evaluation-gpu-queue")
    yield tasks
    pre_enqueue.disconnect(dispatch_uid="test-evaluation-gpu-queue")


def test_a_created_run_stores_the_validated_recipe_and_is_queued_for_the_gpu_workers_after_the_commit(
    admin_user, version, model, gpu_queue, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        run = evaluation_create(
            actor=admin_user,
            dataset_version=version,
            base_model=model,
            preset="vllm_infer",
            sets=["max_new_tokens=64", "seed=5"],
            max_samples=2,
        )
    assert gpu_queue == []
    for callback in callbacks:
        callback()
    run.refresh_from_db()
    assert run.status == Status.QUEUED and run.total_samples == 2 and run.task_id
    assert run.params == {
        "max_new_tokens": 64,
        "temperature": 0.95,
        "top_p": 0.7,
        "top_k": 50,
        "repetition_penalty": 1.0,
        "seed": 5,
        "template": "default",
        "batch_size": 16,
        "cutoff_len": 2048,
        "max_samples": 2,
    }
    [task] = gpu_queue
    assert (task["func"], task["args"], task["cluster"], task["id"]) == (
        "training.tasks.evaluation_task",
        (run.pk,),
        "gpu",
        run.task_id,
    )
    assert task["hook"] == "medportal.jobs.task_hook"
    assert AuditEvent.objects.filter(action="evaluation.create", target_id=str(run.pk)).exists()


def test_the_pair_of_a_fine_tune_shares_a_group_and_the_tuned_models_template(admin_user, version, model, tuned_job):
    job_update(tuned_job, config={**tuned_job.config, "template": "qwen3"})
    base, tuned = evaluation_pair_create(actor=admin_user, job=tuned_job, params=FAST, enqueue=False)
    assert base.group == tuned.group and base.group.startswith(f"job-{tuned_job.pk}-")
    assert (base.job_id, tuned.job_id) == (None, tuned_job.pk)
    assert base.params == tuned.params and base.params["template"] == "qwen3"
    assert base.split == tuned.split == "test"


# --------------------------------------------------------------------------- the worker


def test_a_run_is_claimed_once_and_a_redelivered_task_leaves_it_alone(admin_user, version, model):
    run = evaluation_create(actor=admin_user, dataset_version=version, base_model=model, enqueue=False)
    claimed = evaluation_claim(run_id=run.pk)
    assert claimed is not None and claimed.status == Status.RUNNING and claimed.worker and claimed.heartbeat_at
    assert evaluation_claim(run_id=run.pk) is None
    assert evaluation_task(run.pk)["status"] == Status.RUNNING  # the duplicate task found nothing to do
    assert evaluation_task(987654)["status"] is None


def test_an_evaluation_run_end_to_end_on_the_demo_model_stores_scored_samples_summaries_and_speed(admin_user, version, model):
    run = evaluation_create(actor=admin_user, dataset_version=version, base_model=model, params=FAST, enqueue=False)
    result = evaluation_task(run.pk)  # what the gpu worker runs
    run.refresh_from_db()
    assert result["status"] == Status.SUCCEEDED, run.error
    total = version.counts["test"]
    samples = list(EvalSample.objects.filter(run=run))
    assert [s.position for s in samples] == list(range(total)) == list(range(run.total_samples))
    assert (run.progress, run.done_samples, run.backend) == (1.0, total, "local")
    assert all(s.prompt and s.reference and s.dataset_item_id and s.completion_tokens > 0 for s in samples)
    scored = score_pairs([s.prediction for s in samples], [s.reference for s in samples], mode="llamafactory")
    assert run.summary == scored["summary"]
    for sample, scores in zip(samples, scored["per_sample"], strict=True):
        assert (sample.bleu4, sample.rouge1, sample.rouge2, sample.rougel) == (
            scores["bleu-4"],
            scores["rouge-1"],
            scores["rouge-2"],
            scores["rouge-l"],
        )
    departments = {s.department for s in samples}
    assert departments <= set(DEPARTMENTS) and set(run.by_department) == departments
    assert sum(d["count"] for d in run.by_department.values()) == total
    for name, summary in run.by_department.items():
        mine = [s for s in samples if s.department == name]
        assert summary == score_pairs([s.prediction for s in mine], [s.reference for s in mine])["summary"]
    speed = run.speed
    for key in ("ttft_ms_p50", "ttft_ms_p95", "latency_ms_p50", "latency_ms_p95", "samples_per_second"):
        assert speed[key] is not None and speed[key] > 0, key
    assert speed["timed_samples"] == 3 and speed["backend"] == "local" and speed["batch_size"] == 4
    assert speed["ttft_ms_p50"] <= speed["latency_ms_p50"] and speed["latency_ms_p50"] <= speed["latency_ms_p95"]
    assert [s.latency_ms is not None for s in samples] == [True] * 3 + [False] * (total - 3)
    assert AuditEvent.objects.filter(action="evaluation.finish", target_id=str(run.pk)).exists()


def test_the_tuned_run_answers_with_the_adapter(admin_user, version, model, tuned_job):
    base, tuned = evaluation_pair_create(
        actor=admin_user, job=tuned_job, params={**FAST, "max_new_tokens": 4}, max_samples=3, enqueue=False
    )
    for run in (base, tuned):
        assert evaluation_run(run_id=run.pk).status == Status.SUCCEEDED
    answers = {run.pk: list(EvalSample.objects.filter(run=run).values_list("prediction", flat=True)) for run in (base, tuned)}
    assert len(answers[base.pk]) == len(answers[tuned.pk]) == 3
    assert answers[base.pk] != answers[tuned.pk]


def test_a_cancelled_run_stops_at_its_next_heartbeat_and_keeps_no_samples(admin_user, version, model):
    run = evaluation_create(actor=admin_user, dataset_version=version, base_model=model, params={**FAST, "batch_size": 1}, enqueue=False)
    lines = []

    def cancel_on_first_answer(line):
        lines.append(line)
        if len(lines) == 2:  # "evaluating N samples…", then the first answer
            evaluation_cancel(actor=admin_user, run=EvalRun.objects.get(pk=run.pk))

    ended = evaluation_run(run_id=run.pk, on_line=cancel_on_first_answer)
    assert ended.status == Status.CANCELLED and ended.done_samples == 1 and ended.finished_at
    assert lines[-1].startswith("stopped")
    assert not EvalSample.objects.filter(run=run).exists()
    with pytest.raises(InvalidTransition):
        evaluation_cancel(actor=admin_user, run=ended)


def test_a_queued_run_is_cancelled_at_once_and_never_claimed(admin_user, version, model):
    run = evaluation_create(actor=admin_user, dataset_version=version, base_model=model, enqueue=False)
    evaluation_cancel(actor=admin_user, run=run)
    assert run.status == Status.CANCELLED
    assert evaluation_claim(run_id=run.pk) is None


def test_a_failure_is_stored_on_the_run(admin_user, version):
    gone = BaseModel.objects.create(name="gone", path="/nonexistent/model", has_chat_template=True, registered_by=admin_user)
    run = evaluation_create(actor=admin_user, dataset_version=version, base_model=gone, enqueue=False)
    ended = evaluation_run(run_id=run.pk)
    assert ended.status == Status.FAILED and "config.json" in ended.error and ended.finished_at


def test_the_task_hook_records_a_worker_that_died_outside_the_run(admin_user, version, model):
    from django_q.models import Task

    run = evaluation_create(actor=admin_user, dataset_version=version, base_model=model, enqueue=False)
    EvalRun.objects.filter(pk=run.pk).update(task_id="t-1")
    task_hook(Task(func="training.tasks.evaluation_task", id="t-1", args=(run.pk,), success=False, result="killed by the timeout"))
    run.refresh_from_db()
    assert run.status == Status.FAILED and "killed by the timeout" in run.error


def test_runs_whose_worker_went_silent_are_queued_again_then_failed_with_the_reason(admin_user, version, model, settings):
    """Evaluations are resumable (the answers a killed worker stored are kept): a silent run is
    queued again, MEDPORTAL_JOB_MAX_ATTEMPTS times at most, then failed with the reason."""
    settings.MEDPORTAL_JOB_MAX_ATTEMPTS = 2
    silent = evaluation_create(actor=admin_user, dataset_version=version, base_model=model, enqueue=False)
    alive = evaluation_create(actor=admin_user, dataset_version=version, base_model=model, enqueue=False)
    for run in (silent, alive):
        evaluation_claim(run_id=run.pk)
    old = timezone.now() - timedelta(seconds=settings.MEDPORTAL_JOB_HEARTBEAT_TIMEOUT_S + 5)
    EvalRun.objects.filter(pk=silent.pk).update(heartbeat_at=old)
    assert reap_kind("evaluation") == [silent.pk]
    assert reap_kind("evaluation") == []
    silent.refresh_from_db()
    alive.refresh_from_db()
    assert silent.status == Status.QUEUED and alive.status == Status.RUNNING
    evaluation_claim(run_id=silent.pk)  # the second attempt goes silent too
    EvalRun.objects.filter(pk=silent.pk).update(heartbeat_at=old)
    assert reap_kind("evaluation") == [silent.pk]
    silent.refresh_from_db()
    assert silent.status == Status.FAILED and "stopped sending heartbeats" in silent.error


# --------------------------------------------------------------------------- after a fine-tune


def test_a_succeeded_fine_tune_queues_its_base_and_tuned_evaluation_on_the_test_split(admin_user, version, tuned_job):
    assert evaluations_after_finetune(tuned_job, enqueue=False) == []  # not asked for (the default)
    job_update(tuned_job, evaluate_after=True)
    runs = evaluations_after_finetune(tuned_job, enqueue=False)
    assert [(r.job_id, r.split, r.status) for r in runs] == [(None, "test", Status.QUEUED), (tuned_job.pk, "test", Status.QUEUED)]
    assert runs[0].group == runs[1].group and runs[0].created_by == tuned_job.created_by


def test_after_a_fine_tune_the_validation_split_stands_in_and_nothing_is_queued_when_not_asked(
    admin_user,
    curator,
    make_pair,
    model,
    lora_adapter_dir,  # noqa: F811
):
    no_test = make_eval_version(curator, make_pair, pairs=6, split=(0.5, 0.5, 0.0), name="no-test")
    job = make_job(admin_user, no_test, model)
    job_update(job, evaluate_after=True)
    assert evaluations_after_finetune(job, enqueue=False) == []  # not succeeded
    job_update(job, status=FineTuneJob.Status.SUCCEEDED, adapter_path=str(lora_adapter_dir))
    assert [r.split for r in evaluations_after_finetune(job, enqueue=False)] == ["validation", "validation"]
    job_update(job, evaluate_after=False)
    assert evaluations_after_finetune(job, enqueue=False) == []
    train_only = make_eval_version(curator, make_pair, pairs=3, split=(1.0, 0.0, 0.0), name="train-only")
    job2 = make_job(admin_user, train_only, model)
    job_update(job2, status=FineTuneJob.Status.SUCCEEDED, adapter_path=str(lora_adapter_dir), evaluate_after=True)
    assert evaluations_after_finetune(job2, enqueue=False) == []
    assert EvalRun.objects.count() == 2


# --------------------------------------------------------------------------- the command


def test_run_evaluation_sync_json_ends_with_the_scores(admin_user, version, model):
    out = io.StringIO()
    call_command(
        "run_evaluation",
        "--dataset-version",
        str(version.pk),
        "--base-model",
        "demo",
        "--mode",
        "standard",
        "--max-samples",
        "2",
        "--set",
        "max_new_tokens=4",
        "--sync",
        "--json",
        stdout=out,
    )
    last = json.loads(out.getvalue().strip().splitlines()[-1])
    run = EvalRun.objects.get()
    assert set(last) == {"run_id", "status", "bleu-4", "rouge-1", "rouge-2", "rouge-l", "count", "speed", "suites", "suite_summary"}
    assert (last["suites"], last["suite_summary"]) == (["reference"], {})
    assert (last["run_id"], last["status"], last["count"], run.mode) == (run.pk, "succeeded", 2, "standard")
    samples = list(EvalSample.objects.filter(run=run))
    assert run.summary == score_pairs([s.prediction for s in samples], [s.reference for s in samples], mode="standard")["summary"]
    assert last["rouge-l"] == run.summary["rouge-l"] and last["speed"]["timed_samples"] == 2


def test_run_evaluation_pair_evaluates_the_base_and_the_tuned_model_of_a_job(admin_user, tuned_job):
    out = io.StringIO()
    call_command(
        "run_evaluation",
        "--job",
        str(tuned_job.pk),
        "--pair",
        "--max-samples",
        "2",
        "--set",
        "max_new_tokens=3",
        "--sync",
        "--json",
        stdout=out,
    )
    base, tuned = (json.loads(line) for line in out.getvalue().strip().splitlines()[-2:])
    runs = {r.pk: r for r in EvalRun.objects.all()}
    assert (runs[base["run_id"]].job_id, runs[tuned["run_id"]].job_id) == (None, tuned_job.pk)
    assert base["status"] == tuned["status"] == "succeeded" and runs[base["run_id"]].group == runs[tuned["run_id"]].group


def test_run_evaluation_refuses_what_the_service_refuses(admin_user, version, model):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="temperature"):
        call_command(
            "run_evaluation", "--dataset-version", str(version.pk), "--base-model", "demo", "--set", "temperature=9", stdout=io.StringIO()
        )
    with pytest.raises(CommandError, match="No base model"):
        call_command("run_evaluation", "--dataset-version", str(version.pk), "--base-model", "nope", stdout=io.StringIO())


# --------------------------------------------------------------------------- an OpenAI-compatible server


@pytest.fixture
def openai_server(model):
    from training.inference.base import ModelRef
    from training.inference.local import LocalBackend
    from training.inference.server import OpenAIServer

    backend = LocalBackend(max_concurrent=3)
    srv = OpenAIServer(("127.0.0.1", 0), backend=backend, models={model.name: ModelRef(base_path=model.path, name=model.name)})
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_through_an_openai_compatible_server_concurrent_requests_give_the_in_process_greedy_answers(
    admin_user, version, model, openai_server, settings
):
    from training.runnables import reset_backends

    local = evaluation_create(actor=admin_user, dataset_version=version, base_model=model, params=FAST, enqueue=False)
    assert evaluation_run(run_id=local.pk).status == Status.SUCCEEDED
    settings.MEDPORTAL_INFERENCE_URL = openai_server.url + "/v1"
    settings.MEDPORTAL_EVAL_CONCURRENCY = 3
    reset_backends()
    remote = evaluation_create(actor=admin_user, dataset_version=version, base_model=model, params=FAST, enqueue=False)
    ended = evaluation_run(run_id=remote.pk)
    assert ended.status == Status.SUCCEEDED, ended.error
    assert ended.backend == "openai" and ended.speed["backend"] == "openai" and ended.speed["concurrency"] == 3
    predictions = {
        run.pk: list(EvalSample.objects.filter(run=run).values_list("prediction", "completion_tokens")) for run in (local, remote)
    }
    assert predictions[remote.pk] == predictions[local.pk]
    assert ended.summary == EvalRun.objects.get(pk=local.pk).summary
    assert ended.speed["ttft_ms_p50"] > 0 and ended.speed["timed_samples"] == 3
