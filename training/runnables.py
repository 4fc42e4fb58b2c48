"""The one selector of runnable models: a base model, a succeeded job's adapter on it, or a
hosted model → what to run (``ModelRef``), where (the endpoint's backend) and the label users see.

Every caller goes through ``runnable(base_model, job=None)``: chat, the arena, evaluation, the
diagnose API, the vignette rewrite, ``serve_model``. The contenders of an evaluation suite are
``runnable`` results too (see docs/inference.md).

Where a model runs: its base model's endpoint (``BaseModel.endpoint``), else the default one —
``MEDPORTAL_INFERENCE_URL`` when set, else in-process. Adapters run where their base model runs;
on a server they are addressed as ``job-<id>`` and loaded there at first use.

External endpoints (hosted outside the site): refused when ``MEDPORTAL_ALLOW_EXTERNAL_ENDPOINTS``
is off; otherwise ``external_messages`` masks identifiers in what is sent and audits who sent how
many items for which chat, evaluation or request.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.utils.translation import gettext as _

from training.inference.base import InferenceBackend, InferenceError, ModelRef
from training.models import BaseModel, FineTuneJob, InferenceEndpoint

# ----------------------------------------------------------------------------- labels and refs


def adapter_name(job) -> str:
    """The name an adapter is served under (``vllm serve … --lora-modules job-12=/path``)."""
    return f"job-{job.pk}"


def runnable_label(base_model, job=None) -> str:
    """What users see: ``name``, ``name + #12``; a model on an external endpoint says so."""
    if base_model is None:
        return "?"
    label = base_model.name if job is None else f"{base_model.name} + #{job.pk}"
    if base_model.endpoint_id and base_model.endpoint.external:
        label = f"{label} ({_('external')})"
    return label


def remote_name(base_model) -> str:
    return base_model.remote_name or base_model.name


def _job_template(job) -> str:
    return (job.config or {}).get("template", "default") if job is not None else "default"


def model_ref(base_model, job=None, *, template: str | None = None) -> ModelRef:
    """The reference for a base model, or for a succeeded job's adapter on it; InferenceError
    saying why not."""
    if job is not None:
        if job.base_model_id != base_model.pk:
            raise InferenceError(_("Job #%(job)s was trained on %(trained)s, not %(base)s.") % {"job": job.pk, "trained": job.base_model.name, "base": base_model.name})
        if job.status != FineTuneJob.Status.SUCCEEDED or not job.adapter_path:
            raise InferenceError(_("Job #%(job)s has no adapter to serve (status: %(status)s).") % {"job": job.pk, "status": job.get_status_display()})
        return ModelRef(
            base_path=base_model.path,
            adapter_path=job.adapter_path,
            template=template or _job_template(job),
            name=adapter_name(job),
            base_name=remote_name(base_model),
        )
    return ModelRef(base_path=base_model.path, template=template or "default", name=remote_name(base_model), base_name=remote_name(base_model))


# ----------------------------------------------------------------------------- the selector


@dataclass(frozen=True)
class Runnable:
    """A model that can answer, resolved: what to run, where, and how users see it."""

    base_model: BaseModel
    job: FineTuneJob | None
    ref: ModelRef
    label: str
    endpoint: InferenceEndpoint | None  # None: the default endpoint
    external: bool

    @property
    def key(self) -> str:
        """``"<base id>"`` or ``"<base id>:<job id>"`` (the model pickers' value)."""
        return f"{self.base_model.pk}" if self.job is None else f"{self.base_model.pk}:{self.job.pk}"

    @property
    def endpoint_name(self) -> str:
        if self.endpoint is not None:
            return self.endpoint.name
        return "default" if settings.MEDPORTAL_INFERENCE_URL else "in-process"

    def backend(self) -> InferenceBackend:
        return backend_for(self.endpoint)


def external_allowed() -> bool:
    return bool(settings.MEDPORTAL_ALLOW_EXTERNAL_ENDPOINTS)


def external_refusal(base_model) -> str:
    return _(
        "%(model)s runs on an external endpoint, and external endpoints are turned off on this deployment (MEDPORTAL_ALLOW_EXTERNAL_ENDPOINTS)."
    ) % {"model": base_model.name}


