"""The chat socket over the real ASGI application, with the real demo model."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from chat.models import ChatMessage
from chat.services import chat_session_create

pytestmark = pytest.mark.django_db(transaction=True)
TIMEOUT = 60
FAST = {"max_new_tokens": 12, "temperature": 0.0, "repetition_penalty": 1.0}


def headers(user=None):
    out = [(b"origin", b"http://testserver"), (b"host", b"testserver")]
    if user is not None:
        client = Client()
        client.force_login(user)
        out.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode()))
    return out


def communicator(path: str, hdrs) -> WebsocketCommunicator:
    """``hdrs`` from ``headers(user)``, built outside the event loop (logging in touches the DB)."""
    from medportal.asgi import application

    return WebsocketCommunicator(application, path, headers=hdrs)


async def frames_until(ws, kind: str, limit: int = 2000) -> list[dict]:
    out = []
    for _ in range(limit):
        frame = await ws.receive_json_from(timeout=TIMEOUT)
        out.append(frame)
        if frame["type"] == kind:
            return out
    raise AssertionError(f"no {kind} frame in {out[-5:]}")


@pytest.fixture
def session(clinician, base_model):
    return chat_session_create(user=clinician, base_model=base_model, params=FAST)


def test_an_answer_streams_token_by_token_and_is_stored_with_its_timings(session, clinician):
    hdrs = headers(clinician)

    async def scenario():
        ws = communicator(f"/ws/chat/{session.pk}/", hdrs)
        assert (await ws.connect(timeout=TIMEOUT))[0]
        ready = await ws.receive_json_from(timeout=TIMEOUT)
        assert ready == {"type": "ready", "session": session.pk, "model": "demo"}
        await ws.send_json_to({"type": "message", "content": "头痛三天了怎么办？"})
        frames = await frames_until(ws, "done")
        await ws.disconnect()
        return frames

    frames = async_to_sync(scenario)()
    kinds = [f["type"] for f in frames]
    assert kinds[0] == "user_message" and kinds[1] == "start" and kinds[-1] == "done"
    tokens = [f["text"] for f in frames if f["type"] == "token"]
    done = frames[-1]
    assert len(tokens) >= 2 and "".join(tokens) == done["content"]
    assert done["ttft_ms"] > 0 and done["completion_tokens"] <= 12 and done["model"] == "demo"
    answer = ChatMessage.objects.get(pk=done["message_id"])
    assert answer.role == "assistant" and answer.content == done["content"] and answer.base_model.name == "demo"
    assert answer.stats["completion_tokens"] == done["completion_tokens"] and answer.params["max_new_tokens"] == 12
    question = ChatMessage.objects.get(pk=frames[0]["id"])
    assert question.content == "头痛三天了怎么办？" and question.session.title.startswith("头痛")


def test_stop_ends_the_answer_early_and_keeps_what_was_said(session, clinician):
    hdrs = headers(clinician)

    async def scenario():
        ws = communicator(f"/ws/chat/{session.pk}/", hdrs)
        await ws.connect(timeout=TIMEOUT)
        await ws.receive_json_from(timeout=TIMEOUT)
        await ws.send_json_to({"type": "message", "content": "高血压吃什么药？", "params": {"max_new_tokens": 400}})
        await frames_until(ws, "token")
        await ws.send_json_to({"type": "stop"})
        frames = await frames_until(ws, "done")
        await ws.disconnect()
        return frames

    done = async_to_sync(scenario)()[-1]
    assert done["finish_reason"] == "cancelled" and done["completion_tokens"] < 400
    assert ChatMessage.objects.get(pk=done["message_id"]).stats["finish_reason"] == "cancelled"


def test_user_errors_come_back_as_frames_and_the_socket_stays_open(session, clinician):
    hdrs = headers(clinician)

    async def scenario():
        ws = communicator(f"/ws/chat/{session.pk}/", hdrs)
        await ws.connect(timeout=TIMEOUT)
        await ws.receive_json_from(timeout=TIMEOUT)
        out = []
        for frame in ({"type": "message", "content": "   "}, {"type": "message", "content": "hi", "params": {"temperature": 99}},
                      {"type": "dance"}, {"type": "regenerate"}):
            await ws.send_json_to(frame)
            out.append(await ws.receive_json_from(timeout=TIMEOUT))
        await ws.send_to(text_data="not json")
        out.append(await ws.receive_json_from(timeout=TIMEOUT))
        await ws.send_json_to({"type": "message", "content": "还在吗？"})  # still usable
        out.append((await frames_until(ws, "done"))[-1])
        await ws.disconnect()
        return out

    empty, bad_params, unknown, regen, not_json, done = async_to_sync(scenario)()
    assert empty["type"] == "error" and "Type a message" in empty["message"]
    assert bad_params["code"] == "invalid_params" and "temperature" in bad_params["details"]
    assert unknown["code"] == "bad_frame" and regen["code"] == "invalid_transition" and not_json["code"] == "bad_frame"
    assert done["type"] == "done"


def test_regenerate_replaces_the_last_answer(session, clinician):
    hdrs = headers(clinician)

    async def scenario():
        ws = communicator(f"/ws/chat/{session.pk}/", hdrs)
        await ws.connect(timeout=TIMEOUT)
        await ws.receive_json_from(timeout=TIMEOUT)
        await ws.send_json_to({"type": "message", "content": "发烧怎么办？"})
        first = (await frames_until(ws, "done"))[-1]
        await ws.send_json_to({"type": "regenerate", "params": {"temperature": 1.0, "seed": 4}})
        second = (await frames_until(ws, "done"))[-1]
        await ws.disconnect()
        return first, second

    first, second = async_to_sync(scenario)()
    assert ChatMessage.objects.get(pk=first["message_id"]).superseded is True
    current = list(ChatMessage.objects.filter(session=session, superseded=False).values_list("role", flat=True))
    assert current == ["user", "assistant"] and second["message_id"] != first["message_id"]


def test_an_adapter_answers_through_its_own_model(clinician, base_model, adapter_job):
    session = chat_session_create(user=clinician, base_model=base_model, job=adapter_job, params=FAST)

    hdrs = headers(clinician)

    async def scenario():
        ws = communicator(f"/ws/chat/{session.pk}/", hdrs)
        await ws.connect(timeout=TIMEOUT)
        ready = await ws.receive_json_from(timeout=TIMEOUT)
        await ws.send_json_to({"type": "message", "content": "头痛三天了怎么办？"})
        done = (await frames_until(ws, "done"))[-1]
        await ws.disconnect()
        return ready, done

    ready, done = async_to_sync(scenario)()
    assert ready["model"] == f"demo + #{adapter_job.pk}"
    assert ChatMessage.objects.get(pk=done["message_id"]).job_id == adapter_job.pk


@pytest.mark.parametrize("who, code", [("anonymous", 4401), ("outsider", 4403), ("curator", 4403), ("clinician2", 4404)])
def test_the_socket_refuses_anonymous_wrong_role_and_other_peoples_chats(request, session, who, code):
    user = None if who == "anonymous" else request.getfixturevalue(who)

    hdrs = headers(user)

    async def scenario():
        ws = communicator(f"/ws/chat/{session.pk}/", hdrs)
        await ws.connect(timeout=TIMEOUT)
        frame = await ws.receive_json_from(timeout=TIMEOUT)
        closed = await ws.receive_output(timeout=TIMEOUT)
        return frame, closed

    frame, closed = async_to_sync(scenario)()
    assert frame["type"] == "error" and closed == {"type": "websocket.close", "code": code}
