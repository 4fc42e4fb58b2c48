"""In-process transformers backend (+ a PEFT adapter), streamed with TextIteratorStreamer.

- Models are cached and shared between users: one entry per (base folder, adapter folder),
  least recently used first out when the cache passes its memory bound.
- At most ``max_concurrent`` generations run at once; the others wait for a slot (a wait
  queue in arrival order: a threading.Semaphore wakes waiters FIFO on CPython).
- Generation runs in its own thread; the caller iterates text pieces as they are decoded.
  Cancellation is a threading.Event checked by a StoppingCriteria at every new token.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path

from .base import GenerationParams, InferenceBackend, InferenceError, ModelRef, StreamStats, check_messages

logger = logging.getLogger(__name__)


class _Loaded:
    def __init__(self, model, tokenizer, nbytes: int, template: str):
        self.model = model
        self.tokenizer = tokenizer
        self.nbytes = nbytes
        self.template = template


def _model_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters()) + sum(b.numel() * b.element_size() for b in model.buffers())


class ModelCache:
    """LRU cache of loaded models with a memory bound (bytes of parameters and buffers)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, _Loaded] = OrderedDict()
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()

    @property
    def total_bytes(self) -> int:
        return sum(item.nbytes for item in self._items.values())

    def keys(self) -> list[tuple]:
        with self._lock:
            return list(self._items)

    def get(self, ref: ModelRef) -> _Loaded:
        key = ref.key
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        # One load at a time for the whole process: from_pretrained builds models on the meta
        # device under process-wide context managers that are not thread-safe.
        with self._load_lock:
            with self._lock:
                if key in self._items:
                    self._items.move_to_end(key)
                    return self._items[key]
            loaded = _load(ref)
            with self._lock:
                self._items[key] = loaded
                self._items.move_to_end(key)
                self._evict(keep=key)
            return loaded

    def _evict(self, keep) -> None:
        while self.total_bytes > self.max_bytes and len(self._items) > 1:
            key = next(k for k in self._items if k != keep)
            self._items.pop(key)
            logger.info("inference cache: evicted %s", key)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def _load(ref: ModelRef) -> _Loaded:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = Path(ref.base_path)
    if not (base / "config.json").is_file():
        raise InferenceError(f"The model folder {base} has no config.json (is the base model still on this host?).")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    tok_dir = ref.adapter_path if ref.adapter_path and (Path(ref.adapter_path) / "tokenizer_config.json").is_file() else ref.base_path
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    if ref.adapter_path:
        from peft import PeftModel

        if not (Path(ref.adapter_path) / "adapter_config.json").is_file():
            raise InferenceError(f"The adapter folder {ref.adapter_path} has no adapter_config.json.")
        model = PeftModel.from_pretrained(model, ref.adapter_path)
    model.to(device).eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return _Loaded(model, tokenizer, _model_bytes(model), ref.template)


def render_prompt_ids(loaded: _Loaded, messages: Sequence[dict], template: str) -> list[int]:
    """The prompt exactly as training rendered it (training.engine.templates)."""
    from training.engine.templates import TemplateError, prompt_ids

    try:
        return prompt_ids(loaded.tokenizer, template, list(messages))
    except TemplateError as exc:
        raise InferenceError(f"The prompt cannot be rendered with the {template!r} template: {exc}") from exc


class TokenStreamer:
    """A transformers streamer that hands out text as soon as each token decodes.

    TextIteratorStreamer holds text back until a space or a CJK ideograph, so Chinese
    punctuation or English words arrive in bursts; here every new token yields its text, except
    while it ends in an incomplete UTF-8 sequence (a byte-level BPE token can be half a
    character), which waits for the next token. The first ``put`` is the prompt and is skipped.
    """

    _END = object()

    def __init__(self, tokenizer, timeout: float = 600.0):
        import queue

        self.tokenizer = tokenizer
        self.queue: queue.Queue = queue.Queue()
        self.timeout = timeout
        self.ids: list[int] = []
        self.printed = ""
        self.prompt_seen = False
        self.counter = {"n": 0}

    def put(self, value) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        new = value.reshape(-1).tolist()
        self.counter["n"] += len(new)
        self.ids.extend(new)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return
        piece, self.printed = text[len(self.printed) :], text
        if piece:
            self.queue.put(piece)

    def end(self) -> None:
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True) if self.ids else ""
        if len(text) > len(self.printed):
            self.queue.put(text[len(self.printed) :])
            self.printed = text
        self.queue.put(self._END)

    def __iter__(self):
        while True:
            item = self.queue.get(timeout=self.timeout)
            if item is self._END:
                return
            yield item


