"""The training pages: base models and fine-tune jobs, per role, with their forms and actions.

Every role reads; only admins register, create, cancel, retry, merge and download (hidden
controls for the others, and 403 on the server).
"""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from django.urls import reverse

from training.engine.config import FinetuneConfig, estimate
from training.forms import preset_values
from training.models import BaseModel, FineTuneJob

from .ui_factories import add_points, job_update, make_base_model, make_job, make_version

pytestmark = pytest.mark.django_db


@pytest.fixture
def version(curator, make_pair):
    return make_version(curator, make_pair)


@pytest.fixture
def model(admin_user):
    return make_base_model(admin_user)


@pytest.fixture
def job(admin_user, version, model):
    return make_job(admin_user, version, model)


def form_data(version, model, preset: str, *, filled_from: str | None = None, **changes) -> dict:
    """What the browser posts: every setting as the preset filled it in, plus ``changes``."""
    data = {
        "dataset_version": version.pk,
        "base_model": model.pk,
        "preset": preset,
        "config_preset": filled_from or preset,
        "on_worker_death": "",
    }
    for key, value in {**preset_values(filled_from or preset), **changes}.items():
        if value is True:
            data[key] = "on"
        elif value is False:
            continue
        else:
            data[key] = "" if value is None else str(value)
    return data


# ---- base models -----------------------------------------------------------------------------


def test_every_role_sees_the_base_model_list_with_humanised_figures(client, clinician, curator, model):
    for user in (clinician, curator):
        client.force_login(user)
        page = client.get(reverse("training:model-list")).content.decode()
        assert "demo-model" in page and "3.2M" in page and "Qwen3ForCausalLM" in page
        assert 'id="register-model"' not in page


def test_an_admin_sees_the_register_button_and_others_get_403_on_the_form(client, admin_user, clinician, curator):
    client.force_login(admin_user)
    assert 'id="register-model"' in client.get(reverse("training:model-list")).content.decode()
    assert client.get(reverse("training:model-create")).status_code == 200
    for user in (clinician, curator):
        client.force_login(user)
        assert client.get(reverse("training:model-create")).status_code == 403
        assert client.post(reverse("training:model-create"), {"name": "x", "path": "/tmp"}).status_code == 403
    assert not BaseModel.objects.exists()


def test_an_admin_registers_a_local_model_folder_and_sees_what_the_inspection_read(client, admin_user, demo_model_dir):
    client.force_login(admin_user)
    response = client.post(reverse("training:model-create"), {"name": "medportal-demo", "path": str(demo_model_dir), "description": "tiny"})
    model = BaseModel.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("training:model-detail", args=[model.pk])
    assert model.has_chat_template and model.num_parameters > 0 and model.architecture
    page = client.get(response["Location"]).content.decode()
    assert "Registered base model “medportal-demo”." in page and str(demo_model_dir) in page
    assert model.architecture in page
    # A second registration of the same name is refused on the name field.
    again = client.post(reverse("training:model-create"), {"name": "medportal-demo", "path": str(demo_model_dir)})
    assert again.status_code == 200 and again.context["form"].errors["name"]


def test_registering_a_folder_that_is_not_there_shows_the_error_on_the_folder_field(client, admin_user, tmp_path):
    client.force_login(admin_user)
    response = client.post(reverse("training:model-create"), {"name": "ghost", "path": str(tmp_path / "missing"), "description": ""})
    assert response.status_code == 200
    assert "does not exist on this server" in " ".join(response.context["form"].errors["path"])
    assert 'data-error-for="path"' in response.content.decode()
    assert not BaseModel.objects.exists()


def test_registering_an_empty_folder_says_why_it_is_not_a_model(client, admin_user, tmp_path):
    client.force_login(admin_user)
    response = client.post(reverse("training:model-create"), {"name": "empty", "path": str(tmp_path), "description": ""})
    assert response.status_code == 200
    assert response.context["form"].errors["path"]
    assert not BaseModel.objects.exists()


