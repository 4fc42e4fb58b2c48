"""MedPortal's own OpenAI-compatible server (``manage.py serve_model``).

``GET /v1/models``, ``POST /v1/chat/completions`` and ``POST /v1/completions`` (plain and
``stream: true`` server-sent events, the shapes the OpenAI and vLLM clients read), over any ``InferenceBackend`` — in
practice the in-process transformers backend, so one GPU host can serve while the web app
runs elsewhere, and so the OpenAI backend is tested against a real server.

The standard library's threading HTTP server is enough here: generation, not HTTP, is the
bottleneck, and the backend bounds concurrent generations. It listens on 127.0.0.1 unless
told otherwise.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .base import GenerationParams, InferenceBackend, InferenceError, ModelRef, ParamsError, StreamStats

logger = logging.getLogger(__name__)


def params_from_request(body: dict) -> GenerationParams:
    values = {}
    if body.get("max_tokens") is not None or body.get("max_completion_tokens") is not None:
        values["max_new_tokens"] = body.get("max_completion_tokens") or body.get("max_tokens")
    for src, dst in (("temperature", "temperature"), ("top_p", "top_p"), ("repetition_penalty", "repetition_penalty"), ("seed", "seed")):
        if body.get(src) is not None:
            values[dst] = body[src]
    if body.get("top_k") is not None and int(body["top_k"]) > 0:
        values["top_k"] = int(body["top_k"])
    return GenerationParams.from_dict(values)


class _Handler(BaseHTTPRequestHandler):
    server: OpenAIServer
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet: route to logging
        logger.info("%s - %s", self.address_string(), fmt % args)

    def _send(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _json(self, status: int, payload: dict) -> None:
        self._send(status, json.dumps(payload, ensure_ascii=False).encode("utf-8"), "application/json; charset=utf-8")

    def _text(self, status: int, text: str) -> None:
        self._send(status, text.encode(), "text/plain; charset=utf-8")

    def _read_json(self) -> dict:
        """The request's JSON object; ValueError saying what is wrong with it."""
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if not isinstance(body, dict):
            raise ValueError("the body must be a JSON object")
        return body

    def _json_body(self) -> dict | None:
        """The request's JSON object, or None once a 400 saying why has been answered."""
        try:
            return self._read_json()
        except (ValueError, UnicodeDecodeError) as exc:
            self._error(400, f"Unreadable JSON body: {exc}")
            return None

    def _error(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        self._json(status, {"error": {"message": message, "type": kind, "code": status}})

    def _authorised(self) -> bool:
        if not self.server.api_key:
            return True
        if self.headers.get("Authorization", "") == f"Bearer {self.server.api_key}":
            return True
        self._error(401, "Missing or wrong API key.", "authentication_error")
        return False

    def do_GET(self):  # noqa: N802
        if not self._authorised():
            return
        if self.path.rstrip("/") == "/v1/models":
            created = int(self.server.started)
            data = [{"id": name, "object": "model", "created": created, "owned_by": "medportal"} for name in list(self.server.models)]
            self._json(200, {"object": "list", "data": data})
        elif self.path.rstrip("/") in ("/health", "/healthz"):
            self._json(200, {"status": "ok"})
        else:
            self._error(404, f"No route {self.path}.")

    def _discard_body(self) -> None:
        """Read away a body that will not be used: left on a kept-alive connection, it would be
        read as the next request."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            return
        while length > 0:
            chunk = self.rfile.read(min(length, 65536))
            if not chunk:
                break
            length -= len(chunk)

    def do_POST(self):  # noqa: N802
        if not self._authorised():
            self._discard_body()
            return
        route = self.path.rstrip("/")
        if route == "/v1/load_lora_adapter" and self.server.runtime_lora:
            self._load_lora()
            return
        if route == "/v1/unload_lora_adapter" and self.server.runtime_lora:
            self._unload_lora()
            return
        if route not in ("/v1/chat/completions", "/v1/completions"):
            self._discard_body()
            self._error(404, f"No route {self.path}.")
            return
        body = self._json_body()
        if body is None:
            return
        name = body.get("model") or next(iter(self.server.models))
        ref = self.server.models.get(name)
        if ref is None:
            self._error(404, f"The model {name!r} does not exist; this server has {', '.join(self.server.models)}.", "not_found_error")
            return
        try:
            params = params_from_request(body)
        except (ParamsError, ValueError, TypeError) as exc:
            self._error(400, f"Bad sampling parameters: {exc}")
            return
        chat = route == "/v1/chat/completions"
        backend = self.server.backend
        if chat:
            messages = body.get("messages")
            if not isinstance(messages, list):
                self._error(400, "'messages' must be a list of {role, content} objects.")
                return

            def run(cancel, stats):
                return backend.stream(ref, messages, params, cancel=cancel, stats=stats)
        else:
            prompt = body.get("prompt")
            if not isinstance(prompt, str) or not prompt:
                self._error(400, "'prompt' must be a non-empty string.")
                return
            if not hasattr(backend, "stream_prompt"):
                self._error(400, "This backend cannot continue raw prompts.")
                return

            def run(cancel, stats):
                return backend.stream_prompt(ref, prompt, params, cancel=cancel, stats=stats)

        completion_id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        if body.get("stream"):
            self._stream(completion_id, name, run, chat, bool((body.get("stream_options") or {}).get("include_usage")))
        else:
            self._complete(completion_id, name, run, chat)

    def _load_lora(self) -> None:
        """vLLM's runtime LoRA API: ``{"lora_name", "lora_path"}`` → the adapter is served under
        that name, on this server's base model. Only with ``runtime_lora`` (vLLM: the environment
        variable VLLM_ALLOW_RUNTIME_LORA_UPDATING); without it the route does not exist (404)."""
        from pathlib import Path

        body = self._json_body()
        if body is None:
            return
        name, folder = body.get("lora_name"), body.get("lora_path")
        if not isinstance(name, str) or not name.strip() or not isinstance(folder, str) or not folder.strip():
            self._error(400, "Give 'lora_name' and 'lora_path'.")
            return
        if not (Path(folder) / "adapter_config.json").is_file():
            self._error(400, f"No LoRA adapter at {folder} (no adapter_config.json).")
            return
        with self.server.lock:
            if name in self.server.models:
                self._error(400, f"The lora adapter '{name}' has already been loaded.")
                return
            base = self.server.base_ref
            self.server.models[name] = ModelRef(base_path=base.base_path, adapter_path=folder, name=name, base_name=base.name)
        logger.info("runtime LoRA: %s = %s", name, folder)
        self._text(200, f"Success: LoRA adapter '{name}' added successfully.")

    def _unload_lora(self) -> None:
        """vLLM's ``POST /v1/unload_lora_adapter`` ``{"lora_name"}``: stop serving a loaded adapter."""
        try:
            name = self._read_json().get("lora_name")
        except (ValueError, UnicodeDecodeError):
            name = None
        with self.server.lock:
            ref = self.server.models.get(name) if isinstance(name, str) else None
            if ref is None or not ref.adapter_path:
                self._error(400, f"The lora adapter '{name}' is not loaded.")
                return
            del self.server.models[name]
        self._text(200, f"Success: LoRA adapter '{name}' removed successfully.")

    def _complete(self, completion_id, name, run, chat: bool) -> None:
        stats = StreamStats()
        try:
            text = "".join(run(None, stats))
        except InferenceError as exc:
            self._error(400, str(exc))
            return
        finish = stats.finish_reason or "stop"
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish} if chat else {"index": 0, "text": text, "finish_reason": finish}
        self._json(
            200,
            {
                "id": completion_id,
                "object": "chat.completion" if chat else "text_completion",
                "created": int(time.time()),
                "model": name,
                "choices": [choice],
                "usage": {
                    "prompt_tokens": stats.prompt_tokens,
                    "completion_tokens": stats.completion_tokens,
                    "total_tokens": stats.prompt_tokens + stats.completion_tokens,
                },
            },
        )

    def _stream(self, completion_id, name, run, chat: bool, include_usage: bool) -> None:
        created = int(time.time())
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

        def send(payload: dict | str) -> None:
            data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
            self.wfile.write(f"data: {data}\n\n".encode())
            self.wfile.flush()

        def chunk(delta: dict, finish: str | None = None) -> dict:
            if chat:
                choice = {"index": 0, "delta": delta, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": delta.get("content", ""), "finish_reason": finish}
            obj = "chat.completion.chunk" if chat else "text_completion"
            return {"id": completion_id, "object": obj, "created": created, "model": name, "choices": [choice]}

        cancel = threading.Event()
        stats = StreamStats()
        try:
            if chat:
                send(chunk({"role": "assistant", "content": ""}))
            for piece in run(cancel, stats):
                send(chunk({"content": piece}))
            send(chunk({}, stats.finish_reason or "stop"))
            if include_usage:
                usage = {
                    "prompt_tokens": stats.prompt_tokens,
                    "completion_tokens": stats.completion_tokens,
                    "total_tokens": stats.prompt_tokens + stats.completion_tokens,
                }
                obj = "chat.completion.chunk" if chat else "text_completion"
                send({"id": completion_id, "object": obj, "created": created, "model": name, "choices": [], "usage": usage})
            send("[DONE]")
        except (BrokenPipeError, ConnectionResetError):
            cancel.set()  # the client went away: stop generating
        except InferenceError as exc:
            try:
                send({"error": {"message": str(exc), "type": "server_error"}})
                send("[DONE]")
            except OSError:
                pass


class OpenAIServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], *, backend: InferenceBackend, models: dict[str, ModelRef], api_key: str = "", runtime_lora: bool = False
    ):
        if not models:
            raise ValueError("serve at least one model")
        super().__init__(address, _Handler)
        self.backend = backend
        self.models = dict(models)
        self.api_key = api_key
        self.runtime_lora = runtime_lora
        # Adapters loaded at run time go on the first base model served (vLLM serves one).
        first = next((r for r in self.models.values() if not r.adapter_path), next(iter(self.models.values())))
        self.base_ref = ModelRef(base_path=first.base_path, name=next(n for n, r in self.models.items() if r is first))
        self.lock = threading.Lock()
        self.started = time.time()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"
