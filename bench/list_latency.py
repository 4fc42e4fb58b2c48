"""QA-pair list and reviewer queue at 200,000 pairs: p95 latency and queries per page.

Needs PostgreSQL (the goal is stated for it): DATABASE_URL must point at a database this
script may fill (default postgres://postgres@127.0.0.1:5432/medportal_bench, created when
missing). The pairs are made once from the toyhom dialogue texts (each made unique by a
suffix) and reused by later runs. Requests go through the full Django stack (middleware,
views, templates) with the test client; the timer covers the whole request.

    .venv/bin/python bench/list_latency.py [--pairs 200000] [--requests 60]

Prints one JSON line per page and a summary line.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _setup import SHARED, django_setup, emit, machine  # noqa: E402

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/medportal_bench"


def ensure_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    admin_url = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def populate(n: int) -> None:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.utils import timezone

    from curation.lib import fingerprint
    from curation.models import Department, QAPair
    from curation.services.core import derive

    have = QAPair.objects.count()
    if have >= n:
        return
    User = get_user_model()
    author, _ = User.objects.get_or_create(username="bench-curator")
    author.groups.add(Group.objects.get_or_create(name="curator")[0])
    src = SHARED / "toyhom_chinese_medical_dialogue" / "样例_内科5000-6000.csv"
    with open(src, encoding="gb18030", newline="") as f:
        rows = list(csv.DictReader(f))
    departments = {name: Department.objects.get_or_create(name=name)[0] for name in {r["department"] for r in rows}}
    base = [(r, derive(instruction=r["ask"], output=r["answer"])) for r in rows]
    statuses = [QAPair.Status.DRAFT, QAPair.Status.IN_REVIEW, QAPair.Status.APPROVED, QAPair.Status.IN_REVIEW, QAPair.Status.REJECTED]
    now = timezone.now()
    batch = []
    t0 = time.perf_counter()
    for i in range(have, n):
        r, d = base[i % len(base)]
        instruction = f"{r['ask']}（#{i}）"
        status = statuses[i % len(statuses)]
        batch.append(
            QAPair(
                instruction=instruction,
                output=r["answer"],
                author=author,
                department=departments[r["department"]],
                status=status,
                submitted_at=now if status != QAPair.Status.DRAFT else None,
                content_hash=fingerprint.content_hash(instruction, "", r["answer"]),
                simhash=d.simhash,
                identifiers=d.identifiers,
                has_identifiers=d.has_identifiers,
                search_text=d.search_text,
                source="bench",
            )
        )
        if len(batch) == 5000:
            QAPair.objects.bulk_create(batch)
            batch.clear()
    if batch:
        QAPair.objects.bulk_create(batch)
    print(f"populated {n - have} pairs in {time.perf_counter() - t0:.0f}s", file=sys.stderr)


def vacuum(url: str) -> None:
    """The steady state autovacuum keeps a live database in: statistics current and the
    visibility map set (so counts can use index-only scans)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for table in ("curation_qapair", "curation_review", "curation_qapair_tags"):
            conn.execute(f"VACUUM ANALYZE {table}")


def measure(client, url: str, requests: int) -> dict:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.get(url)  # warm caches and connection
    times = []
    queries = set()
    for _ in range(requests):
        with CaptureQueriesContext(connection) as ctx:
            t = time.perf_counter()
            response = client.get(url)
            times.append((time.perf_counter() - t) * 1000)
        assert response.status_code == 200, (url, response.status_code)
        queries.add(len(ctx.captured_queries))
    times.sort()
    return {
        "url": url,
        "p50_ms": round(statistics.median(times), 1),
        "p95_ms": round(times[int(0.95 * (len(times) - 1))], 1),
        "queries": sorted(queries),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=200_000)
    parser.add_argument("--requests", type=int, default=60)
    args = parser.parse_args()
    url = os.environ.setdefault("DATABASE_URL", DEFAULT_DB)
    if not url.startswith("postgres"):
        sys.exit("bench/list_latency.py measures PostgreSQL: set DATABASE_URL=postgres://…")
    os.environ.setdefault("ALLOWED_HOSTS", "testserver,127.0.0.1")
    ensure_database(url)
    django_setup()
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.core.management import call_command
    from django.test import Client

    call_command("migrate", verbosity=0)
    populate(args.pairs)
    vacuum(url)
    User = get_user_model()
    reviewer, _ = User.objects.get_or_create(username="bench-clinician")
    reviewer.groups.add(Group.objects.get_or_create(name="clinician")[0])
    client = Client()
    client.force_login(reviewer)
    pages = [
        "/curation/pairs/",
        "/curation/pairs/?page_size=200",
        "/curation/pairs/?status=in_review&page=50",
        "/curation/pairs/?q=%E9%AB%98%E8%A1%80%E5%8E%8B",  # 高血压
        "/curation/pairs/?q=%E8%82%9D%E7%97%85&status=approved",  # 肝病
        "/curation/review/",
        "/curation/review/?page=20",
        "/api/v1/pairs/",
        "/api/v1/review-queue/",
    ]
    results = []
    for page in pages:
        r = measure(client, page, args.requests)
        results.append(r)
        emit({"bench": "list_latency", **r})
    emit(
        {
            "bench": "list_latency_summary",
            "pairs": args.pairs,
            "worst_p95_ms": max(r["p95_ms"] for r in results),
            "db": "postgresql",
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
