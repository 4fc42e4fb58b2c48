"""A large import goes through a real ``manage.py qcluster`` process.

SQLite: pytest-django's SQLite test database lives in memory, which no other process can
open, so this test gives the subprocesses their own file database (a temporary
MEDPORTAL_DATA_DIR, migrated first) and reads the result straight from that file.

PostgreSQL (DATABASE_URL set): the second test runs in its own transaction
(``django_db(transaction=True)``) so the worker, connected to the same test database,
sees the queued batch.

The cluster is always stopped at the end (its process group: the cluster forks workers).
"""

from __future__ import annotations

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
DEADLINE_S = 60


def big_file(path: Path, rows: int = 3000) -> Path:
    lines = [
        json.dumps(
            {
                "instruction": f"第{i}号咨询：最近{i % 17 + 1}天反复头痛、失眠，偶尔恶心，需要做哪些检查？编号{i * 104729}",
                "input": "",
                "output": f"第{i}号回答：建议先测量血压，必要时做头颅CT或磁共振，并记录头痛日记，复诊编号{i * 7919}。",
            },
            ensure_ascii=False,
        )
        for i in range(rows)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def start_cluster(env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "qcluster"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, so the forked workers stop with it
    )


def stop_cluster(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stray workers, if any
    except ProcessLookupError:
        pass
    return proc.stdout.read().decode(errors="replace")[-3000:] if proc.stdout else ""


def wait_for(check, deadline_s: float = DEADLINE_S):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.5)
    return None


def test_a_large_import_is_run_by_a_real_qcluster_worker_sqlite(tmp_path):
    env = {
        **os.environ,
        "MEDPORTAL_DATA_DIR": str(tmp_path / "data"),
        "MEDPORTAL_Q_WORKERS": "1",
        "DJANGO_SUPERUSER_PASSWORD": "pw-root",
        "MEDPORTAL_IMPORT_INLINE_MAX_KB": "64",
    }
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    manage = [sys.executable, str(ROOT / "manage.py")]

    def call(*args):
        done = subprocess.run([*manage, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    call("migrate", "--noinput", "-v0")
    call("createsuperuser", "--noinput", "--username", "root", "--email", "root@example.org")
    path = big_file(tmp_path / "big.jsonl")
    assert path.stat().st_size > 64 * 1024  # above the inline limit: it must be queued
    out = call(
        "shell",
        "-c",
        "from django.contrib.auth import get_user_model\n"
        "from curation.services.imports import import_batch_create, import_batch_dispatch\n"
        "user = get_user_model().objects.get(username='root')\n"
        f"batch = import_batch_dispatch(batch=import_batch_create(user=user, path_or_upload={str(path)!r}))\n"
        "print('BATCH', batch.pk, batch.status)\n",
    )
    batch_line = next(line for line in out.splitlines() if line.startswith("BATCH"))
    _, batch_id, status = batch_line.split()
    assert status == "queued"

    db_file = tmp_path / "data" / "medportal.sqlite3"

    def row():
        with sqlite3.connect(f"file:{db_file}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute(
                "SELECT status, created_count, duplicate_count, rows_total, error FROM curation_importbatch WHERE id = ?", [int(batch_id)]
            ).fetchone()

    assert row()[0] == "queued"
    cluster = start_cluster(env)
    try:
        final = wait_for(lambda: (r := row()) and r[0] in ("succeeded", "failed") and r)
    finally:
        log = stop_cluster(cluster)
    assert final is not None, f"the batch did not finish within {DEADLINE_S}s; cluster log:\n{log}"
    assert final == ("succeeded", 3000, 0, 3000, ""), log
    with sqlite3.connect(f"file:{db_file}?mode=ro", uri=True) as conn:
        assert conn.execute("SELECT COUNT(*) FROM curation_qapair WHERE import_batch_id = ?", [int(batch_id)]).fetchone()[0] == 3000
        events = conn.execute(
            "SELECT action FROM medportal_auditevent WHERE target_type = 'curation.importbatch' AND target_id = ?", [batch_id]
        ).fetchall()
        assert ("import.run",) in events


@pytest.mark.django_db(transaction=True)
def test_a_large_import_is_run_by_a_real_qcluster_worker_postgresql(tmp_path, django_user_model, settings):
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("runs against the PostgreSQL test database (set DATABASE_URL)")
    from curation.models import ImportBatch, QAPair
    from curation.services.imports import import_batch_create, import_batch_dispatch

    settings.MEDPORTAL_IMPORT_INLINE_MAX_BYTES = 64 * 1024
    user = django_user_model.objects.create_superuser("root", "root@example.org", "pw")
    batch = import_batch_create(user=user, path_or_upload=big_file(tmp_path / "big.jsonl"))
    batch = import_batch_dispatch(batch=batch)  # autocommit: the task is enqueued at once
    assert batch.status == ImportBatch.Status.QUEUED

    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    url = f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    # REDIS_URL, when set, stays: the task then travels through the Redis broker, as in production.
    env = {**os.environ, "DATABASE_URL": url, "MEDPORTAL_Q_WORKERS": "1", "MEDPORTAL_DATA_DIR": str(tmp_path / "data")}

    def finished():
        batch.refresh_from_db()
        return batch.status in (ImportBatch.Status.SUCCEEDED, ImportBatch.Status.FAILED)

    cluster = start_cluster(env)
    try:
        ok = wait_for(finished)
    finally:
        log = stop_cluster(cluster)
    assert ok, f"the batch did not finish within {DEADLINE_S}s; cluster log:\n{log}"
    assert (batch.status, batch.created_count, batch.error) == ("succeeded", 3000, ""), log
    assert QAPair.objects.filter(import_batch=batch).count() == 3000
