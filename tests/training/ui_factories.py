"""Rows the training page, socket and browser tests start from.

A frozen dataset version goes through the real freeze service; a base model row is written
directly (its folder is never opened by the pages: registration through a real folder is
tested on its own); jobs go through ``finetune_job_create`` and are then moved to the state
a test needs with the same kind of conditional writes the worker makes.
"""

from __future__ import annotations

import itertools

from django.db.models import F

_names = itertools.count(1)


def make_version(curator, make_pair, *, pairs: int = 6, split=(0.5, 0.5, 0.0)):
    from curation.models import QAPair
    from curation.services.versions import dataset_version_freeze

    tag = next(_names)
    for i in range(pairs):
        make_pair(
            curator,
            status=QAPair.Status.APPROVED,
            instruction=f"问题 {tag}-{i}：头痛三天怎么办？",
            output=f"回答 {tag}-{i}：多休息，持续不缓解请就医。",
        )
    return dataset_version_freeze(user=curator, name=f"v{tag}", split=split, seed=7)


def make_base_model(admin, *, name: str = "demo-model", has_chat_template: bool = True, path: str = "/nonexistent/medportal-test-model"):
    from training.models import BaseModel

    return BaseModel.objects.create(
        name=name,
        path=path,
        architecture="Qwen3ForCausalLM",
        model_type="qwen3",
        num_parameters=3_200_000,
        dtype="float32",
        has_chat_template=has_chat_template,
        vocab_size=4096,
        context_length=2048,
        info={
            "hidden_size": 128,
            "num_layers": 4,
            "num_attention_heads": 4,
            "vocab_size": 4096,
            "context_length": 2048,
            "files": ["config.json"],
        },
        registered_by=admin,
    )


def make_job(admin, version, model, *, preset: str = "cpu_demo", overrides: dict | None = None):
    from training.services.jobs import finetune_job_create

    return finetune_job_create(actor=admin, dataset_version=version, base_model=model, preset=preset, overrides=overrides, enqueue=False)


def job_update(job, **fields) -> None:
    """Change the row as the worker does: one UPDATE that bumps ``version``."""
    from training.models import FineTuneJob

    FineTuneJob.objects.filter(pk=job.pk).update(version=F("version") + 1, **fields)
    job.refresh_from_db()


def add_points(job, train=(), evals=()) -> None:
    """FineTuneMetric rows: train (step, loss, lr, tokens/s), eval (step, loss)."""
    from training.models import FineTuneMetric

    rows = [
        FineTuneMetric(job=job, kind=FineTuneMetric.Kind.TRAIN, step=s, loss=loss, learning_rate=lr, tokens_per_second=tps)
        for s, loss, lr, tps in train
    ]
    rows += [FineTuneMetric(job=job, kind=FineTuneMetric.Kind.EVAL, step=s, loss=loss) for s, loss in evals]
    FineTuneMetric.objects.bulk_create(rows)
