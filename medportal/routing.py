"""WebSocket routes of every app (live fine-tune jobs, chat, arena)."""

from chat.routing import websocket_urlpatterns as chat_ws
from training.routing import websocket_urlpatterns as training_ws

websocket_urlpatterns: list = [*training_ws, *chat_ws]
