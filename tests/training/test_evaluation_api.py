"""The evaluation API (/api/v1/evaluations/): every role reads runs, reports and samples; only admins
create, pair and cancel; users without a role are refused; errors have the one JSON shape."""

from __future__ import annotations

import json

import pytest

from tests.chat.conftest import lora_adapter_dir  # noqa: F401  (session fixture: a real LoRA adapter on the demo model)
from training.models import BaseModel, EvalRun, EvalSample, FineTuneJob
from training.services.evaluations import evaluation_create, evaluation_pair_create
from training.workers.evaluation import evaluation_run

from .test_evaluations import DEPARTMENTS, make_eval_version
from .ui_factories import job_update, make_job

pytestmark = pytest.mark.django_db

Status = EvalRun.Status


@pytest.fixture(autouse=True)
def _settings(settings, tmp_path):
    from training.runnables import reset_backends

    settings.MEDPORTAL_TRAINING_DIR = tmp_path / "training"
    settings.MEDPORTAL_INFERENCE_URL = ""
    settings.MEDPORTAL_EVAL_SPEED_SAMPLES = 2
    reset_backends()
    yield
    reset_backends()


@pytest.fixture
def version(curator, make_pair):
    return make_eval_version(curator, make_pair)


@pytest.fixture
def model(admin_user, demo_model_dir):
    return BaseModel.objects.create(
        name="demo", path=str(demo_model_dir), architecture="Qwen3ForCausalLM", has_chat_template=True, registered_by=admin_user
    )


@pytest.fixture
def job(admin_user, version, model, lora_adapter_dir):  # noqa: F811
    job = make_job(admin_user, version, model)
    job_update(job, status=FineTuneJob.Status.SUCCEEDED, adapter_path=str(lora_adapter_dir))
    return job


@pytest.fixture
def finished_pair(admin_user, job):
    """A real base + tuned pair, run to the end on the demo model (4 new tokens per answer)."""
    base, tuned = evaluation_pair_create(actor=admin_user, job=job, params={"max_new_tokens": 4, "batch_size": 8}, enqueue=False)
    for run in (base, tuned):
        assert evaluation_run(run_id=run.pk).status == Status.SUCCEEDED
    return EvalRun.objects.get(pk=base.pk), EvalRun.objects.get(pk=tuned.pk)


def post(client, url, body):
    return client.post(url, data=json.dumps(body), content_type="application/json")


def test_every_role_reads_runs_reports_and_samples(client, curator, clinician, admin_user, finished_pair):
    base, tuned = finished_pair
    for user in (curator, clinician, admin_user):
        client.force_login(user)
        listing = client.get("/api/v1/evaluations/")
        assert listing.status_code == 200
        assert [r["id"] for r in listing.json()["results"]] == [tuned.pk, base.pk]
        detail = client.get(f"/api/v1/evaluations/{tuned.pk}/").json()
        assert (detail["status"], detail["job"], detail["group"], detail["summary"]) == (
            "succeeded",
            tuned.job_id,
            base.group,
            tuned.summary,
        )
        assert set(detail["speed"]) >= {
            "ttft_ms_p50",
            "ttft_ms_p95",
            "latency_ms_p50",
            "latency_ms_p95",
            "tokens_per_second",
            "samples_per_second",
        }
        report = client.get(f"/api/v1/evaluations/{tuned.pk}/report/").json()
        assert report["baseline"]["id"] == base.pk
        assert [c["metric"] for c in report["cards"]] == ["bleu-4", "rouge-1", "rouge-2", "rouge-l"]
        card = report["cards"][3]
        assert card["delta"] == pytest.approx(tuned.summary["rouge-l"] - base.summary["rouge-l"], abs=1e-4)
        assert {d["department"] for d in report["departments"]} <= set(DEPARTMENTS)
        assert all("baseline_prediction" in s for s in report["worst"] + report["best"])
        assert [h["id"] for h in report["history"]] == [tuned.pk, base.pk]
        assert report["loss"]["job"] == tuned.job_id and report["ratings"]["n"] == 0
    client.force_login(clinician)
    worst_first = client.get(f"/api/v1/evaluations/{tuned.pk}/samples/?ordering=rougel&page_size=2").json()
    assert worst_first["count"] == tuned.total_samples and len(worst_first["results"]) == 2
    scores = list(EvalSample.objects.filter(run=tuned).order_by("rougel", "position").values_list("position", flat=True)[:2])
    assert [s["position"] for s in worst_first["results"]] == scores
    assert set(worst_first["results"][0]) >= {"prompt", "reference", "prediction", "bleu-4", "rouge-1", "rouge-2", "rouge-l", "latency_ms"}
    one_department = client.get(f"/api/v1/evaluations/{tuned.pk}/samples/", {"department": DEPARTMENTS[0]}).json()
    assert {s["department"] for s in one_department["results"]} <= {DEPARTMENTS[0]}
    assert client.get(f"/api/v1/evaluations/{tuned.pk}/samples/?ordering=nope").status_code == 400
    assert client.get(f"/api/v1/evaluations/?job={tuned.job_id}").json()["count"] == 1
    assert client.get("/api/v1/evaluations/999999/").status_code == 404


