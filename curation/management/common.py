"""What the curation management commands share: the user they act as (``--as-user``) and the
result of a literature import."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError


def command_user(username: str | None, *, action: str = "import"):
    """The named user, or the first active superuser when none is named.

    Raises CommandError for an unknown name, or when there is no superuser to fall back on;
    ``action`` words the latter ("No user to import as …", "No user to generate as …").
    """
    User = get_user_model()
    if username:
        try:
            return User.objects.get(**{User.USERNAME_FIELD: username})
        except User.DoesNotExist:
            raise CommandError(f"Unknown user '{username}'.") from None
    user = User.objects.filter(is_superuser=True, is_active=True).order_by("pk").first()
    if user is None:
        raise CommandError(
            f"No user to {action} as: create a superuser (manage.py createsuperuser) or pass --as-user USERNAME."
        )
    return user


def literature_import_result(batch, **head) -> dict:
    """The --json result of a finished literature import (``head`` keys after ``import``, then the
    counts); CommandError "Nothing was imported: …" when the file or search failed as a whole."""
    if batch.error:
        raise CommandError(f"Nothing was imported: {batch.error}")
    return {
        "import": batch.pk,
        **head,
        "created": batch.created_count,
        "duplicates": batch.duplicate_count,
        "skipped": batch.skipped_count,
        "errors": batch.error_count,
    }
