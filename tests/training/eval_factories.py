"""Finished evaluation runs for the report's page and browser tests.

A dataset version with a test split goes through the real freeze service; the fine-tune job
through ``finetune_job_create`` and is then marked succeeded as the worker would. The runs
and their samples are written directly (generation is tested on its own), but every score is
the real metrics module's, so cards, departments, worst / best and exports agree with each
other as a real run's do.
"""

from __future__ import annotations

import itertools
from collections import defaultdict

from django.utils import timezone

from .ui_factories import add_points, job_update, make_base_model, make_job

_tags = itertools.count(1)

# (department, question, reference answer): three per department, so that freezing with ratios
# 0.2 / 0 / 0.8 puts one of each department in train and two in test (4 test answers).
QUESTIONS = [
    ("内科", "头痛三天怎么办？", "多休息，保证睡眠；持续不缓解或伴发热、呕吐请及时就医。"),
    ("内科", "高血压患者可以喝咖啡吗？", "可以少量饮用，每天不超过一杯，并注意监测血压。"),
    ("内科", "胃痛反酸吃什么好？", "饮食清淡，少食多餐，避免辛辣；反复发作请做胃镜检查。"),
    ("儿科", "小孩发烧38度要吃药吗？", "38.5度以下可先物理降温，多喝水；精神差或持续高热请就医。"),
    ("儿科", "宝宝咳嗽有痰怎么办？", "多喂温水，拍背助排痰；咳嗽加重或呼吸急促请就医。"),
    ("儿科", "孩子腹泻要注意什么？", "补充口服补液盐，防止脱水；大便带血或尿少请就医。"),
]
TEST_ANSWERS = 4

# What the "tuned" model answers (close to the references) and the "base" model (far off). Two
# base answers of one department hold markup, so at least one of them is in the test split.
TUNED = [
    "多休息，保证睡眠；持续不缓解请及时就医。",
    "可以少量饮用，每天不超过一杯。",
    "饮食清淡，少食多餐；反复发作请做胃镜检查。",
    "38.5度以下可先物理降温，多喝水；持续高热请就医。",
    "多喂温水，拍背；咳嗽加重请就医。",
    "补充口服补液盐，防止脱水；尿少请就医。",
]
BASE = [
    "头痛可能有很多原因。",
    "咖啡含有咖啡因。",
    "胃是消化器官。",
    "发烧是常见症状。",
    "<script>alert('x')</script> 咳嗽是一种反射。",
    "<script>alert('x')</script> 腹泻很常见。",
]


def make_eval_version(curator, make_pair, *, questions=QUESTIONS):
    """A frozen version with a small train split and a test split of ``TEST_ANSWERS`` items."""
    from curation.models import QAPair
    from curation.services.versions import dataset_version_freeze

    tag = next(_tags)
    for department, question, answer in questions:
        make_pair(
            curator,
            status=QAPair.Status.APPROVED,
            instruction=f"{question}（{tag}）",
            output=answer,
            department=department,
            tags=[f"eval{tag}"],
        )
    version = dataset_version_freeze(user=curator, name=f"eval-v{tag}", tags=[f"eval{tag}"], split=(0.2, 0.0, 0.8), seed=7)
    assert version.counts.get("test") == TEST_ANSWERS and version.counts.get("train") == len(questions) - TEST_ANSWERS, version.counts
    return version


def make_succeeded_job(admin, version, model):
    job = make_job(admin, version, model)
    job_update(job, status="succeeded", progress=1.0, adapter_path="/nonexistent/adapter", finished_at=timezone.now())
    add_points(job, train=[(1, 3.1, 1e-4, 500.0), (2, 2.4, 9e-5, 510.0), (3, 1.9, 8e-5, 505.0)], evals=[(3, 2.2)])
    return job


def answers(table: list[str]):
    """Predictions by question: ``table[i]`` answers ``QUESTIONS[i]`` (items are stored in digest order)."""

    def predict(content: dict) -> str:
        for (_dept, question, _ref), answer in zip(QUESTIONS, table, strict=True):
            if content.get("instruction", "").startswith(question):
                return answer
        return ""

    return predict


def make_finished_run(admin, version, model, *, job=None, predictions, group="", mode="llamafactory", split="test", speed=None):
    """An EvalRun that has succeeded, with one EvalSample per test item, scored for real.

    ``predictions``: a list in item order, or a function of the item's frozen content."""
    from training.engine.metrics import score_pairs
    from training.models import EvalRun, EvalSample

    items = list(version.items.filter(split=split).order_by("position"))
    if callable(predictions):
        predictions = [predictions(item.content) for item in items]
    predictions = list(predictions)[: len(items)]
    references = [item.content.get("output", "") for item in items]
    scored = score_pairs(predictions, references, mode=mode)
    by_dept: dict[str, list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        by_dept[item.content.get("department", "")].append(i)
    by_department = {
        dept: score_pairs([predictions[i] for i in rows], [references[i] for i in rows], mode=mode)["summary"]
        for dept, rows in by_dept.items()
    }
    now = timezone.now()
    run = EvalRun.objects.create(
        dataset_version=version,
        split=split,
        base_model=model,
        job=job,
        group=group,
        mode=mode,
        params={
            "max_new_tokens": 128,
            "temperature": 0.0,
            "top_p": 1.0,
            "top_k": 0,
            "repetition_penalty": 1.0,
            "seed": None,
            "batch_size": 4,
            "cutoff_len": 1024,
        },
        status=EvalRun.Status.SUCCEEDED,
        progress=1.0,
        done_samples=len(items),
        total_samples=len(items),
        summary=scored["summary"],
        by_department=by_department,
        speed=speed
        or {
            "ttft_ms_p50": 41.0,
            "ttft_ms_p95": 88.5,
            "latency_ms_p50": 512.0,
            "latency_ms_p95": 930.0,
            "tokens_per_second": 123.4,
            "samples_per_second": 2.5,
            "batch_size": 4,
            "backend": "local",
            "timed_samples": len(items),
        },
        backend="local",
        created_by=admin,
        started_at=now,
        finished_at=now,
    )
    EvalSample.objects.bulk_create(
        EvalSample(
            run=run,
            position=i,
            dataset_item=item,
            department=item.content.get("department", ""),
            prompt=item.content.get("instruction", ""),
            reference=ref,
            prediction=pred,
            bleu4=scores["bleu-4"],
            rouge1=scores["rouge-1"],
            rouge2=scores["rouge-2"],
            rougel=scores["rouge-l"],
            completion_tokens=len(pred),
            latency_ms=100.0 + 10 * i,
        )
        for i, (item, ref, pred, scores) in enumerate(zip(items, references, predictions, scored["per_sample"], strict=True))
    )
    return run


def make_eval_pair(admin, curator, make_pair):
    """A finished base-vs-tuned pair on one version's test split: (base_run, tuned_run, job)."""
    version = make_eval_version(curator, make_pair)
    model = make_base_model(admin, name=f"eval-model-{version.pk}")
    job = make_succeeded_job(admin, version, model)
    group = f"job-{job.pk}-test"
    base = make_finished_run(admin, version, model, predictions=answers(BASE), group=group)
    tuned = make_finished_run(admin, version, model, job=job, predictions=answers(TUNED), group=group)
    return base, tuned, job
