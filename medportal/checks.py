"""System checks that warn about unsafe production settings (run by every manage.py command)."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Tags, Warning, register


@register(Tags.security)
def production_settings_check(app_configs, **kwargs):
    if settings.DEBUG:
        return []
    warnings = []
    if settings.SECRET_KEY == settings.DEV_SECRET_KEY or len(settings.SECRET_KEY) < 40:
        warnings.append(
            Warning(
                "SECRET_KEY is the development default or shorter than 40 characters.",
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
