"""DPO fine-tunes as FineTuneJobs of stage "dpo": the service's rules, the worker in-process,
and one job end to end through a real ``Q_CLUSTER_NAME=gpu manage.py qcluster``."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from curation.models import QAPair
from curation.services import preferences as prefs
from medportal.errors import InvalidInput, NotAllowed
from training.models import FineTuneJob

ROOT = Path(__file__).resolve().parents[2]
TINY = {"cutoff_len": 64, "max_steps": 3, "logging_steps": 1, "save_steps": 100, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1}


def preference_version(curator, clinician, n: int = 10, name: str = "pv"):
    for i in range(n):
        pair = prefs.preference_pair_create(
            author=curator,
            prompt=f"第{i}位患者{['头痛', '发热', '咳嗽', '胸闷', '腹泻'][i % 5]}{i * 7}天，怎么办？",
            chosen=f"建议及时就医，{['多喝水', '卧床休息', '复查血常规'][i % 3]}，编号{i}。",
            rejected=f"不用管，过几天就好，编号{i}。",
            source_kind="import",
            submit=True,
        )
        prefs.preference_pair_review(pair=pair, reviewer=clinician, decision="approve", version=pair.version)
    return prefs.preference_version_freeze(user=curator, name=name, split=(0.8, 0.2, 0.0), seed=1)


@pytest.fixture
def setup(db, curator, clinician, admin_user, make_pair, demo_model_dir):
    from curation.services.versions import dataset_version_freeze
    from training.services.base_models import base_model_register

    for i in range(8):
        make_pair(curator, status=QAPair.Status.APPROVED, instruction=f"评测问题{i}：血压多少算高？第{i}", output=f"一般140/90以上，编号{i}。")
    sft = dataset_version_freeze(user=curator, name="eval-data", split=(0.5, 0.0, 0.5), seed=0)
    model = base_model_register(actor=admin_user, name="demo", path=demo_model_dir)
    return {"pv": preference_version(curator, clinician), "sft": sft, "model": model}


def test_dpo_job_rules(setup, admin_user, curator):
    from training.services.dpo import dpo_job_create

    with pytest.raises(NotAllowed):
        dpo_job_create(actor=curator, preference_version=setup["pv"], base_model=setup["model"], dataset_version=setup["sft"], enqueue=False)
    with pytest.raises(InvalidInput, match="beta"):
        dpo_job_create(actor=admin_user, preference_version=setup["pv"], base_model=setup["model"], dataset_version=setup["sft"], beta=0, enqueue=False)
    with pytest.raises(InvalidInput, match="evaluate"):
        dpo_job_create(actor=admin_user, preference_version=setup["pv"], base_model=setup["model"], enqueue=False)
    job = dpo_job_create(actor=admin_user, preference_version=setup["pv"], base_model=setup["model"], dataset_version=setup["sft"], beta=0.2, overrides=TINY, enqueue=False)
    assert job.stage == "dpo" and job.dpo_config == {"beta": 0.2, "label_smoothing": 0.0} and job.status == "queued"
    with pytest.raises(InvalidInput, match="succeeded"):
        dpo_job_create(actor=admin_user, preference_version=setup["pv"], parent_job=job, enqueue=False)


def test_a_question_tested_since_the_freeze_blocks_the_job(setup, admin_user, curator):
    from curation.models import DatasetItem, DatasetVersion
    from curation.models_pref import PreferenceItem
    from curation.services.core import pair_apply_derived, pair_content
    from training.services.dpo import dpo_job_create

    item = PreferenceItem.objects.filter(version=setup["pv"], split="train").first()
    # A dataset version frozen after the preference version, whose test split asks that question.
    leaked = QAPair(author=curator, instruction=item.content["prompt"], output="另一个参考答案。", status="approved")
    pair_apply_derived(leaked)
    leaked.save()
    later = DatasetVersion.objects.create(name="later", created_by=curator, content_hash="0" * 64, counts={"test": 1}, split_ratios=[0, 0, 1])
    DatasetItem.objects.create(version=later, qa_pair=leaked, split="test", position=0, content=pair_content(leaked))
    with pytest.raises(InvalidInput, match="now in an evaluation test split") as err:
        dpo_job_create(actor=admin_user, preference_version=setup["pv"], base_model=setup["model"], dataset_version=setup["sft"], enqueue=False)
    assert item.pair_id in err.value.details["leaked_pairs"]


def test_the_worker_runs_a_dpo_job_and_keeps_its_figures(setup, admin_user, settings, tmp_path):
    from training.services.dpo import dpo_job_create
    from training.workers.finetune import finetune_job_run

    settings.MEDPORTAL_TRAINING_DIR = tmp_path
    job = dpo_job_create(actor=admin_user, preference_version=setup["pv"], base_model=setup["model"], dataset_version=setup["sft"], overrides=TINY, enqueue=False)
    finetune_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == "succeeded", job.error + job.log_tail
    assert Path(job.adapter_path, "adapter_config.json").is_file()
    info = json.loads(Path(job.adapter_path, "medportal_training.json").read_text())
    assert info["stage"] == "dpo" and info["reference"] == "adapter_disabled"
    figures = job.preference_metrics
    assert {"reward_margin", "reward_accuracy", "rewards_chosen", "rewards_rejected", "eval_before", "eval_after"} <= set(figures)
    assert figures["eval_after"]["pairs"] == setup["pv"].counts["validation"]
    assert job.step == 3 and job.metrics.filter(kind="train").count() == 3
    # its success opened the regression gate: not for clinicians until the gate passes
    from training.runnables import runnable_jobs

    assert job.gate.status == "pending" and job.gate.parent_job is None and job.gate.candidate_run.job_id == job.pk
    assert not runnable_jobs().filter(pk=job.pk).exists()
    # on top of it: the parent's adapter is the starting point and the reference
    child = dpo_job_create(actor=admin_user, preference_version=setup["pv"], parent_job=job, overrides={**TINY, "max_steps": 1}, enqueue=False)
    assert child.base_model_id == job.base_model_id and child.dataset_version_id == job.dataset_version_id
    finetune_job_run(job_id=child.pk)
    child.refresh_from_db()
    assert child.status == "succeeded", child.error + child.log_tail
    assert json.loads(Path(child.adapter_path, "medportal_training.json").read_text())["reference"] == "sft_adapter"
    assert child.preference_metrics["eval_before"]["reward_margin"] == pytest.approx(0.0, abs=1e-3)
    # merged and registered like an SFT adapter
    from training.services.jobs import finetune_job_merge
    from training.workers.merge import adapter_merge_run

    merge = finetune_job_merge(actor=admin_user, job=child, name="dpo-merged", enqueue=False)
    merge = adapter_merge_run(merge_id=merge.pk)
    assert merge.status == "succeeded", merge.error
    assert merge.base_model.source_job_id == child.pk and Path(merge.path, "config.json").is_file()


def test_the_job_page_shows_the_preference_figures(setup, admin_user, client):
    from training.selectors import job_snapshot
    from training.services.dpo import dpo_job_create

    job = dpo_job_create(actor=admin_user, preference_version=setup["pv"], base_model=setup["model"], dataset_version=setup["sft"], overrides=TINY, enqueue=False)
    FineTuneJob.objects.filter(pk=job.pk).update(preference_metrics={"reward_margin": 0.5, "reward_accuracy": 0.75})
    job.refresh_from_db()
    assert job_snapshot(job)["preference"]["reward_margin"] == 0.5 and job_snapshot(job)["stage"] == "dpo"
    client.force_login(admin_user)
    html = client.get(f"/training/jobs/{job.pk}/").content.decode()
    assert 'id="dpo-figures"' in html and 'data-live="preference.reward_accuracy">0.75<' in html


# --------------------------------------------------------------------------- a real gpu cluster


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process groups")
@pytest.mark.skipif(bool(os.environ.get("DATABASE_URL")), reason="the SQLite file world; PostgreSQL is covered by the finetune qcluster tests")
def test_a_dpo_job_end_to_end_through_a_real_gpu_qcluster(tmp_path, demo_model_dir):
    data = tmp_path / "data"
    env = {**os.environ, "MEDPORTAL_DATA_DIR": str(data), "MEDPORTAL_TRAINING_DIR": str(tmp_path / "training"), "MEDPORTAL_Q_WORKERS": "1", "OMP_NUM_THREADS": "1"}
    for key in ("DATABASE_URL", "REDIS_URL", "Q_CLUSTER_NAME"):
        env.pop(key, None)

    def manage(*args) -> str:
        done = subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    manage("migrate", "--noinput", "-v0")
    manage("setup_demo", "--no-model")
    manage("register_base_model", "--name", "demo", "--path", str(demo_model_dir), "--user", "admin")
    code = (
        "import json\n"
        "from django.contrib.auth import get_user_model\n"
        "from curation.models import DatasetVersion\n"
        "from tests.training.test_dpo_jobs import preference_version, TINY\n"
        "from training.models import BaseModel\n"
        "from training.services.dpo import dpo_job_create\n"
        "U = get_user_model()\n"
        "from curation.models import QAPair\n"
        "from curation.services.core import department_get_or_create, pair_apply_derived\n"
        "from curation.services.versions import dataset_version_freeze\n"
        "curator = U.objects.get(username='curator')\n"
        "for i in range(4):\n"
        "    p = QAPair(author=curator, instruction=f'门禁问题{i}：发热三天怎么办？', output=f'多喝水，持续发热请就医。{i}', status='approved', department=department_get_or_create('gate'))\n"
        "    pair_apply_derived(p); p.save()\n"
        "small = dataset_version_freeze(user=curator, name='gate-eval', departments=['gate'], split=(0.5, 0.0, 0.5), seed=0)\n"
        "pv = preference_version(curator, U.objects.get(username='clinician'), name='qc-pv')\n"
        "job = dpo_job_create(actor=U.objects.get(username='admin'), preference_version=pv, base_model=BaseModel.objects.get(name='demo'),\n"
        "    dataset_version=small, overrides=TINY)\n"
        "print(json.dumps({'job_id': job.pk}))\n"
    )
    job_id = json.loads(manage("shell", "-c", code).strip().splitlines()[-1])["job_id"]

    def row():
        with sqlite3.connect(f"file:{data / 'medportal.sqlite3'}?mode=ro", uri=True, timeout=10) as conn:
            return conn.execute("SELECT status, stage, adapter_path, preference_metrics, error, worker FROM training_finetunejob WHERE id = ?", [job_id]).fetchone()

    def gate():
        with sqlite3.connect(f"file:{data / 'medportal.sqlite3'}?mode=ro", uri=True, timeout=10) as conn:
            found = conn.execute("SELECT status FROM training_adaptergate WHERE job_id = ?", [job_id]).fetchone()
        return found[0] if found else None

    assert row()[0] == "queued"
    cluster = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "qcluster"], cwd=ROOT, env={**env, "Q_CLUSTER_NAME": "gpu"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and row()[0] in ("queued", "running"):
            time.sleep(0.5)
        if row()[0] == "succeeded":  # then the regression gate's two evaluation runs, on the same cluster
            while time.monotonic() < deadline + 240 and gate() in (None, "pending"):
                time.sleep(0.5)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(cluster.pid, signal.SIGTERM)
        try:
            cluster.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(cluster.pid, signal.SIGKILL)
            cluster.wait(timeout=10)
        output = cluster.stdout.read().decode(errors="replace")[-3000:] if cluster.stdout else ""
    status, stage, adapter_path, metrics, error, worker = row()
    assert status == "succeeded", (error, output)
    assert stage == "dpo" and worker and Path(adapter_path, "adapter_config.json").is_file()
    figures = json.loads(metrics)
    assert figures["eval_after"]["pairs"] == 2 and "reward_accuracy" in figures
    assert gate() in ("passed", "blocked"), output


def test_run_dpo_command_queues_and_refuses_clearly(setup, admin_user):
    from django.core.management import CommandError, call_command

    out = __import__("io").StringIO()
    call_command("run_dpo", "--preference-version", str(setup["pv"].pk), "--base-model", "demo", "--dataset-version", str(setup["sft"].pk), "--beta", "0.3", "--set", "max_steps=2", "--json", stdout=out)
    result = json.loads(out.getvalue().strip().splitlines()[-1])
    job = FineTuneJob.objects.get(pk=result["job_id"])
    assert job.stage == "dpo" and job.status == "queued" and job.dpo_config["beta"] == 0.3 and job.config["max_steps"] == 2
    with pytest.raises(CommandError, match="succeeded"):
        call_command("run_dpo", "--preference-version", str(setup["pv"].pk), "--parent-job", str(job.pk), stdout=out)
    with pytest.raises(CommandError, match="No preference version"):
        call_command("run_dpo", "--preference-version", "999", "--base-model", "demo", stdout=out)


def test_the_dpo_form_queues_a_job_and_explains_refusals(setup, admin_user, clinician, client):
    client.force_login(clinician)
    assert client.get("/training/jobs/new-dpo/").status_code == 403
    client.force_login(admin_user)
    page = client.get(f"/curation/preferences/versions/{setup['pv'].pk}/").content.decode()
    assert f"/training/jobs/new-dpo/?preference_version={setup['pv'].pk}" in page
    assert client.get(f"/training/jobs/new-dpo/?preference_version={setup['pv'].pk}").status_code == 200
    refused = client.post("/training/jobs/new-dpo/", {"preference_version": setup["pv"].pk, "base_model": setup["model"].pk, "beta": "0.1"})
    assert refused.status_code == 400 and "evaluate the adapter on" in refused.content.decode()
    response = client.post(
        "/training/jobs/new-dpo/",
        {"preference_version": setup["pv"].pk, "base_model": setup["model"].pk, "dataset_version": setup["sft"].pk, "beta": "0.25", "preset": "cpu_demo", "max_steps": "5"},
    )
    job = FineTuneJob.objects.get(stage="dpo")
    assert response.status_code == 302 and response["Location"] == f"/training/jobs/{job.pk}/"
    assert job.dpo_config["beta"] == 0.25 and job.config["max_steps"] == 5 and job.preset == "cpu_demo"
    html = client.get(f"/training/jobs/{job.pk}/").content.decode()
    assert 'id="job-stage"' in html and 'id="regression-gate"' in html
