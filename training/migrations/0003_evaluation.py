"""Evaluation runs and their samples; ``FineTuneJob.evaluate_after``; the every-minute schedule
that fails evaluation runs whose worker died (default cluster, like the fine-tune reaper)."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

REAP_NAME = "training: reap evaluation runs"
REAP_FUNC = "training.tasks_eval.evaluation_runs_reap_task"


def create_schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name=REAP_NAME,
        defaults={"func": REAP_FUNC, "schedule_type": "I", "minutes": 1, "repeats": -1, "cluster": None},
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=REAP_NAME).delete()


class Migration(migrations.Migration):

    dependencies = [
        ('curation', '0004_importbatch_heartbeat'),
        ('training', '0002_reap_schedule'),
        ('django_q', '0018_task_success_index'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='finetunejob',
            name='evaluate_after',
            field=models.BooleanField(default=False, help_text='When the job succeeds, evaluate the base model and the tuned model on the held-out split.', verbose_name='evaluate when done'),
        ),
        migrations.CreateModel(
            name='EvalRun',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('split', models.CharField(choices=[('test', 'test'), ('validation', 'validation'), ('train', 'train')], default='test', max_length=16, verbose_name='split')),
                ('group', models.CharField(blank=True, db_index=True, max_length=64, verbose_name='comparison group')),
                ('mode', models.CharField(choices=[('llamafactory', 'LLaMA-Factory (rouge-chinese, distinct n-grams)'), ('standard', 'standard (rouge-score, n-gram counts)')], default='llamafactory', max_length=16, verbose_name='metric mode')),
                ('params', models.JSONField(blank=True, default=dict, verbose_name='generation parameters')),
                ('status', models.CharField(choices=[('queued', 'queued'), ('running', 'running'), ('succeeded', 'succeeded'), ('failed', 'failed'), ('cancelled', 'cancelled')], db_index=True, default='queued', max_length=12, verbose_name='status')),
                ('progress', models.FloatField(default=0.0, verbose_name='progress')),
                ('done_samples', models.PositiveIntegerField(default=0, verbose_name='answered')),
                ('total_samples', models.PositiveIntegerField(default=0, verbose_name='samples')),
                ('summary', models.JSONField(blank=True, default=dict, verbose_name='summary')),
                ('by_department', models.JSONField(blank=True, default=dict, verbose_name='per department')),
                ('speed', models.JSONField(blank=True, default=dict, verbose_name='speed')),
                ('backend', models.CharField(blank=True, max_length=20, verbose_name='inference backend')),
                ('error', models.TextField(blank=True, verbose_name='error')),
                ('worker', models.CharField(blank=True, max_length=200, verbose_name='worker')),
                ('heartbeat_at', models.DateTimeField(blank=True, null=True, verbose_name='heartbeat')),
                ('task_id', models.CharField(blank=True, max_length=64, verbose_name='queue task')),
                ('created_at', models.DateTimeField(auto_now_add=True, verbose_name='created')),
                ('started_at', models.DateTimeField(blank=True, null=True, verbose_name='started')),
                ('finished_at', models.DateTimeField(blank=True, null=True, verbose_name='finished')),
                ('version', models.PositiveIntegerField(default=1, verbose_name='version')),
                ('base_model', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='eval_runs', to='training.basemodel', verbose_name='base model')),
                ('created_by', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='+', to=settings.AUTH_USER_MODEL, verbose_name='created by')),
                ('dataset_version', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='eval_runs', to='curation.datasetversion', verbose_name='dataset version')),
                ('job', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='eval_runs', to='training.finetunejob', verbose_name='fine-tune job')),
            ],
            options={
                'verbose_name': 'evaluation run',
                'verbose_name_plural': 'evaluation runs',
                'ordering': ['-created_at', '-id'],
            },
        ),
        migrations.CreateModel(
            name='EvalSample',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('position', models.PositiveIntegerField(verbose_name='position')),
                ('department', models.CharField(blank=True, max_length=100, verbose_name='department')),
                ('prompt', models.TextField(verbose_name='question')),
                ('reference', models.TextField(blank=True, verbose_name='reference answer')),
                ('prediction', models.TextField(blank=True, verbose_name='model answer')),
                ('bleu4', models.FloatField(default=0.0, verbose_name='BLEU-4')),
                ('rouge1', models.FloatField(default=0.0, verbose_name='ROUGE-1')),
                ('rouge2', models.FloatField(default=0.0, verbose_name='ROUGE-2')),
                ('rougel', models.FloatField(default=0.0, verbose_name='ROUGE-L')),
                ('completion_tokens', models.PositiveIntegerField(default=0, verbose_name='answer tokens')),
                ('latency_ms', models.FloatField(blank=True, null=True, verbose_name='latency (ms)')),
                ('dataset_item', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='curation.datasetitem', verbose_name='dataset item')),
                ('run', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='samples', to='training.evalrun')),
            ],
            options={
                'verbose_name': 'evaluation sample',
                'verbose_name_plural': 'evaluation samples',
                'ordering': ['run', 'position'],
            },
        ),
        migrations.AddIndex(
            model_name='evalrun',
            index=models.Index(fields=['status', 'heartbeat_at'], name='training_ev_status_22ebb3_idx'),
        ),
        migrations.AddIndex(
            model_name='evalrun',
            index=models.Index(fields=['dataset_version', 'split', 'created_at'], name='training_ev_dataset_afa751_idx'),
        ),
        migrations.AddIndex(
            model_name='evalsample',
            index=models.Index(fields=['run', 'rougel'], name='training_ev_run_id_cce319_idx'),
        ),
        migrations.AddConstraint(
            model_name='evalsample',
            constraint=models.UniqueConstraint(fields=('run', 'position'), name='one_eval_sample_per_position'),
        ),
        migrations.RunPython(create_schedule, remove_schedule),
    ]
