"""Serve a registered base model (optionally with a fine-tune job's adapter) over an
OpenAI-compatible API: ``/v1/models`` and ``/v1/chat/completions`` (streaming too).

    python manage.py serve_model --model medportal-demo [--adapter 12] [--host 127.0.0.1] [--port 8001]

Point the web app at it with MEDPORTAL_INFERENCE_URL=http://HOST:PORT, or register it as a
serving endpoint. With --adapter the server answers both the base model (under its name) and
the adapter (as ``job-<id>``), so base-vs-tuned comparisons need one server. With
--enable-runtime-lora it also loads adapters on request (``POST /v1/load_lora_adapter``, as vLLM
does with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True): MedPortal then loads each adapter at first use.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import threading

from django.core.management.base import BaseCommand, CommandError

from training.inference.base import InferenceError
from training.inference.local import LocalBackend
from training.runnables import model_ref
from training.inference.server import OpenAIServer


class Command(BaseCommand):
    help = "Serve a registered model (and an adapter) over an OpenAI-compatible HTTP API."

    def add_arguments(self, parser):
        parser.add_argument("--model", required=True, help="Registered base-model name.")
        parser.add_argument("--adapter", type=int, help="Id of a succeeded fine-tune job whose adapter to serve too.")
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8001)
        parser.add_argument("--api-key", default="", help="Require 'Authorization: Bearer KEY'.")
        parser.add_argument("--max-concurrent", type=int, default=2, help="Generations at once (others wait).")
        parser.add_argument("--preload", action="store_true", help="Load the weights before listening.")
        parser.add_argument("--served-model-name", default="", help="The name the base model is served under (default: its registered name).")
        parser.add_argument(
            "--enable-runtime-lora", action="store_true", help="Accept POST /v1/load_lora_adapter (vLLM's runtime LoRA API); off: the route answers 404."
        )

    def handle(self, *args, **opts):
        from training.models import BaseModel, FineTuneJob

        try:
            base = BaseModel.objects.get(name=opts["model"])
        except BaseModel.DoesNotExist:
            names = ", ".join(BaseModel.objects.values_list("name", flat=True)) or "none registered"
            raise CommandError(f"No base model named {opts['model']!r} (registered: {names}).") from None
        if base.is_hosted:
            raise CommandError(f"{base.name} is a hosted model: it has no local weights to serve.")
        served = opts["served_model_name"] or base.name
        # The local weights (model_ref), not the base model's endpoint: this process is the server.
        models = {served: dataclasses.replace(model_ref(base), name=served, base_name=served)}
        if opts["adapter"] is not None:
            try:
                job = FineTuneJob.objects.select_related("base_model").get(pk=opts["adapter"])
                ref = dataclasses.replace(model_ref(base, job), base_name=served)
            except FineTuneJob.DoesNotExist:
                raise CommandError(f"No fine-tune job #{opts['adapter']}.") from None
            except InferenceError as exc:
                raise CommandError(str(exc)) from None
            models[ref.name] = ref
        backend = LocalBackend(max_concurrent=max(1, opts["max_concurrent"]))
        if opts["preload"]:
            for ref in models.values():
                backend.cache.get(ref)
        try:
            server = OpenAIServer(
                (opts["host"], opts["port"]), backend=backend, models=models, api_key=opts["api_key"], runtime_lora=opts["enable_runtime_lora"]
            )
        except OSError as exc:
            raise CommandError(f"Cannot listen on {opts['host']}:{opts['port']}: {exc}") from None
        # Stop cleanly on SIGTERM as on Ctrl-C.
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
        self.stdout.write(json.dumps({"url": server.url, "models": sorted(models)}), ending="\n")
        self.stdout.flush()
        try:
            server.serve_forever(poll_interval=0.2)
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