def test_the_base_model_page_shows_its_inspection_and_jobs(client, clinician, model, job):
    merged = make_base_model(model.registered_by, name="demo-merged", path="/nonexistent/merged")
    merged.source_job = job
    merged.save()
    client.force_login(clinician)
    page = client.get(reverse("training:model-detail", args=[model.pk])).content.decode()
    assert "/nonexistent/medportal-test-model" in page and "hidden_size" in page
    assert reverse("training:job-detail", args=[job.pk]) in page
    assert reverse("training:model-detail", args=[merged.pk]) in page
    assert "Fine-tune this model" not in page
    merged_page = client.get(reverse("training:model-detail", args=[merged.pk])).content.decode()
    assert f"job #{job.pk}" in merged_page


def test_the_base_model_page_lists_its_files_by_name_and_size_not_as_python_dicts(client, clinician, model):
    model.info = {**(model.info or {}), "files": [{"name": "config.json", "size": 812}, {"name": "model.safetensors", "size": 14_000_000}]}
    model.save()
    client.force_login(clinician)
    page = client.get(reverse("training:model-detail", args=[model.pk])).content.decode()
    assert "{&#x27;name&#x27;" not in page and "{'name'" not in page
    assert "<code>config.json</code>" in page and "<code>model.safetensors</code>" in page
    assert "13.4\xa0MB" in page or "13.4 MB" in page


def test_an_unknown_base_model_is_404(client, clinician):
    client.force_login(clinician)
    assert client.get(reverse("training:model-detail", args=[999])).status_code == 404


# ---- job list --------------------------------------------------------------------------------


def test_the_job_list_shows_status_progress_and_filters_by_status(client, clinician, admin_user, version, model, job):
    other = make_job(admin_user, version, model, preset="llamafactory")
    job_update(other, status=FineTuneJob.Status.FAILED, error="boom", progress=0.4)
    client.force_login(clinician)
    page = client.get(reverse("training:job-list")).content.decode()
    assert f'data-job="{job.pk}"' in page and f'data-job="{other.pk}"' in page
    assert "Quick CPU demo" in page and "40%" in page
    assert 'id="new-job"' not in page
    failed = client.get(reverse("training:job-list"), {"status": "failed"}).content.decode()
    assert f'data-job="{other.pk}"' in failed and f'data-job="{job.pk}"' not in failed
    # An active job on the page makes the table refresh itself.
    assert 'hx-trigger="every 5s"' in page
    assert 'hx-trigger="every 5s"' not in failed


def test_the_job_list_pages(client, admin_user, version, model):
    for _ in range(26):
        make_job(admin_user, version, model)
    client.force_login(admin_user)
    first = client.get(reverse("training:job-list"))
    assert len(first.context["jobs"]) == 25 and 'id="new-job"' in first.content.decode()
    assert len(client.get(reverse("training:job-list"), {"page": 2}).context["jobs"]) == 1


# ---- create form -----------------------------------------------------------------------------


def test_only_admins_open_the_job_form(client, clinician, curator, outsider, admin_user, version, model):
    for user in (clinician, curator, outsider):
        client.force_login(user)
        assert client.get(reverse("training:job-create")).status_code == 403
        assert client.post(reverse("training:job-create"), form_data(version, model, "cpu_demo")).status_code == 403
        assert client.get(reverse("training:job-estimate")).status_code == 403
    assert not FineTuneJob.objects.exists()
    client.force_login(admin_user)
    page = client.get(reverse("training:job-create")).content.decode()
    for preset in ("llamafactory", "qwen3_medical", "cpu_demo"):
        assert f'value="{preset}"' in page
    assert 'id="preset-values"' in page and 'data-config-field="lora_rank"' in page
    assert 'data-estimate="ok"' in page


def test_the_job_form_can_be_opened_with_a_model_version_and_preset_chosen(client, admin_user, version, model, curator, make_pair):
    newer = make_version(curator, make_pair)
    client.force_login(admin_user)
    form = client.get(
        reverse("training:job-create"), {"dataset_version": version.pk, "base_model": model.pk, "preset": "qwen3_medical"}
    ).context["form"]
    assert newer.pk != version.pk
    assert form["dataset_version"].value() == version.pk and form["base_model"].value() == model.pk
    assert form["preset"].value() == "qwen3_medical" and form["cutoff_len"].value() == 1024 and form["bf16"].value() is True


