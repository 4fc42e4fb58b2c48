"""Pages of the training app (base models, fine-tune jobs)."""

from django.urls import path  # noqa: F401

app_name = "training"

urlpatterns: list = []
