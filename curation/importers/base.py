"""Data types shared by every reader: records, row issues, the file-level error and ``Source``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

FORMATS: tuple[str, ...] = (
    "alpaca",
    "sharegpt",
    "openai",
    "query_response",
    "question_answer",
    "medical_o1",
    "csv",
    "tsv",
    "xlsx",
    "medquad",
    "pubmedqa",
    "mcq",
)

# Formats whose records are JSON objects (a JSON array, JSON Lines, or one object).
JSON_FORMATS: frozenset[str] = frozenset(
    {"alpaca", "sharegpt", "openai", "query_response", "question_answer", "medical_o1"}
)
TABULAR_FORMATS: frozenset[str] = frozenset({"csv", "tsv", "xlsx"})

# Targets a column of a CSV/TSV/XLSX file can be mapped to.
QA_FIELDS: tuple[str, ...] = (
    "instruction",
    "input",
    "output",
    "system",
    "history",
    "reasoning",
    "department",
    "tags",
    "disease_codes",
    "source_ref",
)


class ImportFileError(Exception):
    """A problem with the file as a whole: nothing from it may be imported.

    ``str(error)`` is one specific sentence meant for the user.
    """


def read_file_bytes(path: Path) -> bytes:
    """The bytes of the file at ``path``; ImportFileError when it cannot be read or holds only white space."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImportFileError(f"Cannot read the file '{path.name}' ({exc.strerror or exc}).") from None
    if not data.strip():
        raise ImportFileError("The file is empty.")
    return data


def parse_xml(data: bytes):
    """The root element of an XML file, parsed with defusedxml (no entity expansion, no external
    DTDs); every problem is one ImportFileError sentence. For every XML format (MedQuAD, PubMed
    XML, E-utilities answers)."""
    from xml.etree.ElementTree import ParseError

    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import fromstring

    try:
        return fromstring(data)
    except ParseError as exc:
        line, column = getattr(exc, "position", (0, 0))
        reason = str(exc).split(":", 1)[0]
        raise ImportFileError(f"Malformed XML at line {line}, column {column + 1}: {reason}.") from None
    except DefusedXmlException:
        raise ImportFileError(
            "The XML file declares a DTD, entities or external references, which are refused for security."
        ) from None
    except (LookupError, UnicodeError, ValueError) as exc:
        # The declaration names an encoding the parser cannot use (encoding="zlib_codec",
        # "base64"...): expat asks Python's codecs, which refuse non-text codecs.
        raise ImportFileError(f"Cannot read the XML file in the encoding it declares ({exc}).") from None


@dataclass(slots=True)
class ParsedRecord:
    row: int
    instruction: str
    output: str
    input: str = ""
    system: str = ""
    history: list[list[str]] = field(default_factory=list)
    reasoning: str = ""
    department: str = ""
    tags: list[str] = field(default_factory=list)
    disease_codes: list[str] = field(default_factory=list)
    source_ref: str = ""
    file: str = ""
    extra: dict = field(default_factory=dict)


@dataclass(slots=True)
class RowIssue:
    row: int
    message: str
    kind: str  # "skipped" or "error"
    file: str = ""


Item = ParsedRecord | RowIssue


@dataclass
class Source:
    """An opened, validated import file (or folder of files).

    ``records()`` streams ``ParsedRecord`` and ``RowIssue`` objects in file order. It may
    still raise ``ImportFileError`` for a problem found late; callers import inside one
    transaction so that nothing is kept in that case.
    """

    path: Path
    format: str
    encoding: str | None
    columns: list[str]
    mapping: dict[str, str]
    total: int | None
    _produce: Callable[[], Iterator[Item]] = field(repr=False, compare=False, default=None)  # type: ignore[assignment]

    def records(self) -> Iterator[ParsedRecord | RowIssue]:
        if self._produce is None:  # pragma: no cover - only when built by hand
            return iter(())
        return self._produce()
