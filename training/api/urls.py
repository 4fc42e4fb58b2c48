"""REST API of the training app, mounted under /api/v1/ (views in training/api/views.py)."""

from django.urls import path

from training.api import eval_compare, evaluations, views

urlpatterns = [
    path("base-models/", views.BaseModelListView.as_view(), name="api-base-model-list"),
    path("base-models/<int:pk>/", views.BaseModelDetailView.as_view(), name="api-base-model-detail"),
    path("finetune-jobs/", views.JobListView.as_view(), name="api-finetune-job-list"),
    path("finetune-jobs/<int:pk>/", views.JobDetailView.as_view(), name="api-finetune-job-detail"),
    path("finetune-jobs/<int:pk>/cancel/", views.JobCancelView.as_view(), name="api-finetune-job-cancel"),
    path("finetune-jobs/<int:pk>/retry/", views.JobRetryView.as_view(), name="api-finetune-job-retry"),
    path("finetune-jobs/<int:pk>/merge/", views.JobMergeView.as_view(), name="api-finetune-job-merge"),
    path("finetune-jobs/<int:pk>/adapter/", views.JobAdapterView.as_view(), name="api-finetune-job-adapter"),
    path("finetune-presets/", views.PresetListView.as_view(), name="api-finetune-preset-list"),
    *eval_compare.urlpatterns,
    *evaluations.urlpatterns,
]
