"""Database connections under load: Daphne processes on PostgreSQL, bursts of concurrent API clients.

    .venv/bin/python bench/db_load.py [--bursts 50,200] [--requests 5] [--processes 2]
        [--config default|no-pool|persistent] [--env KEY=VALUE]... [--settle 5]

A throwaway database is created on PostgreSQL (``--server``, default
postgres://postgres@127.0.0.1:5432, trust), migrated, filled with the demo users and QA pairs
(``setup_demo --no-model``) plus one clinician with an API token per client, and served by
``--processes`` Daphne processes (127.0.0.1 only, round robin). Each burst starts N clients at
once; each client makes ``--requests`` token-authenticated GETs in turn (pair list, review
queue, one pair). A sampler counts the database's connections in ``pg_stat_activity`` every
50 ms during the burst and again ``--settle`` seconds after it. Reported per burst: requests,
errors by status, connections at most during the burst and after it, p50/p95 latency.

``--config`` chooses the database settings the servers run with:
  default     the settings as they are (MedPortal's connection pool, ``MEDPORTAL_DB_POOL_*``)
  no-pool     ``MEDPORTAL_DB_POOL_MAX=0``: no pool, one connection per request, closed after it
  persistent  no pool and ``CONN_MAX_AGE=60`` (the configuration before the pool: every ASGI
              request thread keeps its own connection)

The database is dropped at the end. Prints one JSON line per burst and a summary line.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _setup import ROOT, emit, machine  # noqa: E402

PY = sys.executable

PERSISTENT_SETTINGS = '''"""bench/db_load.py --config persistent: the database settings before the pool."""
from medportal.settings import *  # noqa: F401,F403

DATABASES["default"]["OPTIONS"].pop("pool", None)  # noqa: F405
DATABASES["default"]["CONN_MAX_AGE"] = 60  # noqa: F405
'''

SEED = """
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from rest_framework.authtoken.models import Token
from curation.models import QAPair
n = int(sys.argv[1])
User = get_user_model()
group = Group.objects.get(name="clinician")
users = User.objects.bulk_create([User(username=f"load-{i}") for i in range(n)])
group.user_set.add(*users)
tokens = Token.objects.bulk_create([Token(user=u, key=Token.generate_key()) for u in users])
print(QAPair.objects.order_by("id").values_list("id", flat=True).first())
for t in tokens:
    print(t.key)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def threads(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Sampler(threading.Thread):
    """Counts the connections to one database (from another database, so it never counts itself)."""

    def __init__(self, admin_url: str, dbname: str, pids: list[int]):
        super().__init__(daemon=True)
        import psycopg

        self.conn = psycopg.connect(admin_url, autocommit=True)
        self.dbname = dbname
        self.pids = pids
        self.samples: list[tuple[float, int]] = []
        self.max_threads = 0
        self.stop = threading.Event()

    def count(self) -> int:
        return self.conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (self.dbname,)).fetchone()[0]

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append((time.monotonic(), self.count()))
            self.max_threads = max(self.max_threads, sum(threads(p) for p in self.pids))
            self.stop.wait(0.05)

    def max_between(self, t0: float, t1: float) -> int:
        return max((n for t, n in self.samples if t0 <= t <= t1), default=0)


async def one_client(base_urls, index, token, pair_id, requests, latencies, errors):
    import aiohttp

    paths = ["/api/v1/pairs/", "/api/v1/review-queue/", f"/api/v1/pairs/{pair_id}/"]
    headers = {"Authorization": f"Token {token}"}
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
        for i in range(requests):
            url = base_urls[(index + i) % len(base_urls)] + paths[(index + i) % len(paths)]
            t = time.perf_counter()
            try:
                async with session.get(url) as response:
                    body = await response.read()
                    status = response.status
            except Exception as exc:  # a refused or reset connection is an error of the run, not of the bench
                errors[type(exc).__name__] += 1
                continue
            latencies.append((time.perf_counter() - t) * 1000)
            if status != 200:
                errors[str(status)] += 1
                errors.setdefault("first_" + str(status), body[:200].decode("utf-8", "replace"))


