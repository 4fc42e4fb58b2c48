"""One set of status words for every background job (medportal.jobs.JobStatus): an import batch
or a case-generation job that ended well is "succeeded" (it was "done"); finished rows get a
full progress bar, running ones their share of rows/cases."""

from django.db import migrations
from django.db.models import F, FloatField
from django.db.models.functions import Cast


def forwards(apps, schema_editor):
    for name, done, total in (("ImportBatch", "rows_done", "rows_total"), ("GenerationJob", "done", "total")):
        model = apps.get_model("curation", name)
        model.objects.filter(status="done").update(status="succeeded", progress=1.0)
        model.objects.filter(status="running", **{f"{total}__gt": 0}).update(
            progress=Cast(F(done), FloatField()) / Cast(F(total), FloatField())
        )


def backwards(apps, schema_editor):
    for name in ("ImportBatch", "GenerationJob"):
        model = apps.get_model("curation", name)
        model.objects.filter(status="succeeded").update(status="done")
        model.objects.filter(status="cancelled").update(status="failed")


class Migration(migrations.Migration):
    dependencies = [
        ("curation", "0005_job_lifecycle"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
