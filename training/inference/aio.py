"""Async bridge: iterate a backend's (blocking) stream from an event loop.

The generation runs in a worker thread; pieces cross to the loop through an asyncio.Queue
(``call_soon_threadsafe``), so a consumer awaits tokens without ever blocking the loop.
Cancelling the async iteration (or leaving it) sets the cancel event, which stops the
generation at its next token.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence

from .base import GenerationParams, InferenceBackend, ModelRef, StreamStats

_END = object()


async def astream(
    backend: InferenceBackend,
    model: ModelRef,
    messages: Sequence[dict],
    params: GenerationParams,
    *,
    cancel: threading.Event,
    stats: StreamStats,
) -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    def put(item) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is gone: stop generating
            cancel.set()

    def run() -> None:
        try:
            for piece in backend.stream(model, messages, params, cancel=cancel, stats=stats):
                put(piece)
                if cancel.is_set():
                    break
        except BaseException as exc:  # re-raised in the loop
            put(exc)
        finally:
            put(_END)

    thread = threading.Thread(target=run, name="medportal-astream", daemon=True)
    thread.start()
    try:
        while True:
            item = await queue.get()
            if item is _END:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        cancel.set() if thread.is_alive() else None