def test_the_job_form_offers_only_versions_with_a_train_split_and_active_models(client, admin_user, version, model):
    from curation.models import DatasetVersion

    empty = DatasetVersion.objects.create(
        name="no-train", created_by=admin_user, counts={"train": 0, "validation": 3, "test": 0}, content_hash="0" * 64
    )
    BaseModel.objects.create(name="retired", path="/x", registered_by=admin_user, is_active=False)
    client.force_login(admin_user)
    form = client.get(reverse("training:job-create")).context["form"]
    assert list(form.fields["dataset_version"].queryset) == [version]
    assert empty not in form.fields["dataset_version"].queryset
    assert list(form.fields["base_model"].queryset) == [model]


def test_an_admin_creates_a_job_from_a_preset_with_overrides(client, admin_user, version, model):
    client.force_login(admin_user)
    response = client.post(
        reverse("training:job-create"), form_data(version, model, "cpu_demo", lora_rank=16, max_steps=12, on_worker_death="fail")
    )
    job = FineTuneJob.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("training:job-detail", args=[job.pk])
    assert job.preset == "cpu_demo" and job.status == FineTuneJob.Status.QUEUED and job.created_by == admin_user
    assert job.config == FinetuneConfig.from_dict({**preset_values("cpu_demo"), "lora_rank": 16, "max_steps": 12}).to_dict()
    page = client.get(response["Location"]).content.decode()
    assert f"Fine-tune job #{job.pk} was queued." in page
    # The configuration table marks what differs from the preset.
    assert 'data-setting="lora_rank" class="table-warning"' in page
    assert 'data-setting="cutoff_len" class="table-warning"' not in page


def test_without_the_script_edits_count_relative_to_the_preset_the_fields_came_from(client, admin_user, version, model):
    # The page was filled with llamafactory values; the user picked cpu_demo without the
    # script refilling the fields, and changed the rank: cpu_demo + rank 32, not llamafactory.
    client.force_login(admin_user)
    data = form_data(version, model, "cpu_demo", filled_from="llamafactory", lora_rank=32)
    assert client.post(reverse("training:job-create"), data).status_code == 302
    job = FineTuneJob.objects.get()
    assert job.config["lora_rank"] == 32 and job.config["cutoff_len"] == 256 and job.config["bf16"] is False


def test_bad_settings_are_shown_on_their_fields_and_create_nothing(client, admin_user, version, model):
    client.force_login(admin_user)
    response = client.post(
        reverse("training:job-create"), form_data(version, model, "cpu_demo", lora_rank=0, learning_rate="fast", lora_dropout=1.5)
    )
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert "learning_rate" in errors  # not a number: the form field says so
    assert not FineTuneJob.objects.exists()
    # Once the number parses, the engine's rules speak (every bad field at once).
    response = client.post(reverse("training:job-create"), form_data(version, model, "cpu_demo", lora_rank=0, lora_dropout=1.5))
    errors = response.context["form"].errors
    assert errors["lora_rank"] == ["must be ≥ 1"] and "lora_dropout" in errors
    page = response.content.decode()
    assert 'data-error-for="lora_rank"' in page and '<details class="card mt-3" id="advanced" open>' in page
    assert not FineTuneJob.objects.exists()


def test_a_service_refusal_lands_on_the_field_it_names(client, admin_user, version):
    bare = make_base_model(admin_user, name="no-template", has_chat_template=False)
    client.force_login(admin_user)
    response = client.post(reverse("training:job-create"), form_data(version, bare, "cpu_demo"))
    assert response.status_code == 200
    assert "no chat template" in " ".join(response.context["form"].errors["template"])
    assert not FineTuneJob.objects.exists()


