"""Serving endpoints and hosted models (admins only; audited).

- ``endpoint_save``: create or change an endpoint (validated; the API key is never stored, only
  the name of the environment variable that holds it).
- ``hosted_model_register``: a model with no local weights (e.g. ``gpt-4o``) on an endpoint.
- ``base_model_bind``: run a base model (and so its adapters) on an endpoint under a remote name.
- ``endpoint_check`` (training.runnables): the models an endpoint serves and its latency.
"""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.utils.translation import gettext as _

from medportal.audit import audit_record
from medportal.errors import InvalidInput
from training.models import BaseModel, InferenceEndpoint
from training.services import full_clean_or_invalid, require_admin
from training.services.base_models import base_model_name_free, base_model_save

ENDPOINT_FIELDS = ("name", "kind", "base_url", "api_key_env", "external", "connect_timeout_s", "read_timeout_s", "max_concurrent", "is_active")


def endpoint_save(*, actor, endpoint: InferenceEndpoint | None = None, **fields) -> InferenceEndpoint:
    """Create an endpoint, or change ``endpoint``, with ``fields`` (ENDPOINT_FIELDS)."""
    require_admin(actor, _("Only admins manage serving endpoints."))
    unknown = sorted(set(fields) - set(ENDPOINT_FIELDS))
    if unknown:
        raise InvalidInput(_("Unknown endpoint fields: %(fields)s.") % {"fields": ", ".join(unknown)})
    created = endpoint is None
    endpoint = endpoint or InferenceEndpoint()
    for key, value in fields.items():
        setattr(endpoint, key, value.strip() if isinstance(value, str) else value)
    full_clean_or_invalid(endpoint)
    try:
        with transaction.atomic():
            endpoint.save()
            audit_record(
                actor=actor,
                action="endpoint.create" if created else "endpoint.change",
                target=endpoint,
                summary=f"{endpoint.name}: {endpoint.get_kind_display()} {endpoint.base_url}{' (external)' if endpoint.external else ''}",
                changes={k: getattr(endpoint, k) for k in ENDPOINT_FIELDS},
            )
    except IntegrityError:
        message = _("An endpoint named '%(name)s' exists already.") % {"name": endpoint.name}
        raise InvalidInput(message, details={"name": message}) from None
    return endpoint


def hosted_model_register(*, actor, name: str, endpoint: InferenceEndpoint, remote_name: str = "", description: str = "") -> BaseModel:
    """A model with no local weights that runs on ``endpoint`` as ``remote_name`` (default ``name``)."""
    require_admin(actor, _("Only admins can register base models."))
    name = str(name or "").strip()
    if endpoint is None or endpoint.kind != InferenceEndpoint.Kind.OPENAI:
        message = _("A hosted model runs on an OpenAI-compatible endpoint: pick one.")
        raise InvalidInput(message, details={"endpoint": message})
    base_model_name_free(name)
    model = BaseModel(
        name=name,
        path="",
        endpoint=endpoint,
        remote_name=str(remote_name or "").strip(),
        description=str(description or "").strip(),
        has_chat_template=True,  # the server applies its own
        registered_by=actor,
    )
    return base_model_save(
        model,
        actor=actor,
        summary=f"{model.name}: hosted as {model.remote_name or model.name} on {endpoint.name}",
        changes={"name": model.name, "endpoint": endpoint.name, "remote_name": model.remote_name, "external": endpoint.external},
    )


def base_model_bind(*, actor, base_model: BaseModel, endpoint: InferenceEndpoint | None, remote_name: str = "") -> BaseModel:
    """Run ``base_model`` (and its adapters) on ``endpoint`` (None: the default endpoint)."""
    require_admin(actor, _("Only admins manage serving endpoints."))
    if base_model.is_hosted and (endpoint is None or endpoint.kind != InferenceEndpoint.Kind.OPENAI):
        message = _("A hosted model runs on an OpenAI-compatible endpoint: pick one.")
        raise InvalidInput(message, details={"endpoint": message})
    base_model.endpoint, base_model.remote_name = endpoint, str(remote_name or "").strip()
    full_clean_or_invalid(base_model)
    with transaction.atomic():
        base_model.save(update_fields=["endpoint", "remote_name"])
        audit_record(
            actor=actor,
            action="base_model.bind",
            target=base_model,
            summary=f"{base_model.name} runs on {endpoint.name if endpoint else 'the default endpoint'}",
            changes={"endpoint": endpoint.name if endpoint else None, "remote_name": base_model.remote_name},
        )
    return base_model


__all__ = ["base_model_bind", "endpoint_save", "hosted_model_register"]