def runnable(base_model, job=None, *, template: str | None = None) -> Runnable:
    """Resolve a base model (optionally a succeeded job's adapter on it). InferenceError says
    why it cannot run: inactive, the wrong job, no adapter, its endpoint off or forbidden, an
    adapter on a hosted model."""
    if base_model is None:
        raise InferenceError(_("Pick a model."))
    endpoint = base_model.endpoint if base_model.endpoint_id else None
    if endpoint is not None and not endpoint.is_active:
        raise InferenceError(_("The endpoint %(endpoint)s of %(model)s is switched off.") % {"endpoint": endpoint.name, "model": base_model.name})
    external = bool(endpoint and endpoint.external)
    if external and not external_allowed():
        raise InferenceError(external_refusal(base_model))
    if job is not None and base_model.is_hosted:
        raise InferenceError(_("%(model)s is a hosted model: it has no adapters.") % {"model": base_model.name})
    if base_model.is_hosted and (endpoint is None or endpoint.kind == InferenceEndpoint.Kind.IN_PROCESS):
        raise InferenceError(_("%(model)s has no local weights: bind it to the endpoint that serves it.") % {"model": base_model.name})
    ref = model_ref(base_model, job, template=template)
    return Runnable(base_model=base_model, job=job, ref=ref, label=runnable_label(base_model, job), endpoint=endpoint, external=external)


def runnable_bases():
    """Active base models that may run here (external ones only when allowed)."""
    qs = BaseModel.objects.filter(is_active=True).select_related("endpoint")
    qs = qs.exclude(endpoint__is_active=False)
    if not external_allowed():
        qs = qs.exclude(endpoint__external=True)
    return qs


def runnable_jobs():
    """Succeeded jobs with an adapter, on a base model that may run here, that the regression
    gate lets through (training.services.gate): none whose gate is pending or blocked, and no
    DPO adapter without a passed or overridden gate."""
    from django.db.models import Q

    return (
        FineTuneJob.objects.filter(status=FineTuneJob.Status.SUCCEEDED, base_model__in=runnable_bases())
        .exclude(adapter_path="")
        .exclude(gate__status__in=("pending", "blocked"))
        .exclude(Q(stage="dpo") & Q(gate__isnull=True))
        .select_related("base_model", "base_model__endpoint", "dataset_version")
    )


# ----------------------------------------------------------------------------- backends

_backends: dict[object, tuple[object, InferenceBackend]] = {}
_lock = threading.Lock()
_LOCAL = "in-process"
_DEFAULT = "default"


def _local_backend() -> InferenceBackend:
    from training.inference.local import LocalBackend

    return LocalBackend(
        max_cache_bytes=settings.MEDPORTAL_INFERENCE_CACHE_MB * 1024 * 1024,
        max_concurrent=settings.MEDPORTAL_INFERENCE_MAX_CONCURRENT,
    )


def _openai_backend(base_url: str, **options) -> InferenceBackend:
    """An OpenAI-compatible backend with the process's retry settings."""
    from training.inference.openai_http import OpenAIBackend

    return OpenAIBackend(
        base_url,
        max_retries=settings.MEDPORTAL_INFERENCE_MAX_RETRIES,
        max_retry_wait_s=settings.MEDPORTAL_INFERENCE_MAX_RETRY_WAIT_S,
        **options,
    )


def _cached(key, version, build) -> InferenceBackend:
    with _lock:
        held = _backends.get(key)
        if held is not None and held[0] == version:
            return held[1]
        backend = build()
        _backends[key] = (version, backend)
    if held is not None:
        held[1].close()
    return backend


def endpoint_backend(endpoint: InferenceEndpoint) -> InferenceBackend:
    """A fresh backend for an endpoint (the API key read from its environment variable now)."""
    import os

    if endpoint.kind == InferenceEndpoint.Kind.IN_PROCESS:
        return _local_backend()
    api_key = os.environ.get(endpoint.api_key_env, "") if endpoint.api_key_env else ""
    return _openai_backend(
        endpoint.base_url,
        api_key=api_key,
        timeout_s=endpoint.read_timeout_s,
        connect_timeout_s=endpoint.connect_timeout_s,
        max_concurrent=endpoint.max_concurrent,
        key_hint=endpoint.api_key_env,
        label=endpoint.name,
    )


def backend_for(endpoint: InferenceEndpoint | None) -> InferenceBackend:
    """The process's backend for an endpoint (None: the default). In-process endpoints share
    one backend (one model cache under one memory bound); an edited endpoint gets a new one."""
    if endpoint is None:
        if settings.MEDPORTAL_INFERENCE_URL:
            url, key = settings.MEDPORTAL_INFERENCE_URL, settings.MEDPORTAL_INFERENCE_API_KEY
            return _cached(
                _DEFAULT,
                (url, key),
                lambda: _openai_backend(url, api_key=key, key_hint="MEDPORTAL_INFERENCE_API_KEY", label="MEDPORTAL_INFERENCE_URL"),
            )
        return _cached(_LOCAL, None, _local_backend)
    if endpoint.kind == InferenceEndpoint.Kind.IN_PROCESS:
        return _cached(_LOCAL, None, _local_backend)
    import os

    version = (endpoint.updated_at, os.environ.get(endpoint.api_key_env, "") if endpoint.api_key_env else "")
    return _cached(("endpoint", endpoint.pk), version, lambda: endpoint_backend(endpoint))


