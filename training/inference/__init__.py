"""Inference for chat, evaluation, the REST API and the vignette rewrite: see base.py."""

from .base import SEED_CHAT_PARAMS, GenerationParams, InferenceBackend, InferenceError, ModelRef, ParamsError, StreamStats

__all__ = ["SEED_CHAT_PARAMS", "GenerationParams", "InferenceBackend", "InferenceError", "ModelRef", "ParamsError", "StreamStats"]
