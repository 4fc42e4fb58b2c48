"""Settings are parsed strictly from the environment: a malformed value stops start-up."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_settings(tmp_path, **env):
    code = (
        "import json, django\n"
        "from django.conf import settings\n"
        "django.setup()\n"
        "print(json.dumps({'engine': settings.DATABASES['default']['ENGINE'],"
        " 'layer': settings.CHANNEL_LAYERS['default']['BACKEND'],"
        " 'broker': 'redis' if 'redis' in settings.Q_CLUSTER else 'orm',"
        " 'debug': settings.DEBUG, 'quorum': settings.MEDPORTAL_REVIEW_QUORUM}))\n"
    )
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DEBUG")}
    base.update({"DJANGO_SETTINGS_MODULE": "medportal.settings", "MEDPORTAL_DATA_DIR": str(tmp_path)}, **env)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=base, capture_output=True, text=True, timeout=60)


def test_the_default_is_sqlite_orm_broker_and_in_memory_channels(tmp_path):
    result = _load_settings(tmp_path)
    assert result.returncode == 0, result.stderr
    assert '"engine": "django.db.backends.sqlite3"' in result.stdout
    assert '"layer": "channels.layers.InMemoryChannelLayer"' in result.stdout
    assert '"broker": "orm"' in result.stdout


def test_database_and_redis_urls_switch_to_postgresql_and_redis(tmp_path):
    result = _load_settings(
        tmp_path, DATABASE_URL="postgres://u@127.0.0.1:5432/x", REDIS_URL="redis://127.0.0.1:6379/0"
    )
    assert result.returncode == 0, result.stderr
    assert '"engine": "django.db.backends.postgresql"' in result.stdout
    assert '"layer": "channels_redis.core.RedisChannelLayer"' in result.stdout
    assert '"broker": "redis"' in result.stdout


@pytest.mark.parametrize(
    ("name", "value"),
    [("DEBUG", "maybe"), ("MEDPORTAL_REVIEW_QUORUM", "two"), ("MEDPORTAL_REVIEW_QUORUM", "0"), ("MEDPORTAL_LANGUAGE", "fr")],
)
def test_a_malformed_value_stops_start_up_naming_the_variable(tmp_path, name, value):
    result = _load_settings(tmp_path, **{name: value})
    assert result.returncode != 0
    assert name in result.stderr