def test_users_without_a_role_are_refused_everywhere(client, outsider, admin_user, version, model):
    run = evaluation_create(actor=admin_user, dataset_version=version, base_model=model, enqueue=False)
    client.force_login(outsider)
    for url in (
        "/api/v1/evaluations/",
        f"/api/v1/evaluations/{run.pk}/",
        f"/api/v1/evaluations/{run.pk}/report/",
        f"/api/v1/evaluations/{run.pk}/samples/",
    ):
        assert client.get(url).status_code == 403, url
    assert post(client, "/api/v1/evaluations/", {"dataset_version": version.pk, "base_model": model.pk}).status_code == 403
    assert post(client, f"/api/v1/evaluations/{run.pk}/cancel/", {}).status_code == 403


def test_only_admins_create_pair_and_cancel_runs(client, curator, clinician, admin_user, version, model, job):
    body = {"dataset_version": version.pk, "base_model": model.pk, "max_samples": 3, "params": {"max_new_tokens": 32}}
    for user in (curator, clinician):
        client.force_login(user)
        assert post(client, "/api/v1/evaluations/", body).status_code == 403
        assert post(client, "/api/v1/evaluations/pairs/", {"job": job.pk}).status_code == 403
    assert not EvalRun.objects.exists()
    client.force_login(admin_user)
    created = post(client, "/api/v1/evaluations/", body)
    assert created.status_code == 201, created.content
    data = created.json()
    assert (data["status"], data["total_samples"], data["params"]["max_new_tokens"], data["job"]) == ("queued", 3, 32, None)
    pair = post(client, "/api/v1/evaluations/pairs/", {"job": job.pk, "split": "test"})
    assert pair.status_code == 201
    assert pair.json()["base"]["group"] == pair.json()["tuned"]["group"] == pair.json()["group"]
    client.force_login(clinician)
    assert post(client, f"/api/v1/evaluations/{data['id']}/cancel/", {}).status_code == 403
    client.force_login(admin_user)
    cancelled = post(client, f"/api/v1/evaluations/{data['id']}/cancel/", {})
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = post(client, f"/api/v1/evaluations/{data['id']}/cancel/", {})
    assert again.status_code == 409 and again.json()["error"]["code"] == "invalid_transition"


def test_bad_requests_name_every_bad_field(client, admin_user, version, model):
    client.force_login(admin_user)
    response = post(
        client, "/api/v1/evaluations/", {"dataset_version": version.pk, "base_model": model.pk, "params": {"top_p": 2, "beams": 4}}
    )
    assert response.status_code == 400
    assert set(response.json()["error"]["details"]) == {"top_p", "beams"}
    unknown = post(client, "/api/v1/evaluations/", {"dataset_version": 424242, "base_model": model.pk})
    assert unknown.status_code == 400 and unknown.json()["error"]["details"] == {"dataset_version": "unknown id"}
    unfinished = make_job(admin_user, version, model)
    refused = post(client, "/api/v1/evaluations/pairs/", {"job": unfinished.pk})
    assert refused.status_code == 400 and "job" in refused.json()["error"]["details"]


def test_the_schema_documents_every_evaluation_endpoint(client, curator):
    client.force_login(curator)
    schema = json.loads(client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").content)
    paths = schema["paths"]
    for p in ("/api/v1/evaluations/", "/api/v1/evaluations/pairs/", "/api/v1/evaluations/{id}/", "/api/v1/evaluations/{id}/report/"):
        key = p.replace("{id}", "{pk}") if p.replace("{id}", "{pk}") in paths else p
        assert key in paths, (p, sorted(k for k in paths if "evaluation" in k))
    samples = next(v for k, v in paths.items() if k.startswith("/api/v1/evaluations/") and k.endswith("/samples/"))
    assert {q["name"] for q in samples["get"]["parameters"]} >= {"ordering", "department", "page"}
    assert "rouge-l" in schema["components"]["schemas"]["EvalSample"]["properties"]
