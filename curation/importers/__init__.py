"""Turn an uploaded file (or folder of files) into parsed question-answer records.

Django-free: the import service wraps ``open_source(...).records()`` in a transaction.
See docs/importing.md for the formats, detection rules and default column mappings.
"""

from .base import (
    FORMATS,
    QA_FIELDS,
    ImportFileError,
    ParsedRecord,
    RowIssue,
    Source,
)
from .archive import ArchiveTooLarge, check_inflated_size
from .encoding import EncodingNameError, codec_name, detect_encoding
from .source import SUPPORTED_SUFFIXES, detect_format, open_source, read_columns
from .tabular import guess_mapping

__all__ = [
    "ArchiveTooLarge",
    "EncodingNameError",
    "FORMATS",
    "QA_FIELDS",
    "SUPPORTED_SUFFIXES",
    "ImportFileError",
    "ParsedRecord",
    "RowIssue",
    "Source",
    "check_inflated_size",
    "codec_name",
    "detect_encoding",
    "detect_format",
    "guess_mapping",
    "open_source",
    "read_columns",
]
