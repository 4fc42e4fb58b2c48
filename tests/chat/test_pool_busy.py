"""The chat socket when the database pool has no free connection: an error frame, nothing stored,
the socket stays open (not a crashed consumer).

The fault is real: a psycopg pool of one connection to the local PostgreSQL, its connection held,
times out, and Django's OperationalError wraps that PoolTimeout as it does in production. The
chat service that would have used the connection raises it (the only stand-in here)."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from django.db import OperationalError

from chat.models import ChatMessage
from chat.services import chat_session_create
from tests.chat.test_chat_consumer import FAST, communicator, frames_until, headers

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def exhausted_pool():
    psycopg_pool = pytest.importorskip("psycopg_pool")
    try:
        pool = psycopg_pool.ConnectionPool("host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=2", min_size=1, max_size=1, timeout=0.2, open=True)
        pool.wait(timeout=3)
    except Exception as exc:  # no local PostgreSQL
        pytest.skip(f"no PostgreSQL on 127.0.0.1:5432: {exc}")
    held = pool.getconn()
    yield pool
    pool.putconn(held)
    pool.close()


def test_an_exhausted_pool_is_an_error_frame_and_the_socket_stays_open(clinician, base_model, exhausted_pool, monkeypatch):
    import chat.services

    session = chat_session_create(user=clinician, base_model=base_model, params=FAST)
    real_ask = chat.services.chat_ask

    def ask_without_a_connection(**kwargs):
        from psycopg_pool import PoolTimeout

        try:
            exhausted_pool.getconn()
        except PoolTimeout as exc:
            raise OperationalError(str(exc)) from exc
        raise AssertionError("the pool had a free connection")

    monkeypatch.setattr(chat.services, "chat_ask", ask_without_a_connection)
    hdrs = headers(clinician)

    async def scenario():
        ws = communicator(f"/ws/chat/{session.pk}/", hdrs)
        assert (await ws.connect(timeout=60))[0]
        await ws.receive_json_from(timeout=60)
        await ws.send_json_to({"type": "message", "content": "头痛"})
        busy = await ws.receive_json_from(timeout=60)
        monkeypatch.setattr(chat.services, "chat_ask", real_ask)  # a connection is free again
        await ws.send_json_to({"type": "message", "content": "头痛"})
        done = await frames_until(ws, "done")
        await ws.disconnect()
        return busy, done

    busy, done = async_to_sync(scenario)()
    assert busy["type"] == "error" and busy["code"] == "database_busy" and busy["details"] == {"retry_after": 5}
    assert "every connection is in use" in busy["message"]
    assert done[-1]["type"] == "done"
    assert ChatMessage.objects.filter(session=session, role="user").count() == 1  # the busy one stored nothing
