"""WebSocket routes of the training app (the live fine-tune job page)."""

websocket_urlpatterns: list = []
