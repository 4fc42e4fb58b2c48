"""Chat never loses anything: interrupted answers are kept, failures leave a usable chat,
broken chats repair themselves, one generation per chat at a time (across sockets and
processes), and unreadable frames get an error frame instead of closing the socket.

Everything runs over the real ASGI application with the real demo model.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.utils import timezone

from chat.models import ChatMessage, ChatSession
from chat.services import chat_assistant_message, chat_claim, chat_history, chat_session_create, chat_user_message
from tests.chat.test_chat_consumer import FAST, TIMEOUT, communicator, frames_until
from tests.chat.test_chat_consumer import headers as _headers

pytestmark = pytest.mark.django_db(transaction=True)
LONG = {"max_new_tokens": 400, "temperature": 1.0, "seed": 1}  # sampled: a long answer from the small model


def headers(user):
    """A browser's headers: the session cookie, and an Origin that matches the Host."""
    return [*_headers(user), (b"host", b"testserver")]


@pytest.fixture
def session(clinician, base_model):
    return chat_session_create(user=clinician, base_model=base_model, params=FAST)


def current(session) -> list[tuple[str, str]]:
    return list(session.messages.filter(superseded=False).order_by("id").values_list("role", "status"))


def claim_free(session) -> bool:
    return ChatSession.objects.get(pk=session.pk).busy_token == ""


async def connected(path: str, hdrs):
    ws = communicator(path, hdrs)
    assert (await ws.connect(timeout=TIMEOUT))[0]
    assert (await ws.receive_json_from(timeout=TIMEOUT))["type"] == "ready"
    return ws


