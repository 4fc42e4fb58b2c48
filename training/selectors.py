"""Reads of the training app: base models, jobs, the live snapshot of a job, presets and estimates.

Every MedPortal role may see every base model and job, so the access helpers only turn an
unknown id into a 404 (views and the API check the role first). ``job_snapshot`` is the one
shape of a job's live state: the job page renders it, the WebSocket pushes it, the API
returns it.
"""

from __future__ import annotations

import functools
import logging
import os
import random
from pathlib import Path

from django.db.models import QuerySet
from django.http import Http404

from curation.models import DatasetVersion
from curation.selectors_versions import version_items
from training.models import BaseModel, FineTuneJob, FineTuneMetric

logger = logging.getLogger(__name__)

ESTIMATE_SAMPLE = 200


# --------------------------------------------------------------------------- base models


def base_model_list(*, active_only: bool = False) -> QuerySet[BaseModel]:
    """Base models by name, with who registered them and the job a merged one came from."""
    qs = BaseModel.objects.select_related("registered_by", "source_job").order_by("name")
    if active_only:
        qs = qs.filter(is_active=True)
    return qs


def base_model_get(*, pk) -> BaseModel:
    try:
        return base_model_list().get(pk=int(pk))
    except (BaseModel.DoesNotExist, TypeError, ValueError):
        raise Http404("No such base model.") from None


def base_model_get_by_name(*, name: str) -> BaseModel:
    try:
        return base_model_list().get(name=str(name))
    except BaseModel.DoesNotExist:
        raise Http404("No such base model.") from None


# --------------------------------------------------------------------------- jobs


def job_list(*, status: str | None = None) -> QuerySet[FineTuneJob]:
    """Jobs newest first with their model, dataset version and creator (one query per page).

    An unknown ``status`` gives an empty list. The config and log tail are left out."""
    qs = FineTuneJob.objects.select_related("base_model", "dataset_version", "created_by").defer("log_tail", "config")
    if status:
        qs = qs.filter(status=status) if status in FineTuneJob.Status.values else qs.none()
    return qs.order_by("-created_at", "-id")


def job_get(*, pk) -> FineTuneJob:
    try:
        return FineTuneJob.objects.select_related("base_model", "dataset_version", "created_by").get(pk=int(pk))
    except (FineTuneJob.DoesNotExist, TypeError, ValueError):
        raise Http404("No such fine-tune job.") from None


def job_metrics(job: FineTuneJob) -> tuple[list[list], list[list]]:
    """The curves: train [[step, loss, learning_rate, tokens_per_second], …], eval [[step, eval_loss], …]."""
    train: list[list] = []
    evaluation: list[list] = []
    rows = (
        FineTuneMetric.objects.filter(job_id=job.pk)
        .order_by("kind", "step")
        .values_list("kind", "step", "loss", "learning_rate", "tokens_per_second")
    )
    for kind, step, loss, lr, tps in rows:
        if kind == FineTuneMetric.Kind.TRAIN:
            train.append([step, loss, lr, tps])
        else:
            evaluation.append([step, loss])
    return train, evaluation


def _iso(value) -> str | None:
    return value.isoformat() if value else None


def _mtime(path: Path) -> float:
    try:
        return max((p.stat().st_mtime for p in path.iterdir() if p.name.startswith("tokenizer")), default=path.stat().st_mtime)
    except OSError:
        return 0.0


@functools.lru_cache(maxsize=16)
def _tokenizer(path: str, stamp: float):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def load_tokenizer(path: str | os.PathLike):
    """The tokenizer of a local model folder (cached per folder and file times), or None."""
    folder = Path(path)
    if not folder.is_dir():
        return None
    try:
        return _tokenizer(str(folder), _mtime(folder))
    except Exception:
        logger.warning("could not load the tokenizer of %s", folder, exc_info=True)
        return None


@functools.lru_cache(maxsize=64)
def _fingerprint(path: str, stamp: float, template: str) -> str | None:
    from training.engine.templates import template_fingerprint

    tokenizer = load_tokenizer(path)
    if tokenizer is None:
        return None
    try:
        return template_fingerprint(tokenizer, template)
    except Exception:
        logger.warning("could not fingerprint template %s with the tokenizer of %s", template, path, exc_info=True)
        return None


def serving_fingerprint(job: FineTuneJob) -> str | None:
    """The fingerprint of the prompt as chat and evaluation will render it for this job's
    adapter: the job's template on the base model's tokenizer. None without an adapter."""
    if not job.adapter_path or not Path(job.adapter_path).is_dir():
        return None
    folder = Path(job.base_model.path)
    if not folder.is_dir():
        return None
    template = str((job.config or {}).get("template") or "default")
    return _fingerprint(str(folder), _mtime(folder), template)


def job_template_check(job: FineTuneJob) -> dict:
    """{"name", "training_fingerprint", "serving_fingerprint", "match"}: match is None until both are known."""
    training = job.template_fingerprint or None
    serving = serving_fingerprint(job)
    return {
        "name": str((job.config or {}).get("template") or "default"),
        "training_fingerprint": training,
        "serving_fingerprint": serving,
        "match": (training == serving) if (training and serving) else None,
    }