def test_the_estimate_fragment_follows_the_settings(client, admin_user, version, model):
    client.force_login(admin_user)
    data = form_data(version, model, "cpu_demo", max_steps=7, bf16=True)
    response = client.get(reverse("training:job-estimate"), data, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    page = response.content.decode()
    assert 'data-estimate="ok"' in page and 'data-requires-gpu="1"' in page
    assert 'data-estimate-field="steps">7<' in page
    shown = response.context["estimate"]
    config = FinetuneConfig.from_dict({**preset_values("cpu_demo"), "max_steps": 7, "bf16": True})
    expected = estimate(
        config,
        num_parameters=3_200_000,
        hidden_size=128,
        num_layers=4,
        num_examples=version.counts["train"],
        avg_tokens=shown["avg_tokens"],
        vocab_size=4096,
    )
    assert shown["gpu_memory_gb"] == expected["gpu_memory_gb"] and shown["seconds_gpu"] == expected["seconds_gpu"]
    bad = client.get(reverse("training:job-estimate"), form_data(version, model, "cpu_demo", lora_rank=0)).content.decode()
    assert 'data-estimate="none"' in bad


# ---- the job page ----------------------------------------------------------------------------


def _running(job):
    job_update(
        job,
        status=FineTuneJob.Status.RUNNING,
        progress=0.25,
        step=5,
        total_steps=20,
        epoch=0.5,
        learning_rate=2e-4,
        tokens_per_second=812.5,
        eta_seconds=185,
        train_loss_first=3.5,
        train_loss_last=2.25,
        worker="gpu-host:123",
        attempt=1,
        log_tail="step 5 <script>alert(1)</script>",
    )
    add_points(job, train=[(1, 3.5, 1e-4, 800.0), (5, 2.25, 2e-4, 812.5)], evals=[(5, 2.5)])


def test_every_role_watches_a_running_job_and_only_admins_get_controls(client, admin_user, clinician, curator, job):
    _running(job)
    url = reverse("training:job-detail", args=[job.pk])
    client.force_login(admin_user)
    page = client.get(url).content.decode()
    assert 'id="cancel-form"' in page and 'id="merge-form"' in page
    for user in (clinician, curator):
        client.force_login(user)
        page = client.get(url).content.decode()
        assert 'id="cancel-form"' not in page and 'id="retry-forms"' not in page and 'id="merge-form"' not in page
        assert 'id="download-adapter"' not in page
        # The current state is on the page itself (no script needed, same after a reload).
        assert 'style="width: 25%"' in page and "3 min 05 s" in page and "2.00e-04" in page and "812.5" in page
        assert "3.5000" in page and "2.2500" in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert(1)" not in page
        assert f'data-ws-path="/ws/training/jobs/{job.pk}/"' in page
        snapshot = json.loads(page.split('id="job-snapshot" type="application/json">')[1].split("</script>")[0])
        assert snapshot["train"] == [[1, 3.5, 1e-4, 800.0], [5, 2.25, 2e-4, 812.5]] and snapshot["eval"] == [[5, 2.5]]
        for action in ("job-cancel", "job-retry", "job-merge"):
            assert client.post(reverse(f"training:{action}", args=[job.pk]), {"name": "x"}).status_code == 403
        assert client.get(reverse("training:job-adapter", args=[job.pk])).status_code == 403
    job.refresh_from_db()
    assert job.status == FineTuneJob.Status.RUNNING and job.cancel_requested_at is None


def test_outsiders_and_anonymous_users_cannot_watch(client, outsider, job):
    url = reverse("training:job-detail", args=[job.pk])
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    client.force_login(outsider)
    assert client.get(url).status_code == 403
    assert client.get(reverse("training:job-list")).status_code == 403


def test_an_admin_cancels_a_queued_job_and_a_second_cancel_is_a_message(client, admin_user, job):
    client.force_login(admin_user)
    response = client.post(reverse("training:job-cancel", args=[job.pk]), follow=True)
    job.refresh_from_db()
    assert job.status == FineTuneJob.Status.CANCELLED
    assert f"Cancellation of job #{job.pk} was requested." in response.content.decode()
    again = client.post(reverse("training:job-cancel", args=[job.pk]), follow=True)
    assert again.status_code == 200
    assert "only queued or running jobs can be cancelled" in again.content.decode()


def test_a_running_job_gets_a_cancel_request(client, admin_user, job):
    _running(job)
    client.force_login(admin_user)
    client.post(reverse("training:job-cancel", args=[job.pk]))
    job.refresh_from_db()
    assert job.status == FineTuneJob.Status.RUNNING and job.cancel_requested_at is not None
    page = client.get(reverse("training:job-detail", args=[job.pk])).content.decode()
    assert 'data-show-if="can_cancel" hidden' in page  # asked once: the button goes
    assert 'data-show-if="cancel_requested">' in page  # and the badge shows


def test_an_admin_retries_a_failed_job_afresh(client, admin_user, job):
    job_update(job, status=FineTuneJob.Status.FAILED, error="CUDA out of memory", attempt=1)
    client.force_login(admin_user)
    page = client.get(reverse("training:job-detail", args=[job.pk])).content.decode()
    assert "CUDA out of memory" in page and 'data-show-if="can_retry" id="retry-forms"' in page
    response = client.post(reverse("training:job-retry", args=[job.pk]), {"resume": "0"}, follow=True)
    job.refresh_from_db()
    assert job.status == FineTuneJob.Status.QUEUED and job.error == ""
    assert f"Job #{job.pk} was queued again from scratch." in response.content.decode()


def test_retrying_a_queued_job_is_a_message_not_an_error_page(client, admin_user, job):
    client.force_login(admin_user)
    response = client.post(reverse("training:job-retry", args=[job.pk]), follow=True)
    assert response.status_code == 200 and "only failed or cancelled jobs can be retried" in response.content.decode()


def test_merging_a_job_that_has_not_succeeded_is_a_message(client, admin_user, job):
    client.force_login(admin_user)
    response = client.post(reverse("training:job-merge", args=[job.pk]), {"name": "merged"}, follow=True)
    assert response.status_code == 200 and "only a succeeded job has an adapter to merge" in response.content.decode()
    assert not BaseModel.objects.filter(name="merged").exists()


def test_an_admin_downloads_the_adapter_and_training_log_as_a_zip(client, admin_user, clinician, job, tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"r": 8}')
    (adapter / "adapter_model.safetensors").write_bytes(b"\0" * 1024)
    (tmp_path / "train_log.jsonl").write_text('{"type": "start"}\n')
    job_update(job, status=FineTuneJob.Status.SUCCEEDED, progress=1.0, adapter_path=str(adapter), output_dir=str(tmp_path))
    client.force_login(admin_user)
    page = client.get(reverse("training:job-detail", args=[job.pk])).content.decode()
    assert 'id="download-adapter"' in page and str(adapter) in page
    assert 'id="merge-form" data-show-if="succeeded">' in page
    response = client.get(reverse("training:job-adapter", args=[job.pk]))
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    assert f"job-{job.pk}-adapter.zip" in response["Content-Disposition"]
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    assert set(archive.namelist()) == {"adapter/adapter_config.json", "adapter/adapter_model.safetensors", "train_log.jsonl"}
    assert archive.read("adapter/adapter_config.json") == b'{"r": 8}'
    client.force_login(clinician)
    assert client.get(reverse("training:job-adapter", args=[job.pk])).status_code == 403


def test_downloading_before_there_is_an_adapter_is_a_message(client, admin_user, job):
    client.force_login(admin_user)
    response = client.get(reverse("training:job-adapter", args=[job.pk]), follow=True)
    assert response.status_code == 200 and "has no adapter to download" in response.content.decode()


def test_an_unknown_job_is_404(client, clinician, admin_user):
    client.force_login(clinician)
    assert client.get(reverse("training:job-detail", args=[999])).status_code == 404
    client.force_login(admin_user)
    assert client.post(reverse("training:job-cancel", args=[999])).status_code == 404


def test_the_engine_help_texts_and_preset_labels_are_marked_for_translation():
    # The engine cannot use gettext; forms.py keeps marked copies for makemessages.
    from training.engine.config import PRESET_LABELS, field_help
    from training.forms import ENGINE_HELP_TEXTS, ENGINE_PRESET_LABELS

    assert ENGINE_HELP_TEXTS == {name: meta["help"] for name, meta in field_help().items()}
    assert ENGINE_PRESET_LABELS == PRESET_LABELS


def test_the_navigation_has_a_training_menu_for_every_role(client, clinician):
    client.force_login(clinician)
    page = client.get(reverse("home")).content.decode()
    assert reverse("training:model-list") in page and reverse("training:job-list") in page
