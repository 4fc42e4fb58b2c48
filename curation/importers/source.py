"""``open_source``: detect, decode and validate a file or folder, then stream its records."""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from pathlib import Path

from . import jsonfmt, medquad, tabular
from .base import FORMATS, JSON_FORMATS, ImportFileError, Item, Source, read_file_bytes
from .archive import DEFAULT_MAX_INFLATED_BYTES, check_inflated_size
from .encoding import codec_name, decode, detect_encoding

SUPPORTED_SUFFIXES: tuple[str, ...] = (".csv", ".json", ".jsonl", ".tsv", ".xlsx", ".xlsm", ".xml")
_HEAD_BYTES = 65536

_ZIP = b"PK\x03\x04"
_OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # legacy .xls / .doc
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF", "a PDF document"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"7z\xbc\xaf", "a 7-Zip archive"),
    (b"Rar!", "a RAR archive"),
    (b"SQLite format 3", "an SQLite database"),
)
_MEDQUAD_ROOT = re.compile(r"<\s*(?:[A-Za-z_][\w.-]*:)?(Document|doc)[\s>]")


def _check_format(fmt: str | None) -> None:
    if fmt is not None and fmt not in FORMATS:
        raise ImportFileError(f"Unknown format '{fmt}'; expected one of {', '.join(FORMATS)}.")


def _binary_kind(data: bytes) -> str | None:
    if data.startswith(_OLE):
        raise ImportFileError("Legacy Excel .xls files are not supported; save the sheet as .xlsx or CSV.")
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    return None


# --------------------------------------------------------------------------- detection