async def burst(base_urls, tokens, pair_id, clients, requests):
    latencies: list[float] = []
    errors: Counter = Counter()
    await asyncio.gather(
        *(one_client(base_urls, i, tokens[i], pair_id, requests, latencies, errors) for i in range(clients))
    )
    return latencies, errors


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1)))], 1) if ordered else 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bursts", default="50,200", help="clients per burst, comma-separated")
    parser.add_argument("--requests", type=int, default=5, help="requests per client")
    parser.add_argument("--processes", type=int, default=2, help="Daphne processes")
    parser.add_argument("--config", choices=["default", "no-pool", "persistent"], default="default")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="extra server environment")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after a burst before counting again")
    parser.add_argument("--server", default="postgres://postgres@127.0.0.1:5432")
    args = parser.parse_args()
    bursts = [int(x) for x in args.bursts.split(",")]
    if max(bursts) > 500 or args.requests > 50 or args.processes > 8:
        sys.exit("at most 500 clients, 50 requests each, 8 processes")

    import psycopg

    dbname = f"medportal_dbload_{os.getpid()}"
    admin_url = f"{args.server}/postgres"
    db_url = f"{args.server}/{dbname}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        max_connections = int(conn.execute("SHOW max_connections").fetchone()[0])
        conn.execute(f'CREATE DATABASE "{dbname}"')
    tmp = Path(tempfile.mkdtemp(prefix="mp-dbload-"))
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DEBUG", "DJANGO_SETTINGS_MODULE")}
    env.update(
        DATABASE_URL=db_url,
        MEDPORTAL_DATA_DIR=str(tmp / "data"),
        ALLOWED_HOSTS="127.0.0.1",
        SECRET_KEY=os.environ.get("SECRET_KEY") or secrets.token_urlsafe(50),
        DJANGO_SETTINGS_MODULE="medportal.settings",
        PYTHONPATH=f"{tmp}{os.pathsep}{ROOT}",
    )
    if args.config == "no-pool":
        env["MEDPORTAL_DB_POOL_MAX"] = "0"
    for item in args.env:
        key, _, value = item.partition("=")
        env[key] = value
    servers: list[subprocess.Popen] = []
    logs = []
    try:
        run = dict(cwd=ROOT, env=env, check=True, capture_output=True, text=True)
        subprocess.run([PY, "manage.py", "migrate", "--verbosity", "0"], **run)
        subprocess.run([PY, "manage.py", "setup_demo", "--no-model"], **run)
        seeded = subprocess.run(
            [PY, "-c", "import sys, django; django.setup()\n" + SEED, str(max(bursts))], **run
        ).stdout.split()
        pair_id, tokens = int(seeded[0]), seeded[1:]
        if args.config == "persistent":
            (tmp / "bench_persistent_settings.py").write_text(PERSISTENT_SETTINGS)
            env["DJANGO_SETTINGS_MODULE"] = "bench_persistent_settings"

        ports = [free_port() for _ in range(args.processes)]
        for port in ports:
            log = open(tmp / f"daphne-{port}.log", "w+")
            logs.append(log)
            servers.append(
                subprocess.Popen(
                    [PY, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "medportal.asgi:application"],
                    cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                )
            )
        base_urls = [f"http://127.0.0.1:{p}" for p in ports]
        deadline = time.monotonic() + 120
        import urllib.request

        for url in base_urls:
            while True:
                try:
                    with urllib.request.urlopen(url + "/healthz", timeout=5):
                        break
                except OSError:
                    if time.monotonic() > deadline or any(s.poll() is not None for s in servers):
                        raise SystemExit("Daphne did not start:\n" + "".join(Path(l.name).read_text() for l in logs))
                    time.sleep(0.3)
        time.sleep(1)

        sampler = Sampler(admin_url, dbname, [s.pid for s in servers])
        idle = sampler.count()
        sampler.start()
        results = []
        for clients in bursts:
            t0 = time.monotonic()
            latencies, errors = asyncio.run(burst(base_urls, tokens, pair_id, clients, args.requests))
            t1 = time.monotonic()
            time.sleep(args.settle)
            after = sampler.count()
            record = {
                "bench": "db_load",
                "config": args.config,
                "env": args.env,
                "processes": args.processes,
                "clients": clients,
                "requests": clients * args.requests,
                "ok": len(latencies) - sum(v for k, v in errors.items() if k.isdigit()),
                "errors": {k: v for k, v in errors.items() if not k.startswith("first_")},
                "first_error": next((v for k, v in errors.items() if k.startswith("first_")), None),
                "connections_max_during": sampler.max_between(t0, t1),
                f"connections_after_{args.settle:g}s": after,
                "p50_ms": percentile(latencies, 0.5),
                "p95_ms": percentile(latencies, 0.95),
                "wall_s": round(t1 - t0, 2),
                "server_threads_max": sampler.max_threads,
            }
            results.append(record)
            emit(record)
        sampler.stop.set()
        sampler.join()
        server_log = "".join(Path(l.name).read_text() for l in logs)
        emit(
            {
                "bench": "db_load_summary",
                "config": args.config,
                "env": args.env,
                "max_connections": max_connections,
                "connections_idle_before": idle,
                "errors": sum(sum(v for k, v in r["errors"].items()) for r in results),
                "connections_max": max(r["connections_max_during"] for r in results),
                "log_too_many_clients": server_log.count("too many clients"),
                "log_service_unavailable": server_log.count("Service Unavailable"),
                "db": "postgresql",
                "machine": machine(),
            }
        )
        sampler.conn.close()
    finally:
        for server in servers:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGTERM)
        for server in servers:
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
        for log in logs:
            log.close()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


if __name__ == "__main__":
    main()
