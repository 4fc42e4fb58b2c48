"""Import speed: the toyhom GB18030 CSV (7,644 rows) into a fresh database.

Runs the real import service (encoding detection, CSV parsing, exact-duplicate and
near-duplicate checks, identifier scan, search document, bulk insert) and times only the
import, not the migration. Prints one JSON line.

    .venv/bin/python bench/import_speed.py                 # fresh temporary SQLite file
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/medportal_bench .venv/bin/python bench/import_speed.py
    .venv/bin/python bench/import_speed.py --profile       # cProfile top 25 to stderr

With DATABASE_URL the database must exist and be empty or disposable: the benchmark
migrates it and deletes the pairs it imported afterwards (``--keep`` keeps them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from _setup import machine  # noqa: E402

DATASET = ROOT.parent / "shared" / "datasets" / "toyhom_chinese_medical_dialogue"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", type=Path, default=None, help="file to import (default: the toyhom CSV)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile summary to stderr")
    parser.add_argument("--keep", action="store_true", help="keep the imported pairs (PostgreSQL)")
    args = parser.parse_args()

    path = args.path
    if path is None:
        found = sorted(DATASET.glob("*.csv"))
        if not found:
            print(json.dumps({"bench": "import_toyhom", "error": f"dataset not found under {DATASET}"}))
            return 1
        path = found[0]

    tmp = tempfile.TemporaryDirectory(prefix="medportal-bench-")
    os.environ["MEDPORTAL_DATA_DIR"] = tmp.name  # fresh SQLite file unless DATABASE_URL is set
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "medportal.settings")
    sys.path.insert(0, str(ROOT))

    import logging

    import django

    django.setup()
    logging.disable(logging.WARNING)

    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection

    from curation.models import ImportBatch, QAPair
    from curation.services.imports import import_batch_create
    from curation.workers.imports import import_batch_run

    call_command("migrate", verbosity=0, interactive=False)
    User = get_user_model()
    user, _ = User.objects.get_or_create(username="bench-admin", defaults={"is_superuser": True, "is_staff": True})
    if not user.is_superuser:
        user.is_superuser = True
        user.save()
    before = QAPair.objects.count()

    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
    start = time.perf_counter()
    cpu_start = time.process_time()
    if profiler:
        profiler.enable()
    batch = import_batch_create(user=user, path_or_upload=path, filename=path.name)
    batch = import_batch_run(batch_id=batch.pk)
    if profiler:
        profiler.disable()
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start

    if profiler:
        import pstats

        pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(25)
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(25)

    rows = batch.rows_total or 0
    result = {
        "bench": "import_toyhom",
        "rows": rows,
        "seconds": round(seconds, 3),
        "rows_per_s": round(rows / seconds, 1) if seconds else None,
        "cpu_seconds": round(cpu_seconds, 3),
        "created": batch.created_count,
        "duplicates": batch.duplicate_count,
        "near_duplicates": batch.near_duplicate_count,
        "status": batch.status,
        "pairs_before": before,
        "db": connection.vendor,
        "machine": machine(),
    }
    if batch.status != ImportBatch.Status.SUCCEEDED:
        result["error"] = batch.error
    else:
        from medportal.audit import audit_events_for

        run = audit_events_for(batch).filter(action="import.run").first()
        if run:
            result["seconds_read"] = run.changes.get("seconds_read")
            result["seconds_write"] = run.changes.get("seconds_write")
    if connection.vendor != "sqlite" and not args.keep:
        QAPair.objects.filter(import_batch=batch).delete()
        batch.delete()
    print(json.dumps(result, ensure_ascii=False))
    connection.close()
    tmp.cleanup()
    return 0 if batch.status == ImportBatch.Status.SUCCEEDED else 1


if __name__ == "__main__":
    sys.exit(main())
