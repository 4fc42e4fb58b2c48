"""The shared harness of the background-job lifecycle (``medportal.jobs``): the same three
checks for every kind of background work, run by ``tests/medportal/test_job_lifecycle.py``.

* **claim twice → runs once**: two claims of a queued row, the second finds nothing; the kind's
  own task, delivered again while the row runs, leaves it untouched.
* **cancel → cancelled**: a queued row is cancelled at once and its task, delivered later, does
  nothing.
* **kill -9 then reap**: a real ``manage.py qcluster`` (the kind's cluster) claims the row; the
  whole cluster is killed with SIGKILL while the row is running; the reaper then queues it again
  (the kind's ``resumable`` says so for the row) or fails it with the reason.

A kind joins by adding a ``KindCase`` to ``CASES``: the Python that creates one queued row of it
(run in ``manage.py shell`` against the world's database, with the helpers of ``PRELUDE``), and
the cluster it runs on.

The world is a temporary SQLite file database (pytest-django's in-memory one cannot be opened by
another process): migrated, filled by ``setup_demo --no-model``, the demo model registered, a
tiny rare-disease release imported. Everything runs through ``manage.py`` and the services; the
rows are read straight from the file.
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
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEARTBEAT_TIMEOUT_S = 5
DEADLINE_S = 240

# Helpers for the ``create`` snippets (run in ``manage.py shell``).
PRELUDE = """
import json, os
from pathlib import Path
from django.contrib.auth import get_user_model
from curation.models import DatasetVersion
from training.models import BaseModel
User = get_user_model()
admin = User.objects.get(username="admin")
curator = User.objects.get(username="curator")
version = DatasetVersion.objects.order_by("id").first()
demo = BaseModel.objects.get(name="demo")
WORK = Path(os.environ["HARNESS_WORK"])