def default_backend() -> InferenceBackend:
    """The backend of the default endpoint (MEDPORTAL_INFERENCE_URL, else in-process)."""
    return backend_for(None)


def reset_backends() -> None:
    """Forget every backend (settings changed, or tests)."""
    with _lock:
        held = list(_backends.values())
        _backends.clear()
    for _version, backend in held:
        backend.close()


# ----------------------------------------------------------------------------- endpoint check


def endpoint_check(endpoint: InferenceEndpoint) -> dict:
    """Ask the endpoint which models it serves, and time it. Stored on the endpoint and returned:
    ``{"ok", "models", "latency_ms", "error", "at"}``; never raises for a fault of the server."""
    from django.utils import timezone

    result = {"ok": False, "models": [], "latency_ms": None, "error": "", "at": timezone.now().isoformat()}
    if endpoint.kind == InferenceEndpoint.Kind.IN_PROCESS:
        names = sorted(BaseModel.objects.filter(is_active=True, endpoint=endpoint).exclude(path="").values_list("name", flat=True))
        result.update(ok=True, models=names, latency_ms=0.0)
    else:
        backend = endpoint_backend(endpoint)
        t0 = time.perf_counter()
        try:
            result["models"] = sorted(backend.models())
            result["ok"] = True
        except InferenceError as exc:
            result["error"] = str(exc)
        finally:
            result["latency_ms"] = round((time.perf_counter() - t0) * 1000.0, 1)
            backend.close()
    InferenceEndpoint.objects.filter(pk=endpoint.pk).update(last_check=result)
    endpoint.last_check = result
    return result


# ----------------------------------------------------------------------------- external data


def external_messages(run: Runnable, conversations: list[list[dict]], *, actor, purpose: str, target) -> list[list[dict]]:
    """What may be sent for ``run``: unchanged for a site endpoint; for an external one,
    identifiers masked in every message (curation.lib.identifiers) and one audit event (who,
    for what, how many items, how many had identifiers). InferenceError when forbidden."""
    if not run.external:
        return conversations
    if not external_allowed():
        raise InferenceError(external_refusal(run.base_model))
    from curation.lib.identifiers import find_identifiers, mask_identifiers
    from medportal.audit import audit_record

    masked_items = 0
    out = []
    for conversation in conversations:
        changed = False
        messages = []
        for m in conversation:
            content = m.get("content")
            if isinstance(content, str) and find_identifiers(content):
                content = mask_identifiers(content)
                changed = True
            messages.append({**m, "content": content})
        masked_items += changed
        out.append(messages)
    audit_record(
        actor=actor,
        action="inference.external",
        target=target,
        summary=f"{purpose}: {len(conversations)} item(s) to {run.base_model.name} on {run.endpoint_name}"[:500],
        changes={
            "purpose": purpose,
            "endpoint": run.endpoint_name,
            "model": run.ref.name,
            "items": len(conversations),
            "masked_items": masked_items,
        },
    )
    return out


# ----------------------------------------------------------------------------- the vignette rewrite


def rewrite_provider(name: str, job_id: int | None, *, actor=None):
    """curation's rewrite model (curation.services.rare_rewrite; registered in training.apps):
    (label, generate) for a registered base model and optionally a job's adapter."""
    from curation.services.rare_rewrite import RewriteFailed
    from medportal.errors import InvalidInput
    from training.inference.base import GenerationParams

    base = BaseModel.objects.filter(name=name, is_active=True).select_related("endpoint").first()
    if base is None:
        raise InvalidInput(_("The rewrite model '%(name)s' is not a registered, active base model.") % {"name": name})
    job = None
    if job_id:
        job = FineTuneJob.objects.filter(pk=job_id).select_related("base_model").first()
        if job is None:
            raise InvalidInput(_("The rewrite adapter job #%(id)s does not exist.") % {"id": job_id})
    try:
        run = runnable(base, job)
    except InferenceError as exc:
        raise InvalidInput(str(exc)) from None

    def generate(messages: list[dict], **params) -> str:
        try:
            [sent] = external_messages(run, [messages], actor=actor, purpose="rewrite", target=base)
            return run.backend().generate(run.ref, sent, GenerationParams(**params))
        except InferenceError as exc:
            raise RewriteFailed(str(exc)) from None

    label = base.name if job is None else f"{base.name} + job #{job.pk}"
    return label, generate


__all__ = [
    "Runnable",
    "adapter_name",
    "backend_for",
    "default_backend",
    "endpoint_backend",
    "endpoint_check",
    "external_allowed",
    "external_messages",
    "model_ref",
    "reset_backends",
    "rewrite_provider",
    "runnable",
    "runnable_bases",
    "runnable_jobs",
    "runnable_label",
]
