"""WebSocket origin check: the page that opens a socket must come from this very origin.

Channels' ``AllowedHostsOriginValidator`` compares only the host name, so a page on
``http://127.0.0.1:9999`` (another program on the same machine) could open a socket to the
server on ``:8000`` with the user's cookies. Here scheme, host and port must all match the
origin the socket was opened on (like Django's CSRF origin check), or be listed in
``CSRF_TRUSTED_ORIGINS`` (a proxy that serves the site under another name or port).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(scheme: str, netloc: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(f"{scheme}://{netloc}")
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or scheme not in _DEFAULT_PORTS:
        return None
    return scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme]


def _headers(scope) -> dict[str, str]:
    return {name.decode("latin1").lower(): value.decode("latin1") for name, value in scope.get("headers", [])}


def socket_origin_allowed(scope) -> bool:
    headers = _headers(scope)
    origin = headers.get("origin", "")
    host = headers.get("host", "")
    if not origin or origin == "null" or not host:
        return False
    domain, _port = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return False
    got = _origin(*origin.split("://", 1)) if "://" in origin else None
    if got is None:
        return False
    secure = scope.get("scheme") in ("wss", "https")
    proxy_header = settings.SECURE_PROXY_SSL_HEADER
    if proxy_header:
        name = proxy_header[0].removeprefix("HTTP_").replace("_", "-").lower()
        secure = headers.get(name, "").split(",")[0].strip() == proxy_header[1]
    if got == _origin("https" if secure else "http", host):
        return True
    trusted = {_origin(*o.split("://", 1)) for o in settings.CSRF_TRUSTED_ORIGINS if "://" in o and "*" not in o}
    return got in trusted


class SameOriginValidator:
    """ASGI middleware: refuse a WebSocket whose Origin is not this server's own origin."""

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and not socket_origin_allowed(scope):
            denier = WebsocketDenier()
            return await denier(scope, receive, send)
        return await self.application(scope, receive, send)
