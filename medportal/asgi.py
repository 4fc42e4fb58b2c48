"""ASGI entry point: HTTP through Django, WebSockets through Channels (chat, live job pages)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "medportal.settings")
django_asgi_app = get_asgi_application()

from medportal.checks import refuse_development_key  # noqa: E402

refuse_development_key()  # before anything else is imported: daphne runs no system checks

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from medportal.routing import websocket_urlpatterns  # noqa: E402
from medportal.websocket import SameOriginValidator  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
