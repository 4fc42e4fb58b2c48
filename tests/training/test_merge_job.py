"""Merge-and-export is a background job (``AdapterMerge``, kind "merge"): the request checks and
queues it, the worker merges and registers, the job page and the API show its status, progress
and error. (A real merge of a trained adapter: tests/training/test_commands.py; kill -9, cancel
and duplicate delivery: tests/medportal/test_job_lifecycle.py.)"""

from __future__ import annotations

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from training.models import AdapterMerge, BaseModel
from training.services.jobs import finetune_job_merge, merge_dir
from training.workers.merge import adapter_merge_run

from .ui_factories import job_update, make_base_model, make_job, make_version

pytestmark = pytest.mark.django_db


@pytest.fixture
def succeeded_job(admin_user, curator, make_pair, tmp_path, settings):
    settings.MEDPORTAL_TRAINING_DIR = tmp_path / "training"
    job = make_job(admin_user, make_version(curator, make_pair), make_base_model(admin_user))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    job_update(job, status="succeeded", progress=1.0, adapter_path=str(adapter))
    return job


def test_the_page_queues_the_merge_and_shows_it_with_its_status_until_it_ends(client, admin_user, clinician, succeeded_job, django_capture_on_commit_callbacks, monkeypatch):
    queued = []
    monkeypatch.setattr("django_q.tasks.async_task", lambda *a, **k: queued.append((a, k.get("cluster"))))
    client.force_login(admin_user)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("training:job-merge", args=[succeeded_job.pk]), {"name": "merged-one"})
    merge = AdapterMerge.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("training:job-detail", args=[succeeded_job.pk])
    assert (merge.status, merge.name, merge.job_id) == ("queued", "merged-one", succeeded_job.pk)
    assert queued == [(("training.tasks.adapter_merge_task", merge.pk), None)]  # the default cluster, id only
    assert not BaseModel.objects.filter(name="merged-one").exists()  # nothing merged in the request
    page = client.get(response["Location"]).content.decode()
    assert 'id="job-merges"' in page and reverse("training:job-merges", args=[succeeded_job.pk]) in page  # polled while active
    assert 'data-status="queued"' in page and "merged-one" in page
    client.force_login(clinician)  # every role watches
    assert client.get(reverse("training:job-merges", args=[succeeded_job.pk])).status_code == 200

    ended = adapter_merge_run(merge_id=merge.pk)  # the adapter folder is not a PEFT adapter: the engine refuses it
    assert ended.status == "failed" and ended.error.startswith("Merging failed:") and "adapter_config.json" in ended.error
    assert not merge_dir("merged-one").exists() and not BaseModel.objects.filter(name="merged-one").exists()
    fragment = client.get(reverse("training:job-merges", args=[succeeded_job.pk])).content.decode()
    assert 'data-status="failed"' in fragment and "adapter_config.json" in fragment and "hx-get" not in fragment


def test_the_api_answers_202_with_the_merge_and_lists_it_on_the_job(admin_user, succeeded_job):
    client = APIClient()
    client.force_authenticate(admin_user)
    response = client.post(f"/api/v1/finetune-jobs/{succeeded_job.pk}/merge/", {"name": "merged-api"}, format="json")
    assert response.status_code == 202
    body = response.json()
    assert {k: body[k] for k in ("job", "name", "status", "progress", "error", "base_model")} == {
        "job": succeeded_job.pk,
        "name": "merged-api",
        "status": "queued",
        "progress": 0.0,
        "error": "",
        "base_model": None,
    }
    merges = client.get(f"/api/v1/finetune-jobs/{succeeded_job.pk}/").json()["merges"]
    assert [(m["id"], m["status"], m["status_label"]) for m in merges] == [(body["id"], "queued", "queued")]


def test_a_second_merge_under_a_name_still_queued_is_refused(admin_user, succeeded_job):
    from medportal.errors import InvalidInput

    finetune_job_merge(actor=admin_user, job=succeeded_job, name="twice", enqueue=False)
    with pytest.raises(InvalidInput, match="already queued or running"):
        finetune_job_merge(actor=admin_user, job=succeeded_job, name="twice", enqueue=False)