def detect_format(path: Path, text_head: str | None = None) -> str:
    """The import format of ``path`` from its extension and the start of its content.

    ``text_head`` is the decoded start of the file; when None it is read from ``path``.
    Raises ImportFileError when the format cannot be told.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if text_head is None:
        with open(path, "rb") as handle:
            head = handle.read(_HEAD_BYTES)
        if head.startswith(_ZIP):
            return "xlsx"
        kind = _binary_kind(head)
        if kind:
            raise ImportFileError(f"The file is {kind}, not a question-answer file.")
        encoding = detect_encoding(head)
        text_head = codecs.getincrementaldecoder(encoding)("replace").decode(head, final=False)
    if suffix in (".xlsx", ".xlsm"):
        return "xlsx"
    if suffix == ".xls":
        raise ImportFileError("Legacy Excel .xls files are not supported; save the sheet as .xlsx or CSV.")
    head = text_head.lstrip("\ufeff \t\r\n")
    if not head:
        raise ImportFileError("The file is empty.")
    if suffix == ".xml" or head.startswith("<"):
        if _MEDQUAD_ROOT.search(head[:4096]):
            return "medquad"
        raise ImportFileError("Unsupported XML: only MedQuAD documents (<Document> with <QAPairs>) can be imported.")
    if suffix in (".json", ".jsonl") or head[0] in "[{":
        return jsonfmt.sniff_json_format(head)
    if suffix in (".csv", ".tsv", ".txt", ""):
        delimiter = "\t" if suffix == ".tsv" else tabular.sniff_delimiter(head, ",")
        first_line = head.split("\n", 1)[0]
        if delimiter not in first_line:
            raise ImportFileError(
                f"Cannot tell the format of '{path.name}': the first line has no column separator; "
                "pick the format explicitly."
            )
        columns = tabular.read_text_header(head, delimiter)
        if tabular.is_mcq_header(columns):
            return "mcq"
        return "tsv" if delimiter == "\t" else "csv"
    raise ImportFileError(
        f"Cannot tell the format of '{path.name}' (supported: {', '.join(SUPPORTED_SUFFIXES)}); pick the format explicitly."
    )


# --------------------------------------------------------------------------- opening


def open_source(
    path: str | Path,
    *,
    format: str | None = None,
    encoding: str | None = None,
    mapping: dict[str, str] | None = None,
    max_inflated_bytes: int = DEFAULT_MAX_INFLATED_BYTES,
) -> Source:
    """Open and validate an import file or a folder of them.

    Raises ImportFileError for any file-level problem (unknown or undetectable format,
    an encoding that is not a character encoding, undecodable bytes, an empty file, an invalid
    or truncated JSON document, a mapping that names a missing column, a table without a
    question or answer column, an XLSX archive that unpacks to more than
    ``max_inflated_bytes``: ``archive.ArchiveTooLarge``, raised before any parsing...).
    """
    path = Path(path)
    _check_format(format)
    if encoding is not None:
        codec_name(encoding)  # an unknown or non-text encoding is a file error before any reading
    if path.is_dir():
        return _open_directory(path, fmt=format, encoding=encoding, mapping=mapping, max_inflated_bytes=max_inflated_bytes)
    if not path.is_file():
        raise ImportFileError(f"The file '{path.name}' does not exist.")
    return _open_file(path, fmt=format, encoding=encoding, mapping=mapping, file="", max_inflated_bytes=max_inflated_bytes)


def _open_file(
    path: Path, *, fmt: str | None, encoding: str | None, mapping, file: str, max_inflated_bytes: int = DEFAULT_MAX_INFLATED_BYTES
) -> Source:
    data = read_file_bytes(path)

    if data.startswith(_ZIP):
        if fmt not in (None, "xlsx"):
            raise ImportFileError(f"The file is a ZIP archive (an XLSX workbook?), not {fmt}.")
        check_inflated_size(path, max_inflated_bytes)
        return tabular.open_table(path, fmt="xlsx", text=None, encoding=None, mapping=mapping, file=file)
    if fmt == "xlsx":
        raise ImportFileError("Not an XLSX workbook: the file is not a ZIP archive.")
    kind = _binary_kind(data)
    if kind:
        raise ImportFileError(f"The file is {kind}, not a question-answer file.")

    if (fmt == "medquad" or (fmt is None and path.suffix.lower() == ".xml")) and encoding is None:
        return medquad.open_medquad(path, data, text=None, encoding=medquad.xml_encoding(data), file=file)

    explicit = encoding is not None
    encoding = encoding or detect_encoding(data)
    text = decode(data, encoding, explicit=explicit)
    if not text.strip():
        raise ImportFileError("The file is empty.")
    if fmt is None:
        if text.lstrip("\ufeff \t\r\n")[:1] in "[{" or path.suffix.lower() in (".json", ".jsonl"):
            # JSON: parse the whole document and detect the format from the real objects.
            return jsonfmt.open_json(path, text, fmt=None, encoding=encoding, file=file)
        fmt = detect_format(path, text[:_HEAD_BYTES])
    if fmt == "medquad":
        return medquad.open_medquad(path, data, text=text, encoding=encoding, file=file)
    if fmt in JSON_FORMATS or fmt == "pubmedqa":
        return jsonfmt.open_json(path, text, fmt=fmt, encoding=encoding, file=file)
    return tabular.open_table(path, fmt=fmt, text=text, encoding=encoding, mapping=mapping, file=file)


def _open_directory(root: Path, *, fmt: str | None, encoding: str | None, mapping, max_inflated_bytes: int) -> Source:
    files = sorted(
        (
            p
            for p in root.rglob("*")
            if p.is_file()
            and p.suffix.lower() in SUPPORTED_SUFFIXES
            and not any(part.startswith(".") or part == "__MACOSX" for part in p.relative_to(root).parts)
        ),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    if not files:
        raise ImportFileError(
            f"The folder '{root.name}' contains no supported files ({', '.join(SUPPORTED_SUFFIXES)})."
        )
    children: list[Source] = []
    for child_path in files:
        rel = child_path.relative_to(root).as_posix()
        try:
            children.append(
                _open_file(child_path, fmt=fmt, encoding=encoding, mapping=mapping, file=rel, max_inflated_bytes=max_inflated_bytes)
            )
        except ImportFileError as exc:
            raise ImportFileError(f"{rel}: {exc}") from None

    formats = {c.format for c in children}
    encodings = {c.encoding for c in children}
    column_sets = {tuple(c.columns) for c in children}
    mappings = {tuple(sorted(c.mapping.items())) for c in children}
    totals = [c.total for c in children]

    def produce() -> Iterator[Item]:
        for child in children:
            yield from child.records()

    return Source(
        path=root,
        format=formats.pop() if len(formats) == 1 else "mixed",
        encoding=encodings.pop() if len(encodings) == 1 else None,
        columns=list(column_sets.pop()) if len(column_sets) == 1 else [],
        mapping=dict(mappings.pop()) if len(mappings) == 1 else {},
        total=None if None in totals else sum(totals),  # type: ignore[arg-type]
        _produce=produce,
    )


def read_columns(
    path: str | Path,
    *,
    format: str | None = None,
    encoding: str | None = None,
    max_inflated_bytes: int = DEFAULT_MAX_INFLATED_BYTES,
) -> list[str]:
    """The header of a CSV/TSV/XLSX file for a mapping UI; [] for other formats."""
    path = Path(path)
    _check_format(format)
    if encoding is not None:
        encoding = codec_name(encoding)
    with open(path, "rb") as handle:
        head = handle.read(_HEAD_BYTES * 16)
    if not head.strip():
        raise ImportFileError("The file is empty.")
    if head.startswith(_ZIP):
        if format not in (None, "xlsx"):
            return []
        check_inflated_size(path, max_inflated_bytes)
        columns, _, handle_, _sheets = tabular._xlsx_rows(path)
        handle_[0].close()
        return columns
    if format == "xlsx":
        raise ImportFileError("Not an XLSX workbook: the file is not a ZIP archive.")
    explicit = encoding is not None
    encoding = encoding or detect_encoding(head)
    try:
        text = codecs.getincrementaldecoder(encoding)("strict").decode(head, final=False)
    except UnicodeDecodeError:
        decode(head, encoding, explicit=explicit)  # raises with the offset
        raise  # pragma: no cover
    if text.startswith("\ufeff"):
        text = text[1:]
    fmt = format or detect_format(path, text)
    if fmt not in ("csv", "tsv", "mcq"):
        return []
    delimiter = "\t" if fmt == "tsv" else tabular.sniff_delimiter(text, ",")
    return tabular.read_text_header(text, delimiter)
