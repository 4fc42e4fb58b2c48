"""/api/v1/base-models/, /api/v1/finetune-jobs/ (+ cancel, retry, merge, adapter) and
/api/v1/finetune-presets/: the role matrix, the error shape, and the OpenAPI schema."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from training.models import BaseModel, FineTuneJob

from .ui_factories import job_update, make_base_model, make_job, make_version

pytestmark = pytest.mark.django_db

Status = FineTuneJob.Status
MODELS = "/api/v1/base-models/"
JOBS = "/api/v1/finetune-jobs/"
PRESETS = "/api/v1/finetune-presets/"


@pytest.fixture(autouse=True)
def training_dir(settings, tmp_path):
    settings.MEDPORTAL_TRAINING_DIR = tmp_path / "training"


@pytest.fixture
def version(curator, make_pair):
    return make_version(curator, make_pair)


@pytest.fixture
def model(admin_user):
    return make_base_model(admin_user)


@pytest.fixture
def job(admin_user, version, model):
    return make_job(admin_user, version, model)


def api(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


READERS = [("curator", 200), ("clinician", 200), ("admin_user", 200), ("outsider", 403), (None, (401, 403))]


@pytest.mark.parametrize("who, expected", READERS)
def test_every_role_reads_models_jobs_and_presets(request, who, expected, job):
    client = api(request.getfixturevalue(who) if who else None)
    for url in (MODELS, f"{MODELS}{job.base_model_id}/", JOBS, f"{JOBS}{job.pk}/", PRESETS):
        status = client.get(url).status_code
        assert status in (expected if isinstance(expected, tuple) else (expected,)), (url, status)


@pytest.mark.parametrize("who", ["curator", "clinician", "outsider"])
def test_only_admins_write(request, who, job, version, model, demo_model_dir):
    client = api(request.getfixturevalue(who))
    job_update(job, status=Status.FAILED)
    attempts = [
        (MODELS, {"name": "x", "path": str(demo_model_dir)}),
        (JOBS, {"dataset_version": version.pk, "base_model": model.pk, "preset": "cpu_demo"}),
        (f"{JOBS}{job.pk}/cancel/", {}),
        (f"{JOBS}{job.pk}/retry/", {}),
        (f"{JOBS}{job.pk}/merge/", {"name": "m"}),
    ]
    for url, body in attempts:
        response = client.post(url, body, format="json")
        assert response.status_code == 403, (url, response.status_code)
        assert response.json()["error"]["code"] in ("permission_denied", "forbidden")
    assert client.get(f"{JOBS}{job.pk}/adapter/").status_code == 403
    assert FineTuneJob.objects.count() == 1 and BaseModel.objects.count() == 1
    job.refresh_from_db()
    assert job.status == Status.FAILED


def test_an_admin_registers_a_model_folder(admin_user, demo_model_dir):
    response = api(admin_user).post(MODELS, {"name": "demo", "path": str(demo_model_dir), "description": "tiny"}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["name"] == "demo" and body["num_parameters"] > 0 and body["has_chat_template"] is True
    assert body["registered_by"] == "boss" and body["info"]["num_layers"] > 0
    bad = api(admin_user).post(MODELS, {"name": "ghost", "path": "/nonexistent/x"}, format="json")
    assert bad.status_code == 400 and bad.json()["error"]["details"]["path"]


def test_an_admin_queues_a_job_and_reads_its_snapshot(admin_user, clinician, version, model):
    response = api(admin_user).post(
        JOBS,
        {
            "dataset_version": version.pk,
            "base_model": model.pk,
            "preset": "cpu_demo",
            "overrides": {"max_steps": 3},
            "on_worker_death": "fail",
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    job = FineTuneJob.objects.get()
    assert body["id"] == job.pk and body["status"] == "queued" and body["can_cancel"] is True
    assert body["config"]["max_steps"] == 3 and body["preset"] == "cpu_demo" and body["on_worker_death"] == "fail"
    assert body["train"] == [] and body["template"]["match"] is None
    assert api(clinician).get(f"{JOBS}{job.pk}/").json() == api(admin_user).get(f"{JOBS}{job.pk}/").json()


def test_a_bad_recipe_answers_400_with_every_field(admin_user, version, model):
    response = api(admin_user).post(
        JOBS,
        {"dataset_version": version.pk, "base_model": model.pk, "preset": "cpu_demo", "overrides": {"lora_rank": 0, "learning_rate": -1}},
        format="json",
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid" and {"lora_rank", "learning_rate"} <= set(error["details"])
    typed = api(admin_user).post(
        JOBS, {"dataset_version": version.pk, "base_model": model.pk, "overrides": {"bf16": "maybe"}}, format="json"
    )
    assert typed.status_code == 400 and "true/false" in typed.json()["error"]["details"]["bf16"]
    unknown = api(admin_user).post(JOBS, {"dataset_version": 999, "base_model": model.pk}, format="json")
    assert unknown.status_code == 400 and "dataset_version" in unknown.json()["error"]["details"]
    assert not FineTuneJob.objects.exists()


def test_cancel_retry_and_their_wrong_states(admin_user, job):
    client = api(admin_user)
    cancelled = client.post(f"{JOBS}{job.pk}/cancel/")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = client.post(f"{JOBS}{job.pk}/cancel/")
    assert again.status_code == 409 and again.json()["error"]["code"] == "invalid_transition"
    retried = client.post(f"{JOBS}{job.pk}/retry/", {"resume": False}, format="json")
    assert retried.status_code == 200 and retried.json()["status"] == "queued" and retried.json()["id"] == job.pk
    assert client.post(f"{JOBS}{job.pk}/merge/", {"name": "m"}, format="json").status_code == 409
    assert client.get(f"{JOBS}{job.pk}/adapter/").status_code == 409


def test_the_list_filters_by_status(clinician, admin_user, version, model):
    a = make_job(admin_user, version, model)
    b = make_job(admin_user, version, model)
    job_update(b, status=Status.SUCCEEDED)
    client = api(clinician)
    assert [row["id"] for row in client.get(JOBS).json()["results"]] == [b.pk, a.pk]
    rows = client.get(JOBS, {"status": "succeeded"}).json()["results"]
    assert [row["id"] for row in rows] == [b.pk]
    assert rows[0]["base_model_name"] == model.name and rows[0]["status_label"] == "succeeded"


def test_a_job_whose_worker_went_silent_is_reaped_by_the_schedule_not_by_reading_it(clinician, job, settings):
    from medportal.jobs import reap_silent

    settings.MEDPORTAL_JOB_HEARTBEAT_TIMEOUT_S = 60
    past = timezone.now() - timedelta(minutes=10)
    job_update(job, status=Status.RUNNING, worker="gone:1", heartbeat_at=past, started_at=past, attempt=1, on_worker_death="fail")
    assert api(clinician).get(f"{JOBS}{job.pk}/").json()["status"] == "running"  # a GET never changes a job
    assert api(clinician).get(JOBS).json()["results"][0]["status"] == "running"
    assert reap_silent() == {"finetune": [job.pk]}
    body = api(clinician).get(f"{JOBS}{job.pk}/").json()
    assert body["status"] == "failed" and "The worker gone:1 stopped sending heartbeats" in body["error"]


def test_presets_come_with_an_estimate_for_a_model_and_a_version(clinician, version, model):
    plain = api(clinician).get(PRESETS).json()
    assert {p["name"] for p in plain} == {"llamafactory", "qwen3_medical", "cpu_demo"}
    assert all(p["estimate"] is None for p in plain)
    estimated = api(clinician).get(PRESETS, {"base_model": model.pk, "dataset_version": version.pk}).json()
    assert all(p["estimate"]["gpu_memory_gb"] > 0 for p in estimated)
    assert api(clinician).get(PRESETS, {"base_model": 999}).status_code == 400


def test_the_openapi_schema_documents_the_training_api(admin_user):
    schema = api(admin_user).get("/api/v1/schema/", {"format": "json"}).json()
    paths = schema["paths"]
    for path, methods in {
        "/api/v1/base-models/": {"get", "post"},
        "/api/v1/base-models/{id}/": {"get"},
        "/api/v1/finetune-jobs/": {"get", "post"},
        "/api/v1/finetune-jobs/{id}/": {"get"},
        "/api/v1/finetune-jobs/{id}/cancel/": {"post"},
        "/api/v1/finetune-jobs/{id}/retry/": {"post"},
        "/api/v1/finetune-jobs/{id}/merge/": {"post"},
        "/api/v1/finetune-jobs/{id}/adapter/": {"get"},
        "/api/v1/finetune-presets/": {"get"},
    }.items():
        assert methods <= set(paths[path]), path
    created = paths["/api/v1/finetune-jobs/"]["post"]
    assert "201" in created["responses"]
    detail = schema["components"]["schemas"]["FineTuneJobDetail"]["properties"]
    assert {"train", "eval", "template", "config", "can_cancel"} <= set(detail)
