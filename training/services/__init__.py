"""Writes of the training app (base-model registry, fine-tune jobs, evaluation runs). Views, the
API, tasks and commands call these; reads live in ``training.selectors``.

The helpers below are shared by the services of this package."""

from __future__ import annotations

from django.core.exceptions import ValidationError

from medportal.errors import InvalidInput, NotAllowed
from medportal.roles import is_admin


def require_admin(actor, message: str) -> None:
    """NotAllowed(message) unless ``actor`` is an admin."""
    if not is_admin(actor):
        raise NotAllowed(message)


def full_clean_or_invalid(obj) -> None:
    """``obj.full_clean()``; its field errors as one InvalidInput (details by field)."""
    try:
        obj.full_clean()
    except ValidationError as exc:
        details = {k: " ".join(str(m) for m in v) for k, v in exc.message_dict.items()}
        raise InvalidInput(" ".join(details.values()), details=details) from None
