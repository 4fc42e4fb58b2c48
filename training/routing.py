"""WebSocket routes of the training app (the live fine-tune job page; protocol in docs/training-ui.md)."""

from django.urls import path

from training.consumers import FineTuneJobConsumer

websocket_urlpatterns: list = [
    path("ws/training/jobs/<int:job_id>/", FineTuneJobConsumer.as_asgi(), name="finetune-job-live"),
]