def succeeded_job():
    '''A succeeded fine-tune whose adapter is a real (untrained) LoRA adapter of the demo model.'''
    from training.models import FineTuneJob
    from training.services.jobs import finetune_job_create

    adapter = WORK / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = get_peft_model(AutoModelForCausalLM.from_pretrained(demo.path), LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
        model.save_pretrained(adapter)
        AutoTokenizer.from_pretrained(demo.path).save_pretrained(adapter)
    job = finetune_job_create(actor=admin, dataset_version=version, base_model=demo, preset="cpu_demo", enqueue=False)
    FineTuneJob.objects.filter(pk=job.pk).update(status="succeeded", adapter_path=str(adapter))
    return FineTuneJob.objects.get(pk=job.pk)
"""


@dataclass(frozen=True)
class KindCase:
    kind: str
    table: str
    create: str  # Python (after PRELUDE) that sets ``pk`` to a new queued row, not enqueued
    cluster: str | None = None  # "gpu": Q_CLUSTER_NAME=gpu

    def __str__(self) -> str:
        return self.kind


CASES = [
    KindCase(
        kind="import",
        table="curation_importbatch",
        create="""
from curation.services.imports import import_batch_create
path = WORK / "big.jsonl"
if not path.exists():
    rows = ({"instruction": f"第{i}号：头痛{i % 17 + 1}天伴失眠，编号{i * 104729}，要做哪些检查？", "output": f"第{i}号回答：测血压，必要时头颅CT，编号{i * 7919}。"} for i in range(60000))
    path.write_text("\\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\\n", encoding="utf-8")
pk = import_batch_create(user=curator, path_or_upload=path).pk
""",
    ),
    KindCase(
        kind="rare_cases",
        table="curation_generationjob",
        create="""
from curation.services.rare import rare_cases_start
from curation.models import GenerationJob
job = rare_cases_start(user=curator, disease_ids=["ORPHA:1", "ORPHA:2"], count=500, seed=3)
pk = job.pk
""",
    ),
    KindCase(
        kind="finetune",
        table="training_finetunejob",
        cluster="gpu",
        create="""
from training.services.jobs import finetune_job_create
pk = finetune_job_create(
    actor=admin, dataset_version=version, base_model=demo, preset="cpu_demo", on_worker_death="requeue",
    overrides={"max_steps": 400, "cutoff_len": 64, "val_size": 0}, enqueue=False,
).pk
""",
    ),
    KindCase(
        kind="evaluation",
        table="training_evalrun",
        cluster="gpu",
        create="""
from training.services.evaluations import evaluation_create
split = "test" if (version.counts or {}).get("test") else "validation"
pk = evaluation_create(
    actor=admin, dataset_version=version, base_model=demo, split=split, params={"max_new_tokens": 48, "batch_size": 1}, enqueue=False,
).pk
""",
    ),
    KindCase(
        kind="literature_draft",
        table="curation_draftrun",
        create="""
from curation.models import Document
from curation.services.literature import documents_import
from curation.services.literature_drafting import draft_run_start
if not Document.objects.exists():
    documents_import(user=curator, name="efetch.xml", data=(Path("tests/curation/literature_data/efetch_pubmed.xml")).read_bytes())
ids = list(Document.objects.order_by("pk").values_list("pk", flat=True))
pk = draft_run_start(user=curator, document_ids=ids, model_key=str(demo.pk), per_document=4, max_new_tokens=128).pk
""",
    ),
    KindCase(
        kind="merge",
        table="training_adaptermerge",
        create="""
from training.services.jobs import finetune_job_merge
import uuid
pk = finetune_job_merge(actor=admin, job=succeeded_job(), name="merged-" + uuid.uuid4().hex[:8], enqueue=False).pk
""",
    ),
]


class World:
    """A migrated SQLite file database reached through manage.py (one per test module)."""

    def __init__(self, root: Path, demo_model_dir: Path):
        self.root = root
        self.data = root / "data"
        (root / "work").mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ,
            "MEDPORTAL_DATA_DIR": str(self.data),
            "MEDPORTAL_TRAINING_DIR": str(root / "training"),
            "MEDPORTAL_JOB_HEARTBEAT_TIMEOUT_S": str(HEARTBEAT_TIMEOUT_S),
            "MEDPORTAL_Q_WORKERS": "1",
            "HARNESS_WORK": str(root / "work"),
        }
        for key in ("DATABASE_URL", "REDIS_URL", "Q_CLUSTER_NAME"):
            self.env.pop(key, None)
        self.manage("migrate", "--noinput", "-v0")
        self.manage("setup_demo", "--no-model")
        self.manage("register_base_model", "--name", "demo", "--path", str(demo_model_dir), "--user", "admin")
        self.shell(f"from tests.curation.rare_data import import_tiny\nimport_tiny(Path({str(root / 'rare')!r}))\nout = 1")

    def manage(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    def shell(self, code: str):
        """Run ``code`` after PRELUDE in ``manage.py shell``; returns the JSON of its ``out``."""
        program = PRELUDE + "\n" + code + "\nprint('HARNESS-OUT ' + json.dumps(out, default=str))\n"
        stdout = self.manage("shell", "-c", program)
        line = next(line for line in reversed(stdout.splitlines()) if line.startswith("HARNESS-OUT "))
        return json.loads(line.removeprefix("HARNESS-OUT "))

    def create(self, case: KindCase) -> int:
        return int(self.shell(case.create + "\nout = pk"))

    def row(self, case: KindCase, pk: int) -> dict:
        with sqlite3.connect(f"file:{self.data / 'medportal.sqlite3'}?mode=ro", uri=True, timeout=10) as conn:
            conn.row_factory = sqlite3.Row
            found = conn.execute(f"SELECT * FROM {case.table} WHERE id = ?", [pk]).fetchone()  # noqa: S608 - our own table names
        return dict(found) if found is not None else {}

    # ---- clusters ------------------------------------------------------------------------

    def start_cluster(self, case: KindCase) -> subprocess.Popen:
        env = dict(self.env)
        if case.cluster:
            env["Q_CLUSTER_NAME"] = case.cluster
        return subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "qcluster"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: kill -9 of the group kills every cluster process
        )

    @staticmethod
    def kill_cluster(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> str:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # stray workers, if any
        return proc.stdout.read().decode(errors="replace")[-4000:] if proc.stdout else ""

    def wait_for(self, case: KindCase, pk: int, statuses: tuple[str, ...], deadline_s: float = DEADLINE_S, every: float = 0.02) -> dict:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            row = self.row(case, pk)
            if row.get("status") in statuses:
                return row
            time.sleep(every)
        return self.row(case, pk)


# --------------------------------------------------------------------------- the three checks


def check_claim_twice_runs_once(world: World, case: KindCase) -> None:
    pk = world.create(case)
    out = world.shell(
        f"""
from django.utils.module_loading import import_string
from medportal import jobs
kind = jobs.kind_of({case.kind!r})
first = jobs.claim(kind, {pk})
second = jobs.claim(kind, {pk})
row = kind.model_class.objects.get(pk={pk})
before = (row.status, row.attempt, row.version)
import_string(kind.task)({pk})  # the same task, delivered again while the row runs
row.refresh_from_db()
out = {{"first": first is not None, "second": second is None, "before": before, "after": (row.status, row.attempt, row.version)}}
jobs.fail(kind, {pk}, "ended by the harness", attempt=1)  # leave no running row behind for the reaper
"""
    )
    assert out["first"] and out["second"], out
    assert out["before"][:2] == ["running", 1], out
    assert out["after"] == out["before"], f"{case.kind}: a duplicate task changed a running row: {out}"


def check_cancel(world: World, case: KindCase) -> None:
    pk = world.create(case)
    out = world.shell(
        f"""
from django.utils.module_loading import import_string
from medportal import jobs
kind = jobs.kind_of({case.kind!r})
outcome = jobs.request_cancel(kind, {pk})
again = jobs.request_cancel(kind, {pk})
import_string(kind.task)({pk})  # its task, delivered after the cancel
row = kind.model_class.objects.get(pk={pk})
out = {{"outcome": outcome, "again": again, "status": row.status, "attempt": row.attempt, "finished": row.finished_at is not None}}
"""
    )
    assert out == {"outcome": "cancelled", "again": "", "status": "cancelled", "attempt": 0, "finished": True}, (case.kind, out)


def check_kill_and_reap(world: World, case: KindCase) -> None:
    pk = world.create(case)
    world.shell(f"from medportal import jobs\nout = jobs.enqueue({case.kind!r}, {pk})")
    cluster = world.start_cluster(case)
    try:
        running = world.wait_for(case, pk, ("running", "succeeded", "failed", "cancelled"))
    finally:
        log = world.kill_cluster(cluster, signal.SIGKILL)  # kill -9 of the whole cluster, mid-job
    assert running.get("status") == "running", f"{case.kind}: expected it running when killed, found {running.get('status')}: {running.get('error')}\n{log}"
    time.sleep(1.0)  # the killed worker's children (engine processes) get SIGTERM from the kernel
    assert world.row(case, pk)["status"] == "running"  # nobody noticed yet: only the reaper does
    out = world.shell(
        f"""
from datetime import timedelta
from django.utils import timezone
from medportal import jobs
kind = jobs.kind_of({case.kind!r})
from django.conf import settings
row = kind.model_class.objects.get(pk={pk})
# The kind's own policy: queued again when resumable and not started too often, else failed.
requeue = kind.is_resumable(row) and row.attempt < settings.MEDPORTAL_JOB_MAX_ATTEMPTS
# Just after its last sign of life the row is not silent yet: asked at that moment, not at
# "now", which on a loaded machine (this shell takes seconds to start) may already be too late.
beat = row.heartbeat_at or row.started_at
early = jobs.reap_kind(kind, now=beat + timedelta(seconds=1))
late = jobs.reap_kind(kind, now=timezone.now() + kind.silent_after() + timedelta(seconds=1))
out = {{"early": early, "late": late, "requeue": requeue}}
"""
    )
    assert out["early"] == [] and pk in out["late"], (case.kind, out)
    row = world.row(case, pk)
    if out["requeue"]:
        assert (row["status"], row["attempt"], row["error"], row["worker"], row["heartbeat_at"]) == ("queued", 1, "", "", None), row
        if "log_tail" in row:
            assert "stopped sending heartbeats" in row["log_tail"], row
    else:
        assert row["status"] == "failed" and row["finished_at"], row
        assert "stopped sending heartbeats" in row["error"], row
