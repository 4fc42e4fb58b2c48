"""Validators shared by the import form, the import API and ``import_qa`` (through the service)."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _

from curation.importers import EncodingNameError, codec_name


def encoding_error_text(exc: EncodingNameError) -> str:
    """The translated sentence for an encoding name the importer refused."""
    if exc.kind == "not_text":
        return _("'%(encoding)s' is not a text encoding; pick a character encoding such as UTF-8 or GB18030.") % {
            "encoding": exc.encoding
        }
    return _("Unknown encoding '%(encoding)s'.") % {"encoding": exc.encoding}


def validate_text_encoding(value: str) -> None:
    """Accept only the name of a character encoding (utf-8, gb18030, big5, utf-16...).

    Refuses unknown names and codecs that are not character encodings: bytes-to-bytes codecs
    (base64, zlib_codec, hex, uu, bz2_codec, quopri, rot13) and punycode / idna / undefined
    (see ``curation.importers.encoding.codec_name``). Blank and "auto" mean detection.
    """
    name = (value or "").strip()
    if not name or name.lower() == "auto":
        return
    try:
        codec_name(name)
    except EncodingNameError as exc:
        raise ValidationError(encoding_error_text(exc), code=exc.kind) from None
