"""Build the small local model that the demo and the tests fine-tune (no download).

    python manage.py build_demo_model --out var/models/medportal-demo [--name medportal-demo] [--register] [--user U] [--json]

The engine's builder (``python -m training.engine build-demo-model``, run in a child process)
trains a byte-level BPE tokenizer on the demo pre-training corpus (curation/demo_data/
pretrain_corpus.txt, never the demo QA pairs), builds a Qwen3-shaped model of
a few million parameters with a chat template and pre-trains it briefly so that it writes
sentences. ``--register`` registers the folder as a base model (owned by ``--user`` or the
first active admin). With ``--json`` the last line is the builder's result (``path``,
``num_parameters``, ``vocab_size``, ``final_loss``, ``seconds``) plus ``base_model_id``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from medportal.errors import ApplicationError
from training.management.commands.register_base_model import command_user
from training.services.base_models import base_model_register

DEFAULT_NAME = "medportal-demo"


def build_demo_model(out: Path, *, name: str = DEFAULT_NAME) -> dict:
    """Run the engine's builder in a child process; its result dict, or CommandError."""
    command = [sys.executable, "-m", "training.engine", "build-demo-model", "--out", str(out), "--name", name]
    done = subprocess.run(command, cwd=settings.BASE_DIR, capture_output=True, text=True)
    result = None
    for line in reversed(done.stdout.splitlines()):
        try:
            result = json.loads(line)
            break
        except ValueError:
            continue
    if done.returncode != 0 or not isinstance(result, dict) or result.get("type") == "error":
        message = (result or {}).get("message") if isinstance(result, dict) else None
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise CommandError(f"Building the demo model failed: {message or tail or 'no output'}")
    result.pop("type", None)
    return result


class Command(BaseCommand):
    help = "Build the small local demo model (tokenizer + Qwen3-shaped model, briefly pre-trained on the demo corpus)."

    def add_arguments(self, parser):
        parser.add_argument("--out", required=True, help="Folder to write the model to.")
        parser.add_argument(
            "--name", default=DEFAULT_NAME, help=f"Model name (default {DEFAULT_NAME}); also the base model name with --register."
        )
        parser.add_argument("--register", action="store_true", help="Register the folder as a base model.")
        parser.add_argument("--user", help="Admin recorded as registering it (default: the first active admin).")
        parser.add_argument("--json", action="store_true", help="End with one JSON line: the builder's result and base_model_id.")

    def handle(self, *args, **opts):
        out = Path(opts["out"]).expanduser().resolve()
        user = command_user(opts["user"]) if opts["register"] else None
        result = build_demo_model(out, name=opts["name"])
        self.stdout.write(
            f"Built '{opts['name']}' at {result.get('path', out)}: {result.get('num_parameters', 0):,} parameters, "
            f"vocabulary {result.get('vocab_size', '?')}, final pre-training loss {result.get('final_loss', '?')}, "
            f"{result.get('seconds', 0):.0f} s"
        )
        result["base_model_id"] = None
        if user is not None:
            try:
                model = base_model_register(
                    actor=user, name=opts["name"], path=result.get("path") or out, description="MedPortal demo model (built locally)."
                )
            except ApplicationError as exc:
                raise CommandError(exc.message) from None
            result["base_model_id"] = model.pk
            self.stdout.write(f"Registered it as base model '{model.name}' (#{model.pk}).")
        if opts["json"]:
            self.stdout.write(json.dumps(result, ensure_ascii=False))
