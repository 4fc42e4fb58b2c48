"""Chat pages (chat, ratings, arena, leaderboard)."""

from chat.views import urlpatterns  # noqa: F401

app_name = "chat"
