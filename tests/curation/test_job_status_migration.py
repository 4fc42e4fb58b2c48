"""Migration curation 0006: import batches and case jobs that ended well said "done"; every job
row now says "succeeded" (medportal.jobs.JobStatus), with a full progress bar."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("curation", "0005_job_lifecycle")]
AFTER = [("curation", "0006_job_status_succeeded")]


@pytest.mark.django_db(transaction=True)
def test_done_rows_become_succeeded_and_running_ones_get_their_share(django_user_model):
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE).apps
    user = old.get_model("auth", "User").objects.create(username="m")
    Batch, Job = old.get_model("curation", "ImportBatch"), old.get_model("curation", "GenerationJob")
    done = Batch.objects.create(created_by_id=user.pk, filename="a.json", status="done", rows_total=4, rows_done=4)
    running = Batch.objects.create(created_by_id=user.pk, filename="b.json", status="running", rows_total=4, rows_done=1)
    failed = Batch.objects.create(created_by_id=user.pk, filename="c.json", status="failed")
    job = Job.objects.create(created_by_id=user.pk, status="done", total=3, done=3)

    executor = MigrationExecutor(connection)
    executor.migrate(AFTER)
    new = executor.loader.project_state(AFTER).apps
    Batch, Job = new.get_model("curation", "ImportBatch"), new.get_model("curation", "GenerationJob")
    rows = {b.pk: (b.status, b.progress) for b in Batch.objects.all()}
    assert rows == {done.pk: ("succeeded", 1.0), running.pk: ("running", 0.25), failed.pk: ("failed", 0.0)}
    assert (Job.objects.get(pk=job.pk).status, Job.objects.get(pk=job.pk).progress) == ("succeeded", 1.0)

    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)  # and back
    old = executor.loader.project_state(BEFORE).apps
    assert old.get_model("curation", "ImportBatch").objects.get(pk=done.pk).status == "done"
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
