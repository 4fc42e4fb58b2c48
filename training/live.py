"""Live updates of fine-tune jobs: the channel-layer group of a job and the "it changed" ping.

Whoever changes a job row (the worker applying engine events, a service cancelling or
retrying) calls ``notify_job_changed``; every ``FineTuneJobConsumer`` watching that job then
re-reads it and pushes what is new. The message carries only the id: the database stays the
one source of truth, so a lost or duplicated ping costs nothing (consumers dedupe by the row's
``version``).

In the embedded default the channel layer is in memory and the worker is another process,
so its pings never reach the web process: the consumer also polls ``job_live_state`` while the
job is active (docs/training-ui.md, "Live protocol").
"""

from __future__ import annotations

import logging
from functools import partial

from asgiref.sync import async_to_sync
from django.db import transaction

logger = logging.getLogger(__name__)

# Channel-layer event type; Channels dispatches it to ``FineTuneJobConsumer.training_job_changed``.
JOB_CHANGED = "training.job_changed"


def job_group(job_id: int) -> str:
    """The channel-layer group of one job's watchers."""
    return f"finetune_job_{int(job_id)}"


def _send(job_id: int) -> None:
    from channels.layers import get_channel_layer

    try:
        layer = get_channel_layer()
        if layer is None:
            return
        async_to_sync(layer.group_send)(job_group(job_id), {"type": JOB_CHANGED, "job_id": int(job_id)})
    except Exception:  # a live page that misses a ping still catches up by polling; never fail the caller
        logger.warning("could not notify the watchers of fine-tune job %s", job_id, exc_info=True)


def notify_job_changed(job_id: int) -> None:
    """Tell the job's live pages to re-read it; safe from any sync code, never raises.

    Sent after the current transaction commits (immediately outside one), so a consumer never
    re-reads the row before the change is visible.
    """
    try:
        transaction.on_commit(partial(_send, int(job_id)), robust=True)
    except Exception:
        logger.warning("could not schedule the notification of fine-tune job %s", job_id, exc_info=True)


def job_live_state(job_id: int) -> tuple[int, str] | None:
    """``(version, status)`` of a job, or None if it is gone: the consumer's one-column poll."""
    from training.models import FineTuneJob

    return FineTuneJob.objects.filter(pk=job_id).values_list("version", "status").first()
