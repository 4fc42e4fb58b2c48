"""The one inference interface: stream the answer to a list of messages, with cancellation.

Chat (WebSocket consumer), evaluation (predictions), the REST API, the rare-disease vignette
rewrite and ``serve_model`` all call ``backend.stream(model, messages, params, cancel)``.
Backends plug in behind it: in-process transformers (+ PEFT adapter) and an
OpenAI-compatible HTTP server (vLLM in production, or MedPortal's own ``serve_model``).

Django-free: a backend takes folder paths and plain values.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field


class InferenceError(RuntimeError):
    """A generation could not run (model missing, server down, bad parameters)."""


class ParamsError(ValueError):
    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))


@dataclass(frozen=True)
class GenerationParams:
    """Sampling knobs. ``temperature == 0`` means greedy (reproducible)."""

    max_new_tokens: int = field(default=512, metadata={"help": "Most tokens to generate."})
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy decoding."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass (sampling only)."})
    top_k: int = field(default=0, metadata={"help": "Sample among the k most likely tokens; 0 = off."})
    repetition_penalty: float = field(default=1.0, metadata={"help": "> 1 discourages repeats."})
    seed: int | None = field(default=None, metadata={"help": "Seed for sampling; None = not fixed."})

    def __post_init__(self) -> None:
        errors: dict[str, str] = {}
        if not isinstance(self.max_new_tokens, int) or not 1 <= self.max_new_tokens <= 32768:
            errors["max_new_tokens"] = "must be an integer between 1 and 32768"
        if not 0.0 <= float(self.temperature) <= 5.0:
            errors["temperature"] = "must be between 0 and 5"
        if not 0.0 < float(self.top_p) <= 1.0:
            errors["top_p"] = "must be in (0, 1]"
        if not isinstance(self.top_k, int) or self.top_k < 0:
            errors["top_k"] = "must be a non-negative integer"
        if not 0.5 <= float(self.repetition_penalty) <= 3.0:
            errors["repetition_penalty"] = "must be between 0.5 and 3"
        if self.seed is not None and (not isinstance(self.seed, int) or self.seed < 0):
            errors["seed"] = "must be a non-negative integer"
        if errors:
            raise ParamsError(errors)

    @property
    def do_sample(self) -> bool:
        return float(self.temperature) > 0.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> GenerationParams:
        data = dict(data or {})
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ParamsError({k: "unknown parameter" for k in unknown})
        values = {}
        errors = {}
        for key, raw in data.items():
            kind = names[key].type
            try:
                if raw is None or raw == "":
                    values[key] = None if "None" in str(kind) else names[key].default
                elif "int" in str(kind):
                    if isinstance(raw, float) and not raw.is_integer():
                        raise ValueError
                    values[key] = int(raw)
                else:
                    values[key] = float(raw)
            except (TypeError, ValueError):
                errors[key] = "must be a number"
        if errors:
            raise ParamsError(errors)
        return cls(**values)


# The seeds' chat settings (LLaMA-Factory medical tutorial): temperature 0.1, top-p 0.9,
# top-k 40, 512 new tokens, repetition penalty 1.1.
SEED_CHAT_PARAMS = GenerationParams(max_new_tokens=512, temperature=0.1, top_p=0.9, top_k=40, repetition_penalty=1.1)


@dataclass(frozen=True)
class ModelRef:
    """What to run: a local base-model folder, optionally a LoRA adapter folder on top.

    ``name`` is what an OpenAI-compatible server knows the model (or the adapter) as, and
    ``base_name`` what it knows the base model as (for an adapter); ``template`` is the prompt
    template the adapter was trained with ("default" = the tokenizer's own chat template).
    ``base_path`` is empty for a hosted model (no local weights)."""

    base_path: str
    adapter_path: str | None = None
    template: str = "default"
    name: str = ""
    base_name: str = ""

    @property
    def key(self) -> tuple[str, str | None]:
        return (self.base_path, self.adapter_path)


@dataclass
class StreamStats:
    """Filled in while a stream runs; complete when the iterator ends."""

    started: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    finished_at: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = ""  # "stop" | "length" | "cancelled"
    waited_s: float = 0.0  # time spent waiting for a free generation slot

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.started

    @property
    def tokens_per_second(self) -> float | None:
        if self.first_token_at is None or self.finished_at is None or self.completion_tokens < 2:
            return None
        span = self.finished_at - self.first_token_at
        return (self.completion_tokens - 1) / span if span > 0 else None

    def as_dict(self) -> dict:
        return {
            "ttft_ms": None if self.ttft_s is None else round(self.ttft_s * 1000, 2),
            "tokens_per_second": None if self.tokens_per_second is None else round(self.tokens_per_second, 2),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "finish_reason": self.finish_reason,
            "total_ms": None if self.finished_at is None else round((self.finished_at - self.started) * 1000, 2),
        }


class InferenceBackend:
    """Backends implement ``stream``; ``generate`` collects it."""

    name = "base"

    def stream(
        self,
        model: ModelRef,
        messages: Sequence[dict],
        params: GenerationParams,
        *,
        cancel: threading.Event | None = None,
        stats: StreamStats | None = None,
    ) -> Iterator[str]:
        """The answer's text pieces. The messages are checked here (InferenceError before any
        work) and ``stats`` is filled in (a fresh one when none is given); the backend's
        ``_stream_messages`` does the rest."""
        stats = stats if stats is not None else StreamStats()
        return _storable(self._stream_messages(model, check_messages(messages), params, cancel, stats))

    def _stream_messages(self, model: ModelRef, messages: list[dict], params: GenerationParams, cancel: threading.Event | None, stats: StreamStats) -> Iterator[str]:
        raise NotImplementedError

    def generate(self, model: ModelRef, messages: Sequence[dict], params: GenerationParams, *, stats: StreamStats | None = None) -> str:
        return "".join(self.stream(model, messages, params, stats=stats))

    def close(self) -> None:  # pragma: no cover - optional
        pass


def _storable(pieces: Iterator[str]) -> Iterator[str]:
    """The pieces without NUL characters, which no database text column holds (PostgreSQL
    refuses the row): a model or a hosted API that emits one must not lose the answer.
    Closing this stream closes the backend's, so a left stream still stops its generation."""
    try:
        for piece in pieces:
            piece = piece.replace("\x00", "")
            if piece:
                yield piece
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            close()


def wait_for_slot(slots: threading.Semaphore | None, cancel: threading.Event | None, stats: StreamStats) -> bool:
    """Takes one of a backend's generation slots (``None``: no limit), noting the wait in
    ``stats``; False, with the stats saying cancelled, when ``cancel`` is set first."""
    t0 = time.perf_counter()
    if slots is not None:
        while not slots.acquire(timeout=0.05):
            if cancel is not None and cancel.is_set():
                stats.finish_reason = "cancelled"
                stats.finished_at = time.perf_counter()
                return False
    stats.waited_s = time.perf_counter() - t0
    return True


def check_messages(messages: Sequence[dict]) -> list[dict]:
    """Messages as the chat template expects them, or InferenceError naming the problem."""
    out = []
    if not messages:
        raise InferenceError("No messages to answer.")
    for i, m in enumerate(messages):
        role, content = (m or {}).get("role"), (m or {}).get("content")
        if role not in ("system", "user", "assistant"):
            raise InferenceError(f"Message {i + 1} has role {role!r}; expected system, user or assistant.")
        if not isinstance(content, str):
            raise InferenceError(f"Message {i + 1} has no text content.")
        out.append({"role": role, "content": content})
    if out[-1]["role"] != "user":
        raise InferenceError("The last message must be the user's.")
    return out
