"""Chat pages (chat, ratings, arena, leaderboard)."""

from chat.views import urlpatterns as _pages
from chat.views_preferences import urlpatterns as _preferences

app_name = "chat"

urlpatterns = [*_pages, *_preferences]
