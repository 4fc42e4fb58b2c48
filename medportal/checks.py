"""System checks about unsafe production settings (run by every manage.py command that serves
or works: runserver, rundemo, qcluster, migrate, check).

The development SECRET_KEY is committed in the repository: with DEBUG off it would sign
sessions, password-reset links and django-q2's task payloads with a key everyone knows, so it
is an error, not a warning. Servers that skip the checks (daphne, gunicorn) call
``refuse_development_key`` from the ASGI/WSGI entry point.
"""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured

DEVELOPMENT_KEY_MESSAGE = "DEBUG is off but SECRET_KEY is the development key committed in the repository."
DEVELOPMENT_KEY_HINT = (
    "Set SECRET_KEY to a long random value (python -c 'import secrets; print(secrets.token_urlsafe(50))'), "
    "or DEBUG=1 on a development machine."
)


def uses_development_key() -> bool:
    return not settings.DEBUG and settings.SECRET_KEY == settings.DEV_SECRET_KEY


def refuse_development_key() -> None:
    """Stop a server from starting with the development key (the ASGI/WSGI entry points call it)."""
    if uses_development_key():
        raise ImproperlyConfigured(f"{DEVELOPMENT_KEY_MESSAGE} {DEVELOPMENT_KEY_HINT}")


@register(Tags.security)
def development_key_check(app_configs, **kwargs):
    if uses_development_key():
        return [Error(DEVELOPMENT_KEY_MESSAGE, hint=DEVELOPMENT_KEY_HINT, id="medportal.E001")]
    return []


@register(Tags.security)
def production_settings_check(app_configs, **kwargs):
    if settings.DEBUG:
        return []
    warnings = []
    if settings.SECRET_KEY != settings.DEV_SECRET_KEY and len(settings.SECRET_KEY) < 40:
        warnings.append(
            Warning(
                "SECRET_KEY is shorter than 40 characters.",
                hint="Set SECRET_KEY to a long random value (python -c 'import secrets; print(secrets.token_urlsafe(50))').",
                id="medportal.W001",
            )
        )
    if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        warnings.append(
            Warning(
                "DEBUG is off but the database is SQLite.",
                hint="SQLite is the single-machine default; set DATABASE_URL to PostgreSQL for several users and workers.",
                id="medportal.W002",
            )
        )
    if not settings.REDIS_URL:
        warnings.append(
            Warning(
                "DEBUG is off but REDIS_URL is not set: the channel layer is in-memory and the task queue uses the database.",
                hint="Live updates only reach browsers served by the same process. Set REDIS_URL in production.",
                id="medportal.W003",
            )
        )
    if "*" in settings.ALLOWED_HOSTS:
        warnings.append(Warning("ALLOWED_HOSTS contains '*'.", hint="List the host names you serve.", id="medportal.W004"))
    if not settings.SESSION_COOKIE_SECURE:
        warnings.append(
            Warning(
                "Session and CSRF cookies are sent over plain HTTP.",
                hint="Serve over HTTPS and set MEDPORTAL_SECURE_COOKIES=1.",
                id="medportal.W005",
            )
        )
    return warnings
