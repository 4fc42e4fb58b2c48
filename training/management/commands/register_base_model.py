"""Register a local Hugging Face model folder as a base model.

    python manage.py register_base_model --name qwen3-0.6b --path /models/Qwen3-0.6B [--user admin] [--json]

The folder is inspected (config, tokenizer, chat template, parameter count, dtype) without
loading weights. ``--user`` names the admin recorded as the one who registered it (default:
the first active superuser, else the first member of the "admin" group). With ``--json`` the
last line is ``{"base_model_id", "name", "path", "architecture", "num_parameters", "dtype",
"has_chat_template"}``.
"""

from __future__ import annotations

import json

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from curation.management.commands.freeze_dataset import default_user
from medportal.errors import ApplicationError
from training.models import BaseModel
from training.services.base_models import base_model_register


def command_user(username: str | None):
    """The active user named ``username``, or the default admin; CommandError if none."""
    User = get_user_model()
    if username:
        user = User.objects.filter(**{User.USERNAME_FIELD: username}, is_active=True).first()
        if user is None:
            raise CommandError(f"No active user named '{username}'.")
        return user
    user = default_user()
    if user is None:
        raise CommandError("No active admin user exists; create one or pass --user USERNAME.")
    return user


def model_summary(model: BaseModel) -> dict:
    return {
        "base_model_id": model.pk,
        "name": model.name,
        "path": model.path,
        "architecture": model.architecture,
        "num_parameters": model.num_parameters,
        "dtype": model.dtype,
        "has_chat_template": model.has_chat_template,
    }


class Command(BaseCommand):
    help = "Register a local Hugging Face model folder as a base model for fine-tuning."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True, help="Unique slug for the model, e.g. qwen3-0.6b.")
        parser.add_argument("--path", required=True, help="The model folder (config.json, weights, tokenizer).")
        parser.add_argument("--description", default="")
        parser.add_argument("--user", help="Username of the admin registering it (default: the first active admin).")
        parser.add_argument("--json", action="store_true", help="End with one JSON line describing the model.")

    def handle(self, *args, **opts):
        user = command_user(opts["user"])
        try:
            model = base_model_register(actor=user, name=opts["name"], path=opts["path"], description=opts["description"])
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(
            f"Registered base model '{model.name}' (#{model.pk}): {model.architecture or model.model_type}, "
            f"{model.num_parameters:,} parameters, {model.dtype or 'unknown dtype'}, "
            f"{'with' if model.has_chat_template else 'without'} a chat template, at {model.path}"
        )
        if opts["json"]:
            self.stdout.write(json.dumps(model_summary(model), ensure_ascii=False))
