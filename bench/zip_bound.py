"""The XLSX archive bound: how fast a ZIP bomb is refused, and what an honest archive near the
bound costs (``curation.importers.archive.check_inflated_size``, default 512 MB).

    .venv/bin/python bench/zip_bound.py

Prints one JSON line. Both archives are built in a temporary folder from runs of zeros, written
1 MiB at a time (no 1 GiB buffer in memory).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._setup import machine  # noqa: E402
from curation.importers.archive import DEFAULT_MAX_INFLATED_BYTES, ArchiveTooLarge, check_inflated_size  # noqa: E402

MB = 1024 * 1024


def build(path: Path, inflated_mb: int) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as member:
            block = b"0" * MB
            for _ in range(inflated_mb):
                member.write(block)


def measure(path: Path) -> dict:
    started = time.perf_counter()
    try:
        outcome = f"accepted ({check_inflated_size(path, DEFAULT_MAX_INFLATED_BYTES) // MB} MB)"
    except ArchiveTooLarge:
        outcome = "refused"
    return {"on_disk_mb": round(path.stat().st_size / MB, 2), "outcome": outcome, "seconds": round(time.perf_counter() - started, 3)}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        bomb, honest = Path(tmp) / "bomb.xlsx", Path(tmp) / "honest.xlsx"
        build(bomb, 1116)  # 1.09 GiB, the size of the reported workbook
        build(honest, 500)
        result = {"bomb_1_09_gib": measure(bomb), "honest_500_mb": measure(honest)}
    result.update(bound_mb=DEFAULT_MAX_INFLATED_BYTES // MB, machine=machine())
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
