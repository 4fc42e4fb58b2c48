"""WebSocket consumers: one chat session per socket, and the blind A/B arena.

Protocol (JSON frames; see docs/chat.md):

client → server
  {"type": "message", "content": str, "params": {...}?}   ask; params override the session's
  {"type": "edit", "message_id": int, "content": str, "params"?}   edit and resend the last question
  {"type": "regenerate", "params": {...}?}                  answer the last question again (retry)
  {"type": "delete", "message_id": int}                     delete a question (with its answers) or an answer
  {"type": "stop"}                                          stop the running generation
server → client
  {"type": "ready", "session": id, "model": label}
  {"type": "user_message", "id": int, "content": str, "title": str, "replaces"?: int}
  {"type": "start"}                                         generation begins
  {"type": "token", "text": str}                            one streamed piece
  {"type": "done", "message_id", "content", "status", "ttft_ms", "tokens_per_second",
   "completion_tokens", "prompt_tokens", "finish_reason", "model"}
  {"type": "deleted", "ids": [int]}
  {"type": "error", "code": str, "message": str, "details"?: {...}, "message_id"?: int}
      the socket stays open; code "inference" with message_id: the failed answer was stored

One generation per chat at a time, across sockets and processes (chat.services.chat_claim):
another socket is told "busy" and nothing is stored. Every answer that started is stored when
it ends: complete, stopped, interrupted (the socket closed: the part said so far) or failed.

Refusals: the socket is accepted, gets one error frame (code not_authenticated / forbidden /
not_found) and is closed with 4401 / 4403 / 4404 (a browser never sees the code of a refused
handshake). Generation runs in a thread (training.inference.aio).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.http import Http404
from django.utils import translation
from django.utils.translation import gettext as _

from training.inference import GenerationParams, InferenceError, ParamsError, StreamStats
from training.inference.aio import astream
from medportal.db import BUSY_MESSAGE, RETRY_AFTER_S, is_pool_exhausted
from medportal.errors import ApplicationError
from medportal.json_frames import JsonFramesMixin, socket_language
from medportal.roles import CLINICIAN, has_role

logger = logging.getLogger(__name__)

CLOSE_ANONYMOUS = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_TRY_AGAIN = 1013  # the database had no free connection: try again later

# Answers still being finished after their socket closed: a reference keeps the task alive.
_FINISHING: set[asyncio.Task] = set()


class _GeneratingConsumer(JsonFramesMixin, AsyncJsonWebsocketConsumer):
    """Shared: authentication on connect, one running generation, stop, errors as frames."""

    async def connect(self):
        # Refusals accept first, send an error frame and close with a 44xx code: a browser sees
        # neither the reason nor the code of a refused handshake. Frames speak the page's language.
        with translation.override(socket_language(self.scope)):
            try:
                await self.connect_in_language()
            except Exception as exc:
                if not is_pool_exhausted(exc):
                    raise
                await self.refuse(CLOSE_TRY_AGAIN, "database_busy", str(BUSY_MESSAGE))

    async def connect_in_language(self):
        user = self.scope.get("user")
        self.task: asyncio.Task | None = None
        self.cancel = threading.Event()
        self.closed = False
        self.stopped = False
        if user is None or not user.is_authenticated:
            await self.refuse(CLOSE_ANONYMOUS, "not_authenticated", _("Log in to chat."))
            return
        if not await database_sync_to_async(has_role)(user, CLINICIAN):
            await self.refuse(CLOSE_FORBIDDEN, "forbidden", _("Only clinicians and admins chat with models."))
            return
        self.user = user
        try:
            await self.load()
        except Http404:
            await self.refuse(CLOSE_NOT_FOUND, "not_found", _("No such chat, or not yours."))
            return
        await self.accept()
        await self.send_json(await self.ready_frame())

    async def refuse(self, code: int, error: str, message: str):
        await self.accept()
        await self.send_json({"type": "error", "code": error, "message": message})
        await self.close(code=code)

    async def disconnect(self, code):
        """Stop the generation at its next token; the answer task stores what was said."""
        self.closed = True
        if getattr(self, "task", None) is not None and not self.task.done():
            self.cancel.set()
            try:
                await asyncio.wait_for(asyncio.shield(self.task), timeout=30)
            except TimeoutError:  # still finishing: it stores the answer and frees the chat itself
                pass

    async def send_json(self, content, close=False):
        """Frames to a closed socket are dropped (a generation may outlive its socket)."""
        if self.closed and not close:
            return
        try:
            await super().send_json(content, close=close)
        except Exception:  # the connection went away meanwhile
            self.closed = True

    async def error(self, code: str, message: str, details=None):
        await self.frame_error(code, message, details)

    def start_task(self, coro) -> None:
        """Run a generation; a fresh cancel event is its "stop"."""
        self.cancel = threading.Event()
        self.stopped = False
        self.task = asyncio.create_task(coro)
        _FINISHING.add(self.task)
        self.task.add_done_callback(_FINISHING.discard)

    async def receive_json(self, content, **kwargs):
        if not isinstance(content, dict):
            await self.error("bad_frame", _("Frames are JSON objects with a “type”."))
            return
        kind = content.get("type")
        if kind == "stop":
            if self.task is not None and not self.task.done():
                self.stopped = True
                self.cancel.set()
            return
        handler = getattr(self, f"on_{kind}", None) if isinstance(kind, str) and kind.isidentifier() else None
        if handler is None:
            shown = repr(kind)[:40] if isinstance(kind, (str, int, float, bool, type(None))) else type(kind).__name__
            await self.error("bad_frame", _("Unknown frame type %(type)s.") % {"type": shown})
            return
        if self.task is not None and not self.task.done():
            await self.error("busy", _("An answer is still being generated: stop it or wait."))
            return
        try:
            await handler(content)
        except ApplicationError as exc:
            await self.error(exc.code if hasattr(exc, "code") else "invalid", exc.message, getattr(exc, "details", None))
        except Exception as exc:
            if not is_pool_exhausted(exc):
                raise
            # No free database connection: nothing was stored; the socket stays open for a retry.
            await self.error("database_busy", str(BUSY_MESSAGE), {"retry_after": RETRY_AFTER_S})

    def parse_params(self, base: dict, override) -> GenerationParams:
        if override is not None and not isinstance(override, dict):
            raise ParamsError({"params": "must be an object"})
        return GenerationParams.from_dict({**(base or {}), **(override or {})})

    async def stream_answer(
        self, run, messages, params: GenerationParams, *, side: str | None = None, parts: list[str] | None = None, stats: StreamStats | None = None, beat=None
    ) -> tuple[str, StreamStats]:
        """Stream one answer to the client as token frames (tagged with ``side`` in the arena);
        returns (text, stats). Stops when ``self.cancel`` is set. Raises InferenceError. The
        pieces go to ``parts`` as they come (what was said survives an error); ``beat`` is
        awaited between pieces."""
        stats = stats if stats is not None else StreamStats()
        parts = parts if parts is not None else []
        tag = {} if side is None else {"side": side}
        async for piece in astream(run.backend(), run.ref, messages, params, cancel=self.cancel, stats=stats):
            parts.append(piece)
            await self.send_json({"type": "token", **tag, "text": piece})
            if beat is not None:
                await beat()
        return "".join(parts), stats


class ChatConsumer(_GeneratingConsumer):
    async def load(self):
        from chat.selectors import session_get_for_user

        self.session = await database_sync_to_async(session_get_for_user)(user=self.user, pk=self.scope["url_route"]["kwargs"]["session_id"])

    async def ready_frame(self):
        return {"type": "ready", "session": self.session.pk, "model": self.session.model_label}

    async def _params(self, content) -> GenerationParams | None:
        try:
            return self.parse_params(self.session.params, content.get("params"))
        except ParamsError as exc:
            await self.error("invalid_params", _("Some generation parameters are invalid."), exc.errors)
            return None

    async def _refresh(self) -> None:
        """Settings may have changed on the page (another request): answer with the current ones."""
        from chat.selectors import session_get_for_user

        self.session = await database_sync_to_async(session_get_for_user)(user=self.user, pk=self.session.pk)

    async def on_message(self, content):
        from chat.services import chat_ask

        await self._refresh()
        params = await self._params(content)
        if params is None:
            return
        question, token = await database_sync_to_async(chat_ask)(session=self.session, user=self.user, content=content.get("content"))
        await self.send_json({"type": "user_message", "id": question.pk, "content": question.content, "title": self.session.title})
        self.start_task(self.answer(token, params))

    async def on_edit(self, content):
        from chat.services import chat_question_edit

        await self._refresh()
        params = await self._params(content)
        if params is None:
            return
        replaced = content.get("message_id")
        question, token = await database_sync_to_async(chat_question_edit)(session=self.session, user=self.user, message_id=replaced, content=content.get("content"))
        await self.send_json({"type": "user_message", "id": question.pk, "content": question.content, "title": self.session.title, "replaces": replaced})
        self.start_task(self.answer(token, params))

    async def on_regenerate(self, content):
        from chat.services import chat_retry

        await self._refresh()
        params = await self._params(content)
        if params is None:
            return
        token = await database_sync_to_async(chat_retry)(session=self.session, user=self.user)
        self.start_task(self.answer(token, params))

    on_retry = on_regenerate

    async def on_delete(self, content):
        from chat.services import chat_message_delete

        ids = await database_sync_to_async(chat_message_delete)(session=self.session, user=self.user, message_id=content.get("message_id"))
        await self.send_json({"type": "deleted", "ids": ids})

    async def answer(self, token: str, params: GenerationParams):
        """Generate the answer of a claimed chat. Whatever happens — done, stop, model failure,
        the socket closing — the answer is stored and the claim released."""
        from chat.models import ChatMessage
        from chat.services import CLAIM_HEARTBEAT_SECONDS, chat_answer_finish, chat_claim_heartbeat, chat_prepare, chat_release

        session = self.session
        parts: list[str] = []
        stats = StreamStats()
        status, error = ChatMessage.Status.COMPLETE, ""
        last_beat = time.monotonic()

        async def beat():
            nonlocal last_beat
            if time.monotonic() - last_beat >= CLAIM_HEARTBEAT_SECONDS:
                last_beat = time.monotonic()
                await database_sync_to_async(chat_claim_heartbeat)(session=session, token=token)

        try:
            run, messages = await database_sync_to_async(chat_prepare)(session=session, user=self.user)
            await self.send_json({"type": "start"})
            await self.stream_answer(run, messages, params, parts=parts, stats=stats, beat=beat)
        except InferenceError as exc:
            status, error = ChatMessage.Status.FAILED, str(exc)
        except asyncio.CancelledError:
            status = ChatMessage.Status.INTERRUPTED
            raise
        except Exception as exc:  # never kill the socket on a generation failure
            logger.exception("chat generation failed")
            status, error = ChatMessage.Status.FAILED, _("The model failed: %(error)s") % {"error": f"{exc.__class__.__name__}: {exc}"}
        finally:
            if self.closed and not self.stopped and status == ChatMessage.Status.COMPLETE and stats.finish_reason in ("cancelled", ""):
                status = ChatMessage.Status.INTERRUPTED
            if status == ChatMessage.Status.FAILED:
                parts = []  # a failed answer keeps no half text: the retry answers afresh
            info = stats.as_dict()
            try:
                message = await database_sync_to_async(chat_answer_finish)(
                    session=session, token=token, content="".join(parts), params=params.to_dict(), stats=info, status=status, error=error
                )
            except Exception:
                logger.exception("chat %s: the answer could not be stored", session.pk)
                await database_sync_to_async(chat_release)(session=session, token=token)
                message = None
        if message is None:
            await self.error("inference", _("The answer could not be stored."))
        elif status == ChatMessage.Status.FAILED:
            await self.send_json({"type": "error", "code": "inference", "message": error, "message_id": message.pk})
        else:
            await self.send_json(
                {"type": "done", "message_id": message.pk, "content": message.content, "status": status, "model": session.model_label, **info}
            )


class ArenaConsumer(_GeneratingConsumer):
    """Streams both answers of a battle side by side: frames carry ``"side": "a"|"b"``.

    client → server: {"type": "run"} once (answers both), {"type": "stop"}.
    server → client: ready, start, token (+side), done (side and content only), error (+side).
    The names come from the vote (HTTP) — never over this socket: no statistics (token counts
    differ by tokenizer) and no backend error text (it names models and paths) before the vote.
    """

    async def load(self):
        from chat.selectors import battle_get_for_user

        self.battle = await database_sync_to_async(battle_get_for_user)(user=self.user, pk=self.scope["url_route"]["kwargs"]["battle_id"])

    async def ready_frame(self):
        return {"type": "ready", "battle": self.battle.pk, "answered": bool(self.battle.answer_a and self.battle.answer_b)}

    async def on_run(self, content):
        if self.battle.is_over:
            await self.error("done", _("This battle is over."))
            return
        if self.battle.answer_a or self.battle.answer_b:
            await self.error("done", _("This battle already has its answers."))
            return
        self.task = asyncio.create_task(self.run_both())

    async def run_both(self):
        from chat.services import arena_battle_answer, arena_prepare

        battle = self.battle
        params = GenerationParams.from_dict(battle.params)
        messages = ([{"role": "system", "content": battle.system_prompt}] if battle.system_prompt else []) + [{"role": "user", "content": battle.prompt}]
        await self.send_json({"type": "start"})

        async def one(side: str, base, job):
            try:
                run, sent = await database_sync_to_async(arena_prepare)(battle=battle, base_model=base, job=job, messages=messages, user=self.user)
                text, stats = await self.stream_answer(run, sent, params, side=side)
                await database_sync_to_async(arena_battle_answer)(battle=battle, side=side, content=text, stats=stats.as_dict())
                await self.send_json({"type": "done", "side": side, "content": text})
            except Exception:  # the reason names the model: logged, never sent before the vote
                logger.exception("arena battle %s: side %s failed", battle.pk, side)
                await self.error("inference", _("Model %(side)s could not answer.") % {"side": side.upper()}, {"side": side})

        self.cancel = threading.Event()
        await asyncio.gather(one("a", battle.model_a, battle.job_a), one("b", battle.model_b, battle.job_b))
