"""The live job socket (ws/training/jobs/<id>/) over the real ASGI application.

Each test drives ``medportal.asgi.application`` (origin check, session auth, routing) with a
``WebsocketCommunicator`` carrying a real session cookie. The scenarios run under
``async_to_sync``, so the consumer's ``database_sync_to_async`` calls run in the test's own
thread and see its rows.
"""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from training.consumers import FineTuneJobConsumer
from training.live import job_group, notify_job_changed
from training.models import FineTuneJob

from .ui_factories import add_points, job_update, make_base_model, make_job, make_version

# on_commit runs at once outside a transaction: notify_job_changed sends immediately.
pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 5


@pytest.fixture
def job(admin_user, curator, make_pair):
    job = make_job(admin_user, make_version(curator, make_pair), make_base_model(admin_user))
    job_update(job, status=FineTuneJob.Status.RUNNING, attempt=1, step=2, total_steps=10, progress=0.2, log_tail="started")
    add_points(job, train=[(1, 3.0, 1e-4, 500.0), (2, 2.8, 2e-4, 510.0)])
    return job


def _headers(user=None) -> list[tuple[bytes, bytes]]:
    # A browser always sends Host; the origin check compares the Origin with it (scheme, host, port).
    headers = [(b"origin", b"http://testserver"), (b"host", b"testserver")]
    if user is not None:
        client = Client()
        client.force_login(user)
        cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
        headers.append((b"cookie", cookie.encode()))
    return headers


def _communicator(job_id: int, headers) -> WebsocketCommunicator:
    from medportal.asgi import application

    return WebsocketCommunicator(application, f"/ws/training/jobs/{job_id}/", headers=headers)


async def _refused(job_id: int, headers) -> tuple[dict, int]:
    ws = _communicator(job_id, headers)
    connected, _ = await ws.connect(timeout=TIMEOUT)
    assert connected  # accepted first, so that the browser sees the close code
    frame = await ws.receive_json_from(timeout=TIMEOUT)
    closed = await ws.receive_output(timeout=TIMEOUT)
    assert closed["type"] == "websocket.close"
    await ws.wait()
    return frame, closed["code"]


def test_anonymous_users_are_closed_with_4401(job):
    frame, code = async_to_sync(_refused)(job.pk, _headers())
    assert code == 4401 and frame == {"type": "error", "code": "not_authenticated", "message": "Log in to watch this job."}


def test_users_without_a_role_are_closed_with_4403(job, outsider):
    frame, code = async_to_sync(_refused)(job.pk, _headers(outsider))
    assert code == 4403 and frame["code"] == "forbidden"


def test_an_unknown_job_is_closed_with_4404(clinician):
    frame, code = async_to_sync(_refused)(987654, _headers(clinician))
    assert code == 4404 and frame["code"] == "not_found"


def test_a_foreign_origin_is_refused_before_anything_else(job, clinician):
    headers = [(b"origin", b"http://evil.example"), *_headers(clinician)[1:]]

    async def scenario():
        from medportal.asgi import application

        ws = WebsocketCommunicator(application, f"/ws/training/jobs/{job.pk}/", headers=headers)
        connected, _ = await ws.connect(timeout=TIMEOUT)
        return connected

    assert async_to_sync(scenario)() is False


def test_every_role_gets_the_whole_snapshot_on_connect(job, clinician, curator, admin_user):
    async def scenario(headers):
        ws = _communicator(job.pk, headers)
        assert (await ws.connect(timeout=TIMEOUT))[0]
        frame = await ws.receive_json_from(timeout=TIMEOUT)
        await ws.disconnect()
        return frame

    for user in (clinician, curator, admin_user):
        frame = async_to_sync(scenario)(_headers(user))
        assert frame["type"] == "snapshot" and frame["id"] == job.pk and frame["status"] == "running"
        assert frame["train"] == [[1, 3.0, 1e-4, 500.0], [2, 2.8, 2e-4, 510.0]] and frame["eval"] == []
        assert frame["version"] == job.version and frame["progress"] == 0.2 and frame["can_cancel"] is True


