"""WebSocket routes of the chat app."""

from django.urls import path

from chat.consumers import ArenaConsumer, ChatConsumer

websocket_urlpatterns = [
    path("ws/chat/<int:session_id>/", ChatConsumer.as_asgi()),
    path("ws/arena/<int:battle_id>/", ArenaConsumer.as_asgi()),
]
