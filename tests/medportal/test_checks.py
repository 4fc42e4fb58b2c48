import pytest

pytestmark = pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")

from django.core.checks import run_checks
from django.test import override_settings


def _ids():
    return {m.id for m in run_checks(tags=["security"])}


@override_settings(
    DEBUG=False,
    SECRET_KEY="medportal-insecure-development-key-do-not-use-in-production",
    REDIS_URL=None,
    SESSION_COOKIE_SECURE=False,
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "x.sqlite3"}},
)
def test_it_warns_about_unsafe_production_settings():
    ids = _ids()
    assert {"medportal.E001", "medportal.W002", "medportal.W003", "medportal.W005"} <= ids


@override_settings(DEBUG=False, SECRET_KEY="short-but-not-the-development-key")
def test_a_short_key_is_a_warning_not_the_development_key_error():
    ids = _ids()
    assert "medportal.W001" in ids and "medportal.E001" not in ids


@override_settings(
    DEBUG=False,
    SECRET_KEY="x" * 60,
    REDIS_URL="redis://127.0.0.1:6379/0",
    SESSION_COOKIE_SECURE=True,
    DATABASES={"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "x"}},
)
def test_it_is_quiet_for_a_safe_production_setup():
    assert not {i for i in _ids() if i and i.startswith("medportal.")}


@override_settings(DEBUG=True)
def test_it_stays_quiet_in_development():
    assert not {i for i in _ids() if i and i.startswith("medportal.")}
