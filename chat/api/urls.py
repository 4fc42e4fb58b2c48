"""Chat REST API (/api/v1/)."""

from chat.api import diagnose

urlpatterns = [*diagnose.urlpatterns]
