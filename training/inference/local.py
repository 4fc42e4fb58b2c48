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

from .base import GenerationParams, InferenceBackend, InferenceError, ModelRef, StreamStats, wait_for_slot

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
    """Through the one loader (training.engine.loading): its dtype policy, pad token, adapter."""
    from training.engine.loading import load_model

    if not ref.base_path:
        raise InferenceError(f"{ref.name or 'This model'} has no local weights: it runs on its endpoint only.")
    try:
        model, tokenizer = load_model(ref.base_path, ref.adapter_path)
    except FileNotFoundError as exc:
        raise InferenceError(str(exc)) from None
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
    punctuation or English words arrive in bursts; here every new token yields its text.

    A byte-level BPE token can be part of a character (the demo tokenizer splits most Chinese
    characters over two tokens), and the tokenizer decodes an incomplete UTF-8 sequence as
    U+FFFD. So text that ends in U+FFFD is held back until the next token completes it; a
    sequence that never completes (the model went on with something else, or stopped in the
    middle of a character) is dropped: no piece ever carries a U+FFFD. Decoding runs over a
    sliding window of ids (as in text-generation-inference / vLLM), not the whole answer at
    every token. The first ``put`` is the prompt and is skipped.
    """

    _END = object()
    REPLACEMENT = "\ufffd"

    def __init__(self, tokenizer, timeout: float = 600.0):
        import queue

        self.tokenizer = tokenizer
        self.queue: queue.Queue = queue.Queue()
        self.timeout = timeout
        self.ids: list[int] = []
        self.prefix_offset = 0  # ids[prefix_offset:read_offset] were handed out: context for decoding
        self.read_offset = 0
        self.prompt_seen = False
        self.counter = {"n": 0}

    def _decode(self, ids) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _emit(self, piece: str) -> None:
        piece = piece.replace(self.REPLACEMENT, "")
        if piece:
            self.queue.put(piece)

    def put(self, value) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        new = value.reshape(-1).tolist()
        self.counter["n"] += len(new)
        self.ids.extend(new)
        prefix = self._decode(self.ids[self.prefix_offset : self.read_offset])
        text = self._decode(self.ids[self.prefix_offset :])
        if len(text) > len(prefix) and not text.endswith(self.REPLACEMENT):
            self._emit(text[len(prefix) :])
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)

    def end(self) -> None:
        """The rest; an incomplete character at the very end is dropped."""
        if len(self.ids) > self.read_offset:
            prefix = self._decode(self.ids[self.prefix_offset : self.read_offset])
            text = self._decode(self.ids[self.prefix_offset :])
            self._emit(text[len(prefix) :])
            self.prefix_offset = self.read_offset = len(self.ids)
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

    def _acquire(self, cancel: threading.Event | None, stats: StreamStats) -> bool:
        with self._waiting_lock:
            self._waiting += 1
        try:
            return wait_for_slot(self._slots, cancel, stats)
        finally:
            with self._waiting_lock:
                self._waiting -= 1

    def _stream_messages(self, model: ModelRef, messages: list[dict], params: GenerationParams, cancel: threading.Event | None, stats: StreamStats) -> Iterator[str]:
        return self._stream(model, messages, None, params, cancel=cancel, stats=stats)

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
        if not self._acquire(cancel, stats):
            return
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
