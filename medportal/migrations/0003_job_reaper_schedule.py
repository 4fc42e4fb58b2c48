"""One django-q2 schedule reaps the silent workers of every kind of background work
(medportal.jobs.reap_silent, every minute, on the default cluster: a GPU worker is busy for
hours, and the reaper must run precisely when a GPU worker is gone). It replaces the fine-tune
and evaluation schedules of training migrations 0002 and 0003; pages and API reads no longer reap."""

from django.db import migrations

NAME = "medportal: reap silent background jobs"
FUNC = "medportal.jobs.reap_silent_task"
OLD = {
    "training: reap fine-tune jobs": "training.tasks.finetune_jobs_reap_task",
    "training: reap evaluation runs": "training.tasks_eval.evaluation_runs_reap_task",
}


def create(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.filter(name__in=list(OLD)).delete()
    Schedule.objects.update_or_create(
        name=NAME,
        defaults={"func": FUNC, "schedule_type": "I", "minutes": 1, "repeats": -1, "cluster": None},
    )


def remove(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.filter(name=NAME).delete()
    for name, func in OLD.items():
        Schedule.objects.update_or_create(
            name=name, defaults={"func": func, "schedule_type": "I", "minutes": 1, "repeats": -1, "cluster": None}
        )


class Migration(migrations.Migration):
    dependencies = [
        ("medportal", "0002_roles"),
        ("django_q", "0018_task_success_index"),
        # The schedules it replaces exist by then.
        ("training", "0003_evaluation"),
    ]

    operations = [migrations.RunPython(create, remove)]
