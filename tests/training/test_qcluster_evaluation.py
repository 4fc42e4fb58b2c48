"""An evaluation run through a real ``Q_CLUSTER_NAME=gpu manage.py qcluster`` process: queued by the
command (SQLite) or the service (PostgreSQL), claimed by the cluster, answered, scored and stored.

The databases are set up as in test_qcluster_finetune (a migrated file database reached through
manage.py on SQLite; the test database itself, committed rows, on PostgreSQL)."""

from __future__ import annotations

import json
import sys

import pytest

from .test_qcluster_finetune import DEADLINE_S, PostgresWorld, SQLiteWorld, start_cluster, stop_cluster, wait_for

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process groups"),
    pytest.mark.django_db(transaction=True),
]

FIELDS = ("status", "error", "worker", "total_samples", "done_samples", "summary", "speed")


@pytest.fixture
def world(request, tmp_path, demo_model_dir):
    from django.conf import settings as django_settings

    if django_settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        return PostgresWorld(
            tmp_path, demo_model_dir, request.getfixturevalue("settings"), request.getfixturevalue("make_pair"),
            request.getfixturevalue("admin_user"), request.getfixturevalue("curator"),
        )  # fmt: skip
    return SQLiteWorld(tmp_path, demo_model_dir)


def queue(world) -> int:
    if isinstance(world, SQLiteWorld):
        out = world.manage(
            "run_evaluation", "--dataset-version", str(world.version_id), "--base-model", "demo", "--split", "validation",
            "--max-samples", "3", "--set", "max_new_tokens=4", "--json",
        )  # fmt: skip
        return json.loads(out.strip().splitlines()[-1])["run_id"]
    from training.services.evaluations import evaluation_create

    run = evaluation_create(
        actor=world.admin,
        dataset_version=world.version,
        base_model=world.model,
        split="validation",
        max_samples=3,
        params={"max_new_tokens": 4},
    )
    return run.pk  # autocommit: queued when the run was saved


def row(world, run_id: int) -> dict:
    if isinstance(world, SQLiteWorld):
        values = world.sql(f"SELECT {', '.join(FIELDS)} FROM training_evalrun WHERE id = ?", [run_id])[0]
        data = dict(zip(FIELDS, values, strict=True))
        data["summary"], data["speed"] = json.loads(data["summary"]), json.loads(data["speed"])
        data["samples"] = world.sql("SELECT COUNT(*) FROM training_evalsample WHERE run_id = ?", [run_id])[0][0]
        return data
    from training.models import EvalRun, EvalSample

    data = EvalRun.objects.filter(pk=run_id).values(*FIELDS).get()
    data["samples"] = EvalSample.objects.filter(run_id=run_id).count()
    return data


def test_a_gpu_cluster_runs_a_queued_evaluation_to_the_end(world):
    run_id = queue(world)
    assert row(world, run_id)["status"] == "queued"
    cluster = start_cluster(world.env)
    try:
        done = wait_for(lambda: (r := row(world, run_id))["status"] in ("succeeded", "failed", "cancelled") and r)
    finally:
        log = stop_cluster(cluster)
    assert done, f"the run did not finish within {DEADLINE_S}s\n{log}"
    assert done["status"] == "succeeded", f"{done['error']}\n{log}"
    assert done["samples"] == done["total_samples"] == done["done_samples"] == done["summary"]["count"] == 3
    assert ":" in done["worker"] and done["speed"]["timed_samples"] == 3
