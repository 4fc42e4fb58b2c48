"""Writes of the training app (base-model registry, fine-tune jobs, evaluation runs). Views, the
API, tasks and commands call these; reads live in ``training.selectors``.

The helpers below are shared by the services of this package."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q

from medportal.errors import NotAllowed
from medportal.roles import is_admin


def require_admin(actor, message: str) -> None:
    """NotAllowed(message) unless ``actor`` is an admin."""
    if not is_admin(actor):
        raise NotAllowed(message)


def heartbeat_silent(now: datetime) -> Q:
    """Rows whose worker has been silent longer than MEDPORTAL_JOB_HEARTBEAT_TIMEOUT_S (no
    heartbeat since then, or none at all since a start that long ago)."""
    cutoff = now - timedelta(seconds=settings.MEDPORTAL_JOB_HEARTBEAT_TIMEOUT_S)
    return Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, started_at__lt=cutoff)
