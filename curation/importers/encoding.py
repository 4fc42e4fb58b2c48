"""Text encoding detection and strict decoding.

Order: byte-order marks, then strict UTF-8, then strict GB18030 (a superset of GBK and
GB2312, which is what Chinese Windows tools write), then charset-normalizer as a last resort.
"""

from __future__ import annotations

import codecs
import functools

from .base import ImportFileError

_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32"),  # before UTF-16 LE: it starts with the same two bytes
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)

_DISPLAY = {
    "utf-8": "UTF-8",
    "utf-8-sig": "UTF-8 (with BOM)",
    "utf-16": "UTF-16",
    "utf-16-le": "UTF-16LE",
    "utf-16-be": "UTF-16BE",
    "utf-32": "UTF-32",
    "gb18030": "GB18030",
    "gbk": "GBK",
    "gb2312": "GB2312",
    "big5": "Big5",
}


class EncodingNameError(ImportFileError):
    """An encoding name that cannot decode a file: unknown, or a codec that is not a character
    encoding (``base64``, ``zlib_codec``, ``rot13``, ``punycode``...). ``kind`` is "unknown" or
    "not_text"; ``encoding`` the name as given."""

    def __init__(self, message: str, *, encoding: str, kind: str):
        super().__init__(message)
        self.encoding = encoding
        self.kind = kind


# Decoded piece by piece with the codec's incremental decoder, this must come back unchanged:
# a character encoding maps bytes to characters in order, whatever the line length. Codecs
# registered as text but that are not (punycode reorders, idna refuses long labels, undefined
# refuses everything) fail here.
_SANITY_SAMPLE = 'question,answer\n"a"\t1;2\r\n' + "x" * 2000 + "\n"


@functools.lru_cache(maxsize=256)
def _is_character_encoding(name: str) -> bool:
    info = codecs.lookup(name)
    if not getattr(info, "_is_text_encoding", True):
        return False
    try:
        data = _SANITY_SAMPLE.encode(name)
        decoder = codecs.getincrementaldecoder(name)("strict")
        text = "".join(decoder.decode(data[i : i + 7]) for i in range(0, len(data), 7)) + decoder.decode(b"", final=True)
    except (UnicodeError, LookupError, TypeError, ValueError):
        return False
    return text == _SANITY_SAMPLE


def codec_name(encoding: str) -> str:
    """Canonical Python codec name of a character encoding.

    Raises EncodingNameError for an unknown name and for a codec that is not a character
    encoding (bytes-to-bytes codecs such as ``base64`` or ``zlib_codec``, and ``punycode``,
    ``idna``, ``undefined``), so that nothing past this point decodes with one of them.
    """
    try:
        name = codecs.lookup(encoding).name
    except (LookupError, TypeError, ValueError):
        raise EncodingNameError(f"Unknown encoding '{encoding}'.", encoding=str(encoding), kind="unknown") from None
    if not _is_character_encoding(name):
        raise EncodingNameError(
            f"'{encoding}' is not a text encoding; pick a character encoding such as UTF-8 or GB18030.",
            encoding=str(encoding),
            kind="not_text",
        )
    return name


def display_name(encoding: str) -> str:
    name = codec_name(encoding)
    return _DISPLAY.get(name, name.upper())


def _decodes(data: bytes, encoding: str) -> bool:
    """Whether ``data`` decodes strictly; an incomplete last character (a cut sample) is fine."""
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    try:
        decoder.decode(data, final=False)
    except UnicodeDecodeError:
        return False
    return True


def _utf16_without_bom(sample: bytes) -> str | None:
    """UTF-16 without a BOM shows up as NUL bytes at every other position in ASCII-heavy text."""
    if len(sample) < 4:
        return None
    even = sample[0::2]
    odd = sample[1::2]
    half = len(sample) // 2
    if odd.count(0) > 0.4 * half and even.count(0) < 0.05 * half:
        candidate = "utf-16-le"
    elif even.count(0) > 0.4 * half and odd.count(0) < 0.05 * half:
        candidate = "utf-16-be"
    else:
        return None
    return candidate if _decodes(sample[: len(sample) // 2 * 2], candidate) else None


def _looks_binary(text: str) -> bool:
    if not text:
        return False
    controls = sum(1 for ch in text if ch < " " and ch not in "\t\n\r\f\v") + text.count("\ufffd")
    return controls > max(2, len(text) // 50)


def detect_encoding(data: bytes) -> str:
    """A Python codec name for ``data``: "utf-8", "utf-8-sig", "gb18030", "utf-16", ...

    Raises ImportFileError for data that is not text at all.
    """
    for bom, name in _BOMS:
        if data.startswith(bom):
            return name
    if not data:
        return "utf-8"
    if b"\x00" in data[:65536]:
        candidate = _utf16_without_bom(data[:65536])
        if candidate:
            return candidate
        raise ImportFileError("The file contains binary data (NUL bytes), not text.")
    if _decodes(data, "utf-8"):
        return "utf-8"
    if _decodes(data, "gb18030"):
        return "gb18030"
    try:
        from charset_normalizer import from_bytes
    except ImportError:  # pragma: no cover - charset-normalizer is a dependency
        best = None
    else:
        best = from_bytes(data[:262144]).best()
    if best is None or _looks_binary(str(best)[:20000]):
        raise ImportFileError(
            "Cannot detect the text encoding (the file is not UTF-8, UTF-16 or GB18030 text); "
            "pick the encoding explicitly."
        )
    return codec_name(best.encoding)


def decode(data: bytes, encoding: str, *, explicit: bool) -> str:
    """Decode strictly; a failure names the encoding and the byte offset."""
    name = codec_name(encoding)
    try:
        text = data.decode(name)
    except UnicodeDecodeError as exc:
        bad = data[exc.start : exc.start + 1]
        where = f"byte 0x{bad.hex()} at offset {exc.start}" if bad else f"offset {exc.start}"
        if exc.reason.startswith(("unexpected end", "truncated")):
            where = f"the file ends inside a character at offset {exc.start}"
        advice = "pick another encoding" if explicit else "pick the encoding explicitly"
        raise ImportFileError(f"Cannot decode the file as {display_name(name)} ({where}); {advice}.") from None
    except UnicodeError as exc:  # a codec's own complaint that names no offset
        advice = "pick another encoding" if explicit else "pick the encoding explicitly"
        raise ImportFileError(f"Cannot decode the file as {display_name(name)} ({exc}); {advice}.") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    return text