class LocalBackend(InferenceBackend):
    name = "local"

    def __init__(self, *, max_cache_bytes: int = 8 * 1024**3, max_concurrent: int = 2):
        self.cache = ModelCache(max_cache_bytes)
        self.max_concurrent = max_concurrent
        self._slots = threading.Semaphore(max_concurrent)
        self._waiting = 0
        self._waiting_lock = threading.Lock()

    @property
    def waiting(self) -> int:
        return self._waiting

    def _acquire(self, cancel: threading.Event | None) -> bool:
        with self._waiting_lock:
            self._waiting += 1
        try:
            while not self._slots.acquire(timeout=0.05):
                if cancel is not None and cancel.is_set():
                    return False
            return True
        finally:
            with self._waiting_lock:
                self._waiting -= 1

    def stream(
        self,
        model: ModelRef,
        messages: Sequence[dict],
        params: GenerationParams,
        *,
        cancel: threading.Event | None = None,
        stats: StreamStats | None = None,
    ) -> Iterator[str]:
        return self._stream(model, check_messages(messages), None, params, cancel=cancel, stats=stats)

    def stream_prompt(
        self,
        model: ModelRef,
        prompt: str,
        params: GenerationParams,
        *,
        cancel: threading.Event | None = None,
        stats: StreamStats | None = None,
    ) -> Iterator[str]:
        """Continue an already rendered prompt (``/v1/completions``)."""
        return self._stream(model, None, prompt, params, cancel=cancel, stats=stats)

    def _stream(self, model, messages, prompt, params, *, cancel, stats) -> Iterator[str]:
        stats = stats if stats is not None else StreamStats()
        cancel = cancel or threading.Event()
        t0 = time.perf_counter()
        if not self._acquire(cancel):
            stats.finish_reason = "cancelled"
            stats.finished_at = time.perf_counter()
            return
        stats.waited_s = time.perf_counter() - t0
        try:
            yield from self._generate(model, messages, prompt, params, cancel, stats)
        finally:
            self._slots.release()

    def _generate(self, ref: ModelRef, messages, prompt, params: GenerationParams, cancel: threading.Event, stats: StreamStats) -> Iterator[str]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, set_seed

        from training.engine.templates import stop_token_ids

        loaded = self.cache.get(ref)
        tokenizer, model = loaded.tokenizer, loaded.model
        if messages is not None:
            prompt_ids = render_prompt_ids(loaded, messages, ref.template)
        else:
            prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if not prompt_ids:
            raise InferenceError("The prompt is empty.")
        stats.prompt_tokens = len(prompt_ids)
        streamer = TokenStreamer(tokenizer)
        counter = streamer.counter

        class Cancelled(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return cancel.is_set()

        input_ids = torch.tensor([prompt_ids], device=model.device)
        kwargs = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "max_new_tokens": params.max_new_tokens,
            "do_sample": params.do_sample,
            "repetition_penalty": params.repetition_penalty,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": stop_token_ids(tokenizer, ref.template) or None,
            "streamer": streamer,
            "stopping_criteria": StoppingCriteriaList([Cancelled()]),
        }
        if params.do_sample:
            kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or None)
        else:  # greedy: silence the model's own sampling defaults
            kwargs.update(temperature=None, top_p=None, top_k=None)
        failure: list[BaseException] = []

        def run():
            try:
                if params.seed is not None:
                    set_seed(params.seed)
                with torch.inference_mode():
                    model.generate(**kwargs)
            except BaseException as exc:  # surfaced to the caller below
                failure.append(exc)
                streamer.end()

        thread = threading.Thread(target=run, name="medportal-generate", daemon=True)
        thread.start()
        exhausted = False
        try:
            for piece in streamer:
                if not piece:
                    continue
                if stats.first_token_at is None:
                    stats.first_token_at = time.perf_counter()
                stats.completion_tokens = counter["n"]
                yield piece
            exhausted = True
        finally:
            if not exhausted:  # the consumer stopped iterating: stop the generation too
                cancel.set()
                stats.finish_reason = "cancelled"
            thread.join()
            stats.completion_tokens = counter["n"]
            stats.finished_at = time.perf_counter()
        if failure:
            raise InferenceError(f"Generation failed: {failure[0]}") from failure[0]
        if cancel.is_set():
            stats.finish_reason = "cancelled"
        elif counter["n"] >= params.max_new_tokens:
            stats.finish_reason = "length"
        else:
            stats.finish_reason = "stop"
