"""Bounds on ZIP archives (XLSX workbooks are ZIP files) before anything parses them.

A ZIP "bomb" is small on disk and huge once inflated: a 1 MB workbook can unpack to a gigabyte
of sheet XML, which openpyxl would parse inside the web request. ``check_inflated_size`` refuses
an archive whose entries declare more than the bound in total, then inflates every entry in
1 MiB pieces (constant memory), counting the bytes it really gets and stopping as soon as the
count passes the bound, so an archive that understates its sizes is caught too.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

from .base import ImportFileError

MB = 1024 * 1024
DEFAULT_MAX_INFLATED_BYTES = 512 * MB
_PIECE = MB


class ArchiveTooLarge(ImportFileError):
    """The archive unpacks to more than ``limit_bytes`` (``declared``: its own directory says so)."""

    def __init__(self, *, limit_bytes: int, declared: bool):
        self.limit_bytes = limit_bytes
        self.declared = declared
        super().__init__(limit_message(limit_bytes))


def limit_message(limit_bytes: int) -> str:
    """The English sentence for an archive over the bound (the import service translates it)."""
    return (
        f"This XLSX workbook unpacks to more than {limit_mb(limit_bytes)} MB, the limit for archives; "
        "it was refused without being read. Split it into smaller workbooks or save it as CSV."
    )


def limit_mb(limit_bytes: int) -> int:
    return max(1, limit_bytes // MB)


def check_inflated_size(path: str | Path, max_bytes: int = DEFAULT_MAX_INFLATED_BYTES) -> int:
    """Refuse the ZIP file at ``path`` if it unpacks to more than ``max_bytes``; returns the size.

    Raises ArchiveTooLarge past the bound and ImportFileError for a damaged archive (bad CRC,
    truncated entry, unsupported compression).
    """
    limit = max_bytes
    try:
        stat = Path(path).stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
    except OSError:
        key = None
    known = _checked.get(key) if key else None
    if known is not None and known <= limit:
        return known  # the preview, the batch and the run open the same file: inflate it once
    total = _count(path, limit)
    if key:
        _checked[key] = total
        while len(_checked) > 64:
            _checked.pop(next(iter(_checked)))
    return total


# (path, size, mtime) → inflated size of archives found within a bound, in this process.
_checked: dict[tuple, int] = {}


def _count(path: str | Path, limit: int) -> int:
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
            if sum(info.file_size for info in entries) > limit:
                raise ArchiveTooLarge(limit_bytes=limit, declared=True)
            total = 0
            for info in entries:
                if info.is_dir():
                    continue
                with archive.open(info) as member:
                    while piece := member.read(_PIECE):
                        total += len(piece)
                        if total > limit:
                            raise ArchiveTooLarge(limit_bytes=limit, declared=False)
            return total
    except ArchiveTooLarge:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, NotImplementedError, ValueError, OSError) as exc:
        raise ImportFileError(f"Cannot open the file as an XLSX workbook: the ZIP archive is damaged ({exc}).") from None