async def wait_for(predicate, timeout: float = 60.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await database_sync_to_async(predicate)()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out waiting for the database")
        await asyncio.sleep(0.1)


# --------------------------------------------------------------------------- 1. interrupted / failed / repaired


def test_a_closed_socket_keeps_the_partial_answer_marked_interrupted_and_the_chat_goes_on(session, clinician):
    hdrs = headers(clinician)

    async def scenario():
        ws = await connected(f"/ws/chat/{session.pk}/", hdrs)
        await ws.send_json_to({"type": "message", "content": "高血压吃什么药？", "params": LONG})
        frames = await frames_until(ws, "token")
        frames.append(await ws.receive_json_from(timeout=TIMEOUT))
        await ws.disconnect()  # the browser tab closes mid-answer
        answer = await wait_for(lambda: ChatMessage.objects.filter(session=session, role="assistant").first())
        await wait_for(lambda: claim_free(session))
        said = "".join(f["text"] for f in frames if f["type"] == "token")
        ws = await connected(f"/ws/chat/{session.pk}/", hdrs)  # reopened: the chat goes on
        await ws.send_json_to({"type": "message", "content": "还需要注意什么？"})
        done = (await frames_until(ws, "done"))[-1]
        await ws.disconnect()
        return said, answer, done

    said, answer, done = async_to_sync(scenario)()
    assert answer.status == ChatMessage.Status.INTERRUPTED and answer.content.startswith(said) and said, (answer.stats, answer.content)
    assert answer.stats["completion_tokens"] < 400
    assert done["status"] == "complete"
    assert current(session) == [("user", "complete"), ("assistant", "interrupted"), ("user", "complete"), ("assistant", "complete")]
    assert claim_free(session)


def test_a_failed_generation_is_stored_as_failed_and_the_next_question_still_works(clinician, base_model, tmp_path):
    from training.models import BaseModel

    broken = BaseModel.objects.create(name="gone", path=str(tmp_path), has_chat_template=True, registered_by=base_model.registered_by)
    session = chat_session_create(user=clinician, base_model=broken, params=FAST)
    hdrs = headers(clinician)

    async def scenario():
        ws = await connected(f"/ws/chat/{session.pk}/", hdrs)
        await ws.send_json_to({"type": "message", "content": "头痛怎么办？"})
        failed = (await frames_until(ws, "error"))[-1]
        await database_sync_to_async(ChatSession.objects.filter(pk=session.pk).update)(base_model=base_model)  # fixed by an admin
        await ws.send_json_to({"type": "message", "content": "发烧怎么办？"})
        done = (await frames_until(ws, "done"))[-1]
        await ws.disconnect()
        return failed, done

    failed, done = async_to_sync(scenario)()
    assert failed["code"] == "inference" and "config.json" in failed["message"]
    stored = ChatMessage.objects.get(pk=failed["message_id"])
    assert stored.status == ChatMessage.Status.FAILED and "config.json" in stored.error and stored.content == ""
    assert done["type"] == "done" and done["content"]
    assert current(session) == [("user", "complete"), ("assistant", "failed"), ("user", "complete"), ("assistant", "complete")]
    assert claim_free(session)


def test_a_chat_broken_before_repairs_itself_on_the_next_message(session, clinician):
    # As older versions left it: an unanswered question, then a second one.
    chat_user_message(session=session, user=clinician, content="第一个问题")
    chat_assistant_message(session=session, content="第一个回答", params={}, stats={})
    chat_user_message(session=session, user=clinician, content="没有回答的问题")
    chat_user_message(session=session, user=clinician, content="又一个没有回答的问题")
    hdrs = headers(clinician)

    async def scenario():
        ws = await connected(f"/ws/chat/{session.pk}/", hdrs)
        await ws.send_json_to({"type": "message", "content": "现在呢？"})
        frames = await frames_until(ws, "done")
        await ws.disconnect()
        return frames

    done = async_to_sync(scenario)()[-1]
    assert done["type"] == "done" and done["content"]
    history = chat_history(session)
    assert [(m["role"], m["content"]) for m in history[1:]] == [
        ("user", "第一个问题"), ("assistant", "第一个回答"), ("user", "现在呢？"), ("assistant", done["content"])
    ]


# --------------------------------------------------------------------------- 4. one generation per chat


def test_fifty_sockets_sending_at_once_get_one_answer_and_forty_nine_busy_frames(session, clinician):
    hdrs = headers(clinician)

    async def scenario():
        sockets = [await connected(f"/ws/chat/{session.pk}/", hdrs) for _ in range(50)]
        await asyncio.gather(*(ws.send_json_to({"type": "message", "content": f"问题{i}"}) for i, ws in enumerate(sockets)))
        first = await asyncio.gather(*(ws.receive_json_from(timeout=TIMEOUT) for ws in sockets))
        winner = next(ws for ws, f in zip(sockets, first, strict=True) if f["type"] == "user_message")
        done = (await frames_until(winner, "done"))[-1]
        loser = next(ws for ws, f in zip(sockets, first, strict=True) if f["type"] == "error")
        await loser.send_json_to({"type": "message", "content": "现在轮到我了"})  # its socket stayed open
        later = (await frames_until(loser, "done"))[-1]
        for ws in sockets:
            await ws.disconnect()
        return first, done, later

    first, done, later = async_to_sync(scenario)()
    kinds = sorted(f["type"] if f["type"] != "error" else f["code"] for f in first)
    assert kinds == ["busy"] * 49 + ["user_message"]
    assert done["status"] == "complete" and later["status"] == "complete"
    assert current(session) == [("user", "complete"), ("assistant", "complete")] * 2
    assert claim_free(session)


def test_a_chat_claimed_by_another_process_is_busy_until_released_or_stale(session, clinician):
    chat_claim(session=session)  # as a generation in another server process would
    hdrs = headers(clinician)

    async def scenario():
        ws = await connected(f"/ws/chat/{session.pk}/", hdrs)
        await ws.send_json_to({"type": "message", "content": "有人在吗？"})
        busy = await ws.receive_json_from(timeout=TIMEOUT)
        stale = timezone.now() - timedelta(minutes=5)  # that process died: its claim went stale
        await database_sync_to_async(ChatSession.objects.filter(pk=session.pk).update)(busy_since=stale)
        await ws.send_json_to({"type": "message", "content": "有人在吗？"})
        done = (await frames_until(ws, "done"))[-1]
        await ws.disconnect()
        return busy, done

    busy, done = async_to_sync(scenario)()
    assert busy["type"] == "error" and busy["code"] == "busy" and "another" in busy["message"]
    assert done["type"] == "done"
    assert current(session) == [("user", "complete"), ("assistant", "complete")]  # nothing stored for the busy one
    assert claim_free(session)


def test_stop_releases_the_chat(session, clinician):
    hdrs = headers(clinician)

    async def scenario():
        ws = await connected(f"/ws/chat/{session.pk}/", hdrs)
        await ws.send_json_to({"type": "message", "content": "高血压吃什么药？", "params": LONG})
        await frames_until(ws, "token")
        await ws.send_json_to({"type": "stop"})
        done = (await frames_until(ws, "done"))[-1]
        free = await database_sync_to_async(claim_free)(session)
        await ws.disconnect()
        return done, free

    done, free = async_to_sync(scenario)()
    assert done["finish_reason"] == "cancelled" and done["status"] == "complete" and free


# --------------------------------------------------------------------------- 2. edit and resend, delete, retry


def test_edit_and_resend_the_last_question(session, clinician):
    hdrs = headers(clinician)

    async def scenario():
        ws = await connected(f"/ws/chat/{session.pk}/", hdrs)
        await ws.send_json_to({"type": "message", "content": "头疼怎么般？"})
        frames = await frames_until(ws, "done")
        asked = frames[0]["id"]
        await ws.send_json_to({"type": "edit", "message_id": asked, "content": "头疼怎么办？"})
        edited = await frames_until(ws, "done")
        await ws.send_json_to({"type": "edit", "message_id": asked, "content": "再改一次"})  # no longer the last question
        refused = await ws.receive_json_from(timeout=TIMEOUT)
        await ws.disconnect()
        return asked, edited, refused

    asked, edited, refused = async_to_sync(scenario)()
    assert edited[0]["type"] == "user_message" and edited[0]["replaces"] == asked and edited[0]["content"] == "头疼怎么办？"
    assert refused["code"] == "invalid_transition"
    questions = list(session.messages.filter(role="user").order_by("id").values_list("content", "superseded"))
    assert questions == [("头疼怎么般？", True), ("头疼怎么办？", False)]
    assert [m["content"] for m in chat_history(session)[1:]] == ["头疼怎么办？", edited[-1]["content"]]


def test_delete_a_question_with_its_answers_or_an_answer_alone_then_retry(session, clinician, clinician2, base_model):
    chat_user_message(session=session, user=clinician, content="问题一")
    chat_assistant_message(session=session, content="回答一", params={}, stats={})
    q2 = chat_user_message(session=session, user=clinician, content="问题二")
    a2 = chat_assistant_message(session=session, content="回答二", params={}, stats={})
    other = chat_session_create(user=clinician2, base_model=base_model)
    foreign = chat_user_message(session=other, user=clinician2, content="别人的问题")
    hdrs = headers(clinician)

    async def scenario():
        ws = await connected(f"/ws/chat/{session.pk}/", hdrs)
        await ws.send_json_to({"type": "delete", "message_id": foreign.pk})
        refused = await ws.receive_json_from(timeout=TIMEOUT)
        await ws.send_json_to({"type": "delete", "message_id": a2.pk})
        answer_gone = await ws.receive_json_from(timeout=TIMEOUT)
        await ws.send_json_to({"type": "retry"})  # the question left without an answer is answered again
        retried = (await frames_until(ws, "done"))[-1]
        await ws.send_json_to({"type": "delete", "message_id": q2.pk})
        exchange_gone = await ws.receive_json_from(timeout=TIMEOUT)
        await ws.disconnect()
        return refused, answer_gone, retried, exchange_gone

    refused, answer_gone, retried, exchange_gone = async_to_sync(scenario)()
    assert refused["type"] == "error" and ChatMessage.objects.filter(pk=foreign.pk).exists()
    assert answer_gone == {"type": "deleted", "ids": [a2.pk]}
    assert exchange_gone == {"type": "deleted", "ids": [q2.pk, retried["message_id"]]}
    assert list(session.messages.order_by("id").values_list("content", flat=True)) == ["问题一", "回答一"]


def test_retry_replaces_a_failed_answer(session, clinician):
    chat_user_message(session=session, user=clinician, content="问题")
    failed = chat_assistant_message(session=session, content="", params={}, stats={}, status=ChatMessage.Status.FAILED, error="boom")
    hdrs = headers(clinician)

    async def scenario():
        ws = await connected(f"/ws/chat/{session.pk}/", hdrs)
        await ws.send_json_to({"type": "regenerate"})
        done = (await frames_until(ws, "done"))[-1]
        await ws.disconnect()
        return done

    done = async_to_sync(scenario)()
    failed.refresh_from_db()
    assert failed.superseded and done["status"] == "complete"
    assert current(session) == [("user", "complete"), ("assistant", "complete")]


# --------------------------------------------------------------------------- 3. titled at once


def test_the_first_question_titles_the_chat_in_the_frame(session, clinician):
    hdrs = headers(clinician)

    async def scenario():
        ws = await connected(f"/ws/chat/{session.pk}/", hdrs)
        await ws.send_json_to({"type": "message", "content": "孩子发烧39度怎么办？"})
        frames = await frames_until(ws, "done")
        await ws.disconnect()
        return frames[0]

    assert async_to_sync(scenario)()["title"] == "孩子发烧39度怎么办？"


# --------------------------------------------------------------------------- 5. unreadable frames


DEEP = "[" * 100_000 + "]" * 100_000


def test_binary_and_deeply_nested_frames_get_an_error_frame_and_the_chat_socket_stays_open(session, clinician):
    hdrs = headers(clinician)

    async def scenario():
        ws = await connected(f"/ws/chat/{session.pk}/", hdrs)
        out = []
        for send in ({"text_data": DEEP}, {"bytes_data": b"\x00\x01binary"}, {"text_data": '{"type": "message", "content": ' + DEEP + "}"}):
            await ws.send_to(**send)
            out.append(await ws.receive_json_from(timeout=TIMEOUT))
        await ws.send_json_to({"type": "message", "content": "还在吗？"})
        out.append((await frames_until(ws, "done"))[-1])
        await ws.disconnect()
        return out

    deep, binary, deep_inside, done = async_to_sync(scenario)()
    assert deep["type"] == "error" and deep["code"] == "bad_frame" and "nested too deeply" in deep["message"]
    assert binary["type"] == "error" and "Binary frames" in binary["message"]
    assert deep_inside["code"] == "bad_frame" and done["type"] == "done"


def test_binary_and_deeply_nested_frames_get_an_error_frame_on_the_job_socket(clinician, admin_user, curator, make_pair):
    from channels.testing import WebsocketCommunicator

    from medportal.asgi import application
    from tests.training.ui_factories import make_base_model, make_job, make_version

    job = make_job(admin_user, make_version(curator, make_pair), make_base_model(admin_user))
    hdrs = headers(clinician)

    async def scenario():
        ws = WebsocketCommunicator(application, f"/ws/training/jobs/{job.pk}/", headers=hdrs)
        assert (await ws.connect(timeout=TIMEOUT))[0]
        await ws.receive_json_from(timeout=TIMEOUT)  # snapshot
        out = []
        for send in ({"text_data": DEEP}, {"bytes_data": b"\x00binary"}):
            await ws.send_to(**send)
            out.append(await ws.receive_json_from(timeout=TIMEOUT))
        await ws.send_json_to({"type": "ping"})
        out.append(await ws.receive_json_from(timeout=TIMEOUT))
        await ws.disconnect()
        return out

    deep, binary, pong = async_to_sync(scenario)()
    assert deep["type"] == "error" and deep["code"] == "bad_frame" and "nested too deeply" in deep["message"]
    assert binary["type"] == "error" and binary["code"] == "bad_frame"
    assert pong == {"type": "pong"}


def test_socket_errors_speak_the_language_of_the_page(session, clinician):
    chat_claim(session=session)
    hdrs = [*headers(clinician), (b"accept-language", b"zh-CN,zh;q=0.9")]

    async def scenario():
        ws = await connected(f"/ws/chat/{session.pk}/", hdrs)
        await ws.send_json_to({"type": "message", "content": "有人在吗？"})
        busy = await ws.receive_json_from(timeout=TIMEOUT)
        await ws.send_to(bytes_data=b"\x00")
        binary = await ws.receive_json_from(timeout=TIMEOUT)
        await ws.disconnect()
        return busy, binary

    busy, binary = async_to_sync(scenario)()
    assert busy["code"] == "busy" and "此对话正在回答另一个问题" in busy["message"]
    assert binary["message"] == "不接受二进制帧：请发送 JSON 文本帧。"


def test_refusals_and_frame_errors_of_the_chat_socket_speak_the_language_of_the_page(session, clinician, curator):
    zh = (b"accept-language", b"zh-CN,zh;q=0.9")
    anonymous = [(b"origin", b"http://testserver"), (b"host", b"testserver"), zh]
    as_curator = [*headers(curator), zh]
    as_clinician = [*headers(clinician), zh]

    async def refused(path, hdrs):
        ws = communicator(path, hdrs)
        await ws.connect(timeout=TIMEOUT)
        frame = await ws.receive_json_from(timeout=TIMEOUT)
        await ws.receive_output(timeout=TIMEOUT)  # the close
        return frame

    async def scenario():
        out = {
            "anonymous": await refused(f"/ws/chat/{session.pk}/", anonymous),
            "curator": await refused(f"/ws/chat/{session.pk}/", as_curator),
            "missing": await refused("/ws/chat/999999/", as_clinician),
        }
        ws = await connected(f"/ws/chat/{session.pk}/", as_clinician)
        await ws.send_json_to(["not", "an", "object"])
        out["not_object"] = await ws.receive_json_from(timeout=TIMEOUT)
        await ws.send_json_to({"type": "dance"})
        out["unknown"] = await ws.receive_json_from(timeout=TIMEOUT)
        await ws.send_json_to({"type": "message", "content": "头痛", "params": {"temperature": "hot"}})
        out["params"] = await ws.receive_json_from(timeout=TIMEOUT)
        await ws.send_json_to({"type": "message", "content": "高血压吃什么药？", "params": LONG})
        await frames_until(ws, "token")
        await ws.send_json_to({"type": "message", "content": "还有呢？"})  # while this socket's answer streams
        out["generating"] = await frames_until(ws, "error")
        await ws.send_json_to({"type": "stop"})
        await frames_until(ws, "done")
        await ws.disconnect()
        return out

    out = async_to_sync(scenario)()
    assert out["anonymous"]["code"] == "not_authenticated" and out["anonymous"]["message"] == "请先登录再使用对话。"
    assert out["curator"]["code"] == "forbidden" and out["curator"]["message"] == "只有临床医生和管理员可以与模型对话。"
    assert out["missing"]["code"] == "not_found" and out["missing"]["message"] == "没有这个对话，或它不属于您。"
    assert out["not_object"]["message"] == "帧必须是带有 “type” 的 JSON 对象。"
    assert out["unknown"]["message"] == "未知的帧类型 'dance'。"
    assert out["params"]["code"] == "invalid_params" and out["params"]["message"] == "部分生成参数无效。"
    busy = out["generating"][-1]
    assert busy["code"] == "busy" and busy["message"] == "回答仍在生成中：请先停止或等待。"


@pytest.mark.django_db
def test_a_question_with_nul_characters_is_stored_without_them(session, clinician):
    """A socket frame may carry "\\u0000"; PostgreSQL cannot store it and the question was lost
    with a database error. It is dropped (it has no visible form), the rest is kept."""
    message = chat_user_message(session=session, user=clinician, content="头痛\x00三天\x00")
    message.refresh_from_db()
    assert message.content == "头痛三天"
    session.refresh_from_db()
    assert session.title == "头痛三天"
