"""WebSocket consumers: one chat session per socket, and the blind A/B arena.

Protocol (JSON frames; see docs/chat.md):

client → server
  {"type": "message", "content": str, "params": {...}?}   ask; params override the session's
  {"type": "regenerate", "params": {...}?}                  replace the last answer
  {"type": "stop"}                                          stop the running generation
server → client
  {"type": "ready", "session": id, "model": label}
  {"type": "user_message", "id": int, "content": str}
  {"type": "start"}                                         generation begins
  {"type": "token", "text": str}                            one streamed piece
  {"type": "done", "message_id", "content", "ttft_ms", "tokens_per_second",
   "completion_tokens", "prompt_tokens", "finish_reason", "model"}
  {"type": "error", "code": str, "message": str, "details"?: {...}}   the socket stays open

Refusals: the socket is accepted, gets one error frame (code not_authenticated / forbidden /
not_found) and is closed with 4401 / 4403 / 4404 (a browser never sees the code of a refused
handshake). Generation runs in a thread (chat.inference.aio); one at a time per socket.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.http import Http404

from chat.inference import GenerationParams, InferenceError, ParamsError, StreamStats
from chat.inference.aio import astream
from chat.inference.registry import get_backend, model_ref
from medportal.errors import ApplicationError
from medportal.roles import CLINICIAN, has_role

logger = logging.getLogger(__name__)

CLOSE_ANONYMOUS = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404


class _GeneratingConsumer(AsyncJsonWebsocketConsumer):
    """Shared: authentication on connect, one running generation, stop, errors as frames."""

    async def connect(self):
        # Refusals accept first, send an error frame and close with a 44xx code: a browser sees
        # neither the reason nor the code of a refused handshake.
        user = self.scope.get("user")
        self.task: asyncio.Task | None = None
        self.cancel = threading.Event()
        if user is None or not user.is_authenticated:
            await self.refuse(CLOSE_ANONYMOUS, "not_authenticated", "Log in to chat.")
            return
        if not await database_sync_to_async(has_role)(user, CLINICIAN):
            await self.refuse(CLOSE_FORBIDDEN, "forbidden", "Only clinicians and admins chat with models.")
            return
        self.user = user
        try:
            await self.load()
        except Http404:
            await self.refuse(CLOSE_NOT_FOUND, "not_found", "No such chat, or not yours.")
            return
        await self.accept()
        await self.send_json(await self.ready_frame())

    async def refuse(self, code: int, error: str, message: str):
        await self.accept()
        await self.send_json({"type": "error", "code": error, "message": message})
        await self.close(code=code)

    async def disconnect(self, code):
        if getattr(self, "task", None) is not None and not self.task.done():
            self.cancel.set()
            try:
                await asyncio.wait_for(asyncio.shield(self.task), timeout=30)
            except (TimeoutError, asyncio.CancelledError, Exception):  # the answer so far is saved by the task
                pass

    async def error(self, code: str, message: str, details=None):
        frame = {"type": "error", "code": code, "message": str(message)}
        if details:
            frame["details"] = details
        await self.send_json(frame)

    async def receive_json(self, content, **kwargs):
        if not isinstance(content, dict):
            await self.error("bad_frame", "Frames are JSON objects with a 'type'.")
            return
        kind = content.get("type")
        if kind == "stop":
            if self.task is not None and not self.task.done():
                self.cancel.set()
            return
        handler = getattr(self, f"on_{kind}", None) if isinstance(kind, str) and kind.isidentifier() else None
        if handler is None:
            await self.error("bad_frame", f"Unknown frame type {kind!r}.")
            return
        if self.task is not None and not self.task.done():
            await self.error("busy", "An answer is still being generated: stop it or wait.")
            return
        try:
            await handler(content)
        except ApplicationError as exc:
            await self.error(exc.code if hasattr(exc, "code") else "invalid", exc.message, getattr(exc, "details", None))

    async def decode_json(self, text_data):
        import json

        try:
            return json.loads(text_data)
        except (TypeError, ValueError):
            return None

    def parse_params(self, base: dict, override) -> GenerationParams:
        if override is not None and not isinstance(override, dict):
            raise ParamsError({"params": "must be an object"})
        return GenerationParams.from_dict({**(base or {}), **(override or {})})

    async def stream_answer(self, ref, messages, params: GenerationParams, *, side: str | None = None) -> tuple[str, StreamStats]:
        """Stream one answer to the client as token frames (tagged with ``side`` in the arena);
        returns (text, stats). Stops when ``self.cancel`` is set. Raises InferenceError."""
        stats = StreamStats()
        parts: list[str] = []
        tag = {} if side is None else {"side": side}
        async for piece in astream(get_backend(), ref, messages, params, cancel=self.cancel, stats=stats):
            parts.append(piece)
            await self.send_json({"type": "token", **tag, "text": piece})
        return "".join(parts), stats


class ChatConsumer(_GeneratingConsumer):
    async def load(self):
        from chat.selectors import session_get_for_user

        self.session = await database_sync_to_async(session_get_for_user)(user=self.user, pk=self.scope["url_route"]["kwargs"]["session_id"])

    async def ready_frame(self):
        return {"type": "ready", "session": self.session.pk, "model": self.session.model_label}

    async def on_message(self, content):
        from chat.services import chat_user_message

        text = content.get("content")
        try:
            params = self.parse_params(self.session.params, content.get("params"))
        except ParamsError as exc:
            await self.error("invalid_params", "Some generation parameters are invalid.", exc.errors)
            return
        message = await database_sync_to_async(chat_user_message)(session=self.session, user=self.user, content=text if isinstance(text, str) else "")
        await self.send_json({"type": "user_message", "id": message.pk, "content": message.content})
        self.task = asyncio.create_task(self.answer(params))

    async def on_regenerate(self, content):
        from chat.services import chat_regenerate_prepare

        try:
            params = self.parse_params(self.session.params, content.get("params"))
        except ParamsError as exc:
            await self.error("invalid_params", "Some generation parameters are invalid.", exc.errors)
            return
        await database_sync_to_async(chat_regenerate_prepare)(session=self.session, user=self.user)
        self.task = asyncio.create_task(self.answer(params))

    async def answer(self, params: GenerationParams):
        from chat.services import chat_assistant_message, chat_history

        session = self.session
        try:
            ref = await database_sync_to_async(model_ref)(session.base_model, session.job)
            messages = await database_sync_to_async(chat_history)(session)
            await self.send_json({"type": "start"})
            self.cancel = threading.Event()
            text, stats = await self.stream_answer(ref, messages, params)
        except InferenceError as exc:
            await self.error("inference", str(exc))
            return
        except Exception as exc:  # never kill the socket on a generation failure
            logger.exception("chat generation failed")
            await self.error("inference", f"The model failed: {exc.__class__.__name__}: {exc}")
            return
        info = stats.as_dict()
        message = await database_sync_to_async(chat_assistant_message)(session=session, content=text, params=params.to_dict(), stats=info)
        try:
            await self.send_json({"type": "done", "message_id": message.pk, "content": text, "model": session.model_label, **info})
        except Exception:  # the socket closed meanwhile: the answer is saved anyway
            pass


class ArenaConsumer(_GeneratingConsumer):
    """Streams both answers of a battle side by side: frames carry ``"side": "a"|"b"``.

    client → server: {"type": "run"} once (answers both), {"type": "stop"}.
    server → client: ready, start, token (+side), done (+side, no model names), error.
    The names come from the vote (HTTP) — never over this socket.
    """

    async def load(self):
        from chat.selectors import battle_get_for_user

        self.battle = await database_sync_to_async(battle_get_for_user)(user=self.user, pk=self.scope["url_route"]["kwargs"]["battle_id"])

    async def ready_frame(self):
        return {"type": "ready", "battle": self.battle.pk, "answered": bool(self.battle.answer_a and self.battle.answer_b)}

    async def on_run(self, content):
        if self.battle.answer_a or self.battle.answer_b:
            await self.error("done", "This battle already has its answers.")
            return
        self.task = asyncio.create_task(self.run_both())

    async def run_both(self):
        from chat.services import arena_battle_answer

        battle = self.battle
        params = GenerationParams.from_dict(battle.params)
        messages = ([{"role": "system", "content": battle.system_prompt}] if battle.system_prompt else []) + [{"role": "user", "content": battle.prompt}]
        await self.send_json({"type": "start"})

        async def one(side: str, base, job):
            try:
                ref = await database_sync_to_async(model_ref)(base, job)
                text, stats = await self.stream_answer(ref, messages, params, side=side)
                await database_sync_to_async(arena_battle_answer)(battle=battle, side=side, content=text, stats=stats.as_dict())
                await self.send_json({"type": "done", "side": side, "content": text, **stats.as_dict()})
            except InferenceError as exc:
                await self.error("inference", str(exc))

        self.cancel = threading.Event()
        await asyncio.gather(one("a", battle.model_a, battle.job_a), one("b", battle.model_b, battle.job_b))
