"""The django-q2 schedule that reaps fine-tune jobs whose worker died, every minute.

It runs on the default cluster (the one beside the web server), not on ``gpu``: a GPU worker
is busy with a job for hours, and the reaper must run precisely when a GPU worker is gone.
Created idempotently (update_or_create by name); removed again on migrating backwards.
"""

from django.db import migrations

NAME = "training: reap fine-tune jobs"
FUNC = "training.tasks.finetune_jobs_reap_task"


def create(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name=NAME,
        defaults={"func": FUNC, "schedule_type": "I", "minutes": 1, "repeats": -1, "cluster": None},
    )


def remove(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("training", "0001_initial"),
        ("django_q", "0018_task_success_index"),
    ]

    operations = [migrations.RunPython(create, remove)]
