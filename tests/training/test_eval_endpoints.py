"""A hosted model as one more evaluation contender: scored by the same metrics, audited; an endpoint
fault is the run's error (nothing half stored); forbidden external endpoints refuse the run."""

from __future__ import annotations

import pytest

from medportal.errors import InvalidInput
from medportal.models import AuditEvent
from tests.inference_servers import ANSWER, HostedStandIn
from training.models import EvalRun, EvalSample
from training.services.evaluations import evaluation_create
from training.workers.evaluation import evaluation_run

from .test_evaluations import _settings, version  # noqa: F401  (fixtures)

pytestmark = pytest.mark.django_db
FAST = {"max_new_tokens": 6, "batch_size": 4}


@pytest.fixture
def hosted(admin_user, settings, monkeypatch):
    from training.services.endpoints import endpoint_save, hosted_model_register

    settings.MEDPORTAL_ALLOW_EXTERNAL_ENDPOINTS = True
    settings.MEDPORTAL_EVAL_CONCURRENCY = 2
    monkeypatch.setenv("HOSTED_TEST_KEY", "sk-eval")
    with HostedStandIn(api_key="sk-eval") as srv:
        endpoint = endpoint_save(actor=admin_user, name="hosted", kind="openai", base_url=srv.url, api_key_env="HOSTED_TEST_KEY", external=True)
        yield srv, hosted_model_register(actor=admin_user, name="gpt-4o", endpoint=endpoint)


def test_a_hosted_contender_is_scored_like_any_model_and_audited(admin_user, version, hosted):  # noqa: F811
    srv, model = hosted
    run = evaluation_create(actor=admin_user, dataset_version=version, base_model=model, params=FAST, enqueue=False)
    ended = evaluation_run(run_id=run.pk)
    assert ended.status == EvalRun.Status.SUCCEEDED, ended.error
    predictions = set(EvalSample.objects.filter(run=run).values_list("prediction", flat=True))
    assert predictions == {"".join(ANSWER)}
    assert set(ended.summary) >= {"bleu-4", "rouge-1", "rouge-2", "rouge-l"} and ended.backend == "openai"
    assert ended.label == "gpt-4o (external)"  # reports name the hosted contender, labelled external
    event = AuditEvent.objects.get(action="inference.external", target_id=str(run.pk))
    assert event.changes["purpose"] == "evaluation" and event.changes["items"] == ended.total_samples
    chat_requests = [r for r in srv.received if r["path"].endswith("/chat/completions")]
    assert len(chat_requests) >= ended.total_samples and all(r["auth"] == "Bearer sk-eval" for r in chat_requests)


def test_an_endpoint_fault_is_the_runs_error_and_nothing_is_stored(admin_user, version, hosted):  # noqa: F811
    from training.services.endpoints import base_model_bind

    _srv, model = hosted
    base_model_bind(actor=admin_user, base_model=model, endpoint=model.endpoint, remote_name="gpt-5")
    run = evaluation_create(actor=admin_user, dataset_version=version, base_model=model, params=FAST, enqueue=False)
    ended = evaluation_run(run_id=run.pk)
    assert ended.status == EvalRun.Status.FAILED
    assert "does not serve the model 'gpt-5' (404)" in ended.error
    assert not EvalSample.objects.filter(run=run).exists()


def test_forbidden_external_endpoints_refuse_the_run(admin_user, version, hosted, settings):  # noqa: F811
    settings.MEDPORTAL_ALLOW_EXTERNAL_ENDPOINTS = False
    with pytest.raises(InvalidInput, match="external endpoints are turned off"):
        evaluation_create(actor=admin_user, dataset_version=version, base_model=hosted[1], params=FAST, enqueue=False)
    assert not EvalRun.objects.exists()


def test_the_evaluation_form_labels_the_hosted_contender_and_shows_the_refusal_on_the_field(client, admin_user, version, hosted, settings):  # noqa: F811
    from django.urls import reverse

    from tests.training.test_eval_pages import form_data

    client.force_login(admin_user)
    url = reverse("training:evaluation-create")
    assert "gpt-4o (external)" in client.get(url).content.decode()
    settings.MEDPORTAL_ALLOW_EXTERNAL_ENDPOINTS = False
    response = client.post(url, form_data(version, model=hosted[1]))
    page = response.content.decode()
    assert response.status_code == 200 and 'data-error-for="base_model"' in page and "external endpoints are turned off" in page
    assert not EvalRun.objects.exists()
