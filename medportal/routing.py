"""WebSocket routes of every app (live fine-tune jobs now; chat later)."""

from training.routing import websocket_urlpatterns as training_ws

websocket_urlpatterns: list = [*training_ws]
