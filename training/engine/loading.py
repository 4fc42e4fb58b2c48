"""The one model loader: training, evaluation, chat (the in-process backend) and merge load here.

- dtype policy (``inference_dtype``): bfloat16 on a CUDA GPU that supports it, else float16 on
  CUDA, float32 on CPU. Training passes its own compute dtype (its bf16/fp16 switches); merge
  passes ``"auto"`` (the base model's own dtype, which the merged folder keeps).
- The tokenizer is the adapter's when the adapter folder has one (training saves it there),
  else the base model's; a tokenizer without a pad token pads with its end-of-sequence token.
- An adapter (a PEFT folder) goes on top of the base model.

Django-free. Missing folders raise ``FileNotFoundError`` naming the folder and what is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def inference_dtype(device: str | None = None):
    """bf16 where the GPU supports it, else fp16 on CUDA, fp32 on CPU."""
    import torch

    device = device or default_device()
    if str(device).startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def tokenizer_folder(model_path: str | Path, adapter_path: str | Path | None = None) -> str:
    """The adapter's folder when it holds a tokenizer, else the base model's."""
    if adapter_path and (Path(adapter_path) / "tokenizer_config.json").is_file():
        return str(adapter_path)
    return str(model_path)


def load_tokenizer(model_path: str | Path, adapter_path: str | Path | None = None):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder(model_path, adapter_path))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def check_model_folder(model_path: str | Path) -> None:
    if not (Path(model_path) / "config.json").is_file():
        raise FileNotFoundError(f"The model folder {model_path} has no config.json (is the base model still on this host?).")


def check_adapter_folder(adapter_path: str | Path) -> None:
    if not (Path(adapter_path) / "adapter_config.json").is_file():
        raise FileNotFoundError(f"The adapter folder {adapter_path} has no adapter_config.json.")


def load_base(model_path: str | Path, *, dtype: Any = None, device: str | None = None, **kwargs):
    """The base model alone (``dtype=None``: the inference policy; ``"auto"``: the folder's own
    dtype; a torch dtype: that one). ``kwargs`` go to ``from_pretrained`` (attention
    implementation, quantization). Not moved to a device unless ``device`` is given."""
    from transformers import AutoModelForCausalLM

    check_model_folder(model_path)
    if dtype is None:
        dtype = inference_dtype(device)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype, **kwargs)
    if device is not None:
        model.to(device)
    return model


def add_adapter(model, adapter_path: str | Path):
    from peft import PeftModel

    check_adapter_folder(adapter_path)
    return PeftModel.from_pretrained(model, str(adapter_path))


def load_model(model_path: str | Path, adapter_path: str | Path | None = None, *, device: str | None = None, dtype: Any = None):
    """(model, tokenizer) ready to generate: the inference dtype policy, the adapter on top,
    the right tokenizer with a pad token, on ``device`` (default: CUDA when there is one), in
    eval mode."""
    device = device or default_device()
    check_model_folder(model_path)
    if adapter_path:
        check_adapter_folder(adapter_path)
    tokenizer = load_tokenizer(model_path, adapter_path)
    model = load_base(model_path, dtype=dtype if dtype is not None else inference_dtype(device))
    if adapter_path:
        model = add_adapter(model, adapter_path)
    model.to(device).eval()
    return model, tokenizer
