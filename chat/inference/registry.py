"""Django glue: the process-wide backend chosen by settings, and model references built from
the registry (a BaseModel, optionally a succeeded fine-tune job's adapter).

``MEDPORTAL_INFERENCE_URL`` set → every generation goes to that OpenAI-compatible server
(vLLM or ``serve_model``); unset → the in-process transformers backend.
"""

from __future__ import annotations

import threading

from django.conf import settings

from .base import InferenceBackend, InferenceError, ModelRef

_backend: InferenceBackend | None = None
_lock = threading.Lock()


def get_backend() -> InferenceBackend:
    global _backend
    with _lock:
        if _backend is None:
            if settings.MEDPORTAL_INFERENCE_URL:
                from .openai_http import OpenAIBackend

                _backend = OpenAIBackend(settings.MEDPORTAL_INFERENCE_URL, api_key=settings.MEDPORTAL_INFERENCE_API_KEY)
            else:
                from .local import LocalBackend

                _backend = LocalBackend(
                    max_cache_bytes=settings.MEDPORTAL_INFERENCE_CACHE_MB * 1024 * 1024,
                    max_concurrent=settings.MEDPORTAL_INFERENCE_MAX_CONCURRENT,
                )
        return _backend


def reset_backend() -> None:
    """Forget the backend (settings changed, or tests)."""
    global _backend
    with _lock:
        if _backend is not None:
            _backend.close()
        _backend = None


def adapter_name(job) -> str:
    """The name an adapter is served under (``vllm serve … --lora-modules job-12=/path``)."""
    return f"job-{job.pk}"


def model_ref(base_model, job=None) -> ModelRef:
    """What to run for a base model, or for a succeeded job's adapter on its base model."""
    if job is None:
        return ModelRef(base_path=base_model.path, name=base_model.name)
    if job.base_model_id != base_model.pk:
        raise InferenceError(f"Job #{job.pk} was trained on {job.base_model.name}, not {base_model.name}.")
    if job.status != "succeeded" or not job.adapter_path:
        raise InferenceError(f"Job #{job.pk} has no adapter to serve (status: {job.status}).")
    return ModelRef(
        base_path=base_model.path,
        adapter_path=job.adapter_path,
        template=(job.config or {}).get("template", "default"),
        name=adapter_name(job),
    )