def job_snapshot(job: FineTuneJob) -> dict:
    """Everything the live job page shows, JSON-serialisable (the page, the socket and the API)."""
    train, evaluation = job_metrics(job)
    running = job.status == FineTuneJob.Status.RUNNING
    return {
        "id": job.pk,
        "status": job.status,
        "status_label": str(job.get_status_display()),
        "progress": job.progress,
        "step": job.step,
        "total_steps": job.total_steps,
        "epoch": job.epoch,
        "eta_seconds": job.eta_seconds,
        "tokens_per_second": job.tokens_per_second,
        "learning_rate": job.learning_rate,
        "train_loss_first": job.train_loss_first,
        "train_loss_last": job.train_loss_last,
        "eval_loss": job.eval_loss,
        "num_train_examples": job.num_train_examples,
        "num_eval_examples": job.num_eval_examples,
        "log_tail": job.log_tail,
        "error": job.error,
        "adapter_path": job.adapter_path,
        "worker": job.worker,
        "heartbeat_at": _iso(job.heartbeat_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "attempt": job.attempt,
        "version": job.version,
        "cancel_requested": job.cancel_requested_at is not None,
        "train": train,
        "eval": evaluation,
        "can_cancel": job.status == FineTuneJob.Status.QUEUED or (running and job.cancel_requested_at is None),
        "can_retry": job.status in (FineTuneJob.Status.FAILED, FineTuneJob.Status.CANCELLED),
        "template": job_template_check(job),
        "stage": job.stage,
        "preference": job.preference_metrics or {},
    }


# --------------------------------------------------------------------------- presets and estimates


def _record_text(content: dict) -> str:
    parts = [content.get("system") or "", content.get("instruction") or "", content.get("input") or "", content.get("output") or ""]
    for turn in content.get("history") or ():
        if isinstance(turn, (list, tuple)):
            parts.extend(str(x or "") for x in turn)
    return "\n".join(p for p in parts if p)


@functools.lru_cache(maxsize=64)
def _avg_tokens(version_id: int, model_path: str, stamp: float) -> float:
    version = DatasetVersion.objects.get(pk=version_id)
    texts = [_record_text(content) for _pk, content in version_items(version, "train")]
    if not texts:
        return 0.0
    if len(texts) > ESTIMATE_SAMPLE:
        texts = random.Random(version_id).sample(texts, ESTIMATE_SAMPLE)
    tokenizer = load_tokenizer(model_path) if model_path else None
    if tokenizer is not None:
        try:
            # + a few tokens per example for the template's role markers
            return sum(len(tokenizer(t, add_special_tokens=True)["input_ids"]) + 12 for t in texts) / len(texts)
        except Exception:
            logger.warning("could not tokenize the estimate sample with %s", model_path, exc_info=True)
    return sum(len(t) + 12 for t in texts) / len(texts)  # about one token per CJK character


def dataset_avg_tokens(*, dataset_version: DatasetVersion, base_model: BaseModel | None = None) -> float:
    """Average tokens of a train record (a sample of up to ESTIMATE_SAMPLE, with the model's
    tokenizer when it loads; characters otherwise). Cached."""
    path = base_model.path if base_model is not None else ""
    return _avg_tokens(dataset_version.pk, path, _mtime(Path(path)) if path else 0.0)


def finetune_estimate(*, config, base_model: BaseModel, dataset_version: DatasetVersion) -> dict:
    """The engine's GPU memory / time estimate for ``config`` on this model and version."""
    from training.engine.config import estimate

    info = base_model.info or {}
    return estimate(
        config,
        num_parameters=int(base_model.num_parameters or info.get("num_parameters") or 0),
        hidden_size=int(info.get("hidden_size") or 0),
        num_layers=int(info.get("num_layers") or 0),
        num_examples=int((dataset_version.counts or {}).get("train", 0)),
        avg_tokens=dataset_avg_tokens(dataset_version=dataset_version, base_model=base_model),
        vocab_size=int(base_model.vocab_size or info.get("vocab_size") or 0) or None,
    )


def preset_list(*, base_model: BaseModel | None = None, dataset_version: DatasetVersion | None = None) -> list[dict]:
    """The presets: {"name", "label", "config" (every knob), "requires_gpu", "gpu_only",
    "estimate" (None unless both a base model and a dataset version are given)}."""
    from training.engine.config import PRESET_LABELS, PRESETS, FinetuneConfig

    result = []
    for name, values in PRESETS.items():
        config = FinetuneConfig.from_dict(values)
        result.append(
            {
                "name": name,
                "label": PRESET_LABELS.get(name, name),
                "config": config.to_dict(),
                "requires_gpu": config.requires_gpu,
                "gpu_only": sorted(config.gpu_only_fields()),
                "estimate": finetune_estimate(config=config, base_model=base_model, dataset_version=dataset_version)
                if base_model is not None and dataset_version is not None
                else None,
            }
        )
    return result


__all__ = [
    "base_model_get",
    "base_model_get_by_name",
    "base_model_list",
    "dataset_avg_tokens",
    "finetune_estimate",
    "job_get",
    "job_list",
    "job_metrics",
    "job_snapshot",
    "job_template_check",
    "load_tokenizer",
    "preset_list",
    "serving_fingerprint",
]