def test_a_notification_pushes_only_the_new_points(job, clinician, monkeypatch):
    monkeypatch.setattr(FineTuneJobConsumer, "poll_interval", 3600)  # only the group message can deliver

    headers = _headers(clinician)

    async def scenario():
        ws = _communicator(job.pk, headers)
        assert (await ws.connect(timeout=TIMEOUT))[0]
        first = await ws.receive_json_from(timeout=TIMEOUT)

        def progress():
            job_update(job, step=4, progress=0.4, train_loss_last=2.5, eval_loss=2.6)
            add_points(job, train=[(3, 2.7, 3e-4, 520.0), (4, 2.5, 3e-4, 530.0)], evals=[(4, 2.6)])
            notify_job_changed(job.pk)

        await database_sync_to_async(progress)()
        update = await ws.receive_json_from(timeout=TIMEOUT)
        assert await ws.receive_nothing(timeout=0.3)
        await ws.disconnect()
        return first, update

    first, update = async_to_sync(scenario)()
    assert update["type"] == "update" and update["version"] == first["version"] + 1
    assert update["step"] == 4 and update["progress"] == 0.4 and update["eval_loss"] == 2.6
    assert update["train"] == [[3, 2.7, 3e-4, 520.0], [4, 2.5, 3e-4, 530.0]] and update["eval"] == [[4, 2.6]]


def test_the_version_poll_delivers_changes_nobody_announced(job, clinician, monkeypatch):
    # The embedded default: the worker is another process and the in-memory layer cannot
    # carry its messages, so the socket polls the row's version while the job is active.
    monkeypatch.setattr(FineTuneJobConsumer, "poll_interval", 0.1)

    headers = _headers(clinician)

    async def scenario():
        ws = _communicator(job.pk, headers)
        assert (await ws.connect(timeout=TIMEOUT))[0]
        await ws.receive_json_from(timeout=TIMEOUT)
        await database_sync_to_async(job_update)(job, step=5, progress=0.5)
        update = await ws.receive_json_from(timeout=TIMEOUT)
        # Finished: the final frame comes, then the poll stops.
        await database_sync_to_async(job_update)(job, status=FineTuneJob.Status.SUCCEEDED, progress=1.0, adapter_path="/x/adapter")
        final = await ws.receive_json_from(timeout=TIMEOUT)
        await database_sync_to_async(job_update)(job, log_tail="changed after the end")
        quiet = await ws.receive_nothing(timeout=0.5)
        await ws.disconnect()
        return update, final, quiet

    update, final, quiet = async_to_sync(scenario)()
    assert update["type"] == "update" and update["step"] == 5 and update["train"] == []
    assert final["status"] == "succeeded" and final["progress"] == 1.0 and final["can_cancel"] is False
    assert quiet


def test_a_change_seen_by_the_poll_and_then_announced_is_sent_once(job, clinician, monkeypatch):
    # With Redis both paths work: the worker's message may come after the poll saw the change.
    monkeypatch.setattr(FineTuneJobConsumer, "poll_interval", 0.05)
    headers = _headers(clinician)

    async def scenario():
        ws = _communicator(job.pk, headers)
        assert (await ws.connect(timeout=TIMEOUT))[0]
        await ws.receive_json_from(timeout=TIMEOUT)
        await database_sync_to_async(job_update)(job, step=6)
        frame = await ws.receive_json_from(timeout=TIMEOUT)
        await database_sync_to_async(notify_job_changed)(job.pk)
        quiet = await ws.receive_nothing(timeout=0.4)
        await ws.disconnect()
        return frame, quiet

    frame, quiet = async_to_sync(scenario)()
    assert frame["step"] == 6 and quiet


def test_a_retried_job_gets_a_full_snapshot_again(job, clinician, monkeypatch):
    from training.models import FineTuneMetric

    monkeypatch.setattr(FineTuneJobConsumer, "poll_interval", 0.1)

    headers = _headers(clinician)

    async def scenario():
        ws = _communicator(job.pk, headers)
        assert (await ws.connect(timeout=TIMEOUT))[0]
        await ws.receive_json_from(timeout=TIMEOUT)

        def restart():
            FineTuneMetric.objects.filter(job=job).delete()
            add_points(job, train=[(1, 3.1, 1e-4, 480.0)])
            job_update(job, attempt=2, step=1)

        await database_sync_to_async(restart)()
        frame = await ws.receive_json_from(timeout=TIMEOUT)
        await ws.disconnect()
        return frame

    frame = async_to_sync(scenario)()
    assert frame["type"] == "snapshot" and frame["attempt"] == 2 and frame["train"] == [[1, 3.1, 1e-4, 480.0]]


