"""Content-Security-Policy (django-csp) with the WebSocket origin of the page's own host.

``CONTENT_SECURITY_POLICY`` in settings holds the policy; this adds ``ws://host`` /
``wss://host`` of the request to ``connect-src`` (CSP's ``'self'`` does not cover WebSockets
in every browser), so the live pages can open their socket and nothing else.
"""

from __future__ import annotations

from csp.middleware import CSPMiddleware, PolicyParts
from django.core.exceptions import DisallowedHost


class ContentSecurityPolicyMiddleware(CSPMiddleware):
    def get_policy_parts(self, request, response, report_only: bool = False) -> PolicyParts:
        parts = super().get_policy_parts(request, response, report_only)
        try:
            host = request.get_host()
        except DisallowedHost:
            return parts
        socket = f"{'wss' if request.is_secure() else 'ws'}://{host}"
        update = dict(parts.update or {})
        update["connect-src"] = [*update.get("connect-src", []), socket]
        parts.update = update
        return parts
