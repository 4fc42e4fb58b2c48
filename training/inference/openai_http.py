"""OpenAI-compatible HTTP backend: a vLLM server, MedPortal's own ``serve_model``, or a hosted
API (OpenAI, …).

Streams ``/v1/chat/completions`` with ``stream: true`` (server-sent events); the model is
addressed by ``ModelRef.name`` (the base model's remote name, or an adapter's ``job-<id>``).
Cancellation closes the response, which makes the server stop generating.

Adapters are loaded at first use through vLLM's runtime LoRA API (``POST /v1/load_lora_adapter``,
which ``serve_model`` also implements) unless the server already lists them; a server that refuses
is answered with what to start vLLM with. Faults become ``InferenceError`` with a message a user
can act on: unreachable, wrong key (401/403), unknown model (404), rate limit (429: waits
``Retry-After`` and retries, within a bound), timeout, a broken or unreadable stream. Nothing is
retried once an answer has started.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path

import httpx

from .base import GenerationParams, InferenceBackend, InferenceError, ModelRef, StreamStats, wait_for_slot

logger = logging.getLogger(__name__)


@lru_cache(maxsize=16)
def _tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def local_prompt(model: ModelRef, messages: Sequence[dict]) -> str | None:
    """The prompt rendered here with the adapter's named template, when the tokenizer is readable
    on this host; None otherwise (the server then applies the model's own chat template)."""
    if model.template == "default":
        return None
    folder = next((p for p in (model.adapter_path, model.base_path) if p and (Path(p) / "tokenizer_config.json").is_file()), None)
    if folder is None:
        if model.base_path:  # a hosted model has no tokenizer here, by design
            logger.warning("template %s: no tokenizer at %s; the server's chat template is used", model.template, model.base_path)
        return None
    from training.engine.templates import TemplateError, render_prompt

    try:
        return render_prompt(_tokenizer(folder), model.template, list(messages))
    except TemplateError as exc:
        raise InferenceError(f"The prompt cannot be rendered with the {model.template!r} template: {exc}") from exc


class ModelNotServed(InferenceError):
    """The server answered 404 for the model (or adapter) asked for."""


class OpenAIBackend(InferenceBackend):
    name = "openai"

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str = "",
        timeout_s: float = 600.0,
        connect_timeout_s: float = 10.0,
        max_concurrent: int = 0,
        max_retries: int = 2,
        max_retry_wait_s: float = 30.0,
        key_hint: str = "",
        label: str = "",
    ):
        self.base_url = base_url.rstrip("/")
        if self.base_url.endswith("/v1"):
            self.base_url = self.base_url[: -len("/v1")]
        self.label = label or self.base_url
        self.key_hint = key_hint
        self.timeout_s = timeout_s
        self.max_retries = max(0, int(max_retries))
        self.max_retry_wait_s = max_retry_wait_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            limits=httpx.Limits(max_connections=max(max_concurrent, 10) if max_concurrent else 100),
        )
        self._slots = threading.BoundedSemaphore(max_concurrent) if max_concurrent else None
        self._adapters: set[str] = set()
        self._adapter_lock = threading.Lock()

    # ---- errors a user can act on ------------------------------------------------------

    def _where(self) -> str:
        return f"The inference server {self.label}"

    def _status_error(self, status: int, detail: str, model: str) -> InferenceError:
        detail = _error_detail(detail)
        if status in (401, 403):
            hint = f" (check the environment variable {self.key_hint})" if self.key_hint else ""
            return InferenceError(f"{self._where()} refused the API key ({status}){hint}: {detail}")
        if status == 404:
            return ModelNotServed(f"{self._where()} does not serve the model '{model}' (404): {detail}")
        if status == 429:
            return InferenceError(f"{self._where()} is rate limiting requests (429) and asked to wait longer than we retry: {detail}")
        return InferenceError(f"{self._where()} answered {status}: {detail}")

    def _transport_error(self, exc: httpx.HTTPError, *, started: bool) -> InferenceError:
        if isinstance(exc, httpx.ConnectTimeout) or isinstance(exc, httpx.ConnectError):
            return InferenceError(f"{self._where()} could not be reached: {exc or type(exc).__name__}")
        if isinstance(exc, httpx.TimeoutException):
            return InferenceError(f"{self._where()} did not answer within {self.timeout_s:g} s.")
        if started:
            return InferenceError(f"{self._where()} broke off the answer: {exc or type(exc).__name__}")
        return InferenceError(f"{self._where()} could not be reached: {exc or type(exc).__name__}")

    # ---- model list and runtime adapters --------------------------------------------------

    def models(self) -> list[str]:
        try:
            response = self.client.get("/v1/models")
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, started=False) from exc
        if response.status_code != 200:
            raise self._status_error(response.status_code, response.text, "/v1/models")
        try:
            return [m["id"] for m in response.json().get("data", [])]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InferenceError(f"{self._where()} sent an unreadable model list.") from exc

    def ensure_adapter(self, model: ModelRef) -> None:
        """Make the server serve ``model.name`` (an adapter): nothing when it lists it already,
        else ``POST /v1/load_lora_adapter``. Once per adapter and backend."""
        if not model.adapter_path or not model.name or model.name in self._adapters:
            return
        with self._adapter_lock:
            if model.name in self._adapters:
                return
            if model.name in self.models():
                self._adapters.add(model.name)
                return
            body = {"lora_name": model.name, "lora_path": model.adapter_path}
            try:
                response = self.client.post("/v1/load_lora_adapter", json=body)
            except httpx.HTTPError as exc:
                raise self._transport_error(exc, started=False) from exc
            text = response.text
            if response.status_code == 200 or (response.status_code == 400 and "already been loaded" in text):
                self._adapters.add(model.name)
                return
            if response.status_code in (401, 403):
                raise self._status_error(response.status_code, text, model.name)
            raise InferenceError(lora_refusal(self.label, model, response.status_code, _error_detail(text)))

    # ---- generation ------------------------------------------------------------------------

    def payload(self, model: ModelRef, messages: Sequence[dict], params: GenerationParams, prompt: str | None = None) -> dict:
        body = {
            "model": model.name or model.base_path,
            **({"prompt": prompt} if prompt is not None else {"messages": list(messages)}),
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        # vLLM's extra sampling parameters; hosted APIs refuse unknown ones, so only when set.
        if params.top_k:
            body["top_k"] = params.top_k
        if params.repetition_penalty != 1.0:
            body["repetition_penalty"] = params.repetition_penalty
        if params.seed is not None:
            body["seed"] = params.seed
        return body

    def _stream_messages(self, model: ModelRef, messages: list[dict], params: GenerationParams, cancel: threading.Event | None, stats: StreamStats) -> Iterator[str]:
        # A named template (e.g. medical_inquiry) is rendered here exactly as in training and sent
        # to /v1/completions; the model's own chat template goes through /v1/chat/completions.
        prompt = local_prompt(model, messages)
        if prompt is None and model.template != "default":
            # The server's chat template, with the named template's system prompt and fields.
            from training.engine.templates import TemplateError, template_chat_messages

            try:
                messages = template_chat_messages(model.template, messages)
            except TemplateError as exc:
                raise InferenceError(f"The prompt cannot be written with the {model.template!r} template: {exc}") from exc
        route = "/v1/chat/completions" if prompt is None else "/v1/completions"
        return self._guarded(model, route, self.payload(model, messages, params, prompt), cancel, stats)

    def _guarded(self, model: ModelRef, route: str, body: dict, cancel: threading.Event | None, stats: StreamStats) -> Iterator[str]:
        if not wait_for_slot(self._slots, cancel, stats):
            return
        try:
            self.ensure_adapter(model)
            try:
                yield from self._events(route, body, cancel, stats)
            except ModelNotServed:
                # A server restarted since it loaded the adapter forgets it: load it again, once
                # (the 404 comes before any piece of the answer, so nothing was said twice).
                if not (model.adapter_path and model.name in self._adapters):
                    raise
                self._adapters.discard(model.name)
                self.ensure_adapter(model)
                yield from self._events(route, body, cancel, stats)
        finally:
            if self._slots is not None:
                self._slots.release()

    def _open(self, route: str, body: dict, cancel: threading.Event | None):
        """The streaming response, after bounded retries on 429 (Retry-After, else 1, 2, 4 s)."""
        attempt = 0
        while True:
            request = self.client.build_request("POST", route, json=body)
            try:
                response = self.client.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise self._transport_error(exc, started=False) from exc
            if response.status_code == 200:
                return response
            detail = response.read().decode("utf-8", "replace")[:500]
            response.close()
            if response.status_code == 429 and attempt < self.max_retries:
                wait_s = _retry_after(response.headers.get("Retry-After"), default=2.0**attempt)
                if wait_s is not None and wait_s <= self.max_retry_wait_s:
                    attempt += 1
                    logger.info("%s: 429, retry %d in %.1f s", self.label, attempt, wait_s)
                    if cancel is not None:
                        if cancel.wait(wait_s):
                            return None
                    else:
                        time.sleep(wait_s)
                    continue
            if response.status_code == 429 and attempt >= self.max_retries:
                raise InferenceError(f"{self._where()} is still rate limiting (429) after {attempt + 1} tries: {_error_detail(detail)}")
            raise self._status_error(response.status_code, detail, str(body.get("model")))

    def _events(self, route: str, body: dict, cancel: threading.Event | None, stats: StreamStats) -> Iterator[str]:
        started = False
        finished = False
        try:
            response = self._open(route, body, cancel)
            if response is None:
                stats.finish_reason = "cancelled"
                return
            try:
                try:
                    for line in response.iter_lines():
                        if cancel is not None and cancel.is_set():
                            stats.finish_reason = "cancelled"
                            finished = True
                            break
                        if not line.strip() or line.startswith(":"):
                            continue
                        if not line.startswith("data:"):
                            raise InferenceError(f"{self._where()} sent something that is not a server-sent event: {line[:200]!r}")
                        data = line[5:].strip()
                        if data == "[DONE]":
                            finished = True
                            break
                        try:
                            chunk = json.loads(data)
                            if not isinstance(chunk, dict):
                                raise ValueError("not an object")
                        except ValueError as exc:
                            raise InferenceError(f"{self._where()} sent an unreadable event: {data[:200]}") from exc
                        if chunk.get("error"):
                            raise InferenceError(f"{self._where()} failed: {_error_detail(chunk['error'])}")
                        usage = chunk.get("usage")
                        if usage:
                            stats.prompt_tokens = usage.get("prompt_tokens", stats.prompt_tokens)
                            stats.completion_tokens = usage.get("completion_tokens", stats.completion_tokens)
                        for choice in chunk.get("choices") or []:
                            piece = (choice.get("delta") or {}).get("content") or choice.get("text") or ""
                            if choice.get("finish_reason"):
                                stats.finish_reason = choice["finish_reason"]
                                finished = True
                            if piece:
                                started = True
                                if stats.first_token_at is None:
                                    stats.first_token_at = time.perf_counter()
                                if not usage:
                                    stats.completion_tokens += 1
                                yield piece
                except httpx.HTTPError as exc:
                    raise self._transport_error(exc, started=started) from exc
            finally:
                response.close()
            if not finished:
                raise InferenceError(f"{self._where()} ended the answer before it was complete (no finish reason, no [DONE]).")
        except GeneratorExit:  # the caller stopped reading: closing the response stops the server
            stats.finish_reason = stats.finish_reason or "cancelled"
            raise
        finally:
            stats.finished_at = time.perf_counter()
        if not stats.finish_reason:
            stats.finish_reason = "stop"

    def close(self) -> None:
        self.client.close()


def _retry_after(value: str | None, *, default: float) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date); default when absent."""
    if value is None or not str(value).strip():
        return default
    value = str(value).strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    return max(0.0, when.timestamp() - time.time())


def _error_detail(detail) -> str:
    """The message of an OpenAI-shaped error body (or the text itself), short."""
    if isinstance(detail, str):
        try:
            parsed = json.loads(detail)
        except ValueError:
            return detail.strip()[:300] or "(no detail)"
        detail = parsed
    if isinstance(detail, dict):
        inner = detail.get("error", detail)
        if isinstance(inner, dict):
            return str(inner.get("message") or inner)[:300]
        return str(detail.get("message") or detail.get("detail") or inner)[:300]
    return str(detail)[:300]


def _adapter_rank(adapter_path: str) -> int | None:
    try:
        return int(json.loads((Path(adapter_path) / "adapter_config.json").read_text()).get("r"))
    except (OSError, ValueError, TypeError):
        return None


def lora_refusal(server: str, model: ModelRef, status: int, detail: str) -> str:
    """What to start vLLM with, when it would not load an adapter at run time."""
    rank = _adapter_rank(model.adapter_path or "")
    rank_flag = f" --max-lora-rank {max(16, rank)}" if rank else ""
    base = model.base_name or "BASE_MODEL"
    return (
        f"The inference server {server} would not load the adapter {model.name} at run time ({status}: {detail}). "
        f"Start vLLM with runtime LoRA loading: VLLM_ALLOW_RUNTIME_LORA_UPDATING=True vllm serve {base} --enable-lora{rank_flag} "
        f"(the adapter folder {model.adapter_path} must be readable on that host), "
        f"or list the adapter when it starts: --enable-lora{rank_flag} --lora-modules {model.name}={model.adapter_path}"
    )
