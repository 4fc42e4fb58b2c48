"""The one XLSX writer: every spreadsheet MedPortal writes (dataset versions, evaluation
reports, chat ratings) goes through ``XlsxWriter``. It lives in ``medportal`` so that every app
may import it (curation must not import training or chat).

Text is made safe once, here (openpyxl write-only mode, rows streamed to disk):

* Characters a worksheet cannot hold (openpyxl's ``ILLEGAL_CHARACTERS_RE``: U+0000–U+001F
  except tab, LF and CR) are dropped: a stray control character never fails the download.
* Every string is stored as a string cell (``data_type = "s"``), never as a formula, whatever
  it starts with. Formula-like text (starting with ``= + - @``, tab or CR, the OWASP list)
  also gets Excel's *quote prefix* style: the visible text stays exactly what was written,
  and Excel or LibreOffice will not turn it into a formula when someone edits the cell.
* Dates and times become ISO text (Excel has no time zones); lists and dicts become JSON
  text; numbers stay numbers, except NaN and infinities, written as text.
* Text longer than an Excel cell holds (``CELL_MAX`` = 32,767 characters, counted in UTF-16
  units as Excel counts them) is cut there and ends with a visible marker naming the original
  length in the current language (Excel reports a longer cell as a damaged file).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
from collections.abc import Iterable
from decimal import Decimal
from io import BytesIO
from pathlib import Path
from typing import IO

from django.utils.translation import gettext as _
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.styles import Font

MIME_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
FORMULA_PREFIXES: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")
_BAD_TITLE = re.compile(r"[\[\]:*?/\\]")
_TITLE_MAX = 31
CELL_MAX = 32_767  # Excel's limit on the characters of one cell


def _utf16_units(text: str) -> int:
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def fit_cell(text: str) -> str:
    """``text`` unchanged when a cell holds it; else its start and a marker, ``CELL_MAX`` at most."""
    if len(text) <= CELL_MAX // 2 or _utf16_units(text) <= CELL_MAX:
        return text
    marker = _("… [cut: %(count)s characters]") % {"count": f"{len(text):,}"}
    room, units = CELL_MAX - _utf16_units(marker), 0
    for end, ch in enumerate(text):
        units += 2 if ord(ch) > 0xFFFF else 1
        if units > room:
            return text[:end] + marker
    return text + marker  # not reached: the text is longer than the room


def clean_text(value: str) -> str:
    """``value`` without the characters a worksheet cannot hold."""
    return ILLEGAL_CHARACTERS_RE.sub("", value)


def is_formula_like(text: str) -> bool:
    return text.startswith(FORMULA_PREFIXES)


def cell_value(value):
    """The value as it will be stored: str (cleaned), int/float/Decimal/bool, or None."""
    if value is None or isinstance(value, (bool, int, Decimal)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, (dict, list, tuple)):
        return fit_cell(clean_text(json.dumps(value, ensure_ascii=False, default=str)))
    return fit_cell(clean_text(str(value)))


def sheet_title(title: str) -> str:
    """A title Excel accepts: no []:*?/\\ characters, at most 31 characters, not empty."""
    cleaned = _BAD_TITLE.sub("_", clean_text(str(title))).strip("'")[:_TITLE_MAX]
    return cleaned or "sheet"


class Sheet:
    """One worksheet of an ``XlsxWriter``; ``append`` writes a row of any values."""

    def __init__(self, ws) -> None:
        self._ws = ws

    def cell(self, value, *, bold: bool = False) -> WriteOnlyCell:
        value = cell_value(value)
        cell = WriteOnlyCell(self._ws, value=value)
        if isinstance(value, str):
            cell.data_type = "s"  # never a formula
            if is_formula_like(value):
                cell.quotePrefix = True
        if bold:
            cell.font = Font(bold=True)
        return cell

    def header(self, names: Iterable) -> None:
        self._ws.append([self.cell(name, bold=True) for name in names])

    def append(self, values: Iterable) -> None:
        self._ws.append([self.cell(v) for v in values])


class XlsxWriter:
    """A streaming workbook: ``sheet(title, header)`` then ``append`` rows, then ``save``."""

    def __init__(self) -> None:
        self._wb = Workbook(write_only=True)
        self._titles: set[str] = set()

    def sheet(self, title: str, header: Iterable | None = None) -> Sheet:
        name = sheet_title(title)
        base, n = name, 1
        while name.lower() in self._titles:
            n += 1
            suffix = f" ({n})"
            name = base[: _TITLE_MAX - len(suffix)] + suffix
        self._titles.add(name.lower())
        sheet = Sheet(self._wb.create_sheet(name))
        if header is not None:
            sheet.header(header)
        return sheet

    def save(self, target: str | Path | IO[bytes]) -> None:
        if not self._titles:
            self.sheet("sheet")
        self._wb.save(target)

    def getvalue(self) -> bytes:
        buf = BytesIO()
        self.save(buf)
        return buf.getvalue()
