"""A gpu worker killed with SIGKILL in the middle of an evaluation: the reaper queues the run
again (evaluations are resumable) and the next worker keeps the answers already stored instead of
generating them again. Through real ``Q_CLUSTER_NAME=gpu manage.py qcluster`` processes on a
migrated SQLite file database (as in test_qcluster_finetune)."""

from __future__ import annotations

import json
import signal
import sys
import time

import pytest

from .test_qcluster_finetune import HEARTBEAT_TIMEOUT_S, SQLiteWorld, start_cluster, stop_cluster, wait_for

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process groups"),
    pytest.mark.django_db(transaction=True),
]


def test_a_killed_worker_s_evaluation_resumes_without_regenerating_its_answers(tmp_path, demo_model_dir, settings):
    if settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        pytest.skip("the SQLite world drives manage.py; the PostgreSQL lifecycle is covered by test_qcluster_evaluation")
    world = SQLiteWorld(tmp_path, demo_model_dir)
    world.env["MEDPORTAL_EVAL_SPEED_SAMPLES"] = "2"
    out = world.manage(
        "run_evaluation", "--dataset-version", str(world.version_id), "--base-model", "demo", "--split", "test",
        "--set", "max_new_tokens=32", "--set", "batch_size=1", "--json",
    )  # fmt: skip
    run_id = json.loads(out.strip().splitlines()[-1])["run_id"]
    total = world.sql("SELECT total_samples FROM training_evalrun WHERE id = ?", [run_id])[0][0]
    assert total >= 12

    def stored():
        return world.sql("SELECT position, prediction FROM training_evalsample WHERE run_id = ? ORDER BY position", [run_id])

    cluster = start_cluster(world.env)
    try:
        # Chunks of 4 answers (batch_size 1 × 4) are stored as they are generated.
        assert wait_for(lambda: len(stored()) >= 4, deadline_s=120), "no answer was stored"
    finally:
        stop_cluster(cluster, sig=signal.SIGKILL)
    kept = dict(stored())
    status, attempt = world.sql("SELECT status, attempt FROM training_evalrun WHERE id = ?", [run_id])[0]
    assert status == "running" and attempt == 1 and 4 <= len(kept) < total

    time.sleep(HEARTBEAT_TIMEOUT_S + 1)
    reaped = json.loads(world.manage("shell", "-c", "import json\nfrom medportal.jobs import reap_kind\nprint(json.dumps(reap_kind('evaluation')))").strip().splitlines()[-1])
    assert reaped == [run_id]
    assert world.sql("SELECT status FROM training_evalrun WHERE id = ?", [run_id])[0][0] == "queued"

    cluster = start_cluster(world.env)
    try:
        done = wait_for(lambda: world.sql("SELECT status FROM training_evalrun WHERE id = ?", [run_id])[0][0] in ("succeeded", "failed"), deadline_s=240)
    finally:
        log = stop_cluster(cluster)
    row = world.sql("SELECT status, error, attempt, speed, done_samples FROM training_evalrun WHERE id = ?", [run_id])[0]
    assert done and row[0] == "succeeded", f"{row[1]}\n{log}"
    speed = json.loads(row[3])
    assert row[2] == 2 and speed["resumed_answers"] == len(kept) and row[4] == total
    final = dict(stored())
    assert len(final) == total
    assert all(final[p] == text for p, text in kept.items())  # the kept answers, not new ones
