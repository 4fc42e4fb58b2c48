"""Merge a LoRA adapter into its base model: a standalone folder any tool can load.

PEFT's ``merge_and_unload`` folds B·A·(alpha/r) into each adapted weight; the result is saved
with the tokenizer the adapter was trained with and the base model's generation config, in the
base model's own dtype. The folder is then registered as a new base model by the Django side.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

MERGE_INFO = "medportal_merge.json"


def merge_adapter(*, base_path: str | Path, adapter_path: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Write base + adapter as one model into ``out_dir``; returns ``{"path", "num_parameters"}``."""
    from transformers import GenerationConfig

    from .loading import add_adapter, load_base, load_tokenizer

    base_path, adapter_path, out = Path(base_path), Path(adapter_path), Path(out_dir)
    if not (adapter_path / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter_path} is not a PEFT adapter folder (no adapter_config.json)")
    started = time.monotonic()
    base = load_base(base_path, dtype="auto")  # the base model's own dtype
    merged = add_adapter(base, adapter_path).merge_and_unload()
    merged.config.use_cache = True
    tokenizer = load_tokenizer(base_path, adapter_path)

    out.mkdir(parents=True, exist_ok=True)
    try:
        merged.generation_config = GenerationConfig.from_pretrained(base_path)
    except OSError:
        pass  # the base has none: save_pretrained writes the model's default one
    merged.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    num_parameters = sum(p.numel() for p in merged.parameters())
    training_info = adapter_path / "medportal_training.json"
    if training_info.is_file():
        shutil.copyfile(training_info, out / "medportal_training.json")
    info = {
        "base_path": str(base_path.resolve()),
        "adapter_path": str(adapter_path.resolve()),
        "num_parameters": num_parameters,
        "seconds": round(time.monotonic() - started, 3),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (out / MERGE_INFO).write_text(json.dumps(info, indent=2, ensure_ascii=False))
    return {"path": str(out.resolve()), "num_parameters": num_parameters}
