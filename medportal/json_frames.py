"""WebSocket frames: what every MedPortal JSON socket does with a frame it cannot read.

Channels' ``AsyncJsonWebsocketConsumer`` raises on a binary frame and on text that is not
JSON; ``json.loads`` raises ``RecursionError`` on JSON nested too deeply (``[[[[…]]]]``
100,000 deep). Raised in a consumer, each closes the socket with 1011. Here each becomes an
``{"type": "error", "code": "bad_frame"}`` frame and the socket stays open. Messages follow
the language of the page that opened the socket (its language cookie, else Accept-Language).
"""

from __future__ import annotations

from types import SimpleNamespace

from django.utils import translation
from django.utils.translation import gettext as _


def socket_language(scope) -> str:
    """The language LocaleMiddleware would pick for the page that opened this socket."""
    headers = {name.decode("latin1").lower(): value.decode("latin1") for name, value in scope.get("headers", [])}
    request = SimpleNamespace(COOKIES=scope.get("cookies") or {}, META={"HTTP_ACCEPT_LANGUAGE": headers.get("accept-language", "")}, path_info="/")
    return translation.get_language_from_request(request)


class JsonFramesMixin:
    """Put first in the bases of an ``AsyncJsonWebsocketConsumer``."""

    async def frame_error(self, code: str, message: str, details=None) -> None:
        frame = {"type": "error", "code": code, "message": str(message)}
        if details:
            frame["details"] = details
        await self.send_json(frame)

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        with translation.override(socket_language(self.scope)):
            if text_data is None:
                await self.frame_error("bad_frame", _("Binary frames are not accepted: send JSON text frames."))
                return
            try:
                content = await self.decode_json(text_data)
            except RecursionError:
                await self.frame_error("bad_frame", _("The frame is nested too deeply to be read."))
                return
            except ValueError:
                await self.frame_error("bad_frame", _("The frame is not valid JSON."))
                return
            await self.receive_json(content, **kwargs)
