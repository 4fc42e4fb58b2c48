"""medportal.jobs in process: the rules every kind shares (one truncation rule, which task may fail
a row, the broker being down, reaping, cancelling, the registry). The same lifecycle through real
workers, per kind: tests/medportal/test_job_lifecycle.py."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.utils import timezone

from curation.models import ImportBatch
from medportal import jobs
from medportal.models import AuditEvent

pytestmark = pytest.mark.django_db


def batch(user, **fields) -> ImportBatch:
    return ImportBatch.objects.create(created_by=user, filename="x.jsonl", **fields)


def test_one_truncation_rule_for_every_stored_error():
    assert jobs.clip_error("short") == "short"
    long = "x" * (jobs.ERROR_MAX + 50)
    clipped = jobs.clip_error(long)
    assert len(clipped) == jobs.ERROR_MAX and clipped.endswith("…")
    assert jobs.clip_error(None) == ""


def test_fail_stores_the_clipped_reason_once_and_leaves_finished_rows_alone(curator):
    row = batch(curator, status="running", attempt=1)
    assert jobs.fail("import", row.pk, "boom " * 5000)
    row.refresh_from_db()
    assert row.status == "failed" and len(row.error) == jobs.ERROR_MAX and row.finished_at
    assert AuditEvent.objects.filter(action="import.fail", target_id=str(row.pk)).count() == 1
    assert not jobs.fail("import", row.pk, "again")  # finished: nothing changes
    done = batch(curator, status="succeeded")
    assert not jobs.fail("import", done.pk, "late")


def test_a_task_fails_its_row_only_while_it_is_the_rows_task_or_none_is_stored_yet(curator):
    mine = batch(curator, status="queued", task_id="t-new")
    assert not jobs.fail("import", mine.pk, "old task died", task_id="t-old")
    assert jobs.fail("import", mine.pk, "this task died", task_id="t-new")
    fresh = batch(curator, status="queued", task_id="")
    assert jobs.fail("import", fresh.pk, "died before its id was stored", task_id="t-1")


def test_a_claim_token_guards_every_later_write(curator):
    row = batch(curator, status="queued")
    claimed = jobs.claim("import", row.pk, worker="w:1")
    assert claimed.attempt == 1 and claimed.worker == "w:1" and claimed.status == "running"
    assert jobs.claim("import", row.pk) is None
    assert jobs.set_progress("import", row.pk, 1, 0.5)
    assert not jobs.heartbeat("import", row.pk, 2)  # another attempt's worker
    assert not jobs.fail("import", row.pk, "stale worker", attempt=2)
    assert jobs.succeed("import", row.pk, 1, created_count=3)
    row.refresh_from_db()
    assert (row.status, row.progress, row.created_count, row.progress_percent) == ("succeeded", 1.0, 3, 100)
    assert not jobs.heartbeat("import", row.pk, 1)  # finished: the worker is told to stop


def test_a_broker_that_is_down_fails_the_row_with_the_reason(curator, monkeypatch):
    def down(*args, **kwargs):
        raise ConnectionError("redis is down")

    monkeypatch.setattr("django_q.tasks.async_task", down)
    row = batch(curator, status="queued")
    assert jobs.enqueue("import", row.pk) is None
    row.refresh_from_db()
    assert row.status == "failed" and "redis is down" in row.error


def test_enqueue_passes_the_id_only_the_kinds_cluster_and_the_one_hook(curator, monkeypatch, django_capture_on_commit_callbacks):
    calls = []
    monkeypatch.setattr("django_q.tasks.async_task", lambda *a, **k: calls.append((a, k)) or "task-9")
    row = batch(curator, status="queued")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        jobs.enqueue_after_commit("finetune", 7)
        jobs.enqueue_after_commit("import", row.pk)
    assert calls == [] and len(callbacks) == 2  # nothing before the commit
    callbacks[1]()
    assert calls == [(("curation.tasks.import_batch_task", row.pk), {"hook": jobs.HOOK, "task_name": f"import-{row.pk}"})]
    row.refresh_from_db()
    assert row.task_id == "task-9"
    callbacks[0]()
    assert calls[1][1]["cluster"] == "gpu"


def test_the_hook_records_a_dead_task_of_a_known_kind_and_ignores_the_rest(curator):
    row = batch(curator, status="running", attempt=1, task_id="t-1")
    jobs.task_hook(SimpleNamespace(success=True, func="curation.tasks.import_batch_task", args=(row.pk,), id="t-1", result=None))
    jobs.task_hook(SimpleNamespace(success=False, func="somewhere.else", args=(row.pk,), id="t-1", result="x"))
    row.refresh_from_db()
    assert row.status == "running"
    jobs.task_hook(SimpleNamespace(success=False, func="curation.tasks.import_batch_task", args=(row.pk,), id="t-1", result="killed"))
    row.refresh_from_db()
    assert row.status == "failed" and row.error == "The background worker failed: killed"


def test_cancel_a_queued_row_at_once_a_running_one_by_request(admin_user, curator, make_pair):
    from tests.training.ui_factories import make_base_model, make_job, make_version

    queued = batch(curator, status="queued")
    assert jobs.request_cancel("import", queued.pk) == "cancelled"
    running_import = batch(curator, status="running", attempt=1)
    assert jobs.request_cancel("import", running_import.pk) == "cancelled"  # a kind that cancels running rows at once
    assert not jobs.heartbeat("import", running_import.pk, 1)  # its worker stops at its next write

    job = make_job(admin_user, make_version(curator, make_pair), make_base_model(admin_user))
    job.__class__.objects.filter(pk=job.pk).update(status="running", attempt=1)
    assert jobs.request_cancel("finetune", job.pk) == "requested"  # its worker stops its child, then records it
    assert jobs.request_cancel("finetune", job.pk) == "already"
    assert jobs.cancel_requested("finetune", job.pk, 1) is True
    assert jobs.cancel_requested("finetune", job.pk, 2) is None  # not this worker's any more
    assert jobs.finish("finetune", job.pk, 1, jobs.JobStatus.CANCELLED)
    assert jobs.request_cancel("finetune", job.pk) == ""


def test_the_reaper_fails_cancels_or_leaves_rows_by_their_heartbeat(curator, settings):
    settings.MEDPORTAL_JOB_HEARTBEAT_TIMEOUT_S = 60
    now = timezone.now()
    old = now - timedelta(hours=3)  # older than the import kind's queue timeout + 60 s
    silent = batch(curator, status="running", attempt=1, heartbeat_at=old, worker="gone:1")
    asked = batch(curator, status="running", attempt=1, heartbeat_at=old, cancel_requested_at=old)
    alive = batch(curator, status="running", attempt=1, heartbeat_at=now)
    queued = batch(curator, status="queued")
    assert jobs.reap_silent(now=now) == {"import": [silent.pk, asked.pk]}
    assert jobs.reap_silent(now=now) == {}
    rows = {r.pk: r for r in ImportBatch.objects.all()}
    assert rows[silent.pk].status == "failed" and "The worker gone:1 stopped sending heartbeats" in rows[silent.pk].error
    assert "import the file again" in rows[silent.pk].error
    assert rows[asked.pk].status == "cancelled"
    assert (rows[alive.pk].status, rows[queued.pk].status) == ("running", "queued")


def test_a_kind_is_registered_once(settings):
    kind = jobs.kind_of("import")
    assert jobs.register(kind) is kind  # the same definition again: fine
    with pytest.raises(ValueError, match="already registered"):
        jobs.register(jobs.JobKind(name="import", model="curation.ImportBatch", task="elsewhere.task"))
    with pytest.raises(LookupError, match="No job kind"):
        jobs.kind_of("nope")
