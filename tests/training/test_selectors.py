"""Reads of the training app: the job snapshot (the live page's one shape), the template
check, job lists, presets with estimates."""

from __future__ import annotations

import json

import pytest
from django.http import Http404

from training.engine.config import PRESETS
from training.models import FineTuneJob
from training.selectors import base_model_get, job_get, job_list, job_snapshot, preset_list
from training.services.base_models import base_model_register

from .ui_factories import add_points, job_update, make_base_model, make_job, make_version

pytestmark = pytest.mark.django_db

Status = FineTuneJob.Status

SNAPSHOT_KEYS = {
    "id", "status", "status_label", "progress", "step", "total_steps", "epoch", "eta_seconds", "tokens_per_second",
    "learning_rate", "train_loss_first", "train_loss_last", "eval_loss", "num_train_examples", "num_eval_examples",
    "log_tail", "error", "adapter_path", "worker", "heartbeat_at", "started_at", "finished_at", "attempt", "version",
    "cancel_requested", "train", "eval", "can_cancel", "can_retry", "template", "stage", "preference",
}  # fmt: skip


@pytest.fixture
def version(curator, make_pair):
    return make_version(curator, make_pair)


@pytest.fixture
def model(admin_user):
    return make_base_model(admin_user)


def test_the_snapshot_has_every_field_of_the_live_page_and_is_json(admin_user, version, model):
    job = make_job(admin_user, version, model)
    add_points(job, train=[(10, 2.0, 1e-4, 900.0), (5, 2.5, 2e-4, 800.0)], evals=[(10, 2.2)])
    from django.utils import timezone

    job_update(
        job,
        status=Status.RUNNING,
        step=10,
        total_steps=40,
        progress=0.25,
        heartbeat_at=timezone.now(),
        started_at=timezone.now(),
        worker="h:1",
        attempt=1,
    )
    snap = job_snapshot(job_get(pk=job.pk))
    assert set(snap) == SNAPSHOT_KEYS
    assert json.loads(json.dumps(snap)) == snap
    assert snap["train"] == [[5, 2.5, 2e-4, 800.0], [10, 2.0, 1e-4, 900.0]]  # in step order
    assert snap["eval"] == [[10, 2.2]]
    assert (snap["status"], snap["status_label"], snap["progress"], snap["step"]) == ("running", "running", 0.25, 10)
    assert snap["heartbeat_at"] == job.heartbeat_at.isoformat() and snap["finished_at"] is None
    assert (snap["can_cancel"], snap["can_retry"], snap["cancel_requested"]) == (True, False, False)
    assert snap["template"] == {"name": "default", "training_fingerprint": None, "serving_fingerprint": None, "match": None}
    assert (snap["stage"], snap["preference"]) == ("sft", {})  # DPO jobs add their rewards and margin


@pytest.mark.parametrize(
    "status, cancel_requested, can_cancel, can_retry",
    [
        (Status.QUEUED, False, True, False),
        (Status.RUNNING, True, False, False),
        (Status.SUCCEEDED, False, False, False),
        (Status.FAILED, False, False, True),
        (Status.CANCELLED, False, False, True),
    ],
)
def test_the_snapshot_says_which_actions_apply(admin_user, version, model, status, cancel_requested, can_cancel, can_retry):
    from django.utils import timezone

    job = make_job(admin_user, version, model)
    job_update(job, status=status, cancel_requested_at=timezone.now() if cancel_requested else None)
    snap = job_snapshot(job)
    assert (snap["can_cancel"], snap["can_retry"]) == (can_cancel, can_retry)


def test_the_template_check_compares_training_with_serving(admin_user, version, demo_model_dir, tmp_path):
    from training.engine.templates import template_fingerprint
    from transformers import AutoTokenizer

    model = base_model_register(actor=admin_user, name="demo", path=demo_model_dir)
    job = make_job(admin_user, version, model)
    expected = template_fingerprint(AutoTokenizer.from_pretrained(str(demo_model_dir)), "default")
    job_update(job, template_fingerprint=expected)
    assert job_snapshot(job)["template"]["serving_fingerprint"] is None  # no adapter yet

    (tmp_path / "adapter").mkdir()
    job_update(job, status=Status.SUCCEEDED, adapter_path=str(tmp_path / "adapter"))
    check = job_snapshot(job)["template"]
    assert check == {"name": "default", "training_fingerprint": expected, "serving_fingerprint": expected, "match": True}

    job_update(job, template_fingerprint="0" * 64)
    assert job_snapshot(job)["template"]["match"] is False


def test_the_job_list_filters_by_status_in_one_query(admin_user, version, model, django_assert_num_queries):
    a, b, c = (make_job(admin_user, version, model) for _ in range(3))
    job_update(b, status=Status.FAILED)
    with django_assert_num_queries(1):
        rows = [(j.pk, j.base_model.name, j.dataset_version.name, j.created_by.username) for j in job_list()]
    assert [r[0] for r in rows] == [c.pk, b.pk, a.pk]
    assert [j.pk for j in job_list(status="failed")] == [b.pk]
    assert list(job_list(status="nonsense")) == []


def test_unknown_ids_are_404(db):
    for getter in (job_get, base_model_get):
        for pk in (12345, "abc", None):
            with pytest.raises(Http404):
                getter(pk=pk)


def test_presets_carry_their_full_config_and_an_estimate_when_asked(admin_user, version, model):
    plain = preset_list()
    assert [p["name"] for p in plain] == list(PRESETS)
    demo = next(p for p in plain if p["name"] == "cpu_demo")
    assert demo["config"]["cutoff_len"] == PRESETS["cpu_demo"]["cutoff_len"] and "seed" in demo["config"]
    assert demo["requires_gpu"] is False and demo["estimate"] is None
    medical = next(p for p in plain if p["name"] == "qwen3_medical")
    assert medical["requires_gpu"] is True and "bf16" in medical["gpu_only"]

    estimated = {p["name"]: p["estimate"] for p in preset_list(base_model=model, dataset_version=version)}
    for estimate in estimated.values():
        assert estimate["gpu_memory_gb"] > 0 and estimate["steps"] >= 1 and estimate["total_tokens"] > 0
