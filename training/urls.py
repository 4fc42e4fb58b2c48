"""Pages of the training app: base models, fine-tune jobs (docs/training-ui.md) and evaluation
runs with their reports (docs/evaluation-report.md)."""

from training.views import base_models, dpo, eval_compare, evaluations, gate, jobs

app_name = "training"

urlpatterns = [*base_models.urlpatterns, *jobs.urlpatterns, *evaluations.urlpatterns, *eval_compare.urlpatterns, *gate.urlpatterns, *dpo.urlpatterns]
