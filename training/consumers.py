"""The live fine-tune job page's WebSocket: a snapshot on connect, then what changed.

Protocol (docs/training-ui.md, "Live protocol"): the server sends ``snapshot`` frames (the
whole ``job_snapshot``; the client replaces everything) and ``update`` frames (the same row
fields, but ``train`` / ``eval`` hold only the points newer than the last frame). A change
reaches the consumer two ways: a ``training.job_changed`` group message (``training.live``;
works across processes with Redis) and a one-column poll of the row's ``version`` while the
job is active (the in-memory layer of the embedded default cannot carry the worker's
messages). Both end in ``_push``, which dedupes by ``version``.
"""

from __future__ import annotations

import asyncio
import json
import logging

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.core.serializers.json import DjangoJSONEncoder
from django.http import Http404
from django.utils import translation
from django.utils.translation import gettext_lazy as _

from medportal.json_frames import JsonFramesMixin, socket_language
from medportal.roles import ALL_ROLES, has_role
from training.live import job_group, job_live_state
from training.models import FineTuneJob

logger = logging.getLogger(__name__)

# Close codes (4000-4999 are the application's). The socket is accepted first so that the
# browser sees the code; an {"type": "error"} frame with the same code comes just before.
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404

ACTIVE = {str(s) for s in FineTuneJob.ACTIVE}


def _read_snapshot(job_id: int) -> dict | None:
    from training.selectors import job_get, job_snapshot

    try:
        job = job_get(pk=job_id)
    except (Http404, FineTuneJob.DoesNotExist):
        return None
    return job_snapshot(job)


def _last_step(points) -> int:
    return max((p[0] for p in points or ()), default=-1)


class FineTuneJobConsumer(JsonFramesMixin, AsyncJsonWebsocketConsumer):
    """ws/training/jobs/<job_id>/ — every MedPortal role may watch; nothing is written. A frame
    that is not a JSON text frame gets an error frame (JsonFramesMixin); the socket stays open."""

    # Seconds between two version polls while the job is queued or running.
    poll_interval: float = 1.0

    async def connect(self):
        self.job_id = int(self.scope["url_route"]["kwargs"]["job_id"])
        self.group = job_group(self.job_id)
        self.joined = False
        self.poller: asyncio.Task | None = None
        self.lock = asyncio.Lock()
        self.sent_version: int | None = None
        self.sent_attempt: int | None = None
        self.last_train_step = -1
        self.last_eval_step = -1
        self.active = False

        await self.accept()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self._refuse(CLOSE_UNAUTHENTICATED, "not_authenticated", _("Log in to watch this job."))
            return
        if not await database_sync_to_async(has_role)(user, *ALL_ROLES):
            await self._refuse(CLOSE_FORBIDDEN, "forbidden", _("Your role does not allow this."))
            return
        # Join before the first read: a change between the read and the join cannot be missed.
        if self.channel_layer is not None:
            await self.channel_layer.group_add(self.group, self.channel_name)
            self.joined = True
        if not await self._push(full=True):
            await self._refuse(CLOSE_NOT_FOUND, "not_found", _("No such job."))
            return
        self._ensure_polling()

    async def disconnect(self, code):
        if self.poller is not None:
            self.poller.cancel()
            self.poller = None
        if self.joined and self.channel_layer is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
            self.joined = False

    async def receive_json(self, content, **kwargs):
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "refresh":
            await self._push(full=True)
        elif kind == "ping":
            await self.send_json({"type": "pong"})
        else:
            await self.send_json({"type": "error", "code": "unknown_frame", "message": str(_("Expected a refresh or ping frame."))})

    @classmethod
    async def encode_json(cls, content):
        return json.dumps(content, cls=DjangoJSONEncoder)

    # ---- channel-layer event -------------------------------------------------------------

    async def training_job_changed(self, event):
        try:
            await self._push()
        except Exception:  # the poll (or the next message) catches up; the socket stays open
            logger.warning("live push of fine-tune job %s failed", self.job_id, exc_info=True)
        self._ensure_polling()

    # ---- internals -----------------------------------------------------------------------

    async def _refuse(self, code: int, error: str, message) -> None:
        """An error frame in the language of the page (also from the poll, outside any frame), then close."""
        with translation.override(socket_language(self.scope)):
            message = str(message)
        if self.joined and self.channel_layer is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
            self.joined = False
        await self.send_json({"type": "error", "code": error, "message": message})
        await self.close(code=code)

    async def _push(self, *, full: bool = False) -> bool:
        """Send what changed since the last frame; False if the job does not exist."""
        async with self.lock:
            snap = await database_sync_to_async(_read_snapshot)(self.job_id)
            if snap is None:
                return False
            if not full and snap["version"] == self.sent_version:
                return True
            train, evals = snap.get("train") or [], snap.get("eval") or []
            # A retried job starts its curves again: the client must drop what it has.
            rewritten = (
                snap.get("attempt") != self.sent_attempt
                or _last_step(train) < self.last_train_step
                or _last_step(evals) < self.last_eval_step
            )
            if full or rewritten:
                frame = {"type": "snapshot", **snap}
            else:
                frame = {
                    "type": "update",
                    **snap,
                    "train": [p for p in train if p[0] > self.last_train_step],
                    "eval": [p for p in evals if p[0] > self.last_eval_step],
                }
            self.last_train_step = _last_step(train)
            self.last_eval_step = _last_step(evals)
            self.sent_version = snap["version"]
            self.sent_attempt = snap.get("attempt")
            self.active = snap["status"] in ACTIVE
            await self.send_json(frame)
            return True

    def _ensure_polling(self) -> None:
        if self.active and (self.poller is None or self.poller.done()):
            self.poller = asyncio.ensure_future(self._poll())

    async def _poll(self) -> None:
        """While the job is active, push when its ``version`` moved; stop after the final frame."""
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                state = await database_sync_to_async(job_live_state)(self.job_id)
                if state is None:
                    await self._refuse(CLOSE_NOT_FOUND, "not_found", _("The job was deleted."))
                    return
                if state[0] != self.sent_version and not await self._push():
                    await self._refuse(CLOSE_NOT_FOUND, "not_found", _("The job was deleted."))
                    return
                if not self.active:
                    return
            except asyncio.CancelledError:
                raise
            except Exception:  # a failed poll (database briefly locked …) is retried at the next tick
                logger.warning("live poll of fine-tune job %s failed", self.job_id, exc_info=True)