def test_a_finished_job_is_not_polled_but_still_hears_notifications(job, clinician, monkeypatch):
    monkeypatch.setattr(FineTuneJobConsumer, "poll_interval", 0.05)
    job_update(job, status=FineTuneJob.Status.FAILED, error="boom")

    headers = _headers(clinician)

    async def scenario():
        ws = _communicator(job.pk, headers)
        assert (await ws.connect(timeout=TIMEOUT))[0]
        first = await ws.receive_json_from(timeout=TIMEOUT)
        await database_sync_to_async(job_update)(job, log_tail="silent change")
        quiet = await ws.receive_nothing(timeout=0.4)

        def retry():  # what finetune_job_retry does to the row, then its ping
            job_update(job, status=FineTuneJob.Status.QUEUED, error="")
            notify_job_changed(job.pk)

        await database_sync_to_async(retry)()
        queued = await ws.receive_json_from(timeout=TIMEOUT)
        # Active again: the poll is back.
        await database_sync_to_async(job_update)(job, status=FineTuneJob.Status.RUNNING, attempt=2)
        running = await ws.receive_json_from(timeout=TIMEOUT)
        await ws.disconnect()
        return first, quiet, queued, running

    first, quiet, queued, running = async_to_sync(scenario)()
    assert first["status"] == "failed" and first["can_retry"] is True and quiet
    assert queued["status"] == "queued" and queued["log_tail"] == "silent change"
    assert running["status"] == "running" and running["type"] == "snapshot"  # a new attempt


def test_ping_refresh_and_bad_frames(job, clinician):
    headers = _headers(clinician)

    async def scenario():
        ws = _communicator(job.pk, headers)
        assert (await ws.connect(timeout=TIMEOUT))[0]
        await ws.receive_json_from(timeout=TIMEOUT)
        await ws.send_json_to({"type": "ping"})
        pong = await ws.receive_json_from(timeout=TIMEOUT)
        await ws.send_to(text_data="not json")
        bad = await ws.receive_json_from(timeout=TIMEOUT)
        await ws.send_json_to({"type": "shout"})
        unknown = await ws.receive_json_from(timeout=TIMEOUT)
        await ws.send_json_to({"type": "refresh"})
        again = await ws.receive_json_from(timeout=TIMEOUT)
        await ws.disconnect()
        return pong, bad, unknown, again

    pong, bad, unknown, again = async_to_sync(scenario)()
    assert pong == {"type": "pong"}
    assert bad["type"] == "error" and bad["code"] == "bad_frame"
    assert unknown["type"] == "error" and unknown["code"] == "unknown_frame"
    assert again["type"] == "snapshot" and len(again["train"]) == 2


def test_notify_without_watchers_or_outside_a_loop_never_raises(job):
    notify_job_changed(job.pk)
    notify_job_changed(10**9)
    assert job_group(12) == "finetune_job_12"


def test_refusals_and_frame_errors_speak_the_language_of_the_page(job, clinician, outsider, monkeypatch):
    """Every message of the job socket is translated (Accept-Language zh), also a refusal sent
    by the poll after the job was deleted."""
    monkeypatch.setattr(FineTuneJobConsumer, "poll_interval", 0.05)
    zh = (b"accept-language", b"zh-CN,zh;q=0.9")
    as_clinician = [*_headers(clinician), zh]

    async def deleted_while_watched():
        ws = _communicator(job.pk, as_clinician)
        assert (await ws.connect(timeout=TIMEOUT))[0]
        await ws.receive_json_from(timeout=TIMEOUT)  # snapshot
        await ws.send_json_to({"type": "dance"})
        unknown = await ws.receive_json_from(timeout=TIMEOUT)
        await database_sync_to_async(FineTuneJob.objects.filter(pk=job.pk).delete)()
        gone = await ws.receive_json_from(timeout=TIMEOUT)
        await ws.receive_output(timeout=TIMEOUT)  # the close
        return unknown, gone

    anonymous, _ = async_to_sync(_refused)(job.pk, [*_headers(), zh])
    no_role, _ = async_to_sync(_refused)(job.pk, [*_headers(outsider), zh])
    missing, _ = async_to_sync(_refused)(987654, as_clinician)
    unknown, gone = async_to_sync(deleted_while_watched)()
    assert anonymous["message"] == "请先登录再查看此任务。"
    assert no_role["message"] == "您的角色无权执行此操作。"
    assert missing["message"] == "没有这个任务。"
    assert unknown["code"] == "unknown_frame" and unknown["message"] == "只接受 refresh 或 ping 帧。"
    assert gone["code"] == "not_found" and gone["message"] == "任务已被删除。"
