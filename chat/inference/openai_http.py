"""OpenAI-compatible HTTP backend: a vLLM server (``vllm serve BASE --enable-lora
--lora-modules NAME=ADAPTER``) in production, or MedPortal's own ``serve_model``.

Streams ``/v1/chat/completions`` with ``stream: true`` (server-sent events); the model is
addressed by ``ModelRef.name`` (an adapter's name on a LoRA-enabled vLLM server).
Cancellation closes the response, which makes the server stop generating.
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

from .base import GenerationParams, InferenceBackend, InferenceError, ModelRef, StreamStats, check_messages

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
        logger.warning("template %s: no tokenizer at %s; the server's chat template is used", model.template, model.base_path)
        return None
    from training.engine.templates import TemplateError, render_prompt

    try:
        return render_prompt(_tokenizer(folder), model.template, list(messages))
    except TemplateError as exc:
        raise InferenceError(f"The prompt cannot be rendered with the {model.template!r} template: {exc}") from exc


class OpenAIBackend(InferenceBackend):
    name = "openai"

    def __init__(self, base_url: str, *, api_key: str = "", timeout_s: float = 600.0):
        self.base_url = base_url.rstrip("/")
        if self.base_url.endswith("/v1"):
            self.base_url = self.base_url[: -len("/v1")]
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(base_url=self.base_url, headers=headers, timeout=httpx.Timeout(timeout_s, connect=10.0))

    def models(self) -> list[str]:
        try:
            response = self.client.get("/v1/models")
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise InferenceError(f"The inference server at {self.base_url} did not answer /v1/models: {exc}") from exc
        return [m["id"] for m in response.json().get("data", [])]

    def payload(self, model: ModelRef, messages: Sequence[dict], params: GenerationParams, prompt: str | None = None) -> dict:
        body = {
            "model": model.name or model.base_path,
            **({"prompt": prompt} if prompt is not None else {"messages": list(messages)}),
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            # vLLM's extra sampling parameters (ignored by servers that don't know them)
            "top_k": params.top_k if params.top_k else -1,
            "repetition_penalty": params.repetition_penalty,
        }
        if params.seed is not None:
            body["seed"] = params.seed
        return body

    def stream(
        self,
        model: ModelRef,
        messages: Sequence[dict],
        params: GenerationParams,
        *,
        cancel: threading.Event | None = None,
        stats: StreamStats | None = None,
    ) -> Iterator[str]:
        messages = check_messages(messages)
        stats = stats if stats is not None else StreamStats()
        # A named template (e.g. medical_inquiry) is rendered here exactly as in training and sent
        # to /v1/completions; the model's own chat template goes through /v1/chat/completions.
        prompt = local_prompt(model, messages)
        route = "/v1/chat/completions" if prompt is None else "/v1/completions"
        return self._events(route, self.payload(model, messages, params, prompt), cancel, stats)

    def _events(self, route: str, body: dict, cancel: threading.Event | None, stats: StreamStats) -> Iterator[str]:
        try:
            with self.client.stream("POST", route, json=body) as response:
                if response.status_code != 200:
                    detail = response.read().decode("utf-8", "replace")[:500]
                    raise InferenceError(f"The inference server answered {response.status_code}: {detail}")
                for line in response.iter_lines():
                    if cancel is not None and cancel.is_set():
                        stats.finish_reason = "cancelled"
                        break
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    try:
                        chunk = json.loads(data)
                    except json.JSONDecodeError as exc:
                        raise InferenceError(f"The inference server sent an unreadable event: {data[:200]}") from exc
                    if chunk.get("error"):
                        raise InferenceError(f"The inference server failed: {chunk['error']}")
                    usage = chunk.get("usage")
                    if usage:
                        stats.prompt_tokens = usage.get("prompt_tokens", stats.prompt_tokens)
                        stats.completion_tokens = usage.get("completion_tokens", stats.completion_tokens)
                    for choice in chunk.get("choices") or []:
                        piece = (choice.get("delta") or {}).get("content") or choice.get("text") or ""
                        if choice.get("finish_reason"):
                            stats.finish_reason = choice["finish_reason"]
                        if piece:
                            if stats.first_token_at is None:
                                stats.first_token_at = time.perf_counter()
                            if not usage:
                                stats.completion_tokens += 1
                            yield piece
        except httpx.HTTPError as exc:
            raise InferenceError(f"The inference server at {self.base_url} could not be reached: {exc}") from exc
        except GeneratorExit:  # the caller stopped reading: closing the response stops the server
            stats.finish_reason = stats.finish_reason or "cancelled"
            raise
        finally:
            stats.finished_at = time.perf_counter()
        if not stats.finish_reason:
            stats.finish_reason = "stop"

    def close(self) -> None:
        self.client.close()
