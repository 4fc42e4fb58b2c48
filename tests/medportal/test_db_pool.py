"""PostgreSQL connections are bounded per process by the pool, under ASGI too (medportal/db.py).

The live tests start Daphne on the PostgreSQL test database (they skip on SQLite) and tell its
connections apart from the test's own by an ``application_name`` in the DATABASE_URL.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_settings(tmp_path, **env):
    code = (
        "import json, django\n"
        "from django.conf import settings\n"
        "django.setup()\n"
        "db = settings.DATABASES['default']\n"
        "print(json.dumps({'pool': db.get('OPTIONS', {}).get('pool'), 'conn_max_age': db['CONN_MAX_AGE']}))\n"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith("MEDPORTAL_DB_POOL") and k not in ("DATABASE_URL", "REDIS_URL")}
    base.update({"DJANGO_SETTINGS_MODULE": "medportal.settings", "MEDPORTAL_DATA_DIR": str(tmp_path)}, **env)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=base, capture_output=True, text=True, timeout=60)


def test_postgresql_gets_a_bounded_pool_and_no_connection_kept_per_thread(tmp_path):
    result = _load_settings(tmp_path, DATABASE_URL="postgres://u@127.0.0.1:5432/x", MEDPORTAL_DB_POOL_MAX="7", MEDPORTAL_DB_POOL_TIMEOUT="2.5")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {"pool": {"min_size": 1, "max_size": 7, "timeout": 2.5}, "conn_max_age": 0}


def test_pool_max_zero_means_one_connection_per_request_and_sqlite_has_no_pool(tmp_path):
    result = _load_settings(tmp_path, DATABASE_URL="postgres://u@127.0.0.1:5432/x", MEDPORTAL_DB_POOL_MAX="0")
    assert json.loads(result.stdout.splitlines()[-1]) == {"pool": None, "conn_max_age": 0}, result.stderr
    result = _load_settings(tmp_path)
    assert json.loads(result.stdout.splitlines()[-1]) == {"pool": None, "conn_max_age": 0}, result.stderr


@pytest.mark.parametrize(("name", "value"), [("MEDPORTAL_DB_POOL_MAX", "ten"), ("MEDPORTAL_DB_POOL_MAX", "-1"), ("MEDPORTAL_DB_POOL_TIMEOUT", "0")])
def test_a_malformed_pool_setting_stops_start_up_naming_the_variable(tmp_path, name, value):
    result = _load_settings(tmp_path, DATABASE_URL="postgres://u@127.0.0.1:5432/x", **{name: value})
    assert result.returncode != 0
    assert name in result.stderr


# --- live: Daphne on the PostgreSQL test database --------------------------------------------


def _require_postgresql():
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("runs against the PostgreSQL test database (set DATABASE_URL)")
    return connection


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daphne:
    """Daphne serving MedPortal on the test database, its connections named ``app``."""

    def __init__(self, tmp_path, app: str, **env):
        db = _require_postgresql().settings_dict
        auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
        url = f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}?application_name={app}"
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("MEDPORTAL_DB_POOL") and k not in ("REDIS_URL", "DEBUG")}
        full_env.update(
            DATABASE_URL=url,
            MEDPORTAL_DATA_DIR=str(tmp_path / "data"),
            ALLOWED_HOSTS="127.0.0.1",
            SECRET_KEY="medportal-db-pool-test-" + "k" * 40,
            DJANGO_SETTINGS_MODULE="medportal.settings",
            **env,
        )
        self.log = open(tmp_path / "daphne.log", "w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port), "medportal.asgi:application"],
            cwd=ROOT, env=full_env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError("Daphne did not start:\n" + self.output())
                time.sleep(0.2)

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def _get(url: str, headers: dict, timeout: float = 20) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def _connections(app: str) -> int:
    import psycopg

    from django.db import connection

    # A connection of our own, outside the test's transaction and the pool.
    params = {k: v for k, v in connection.get_connection_params().items() if k not in ("pool", "cursor_factory", "context")}
    with psycopg.connect(**params, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (app,)).fetchone()[0]


def _token(django_user_model, username: str, role: str = "clinician") -> str:
    from django.contrib.auth.models import Group
    from rest_framework.authtoken.models import Token

    user = django_user_model.objects.create_user(username=username, password="pw-" + username)
    user.groups.add(Group.objects.get_or_create(name=role)[0])
    return Token.objects.create(user=user).key


@pytest.mark.django_db(transaction=True)
def test_concurrent_api_requests_under_asgi_hold_no_more_connections_than_the_pool(tmp_path, django_user_model, make_pair, curator):
    _require_postgresql()
    make_pair(curator)
    token = _token(django_user_model, "load")
    app = f"mp-pool-test-{os.getpid()}"
    server = Daphne(tmp_path, app, MEDPORTAL_DB_POOL_MAX="3")
    samples = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            samples.append(_connections(app))
            stop.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        sampler.start()
        headers = {"Authorization": f"Token {token}"}
        with ThreadPoolExecutor(40) as pool:
            results = list(pool.map(lambda _: _get(server.base + "/api/v1/pairs/", headers)[0], range(80)))
        stop.set()
        sampler.join()
        after = _connections(app)
    finally:
        stop.set()
        server.stop()
    assert results == [200] * 80, server.output()[-3000:]
    assert max(samples) <= 3 and after <= 3, (max(samples), after)
    assert max(samples) >= 1  # the sampler saw the server's connections


@pytest.mark.django_db(transaction=True)
def test_a_request_that_finds_no_free_connection_is_answered_503_not_500(tmp_path, django_user_model, client, make_pair, curator):
    import psycopg

    from django.db import connection

    _require_postgresql()
    make_pair(curator)
    token = _token(django_user_model, "api-user")
    client.force_login(django_user_model.objects.get(username="api-user"))
    session = client.cookies["sessionid"].value
    app = f"mp-pool-busy-{os.getpid()}"
    server = Daphne(tmp_path, app, MEDPORTAL_DB_POOL_MAX="1", MEDPORTAL_DB_POOL_MIN="1", MEDPORTAL_DB_POOL_TIMEOUT="0.5")
    params = {k: v for k, v in connection.get_connection_params().items() if k not in ("pool", "cursor_factory", "context")}
    locker = psycopg.connect(**params)
    try:
        # The first request takes the pool's only connection and waits on a table lock with it.
        locker.execute("LOCK TABLE authtoken_token IN ACCESS EXCLUSIVE MODE")
        first = {}
        holder = threading.Thread(
            target=lambda: first.update(r=_get(server.base + "/api/v1/pairs/", {"Authorization": f"Token {token}"})), daemon=True
        )
        holder.start()
        deadline = time.monotonic() + 20
        while not _waiting_on_lock(params, app):
            assert time.monotonic() < deadline, server.output()[-3000:]
            time.sleep(0.05)

        status, headers, body = _get(server.base + "/api/v1/pairs/", {"Authorization": f"Token {token}", "Accept-Language": "en"}, timeout=10)
        assert status == 503, body[:500]
        assert headers["Retry-After"] == "5"
        error = json.loads(body)["error"]
        assert error["code"] == "database_busy"
        assert "every connection is in use" in error["message"]

        # A page, in the default language (zh-hans).
        status, headers, body = _get(server.base + "/curation/pairs/", {"Cookie": f"sessionid={session}"}, timeout=10)
        assert status == 503, server.output()[-5000:]
        assert headers["Retry-After"] == "5"
        assert "所有连接都在使用中" in body.decode()

        # The health check tells the load balancer the same.
        assert _get(server.base + "/healthz", {}, timeout=10)[0] == 503
    finally:
        locker.rollback()  # releases the lock: the first request goes on
        locker.close()
        if "holder" in locals():
            holder.join(timeout=20)
        log = server.output()
        server.stop()
    assert first["r"][0] == 200, log[-3000:]
    assert "Traceback" not in log.replace("PoolTimeout", ""), log[-3000:]


def _waiting_on_lock(params: dict, app: str) -> bool:
    import psycopg

    with psycopg.connect(**params, autocommit=True) as conn:
        return bool(
            conn.execute(
                "SELECT 1 FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'", (app,)
            ).fetchone()
        )


def _child_connection(queue, forked_at) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT backend_start > %s FROM pg_stat_activity WHERE pid = pg_backend_pid()", [forked_at])
        queue.put(cursor.fetchone()[0])
    connection.close()


@pytest.mark.django_db(transaction=True)
def test_a_forked_worker_opens_its_own_connections_instead_of_the_parents_pooled_ones():
    """django-q2 forks its workers after handing the parent's connections back to the pool; a
    child that took one of them would share the parent's socket."""
    connection = _require_postgresql()
    if not connection.settings_dict["OPTIONS"].get("pool"):
        pytest.skip("the database has no pool (MEDPORTAL_DB_POOL_MAX=0)")
    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        forked_at = cursor.fetchone()[0]
    connection.close()  # back into the pool, as django-q2 does before it forks

    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_connection, args=(queue, forked_at))
    child.start()
    opened_after_the_fork = queue.get(timeout=20)
    child.join(timeout=20)
    assert child.exitcode == 0
    assert opened_after_the_fork is True
    with connection.cursor() as cursor:  # the parent's pooled connections still work
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
