"""Shared bench helpers: point Django at a throwaway database and report the machine."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return f"{os.cpu_count()} cores{mem}, {cpu}, Python {platform.python_version()}"


def django_setup() -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "medportal.settings")
    import django

    django.setup()


def throwaway_django(workdir: Path) -> None:
    """Set up Django on a throwaway SQLite database and data/training folders under ``workdir``
    (no PostgreSQL, Redis or serving endpoint from the environment): before Django reads its settings."""
    for key in ("DATABASE_URL", "REDIS_URL", "MEDPORTAL_INFERENCE_URL"):
        os.environ.pop(key, None)
    os.environ["MEDPORTAL_DATA_DIR"] = str(workdir / "data")
    os.environ["MEDPORTAL_TRAINING_DIR"] = str(workdir / "training")
    os.environ.setdefault("MEDPORTAL_LOG_LEVEL", "WARNING")
    django_setup()


def emit(record: dict) -> None:
    print(json.dumps(record, ensure_ascii=False))
