"""WebSocket routes of every app (live import progress now; training and chat later)."""

websocket_urlpatterns: list = []
