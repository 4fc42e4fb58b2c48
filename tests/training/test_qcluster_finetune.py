"""Fine-tune jobs through a real ``Q_CLUSTER_NAME=gpu manage.py qcluster`` process: a LoRA
job end to end, a cancel, and ``kill -9`` of the cluster mid-job under both policies.

Which database: the one this test session uses.

* SQLite (default): pytest-django's test database lives in memory, which no other process
  can open, so these tests share one temporary file database (a MEDPORTAL_DATA_DIR migrated
  and filled once by ``setup_demo --no-model`` + ``register_base_model``), queue and cancel
  through ``manage.py`` and read the rows straight from the file. The ORM broker carries
  the tasks, as in the embedded default.
* PostgreSQL (DATABASE_URL set): each test runs in its own transaction
  (``django_db(transaction=True)``) so the cluster, connected to the same test database,
  sees the rows written here through the services. REDIS_URL, when set, stays: the tasks
  then travel through Redis, as in production.

Every cluster is stopped at the end of its test (its process group; the engine child, in its
own session, gets SIGTERM from the kernel when its worker dies).
"""

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

ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 90
HEARTBEAT_TIMEOUT_S = 5
FIELDS = (
    "status",
    "step",
    "attempt",
    "error",
    "log_tail",
    "last_checkpoint",
    "adapter_path",
    "train_loss_first",
    "train_loss_last",
    "output_dir",
    "worker",
)
TINY = ["--set", "cutoff_len=64", "--set", "max_samples=16", "--set", "val_size=0"]

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process groups and PR_SET_PDEATHSIG"),
    # PostgreSQL: committed rows, so that the cluster sees them (SQLite: the tests use their own file).
    pytest.mark.django_db(transaction=True),
]


# --------------------------------------------------------------------------- clusters


def start_cluster(env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "qcluster"],
        cwd=ROOT,
        env={**env, "Q_CLUSTER_NAME": "gpu"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: kill -9 of the group kills every cluster process
    )


def stop_cluster(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> str:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # stray workers, if any
    return proc.stdout.read().decode(errors="replace")[-4000:] if proc.stdout else ""


def engine_processes(job_id: int) -> list:
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or ())
        if "training.engine" in cmdline and f"job-{job_id}" in cmdline:
            found.append(proc)
    return found


def wait_for(check, deadline_s: float = DEADLINE_S, every: float = 0.3):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(every)
    return None


# --------------------------------------------------------------------------- the two databases


class SQLiteWorld:
    """A migrated file database shared by the tests of this module; reached through manage.py."""

    def __init__(self, root: Path, demo_model_dir: Path):
        self.data = root / "data"
        self.env = {
            **os.environ,
            "MEDPORTAL_DATA_DIR": str(self.data),
            "MEDPORTAL_TRAINING_DIR": str(root / "training"),
            "MEDPORTAL_JOB_HEARTBEAT_TIMEOUT_S": str(HEARTBEAT_TIMEOUT_S),
            "MEDPORTAL_Q_WORKERS": "1",
        }
        for key in ("DATABASE_URL", "REDIS_URL", "Q_CLUSTER_NAME"):
            self.env.pop(key, None)
        self.manage("migrate", "--noinput", "-v0")
        self.manage("setup_demo", "--no-model")
        self.manage("register_base_model", "--name", "demo", "--path", str(demo_model_dir), "--user", "admin")
        self.version_id = int(self.sql("SELECT id FROM curation_datasetversion ORDER BY id LIMIT 1")[0][0])

    def manage(self, *args) -> str:
        done = subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=180
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    def sql(self, query: str, params=()) -> list:
        with sqlite3.connect(f"file:{self.data / 'medportal.sqlite3'}?mode=ro", uri=True, timeout=10) as conn:
            return conn.execute(query, params).fetchall()

    def queue_job(self, *sets: str, on_worker_death: str = "requeue") -> int:
        out = self.manage(
            "run_finetune", "--dataset-version", str(self.version_id), "--base-model", "demo", "--preset", "cpu_demo",
            "--on-worker-death", on_worker_death, *TINY, *sets, "--json",
        )  # fmt: skip
        return json.loads(out.strip().splitlines()[-1])["job_id"]

    def job(self, job_id: int) -> dict:
        row = self.sql(f"SELECT {', '.join(FIELDS)} FROM training_finetunejob WHERE id = ?", [job_id])[0]
        return dict(zip(FIELDS, row, strict=True))

    def _shell(self, code: str) -> str:
        return self.manage("shell", "-c", code)

    def cancel(self, job_id: int) -> None:
        self._shell(
            "from django.contrib.auth import get_user_model\n"
            "from training.models import FineTuneJob\n"
            "from training.services.jobs import finetune_job_cancel\n"
            f"finetune_job_cancel(actor=get_user_model().objects.get(username='admin'), job=FineTuneJob.objects.get(pk={job_id}))\n"
        )

    def reap(self) -> list[int]:
        out = self._shell("import json\nfrom medportal.jobs import reap_kind\nprint(json.dumps(reap_kind('finetune')))\n")
        return json.loads(out.strip().splitlines()[-1])

    def purge(self) -> None:
        """Nothing of an earlier test may still wait for a worker."""
        for (job_id,) in self.sql("SELECT id FROM training_finetunejob WHERE status IN ('queued', 'running')"):
            self.cancel(job_id)


