"""Training pages. Each area keeps its own ``urlpatterns`` in training/views/<area>.py."""
