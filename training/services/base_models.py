"""Base-model registry: an admin registers a local Hugging Face model folder.

Nothing is downloaded: the folder is inspected in place (``training.engine.modelinfo``, which
reads config.json, the tokenizer files and the safetensors headers without loading weights)
and what it says is stored on the row, so the job form can estimate memory and time without
touching the folder again.
"""

from __future__ import annotations

from pathlib import Path

from django.db import IntegrityError, transaction
from django.utils.translation import gettext as _

from medportal.audit import audit_record
from medportal.errors import InvalidInput
from training.models import BaseModel, FineTuneJob
from training.services import full_clean_or_invalid, require_admin


def base_model_inspect(path: str | Path) -> dict:
    """What ``inspect_model_dir`` reads from ``path``; InvalidInput with the reason when the
    folder is not a usable model (missing, no config, no weights, no tokenizer)."""
    from training.engine.modelinfo import ModelDirError, inspect_model_dir

    folder = Path(path).expanduser()
    if not str(path).strip():
        raise InvalidInput(_("Give the folder of the model."), details={"path": _("This field is required.")})
    if not folder.is_dir():
        message = _("The folder '%(path)s' does not exist on this server.") % {"path": folder}
        raise InvalidInput(message, details={"path": message})
    try:
        info = inspect_model_dir(str(folder.resolve()))
    except ModelDirError as exc:
        message = _("'%(path)s' is not a usable model folder: %(reason)s") % {"path": folder, "reason": exc}
        raise InvalidInput(message, details={"path": message}) from None
    if not info.get("has_tokenizer"):
        message = _("'%(path)s' has no tokenizer files; a model can only be fine-tuned with its tokenizer.") % {"path": folder}
        raise InvalidInput(message, details={"path": message})
    return info


def _name_taken(name: str) -> InvalidInput:
    message = _("A base model named '%(name)s' is already registered.") % {"name": name}
    return InvalidInput(message, details={"name": message})


def base_model_name_free(name: str) -> None:
    """InvalidInput unless no base model is registered as ``name``."""
    if BaseModel.objects.filter(name=name).exists():
        raise _name_taken(name)


def base_model_save(model: BaseModel, *, actor, summary: str, changes: dict) -> BaseModel:
    """Validate and save a new registry entry with its ``base_model.register`` audit record;
    InvalidInput for a bad field or a name a concurrent registration took."""
    full_clean_or_invalid(model)
    try:
        with transaction.atomic():
            model.save()
            audit_record(actor=actor, action="base_model.register", target=model, summary=summary, changes=changes)
    except IntegrityError:  # a concurrent registration took the name
        raise _name_taken(model.name) from None
    return model


def base_model_register(*, actor, name: str, path: str | Path, description: str = "", source_job: FineTuneJob | None = None) -> BaseModel:
    """Register the model folder ``path`` under ``name`` (admins only).

    Raises InvalidInput for a bad name, a folder that is not a model, or a name or folder
    already registered; NotAllowed for other roles.
    """
    require_admin(actor, _("Only admins can register base models."))
    name = str(name or "").strip()
    if not name:
        raise InvalidInput(_("Give the model a name."), details={"name": _("This field is required.")})
    info = base_model_inspect(path)
    folder = str(Path(path).expanduser().resolve())
    base_model_name_free(name)
    existing = BaseModel.objects.filter(path=folder).first()
    if existing is not None:
        message = _("This folder is already registered as '%(name)s'.") % {"name": existing.name}
        raise InvalidInput(message, details={"path": message})
    model = BaseModel(
        name=name,
        path=folder,
        description=str(description or "").strip(),
        architecture=str(info.get("architecture") or "")[:100],
        model_type=str(info.get("model_type") or "")[:50],
        num_parameters=int(info.get("num_parameters") or 0),
        dtype=str(info.get("dtype") or "")[:20],
        has_chat_template=bool(info.get("has_chat_template")),
        vocab_size=int(info.get("vocab_size") or 0),
        context_length=int(info.get("context_length") or 0),
        info=info,
        source_job=source_job,
        registered_by=actor,
    )
    return base_model_save(
        model,
        actor=actor,
        summary=f"{model.name}: {model.architecture or model.model_type} ({model.num_parameters:,} parameters) at {model.path}",
        changes={"name": model.name, "path": model.path, "source_job": source_job.pk if source_job else None},
    )


__all__ = ["base_model_inspect", "base_model_name_free", "base_model_register", "base_model_save"]