class PostgresWorld:
    """The PostgreSQL test database, written through the services in this process."""

    def __init__(self, root: Path, demo_model_dir: Path, settings, make_pair, admin, curator):
        from django.db import connection

        from curation.models import QAPair
        from curation.services.versions import dataset_version_freeze
        from training.services.base_models import base_model_register

        settings.MEDPORTAL_TRAINING_DIR = root / "training"
        settings.MEDPORTAL_JOB_HEARTBEAT_TIMEOUT_S = HEARTBEAT_TIMEOUT_S
        self.admin = admin
        for i in range(12):
            make_pair(
                curator,
                status=QAPair.Status.APPROVED,
                instruction=f"第{i}位患者：{['头痛', '发热', '咳嗽', '胸闷', '腹泻', '失眠'][i % 6]}{i * 37}天，怎么办？",
                output=f"建议{i}：{['多喝水', '卧床休息', '及时就医', '复查血常规'][i % 4]}，编号{i * 101}。",
            )
        self.version = dataset_version_freeze(user=curator, name="qc", split=(0.75, 0.25, 0.0))
        self.model = base_model_register(actor=admin, name="demo", path=demo_model_dir)
        db = connection.settings_dict
        auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
        url = f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
        self.env = {
            **os.environ,
            "DATABASE_URL": url,
            "MEDPORTAL_DATA_DIR": str(root / "data"),
            "MEDPORTAL_TRAINING_DIR": str(root / "training"),
            "MEDPORTAL_JOB_HEARTBEAT_TIMEOUT_S": str(HEARTBEAT_TIMEOUT_S),
            "MEDPORTAL_Q_WORKERS": "1",
        }

    def queue_job(self, *sets: str, on_worker_death: str = "requeue") -> int:
        from training.services.jobs import finetune_config_build, finetune_job_create

        items = [value for flag, value in zip((*TINY, *sets)[::2], (*TINY, *sets)[1::2], strict=True) if flag == "--set"]
        config = finetune_config_build(preset="cpu_demo", sets=items)
        job = finetune_job_create(
            actor=self.admin,
            dataset_version=self.version,
            base_model=self.model,
            preset="cpu_demo",
            overrides=config.to_dict(),
            on_worker_death=on_worker_death,
        )
        return job.pk  # autocommit: the task was enqueued when the job was saved

    def job(self, job_id: int) -> dict:
        from training.models import FineTuneJob

        return FineTuneJob.objects.filter(pk=job_id).values(*FIELDS).get()

    def cancel(self, job_id: int) -> None:
        from training.models import FineTuneJob
        from training.services.jobs import finetune_job_cancel

        finetune_job_cancel(actor=self.admin, job=FineTuneJob.objects.get(pk=job_id))

    def reap(self) -> list[int]:
        from medportal.jobs import reap_kind

        return reap_kind("finetune")

    def purge(self) -> None:
        """Each test starts from an empty database; tasks left in the broker by other tests
        name jobs that do not exist here, or are no-ops (the conditional claim)."""


@pytest.fixture(scope="module")
def sqlite_world(tmp_path_factory, demo_model_dir):
    return SQLiteWorld(tmp_path_factory.mktemp("qcluster-finetune"), demo_model_dir)


@pytest.fixture
def world(request, tmp_path, demo_model_dir):
    from django.conf import settings as django_settings

    if django_settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        w = PostgresWorld(
            tmp_path, demo_model_dir, request.getfixturevalue("settings"), request.getfixturevalue("make_pair"),
            request.getfixturevalue("admin_user"), request.getfixturevalue("curator"),
        )  # fmt: skip
    else:
        w = request.getfixturevalue("sqlite_world")
    w.purge()
    return w


