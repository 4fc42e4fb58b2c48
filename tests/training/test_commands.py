"""manage.py register_base_model, run_finetune, merge_adapter (and build_demo_model's checks).

The one real LoRA run of this module goes through ``run_finetune --sync`` on the demo model
with the cpu_demo preset and a handful of steps; its adapter is then merged."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from medportal.models import AuditEvent
from training.models import BaseModel, FineTuneJob, FineTuneMetric

from .ui_factories import make_version

pytestmark = pytest.mark.django_db

Status = FineTuneJob.Status


@pytest.fixture(autouse=True)
def training_dir(settings, tmp_path):
    settings.MEDPORTAL_TRAINING_DIR = tmp_path / "training"
    return settings.MEDPORTAL_TRAINING_DIR


@pytest.fixture
def version(curator, make_pair):
    return make_version(curator, make_pair, pairs=8, split=(0.75, 0.25, 0.0))


@pytest.fixture
def demo(admin_user, demo_model_dir):
    lines = run("register_base_model", "--name", "demo", "--path", str(demo_model_dir), "--json")
    return BaseModel.objects.get(pk=json.loads(lines[-1])["base_model_id"])


def run(*args) -> list[str]:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue().strip().splitlines()


def test_register_base_model_prints_the_inspection_as_json(admin_user, demo_model_dir):
    result = json.loads(run("register_base_model", "--name", "demo", "--path", str(demo_model_dir), "--json")[-1])
    model = BaseModel.objects.get()
    assert result == {
        "base_model_id": model.pk,
        "name": "demo",
        "path": str(demo_model_dir.resolve()),
        "architecture": model.architecture,
        "num_parameters": model.num_parameters,
        "dtype": model.dtype,
        "has_chat_template": True,
    }
    assert model.registered_by == admin_user


def test_register_base_model_explains_a_bad_folder_or_user(admin_user, tmp_path):
    with pytest.raises(CommandError, match="does not exist"):
        run("register_base_model", "--name", "x", "--path", str(tmp_path / "nope"))
    with pytest.raises(CommandError, match="No active user named 'ghost'"):
        run("register_base_model", "--name", "x", "--path", str(tmp_path), "--user", "ghost")


def test_build_demo_model_needs_an_admin_to_register_before_building(db, tmp_path):
    with pytest.raises(CommandError, match="No active admin user"):
        run("build_demo_model", "--out", str(tmp_path / "m"), "--register")
    assert not (tmp_path / "m").exists()


def test_run_finetune_sync_trains_a_real_adapter_and_merge_adapter_registers_it(admin_user, version, demo, training_dir):
    lines = run(
        "run_finetune",
        "--dataset-version", str(version.pk),
        "--base-model", "demo",
        "--preset", "cpu_demo",
        "--set", "max_steps=4",
        "--set", "cutoff_len=96",
        "--set", "save_steps=2",
        "--set", "eval_steps=2",
        "--evaluate",
        "--sync",
        "--json",
    )  # fmt: skip
    result = json.loads(lines[-1])
    job = FineTuneJob.objects.get()
    assert list(result) == ["job_id", "status", "adapter_path", "train_loss_first", "train_loss_last", "tokens_per_second"]
    assert result["job_id"] == job.pk and result["status"] == "succeeded", job.error + "\n" + job.log_tail
    assert result["train_loss_first"] > 0 and result["train_loss_last"] > 0 and result["tokens_per_second"] > 0
    adapter = Path(result["adapter_path"])
    assert adapter.is_dir() and (adapter / "adapter_config.json").is_file()
    assert any(line.strip().startswith("step ") and "loss" in line for line in lines)  # progress while it ran

    # what the worker recorded on the way
    assert job.preset == "cpu_demo" and job.config["max_steps"] == 4 and job.config["cutoff_len"] == 96
    assert (job.step, job.total_steps, job.progress, job.attempt) == (4, 4, 1.0, 1)
    assert job.num_train_examples == 6 and job.num_eval_examples == 2
    assert job.eval_loss is not None and job.trainable_parameters > 0
    assert job.last_checkpoint.endswith("checkpoint-4") and len(job.template_fingerprint) == 64
    assert job.finished_at >= job.started_at and job.heartbeat_at is not None and job.error == ""
    assert job.version > 5
    steps = list(FineTuneMetric.objects.filter(job=job, kind="train").values_list("step", flat=True))
    assert steps == sorted(steps) and steps[-1] == 4
    assert FineTuneMetric.objects.filter(job=job, kind="eval").exists()
    assert "training 6 examples" in job.log_tail
    out = Path(job.output_dir)
    assert json.loads((out / "config.json").read_text())["max_steps"] == 4
    assert len(json.loads((out / "data" / "train.json").read_text())) == 6
    assert len(json.loads((out / "data" / "validation.json").read_text())) == 2
    assert AuditEvent.objects.filter(action="finetune_job.finish", target_id=str(job.pk), summary__contains="succeeded").exists()
    # --evaluate: the success queued the base and the tuned evaluation on the held-out split
    from training.models import EvalRun

    runs = list(EvalRun.objects.order_by("pk"))
    assert job.evaluate_after and [(r.job_id, r.status) for r in runs] == [(None, "queued"), (job.pk, "queued")]
    assert runs[0].group == runs[1].group and runs[0].split in ("test", "validation")

    merged = json.loads(run("merge_adapter", "--job", str(job.pk), "--name", "demo-merged", "--json")[-1])
    model = BaseModel.objects.get(name="demo-merged")
    assert merged["base_model_id"] == model.pk and merged["source_job"] == job.pk
    assert model.source_job == job and Path(model.path).is_dir() and model.path.startswith(str(training_dir))
    assert model.num_parameters == demo.num_parameters and model.has_chat_template
    with pytest.raises(CommandError, match="already registered"):
        run("merge_adapter", "--job", str(job.pk), "--name", "demo-merged")


def test_run_finetune_without_sync_queues_the_job(admin_user, version, demo):
    lines = run(
        "run_finetune",
        "--dataset-version",
        str(version.pk),
        "--base-model",
        "demo",
        "--preset",
        "cpu_demo",
        "--on-worker-death",
        "fail",
        "--json",
    )
    result = json.loads(lines[-1])
    job = FineTuneJob.objects.get()
    assert result == {
        "job_id": job.pk,
        "status": "queued",
        "adapter_path": None,
        "train_loss_first": None,
        "train_loss_last": None,
        "tokens_per_second": None,
    }
    assert job.on_worker_death == "fail" and job.created_by == admin_user


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset-version", "999"], "No dataset version #999"),
        (["--base-model", "gpt-9"], "No base model named 'gpt-9' (active models: demo)"),
        (["--preset", "turbo"], "Unknown preset 'turbo'"),
        (["--set", "lora_rank=zero"], "lora_rank: expected an integer"),
        (["--set", "warp_speed=9"], "warp_speed: unknown setting"),
        (["--set", "learning_rate=-1"], "learning_rate: must be a positive number"),
        (["--set", "max_steps"], "expected key=value"),
    ],
)
def test_run_finetune_explains_bad_input(admin_user, version, demo, args, message):
    base = {"--dataset-version": str(version.pk), "--base-model": "demo"}
    argv: list[str] = []
    for key, value in base.items():
        if key not in args:
            argv += [key, value]
    with pytest.raises(CommandError) as error:
        run("run_finetune", *argv, *args)
    assert message in str(error.value)
    assert not FineTuneJob.objects.exists()


def test_merge_adapter_refuses_a_job_without_an_adapter(admin_user, version, demo):
    run("run_finetune", "--dataset-version", str(version.pk), "--base-model", "demo", "--preset", "cpu_demo")
    job = FineTuneJob.objects.get()
    with pytest.raises(CommandError, match="only a succeeded job has an adapter"):
        run("merge_adapter", "--job", str(job.pk), "--name", "x")
    with pytest.raises(CommandError, match="No fine-tune job #999"):
        run("merge_adapter", "--job", "999", "--name", "x")
