"""Batched generation for evaluation runs: many prompts, one model, predictions in input order.

Evaluation needs thousands of answers; one ``generate`` call per prompt leaves most of the hardware
idle (on a GPU, and on a CPU for a small model, a step costs about the same for one row as for
sixteen). Here prompts are grouped into batches of similar length (sorted by prompt length, so
little padding), left-padded (a decoder-only model continues from the last column, so every prompt
must end there), generated together, and the answers put back in input order.

The prompt is what training and chat render (``templates.prompt_ids``), the answer stops at the
template's end-of-turn token (``templates.stop_token_ids``), and the text is decoded without special
tokens: an answer here is token for token the answer the chat would give for the same parameters.
Greedy decoding is the default (reproducible, and with left padding and the attention mask a
batched greedy answer equals the one-by-one answer); sampling is used when ``temperature > 0``,
seeded per batch when a seed is given.

Prompts are cut to ``cutoff_len`` as LLaMA-Factory's ``scripts/vllm_infer.py`` does: its dataset
processing (the unsupervised one, stage "ppo") shares ``cutoff_len`` between the prompt and the
reference answer with ``infer_seqlen`` and keeps the first ``source_len`` prompt tokens. When a
conversation ends with its reference answer, the same split is made here; without one, the prompt
keeps its first ``cutoff_len`` tokens.

No Django; torch and transformers are imported inside the functions that need them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from training.engine.templates import _infer_seqlen, encode_conversation, prompt_ids, stop_token_ids

from .loading import load_model  # the one loader (re-exported: evaluation calls it from here)

# MedPortal's default: greedy, so that two runs of the same model give the same numbers.
DEFAULT_PARAMS: dict[str, Any] = {
    "max_new_tokens": 512,
    "temperature": 0.0,
    "top_p": 1.0,
    "top_k": 0,
    "repetition_penalty": 1.0,
    "seed": None,
    "cutoff_len": 2048,
    "batch_size": 8,
}

# The defaults of LLaMA-Factory's scripts/vllm_infer.py (the seeds' evaluation runs): sampling.
VLLM_INFER_PARAMS: dict[str, Any] = {
    "max_new_tokens": 1024,
    "temperature": 0.95,
    "top_p": 0.7,
    "top_k": 50,
    "repetition_penalty": 1.0,
    "seed": None,
    "cutoff_len": 2048,
    "batch_size": 16,
}

GENERATION_PRESETS: dict[str, dict[str, Any]] = {"greedy": DEFAULT_PARAMS, "vllm_infer": VLLM_INFER_PARAMS}
PRESET_LABELS = {
    "greedy": "greedy decoding (MedPortal's default: reproducible)",
    "vllm_infer": "LLaMA-Factory vllm_infer.py defaults (sampling: temperature 0.95, top-p 0.7, top-k 50, 1024 new tokens)",
}


class GenerationStopped(Exception):
    """``should_stop`` asked to stop; ``done`` answers were complete (they are in ``results``)."""

    def __init__(self, done: int, results: list[dict | None]):
        super().__init__(f"generation stopped after {done} answers")
        self.done = done
        self.results = results


def encode_prompts(tokenizer, template: str, conversations: Sequence[Sequence[Mapping[str, Any]]], cutoff_len: int) -> list[list[int]]:
    """The prompt ids of each conversation, cut to ``cutoff_len`` as vllm_infer.py cuts them.

    A conversation that ends with an assistant turn is a reference answer: it is not part of the
    prompt, but its length decides how much of the prompt is kept (``infer_seqlen``)."""
    if cutoff_len < 1:
        raise ValueError("cutoff_len must be at least 1")
    encoded = []
    for conversation in conversations:
        messages = list(conversation)
        ids = prompt_ids(tokenizer, template, messages)
        target_len = 0
        if messages and messages[-1].get("role") == "assistant":
            full = encode_conversation(tokenizer, template, messages, cutoff_len=1 << 30)["input_ids"]
            target_len = max(0, len(full) - len(ids))
        source_len, _ = _infer_seqlen(len(ids), target_len, cutoff_len)
        encoded.append(ids[:source_len] if source_len < len(ids) else ids)
    return encoded


def _sampling_kwargs(temperature: float, top_p: float, top_k: int) -> dict[str, Any]:
    if temperature > 0:
        return {"do_sample": True, "temperature": float(temperature), "top_p": float(top_p), "top_k": int(top_k) or None}
    # Greedy: silence the sampling defaults a model's generation_config may carry.
    return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}


def generate_batched(
    *,
    model_path: str,
    adapter_path: str | None = None,
    template: str = "default",
    conversations: Sequence[Sequence[Mapping[str, Any]]],
    max_new_tokens: int = 512,
    cutoff_len: int = 2048,
    batch_size: int = 8,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int = 0,
    repetition_penalty: float = 1.0,
    seed: int | None = None,
    on_progress: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    loaded: tuple[Any, Any] | None = None,
) -> list[dict]:
    """Answer every conversation; returns, in input order, ``{"predict", "prompt_tokens",
    "completion_tokens", "finish_reason"}`` ("stop" or "length").

    ``conversations`` are lists of ``{"role", "content"}`` messages ending with the user turn to
    answer, or with the reference answer (left out of the prompt; see ``encode_prompts``).
    ``loaded`` is an already loaded ``(model, tokenizer)`` (``load_model``), used instead of the
    folders. ``on_progress`` receives ``{"done", "total", "batch", "batches", "completion_tokens",
    "elapsed_s"}`` after each batch. ``should_stop`` is asked at every generated token (keep it
    cheap, throttle inside); when it says yes the current batch ends and ``GenerationStopped``
    is raised carrying the answers completed before it.
    """
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList, set_seed

    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be at least 1")
    model, tokenizer = loaded if loaded is not None else load_model(model_path, adapter_path)
    started = time.perf_counter()
    prompts = encode_prompts(tokenizer, template, conversations, cutoff_len)
    total = len(prompts)
    results: list[dict | None] = [None] * total
    if not total:
        return []
    for index, ids in enumerate(prompts):
        if not ids:
            raise ValueError(f"conversation {index} renders to an empty prompt")
    stops = stop_token_ids(tokenizer, template)
    stop_set = set(stops)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else (stops[0] if stops else 0)
    device = next(model.parameters()).device

    # Longest first: the biggest batch runs first (an out-of-memory shows at once), and rows of
    # similar length share a batch.
    order = sorted(range(total), key=lambda i: (-len(prompts[i]), i))
    batches = [order[i : i + batch_size] for i in range(0, total, batch_size)]
    stopped = {"flag": False}

    class _Stop(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            if not stopped["flag"] and should_stop is not None and should_stop():
                stopped["flag"] = True
            return torch.full((input_ids.shape[0],), stopped["flag"], dtype=torch.bool, device=input_ids.device)

    sampling = _sampling_kwargs(temperature, top_p, top_k)
    done = 0
    completion_total = 0
    for number, rows in enumerate(batches):
        if should_stop is not None and (stopped["flag"] or should_stop()):
            raise GenerationStopped(done, results)
        width = max(len(prompts[i]) for i in rows)
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for r, i in enumerate(rows):
            ids = prompts[i]
            input_ids[r, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention[r, width - len(ids) :] = 1
        if sampling["do_sample"] and seed is not None:
            set_seed(int(seed) + number)
        with torch.inference_mode():
            output = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention.to(device),
                max_new_tokens=int(max_new_tokens),
                repetition_penalty=float(repetition_penalty),
                eos_token_id=stops or None,
                pad_token_id=pad_id,
                stopping_criteria=StoppingCriteriaList([_Stop()]) if should_stop is not None else None,
                **sampling,
            )
        if stopped["flag"]:
            raise GenerationStopped(done, results)
        generated = output[:, width:].tolist()
        for r, i in enumerate(rows):
            tokens = generated[r]
            end = next((k for k, t in enumerate(tokens) if t in stop_set), None)
            if end is None:
                answer, count, reason = tokens, len(tokens), "length"
            else:
                answer, count, reason = tokens[:end], end + 1, "stop"
            results[i] = {
                "predict": tokenizer.decode(answer, skip_special_tokens=True),
                "prompt_tokens": len(prompts[i]),
                "completion_tokens": count,
                "finish_reason": reason,
            }
            completion_total += count
        done += len(rows)
        if on_progress is not None:
            on_progress(
                {
                    "done": done,
                    "total": total,
                    "batch": number + 1,
                    "batches": len(batches),
                    "completion_tokens": completion_total,
                    "elapsed_s": round(time.perf_counter() - started, 3),
                }
            )
    return results  # type: ignore[return-value]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation (numpy's default); None when empty."""
    data = sorted(float(v) for v in values if v is not None and math.isfinite(float(v)))
    if not data:
        return None
    if len(data) == 1:
        return data[0]
    rank = (len(data) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (rank - low)


__all__ = [
    "DEFAULT_PARAMS",
    "GENERATION_PRESETS",
    "PRESET_LABELS",
    "VLLM_INFER_PARAMS",
    "GenerationStopped",
    "encode_prompts",
    "generate_batched",
    "load_model",
    "percentile",
]