def finished(world, job_id: int):
    row = world.job(job_id)
    return row if row["status"] in ("succeeded", "failed", "cancelled") else None


# --------------------------------------------------------------------------- the scenarios


def test_a_real_lora_job_runs_end_to_end_and_a_running_job_is_cancelled(world):
    done_id = world.queue_job("--set", "max_steps=3", "--set", "save_steps=3")
    long_id = world.queue_job("--set", "max_steps=2000", "--set", "save_steps=2000")
    assert world.job(done_id)["status"] == "queued"
    cluster = start_cluster(world.env)
    try:
        done = wait_for(lambda: finished(world, done_id))
        assert done is not None, f"the job did not finish within {DEADLINE_S}s"
        started = wait_for(lambda: (row := world.job(long_id))["status"] == "running" and row["step"] >= 1 and row)
        assert started, "the second job did not start training"
        world.cancel(long_id)
        cancelled = wait_for(lambda: finished(world, long_id), deadline_s=45)
        assert wait_for(lambda: not engine_processes(long_id), deadline_s=15), "the engine kept running"
    except AssertionError as exc:
        raise AssertionError(f"{exc}\ncluster log:\n{stop_cluster(cluster)}") from None
    finally:
        log = stop_cluster(cluster)

    assert done["status"] == "succeeded", f"{done['error']}\n{done['log_tail']}\n{log}"
    assert done["step"] == 3 and done["attempt"] == 1 and ":" in done["worker"]
    assert done["train_loss_first"] > 0 and done["train_loss_last"] > 0
    assert (Path(done["adapter_path"]) / "adapter_config.json").is_file()

    assert cancelled is not None and cancelled["status"] == "cancelled", log
    assert cancelled["step"] < 2000 and "cancel requested" in cancelled["log_tail"]


def kill_mid_job(world, job_id: int, *, checkpoint: bool) -> dict:
    """Start a cluster, let the job train (to a checkpoint if asked), kill -9 the cluster's
    whole process group, and wait until the orphaned engine is gone too. The row as it was."""
    cluster = start_cluster(world.env)
    try:
        ready = wait_for(
            lambda: (row := world.job(job_id))["status"] == "running" and row["step"] >= 1 and (row["last_checkpoint"] or not checkpoint)
        )
        assert ready, f"job {job_id} did not get going; cluster log:\n{stop_cluster(cluster)}"
    except BaseException:
        stop_cluster(cluster)
        raise
    stop_cluster(cluster, signal.SIGKILL)
    assert wait_for(lambda: not engine_processes(job_id), deadline_s=30), "the engine outlived its worker"
    row = world.job(job_id)
    assert row["status"] == "running"  # nobody told the database
    return row


def reaped(world, job_id: int) -> dict:
    assert wait_for(lambda: job_id in world.reap(), deadline_s=HEARTBEAT_TIMEOUT_S * 4, every=1.0), (
        f"the silent job {job_id} was not reaped"
    )
    return world.job(job_id)


def test_kill_9_of_a_worker_mid_job_fails_or_requeues_the_job_and_a_new_cluster_resumes_from_the_checkpoint(world):
    failing = world.queue_job("--set", "max_steps=2000", "--set", "save_steps=2000", on_worker_death="fail")
    resuming = world.queue_job("--set", "max_steps=12", "--set", "save_steps=2", on_worker_death="requeue")

    # 1. The worker of the first job dies; the dead cluster may have taken the second job's task along.
    before = kill_mid_job(world, failing, checkpoint=False)
    row = reaped(world, failing)
    assert row["status"] == "failed"
    assert row["error"].startswith(f"The worker {before['worker']} stopped sending heartbeats at ")

    # 2. A new cluster still gets the second job; its worker dies after a checkpoint.
    kill_mid_job(world, resuming, checkpoint=True)
    row = reaped(world, resuming)
    assert row["status"] == "queued" and "stopped sending heartbeats" in row["log_tail"]

    # 3. A third cluster resumes it from that checkpoint.
    cluster = start_cluster(world.env)
    try:
        row = wait_for(lambda: finished(world, resuming))
    finally:
        log = stop_cluster(cluster)
    assert row is not None and row["status"] == "succeeded", f"{row and row['error']}\n{log}"
    assert row["attempt"] == 2 and row["step"] == 12
    starts = [json.loads(line) for line in (Path(row["output_dir"]) / "train_log.jsonl").read_text().splitlines() if '"start"' in line]
    assert starts[-1]["type"] == "start" and starts[-1]["resumed_from_step"] > 0, starts
    assert f"resumed from step {starts[-1]['resumed_from_step']}" in row["log_tail"]
