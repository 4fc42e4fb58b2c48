"""What a local Hugging Face model folder holds, read without loading its weights.

Registering a base model must be instant and must not need the memory the model needs: the parameter
count and dtype come from the safetensors headers (8-byte little-endian header length, then a JSON map
of tensor name -> dtype, shape, offsets), sharded folders included; the architecture and sizes from
config.json; the tokenizer and chat template from the file names and tokenizer_config.json. Anything
that makes the folder unusable raises ``ModelDirError`` with a message that says what is wrong.
"""

from __future__ import annotations

import json
import math
import struct
from collections import Counter
from pathlib import Path
from typing import Any


class ModelDirError(ValueError):
    """The folder is not a usable Hugging Face model folder (the message says why)."""


SAFETENSORS_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}
# Files that hold a tokenizer's vocabulary (tokenizer_config.json alone holds none).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model", "vocab.json", "vocab.txt", "tekken.json", "qwen.tiktoken")
MAX_HEADER_BYTES = 100 * 1024 * 1024  # a safetensors header larger than this is a corrupt file


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ModelDirError(f"{what} is not UTF-8 text: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ModelDirError(f"{what} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from exc
    except OSError as exc:
        raise ModelDirError(f"{what} cannot be read: {exc.strerror or exc}") from exc


def safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file: {tensor name: {"dtype", "shape", "data_offsets"}, "__metadata__": ...}."""
    try:
        with path.open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise ModelDirError(f"{path.name} is not a safetensors file: it is shorter than its 8-byte header length")
            (length,) = struct.unpack("<Q", prefix)
            if length == 0 or length > MAX_HEADER_BYTES:
                raise ModelDirError(f"{path.name} is not a safetensors file: its header length ({length} bytes) is impossible")
            raw = handle.read(length)
    except OSError as exc:
        raise ModelDirError(f"{path.name} cannot be read: {exc.strerror or exc}") from exc
    if len(raw) < length:
        raise ModelDirError(f"{path.name} is truncated: its header is cut short")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelDirError(f"{path.name} is not a safetensors file: its header is not JSON") from exc
    if not isinstance(header, dict):
        raise ModelDirError(f"{path.name} is not a safetensors file: its header is not a JSON object")
    return header


def _weight_files(folder: Path) -> tuple[str, list[Path]]:
    """("safetensors" | "pytorch", files) — the shards an index names, else every weight file of the folder."""
    for index_name, kind in (("model.safetensors.index.json", "safetensors"), ("pytorch_model.bin.index.json", "pytorch")):
        index_path = folder / index_name
        if index_path.is_file():
            index = _read_json(index_path, index_name)
            weight_map = index.get("weight_map") if isinstance(index, dict) else None
            if not isinstance(weight_map, dict) or not weight_map:
                raise ModelDirError(f"{index_name} has no weight_map")
            shards = sorted(set(map(str, weight_map.values())))
            missing = [name for name in shards if not (folder / name).is_file()]
            if missing:
                raise ModelDirError(f"{index_name} names {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} missing")
            return kind, [folder / name for name in shards]
    safetensors = sorted(p for p in folder.glob("*.safetensors") if p.is_file())
    if safetensors:
        return "safetensors", safetensors
    pytorch = sorted(p for p in folder.glob("pytorch_model*.bin") if p.is_file())
    if pytorch:
        return "pytorch", pytorch
    raise ModelDirError(
        f"no weights in {folder}: expected model.safetensors (or sharded *.safetensors with model.safetensors.index.json) "
        "or pytorch_model*.bin"
    )


def _count_safetensors(files: list[Path]) -> tuple[int, Counter]:
    total = 0
    by_dtype: Counter = Counter()
    for path in files:
        for name, info in safetensors_header(path).items():
            if name == "__metadata__":
                continue
            if not isinstance(info, dict) or "shape" not in info or "dtype" not in info:
                raise ModelDirError(f"{path.name} is not a safetensors file: tensor {name!r} has no shape or dtype")
            count = math.prod(int(d) for d in info["shape"])
            total += count
            by_dtype[SAFETENSORS_DTYPES.get(str(info["dtype"]), str(info["dtype"]).lower())] += count
    return total, by_dtype


def _count_pytorch(files: list[Path]) -> tuple[int, Counter]:
    """Pickled checkpoints have no header: memory-map them (nothing is read but the index) and count."""
    import torch

    total = 0
    by_dtype: Counter = Counter()
    for path in files:
        try:
            state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        except Exception as exc:  # any unpickling failure means an unusable file
            raise ModelDirError(f"{path.name} cannot be read as a PyTorch checkpoint: {exc}") from exc
        seen: set[tuple[int, int, tuple[int, ...]]] = set()
        for tensor in state.values():
            if not isinstance(tensor, torch.Tensor):
                continue
            key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
            if key in seen:  # tied weights saved twice
                continue
            seen.add(key)
            total += tensor.numel()
            by_dtype[str(tensor.dtype).removeprefix("torch.")] += tensor.numel()
    return total, by_dtype


def _first(config: dict, *keys: str) -> Any:
    """The first of ``keys`` present in config.json, or in its ``text_config`` (multimodal folders)."""
    for source in (config, config.get("text_config") if isinstance(config.get("text_config"), dict) else {}):
        for key in keys:
            if source.get(key) is not None:
                return source[key]
    return None


def _int_or_zero(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _chat_template(folder: Path, tokenizer_config: dict) -> bool:
    if tokenizer_config.get("chat_template"):
        return True
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    extra = folder / "additional_chat_templates"
    return extra.is_dir() and any(extra.glob("*.jinja"))


def inspect_model_dir(path: str | Path, *, require_tokenizer: bool = True) -> dict[str, Any]:
    """Validate a local Hugging Face model folder and describe it, without loading its weights.

    Returns ``architecture``, ``architectures``, ``model_type``, ``num_parameters``, ``dtype``,
    ``has_tokenizer``, ``has_chat_template``, ``vocab_size``, ``hidden_size``, ``num_layers``,
    ``num_attention_heads``, ``num_key_value_heads``, ``intermediate_size``, ``context_length``,
    ``tie_word_embeddings``, ``quantization``, ``weights_format``, ``weights_bytes``, ``files``
    (``[{"name", "size"}]`` of the folder's top level) and ``path`` (absolute).
    Raises ``ModelDirError`` when the folder is missing, is a file, has no (valid) config.json, no
    weights or unreadable weights, or — unless ``require_tokenizer=False`` — no tokenizer.
    """
    folder = Path(path).expanduser()
    if not folder.exists():
        raise ModelDirError(f"no folder at {folder}")
    if not folder.is_dir():
        raise ModelDirError(f"{folder} is a file, not a model folder")
    folder = folder.resolve()
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ModelDirError(f"no config.json in {folder}: not a Hugging Face model folder")
    config = _read_json(config_path, "config.json")
    if not isinstance(config, dict):
        raise ModelDirError("config.json is not a JSON object")

    weights_format, weight_files = _weight_files(folder)
    if weights_format == "safetensors":
        num_parameters, by_dtype = _count_safetensors(weight_files)
    else:
        num_parameters, by_dtype = _count_pytorch(weight_files)
    if num_parameters == 0:
        raise ModelDirError(f"the weights in {folder} hold no tensors")

    tokenizer_config: dict = {}
    if (folder / "tokenizer_config.json").is_file():
        loaded = _read_json(folder / "tokenizer_config.json", "tokenizer_config.json")
        if not isinstance(loaded, dict):
            raise ModelDirError("tokenizer_config.json is not a JSON object")
        tokenizer_config = loaded
    has_tokenizer = any((folder / name).is_file() for name in TOKENIZER_FILES) or any(folder.glob("*.tiktoken"))
    if require_tokenizer and not has_tokenizer:
        raise ModelDirError(f"no tokenizer in {folder}: expected tokenizer.json, tokenizer.model, or vocab.json with merges.txt")

    dtype = _first(config, "torch_dtype", "dtype")
    dtype = str(dtype).removeprefix("torch.") if dtype else (by_dtype.most_common(1)[0][0] if by_dtype else "")
    architectures = [str(a) for a in (config.get("architectures") or []) if a]
    quantization = config.get("quantization_config")
    files = sorted(
        ({"name": p.name, "size": p.stat().st_size} for p in folder.iterdir() if p.is_file()),
        key=lambda item: item["name"],
    )
    return {
        "path": str(folder),
        "architecture": architectures[0] if architectures else "",
        "architectures": architectures,
        "model_type": str(config.get("model_type") or ""),
        "num_parameters": num_parameters,
        "dtype": dtype,
        "has_tokenizer": has_tokenizer,
        "has_chat_template": _chat_template(folder, tokenizer_config),
        "vocab_size": _int_or_zero(_first(config, "vocab_size", "padded_vocab_size")),
        "hidden_size": _int_or_zero(_first(config, "hidden_size", "n_embd", "d_model")),
        "num_layers": _int_or_zero(_first(config, "num_hidden_layers", "n_layer", "num_layers")),
        "num_attention_heads": _int_or_zero(_first(config, "num_attention_heads", "n_head")),
        "num_key_value_heads": _int_or_zero(_first(config, "num_key_value_heads", "num_attention_heads", "n_head")),
        "intermediate_size": _int_or_zero(_first(config, "intermediate_size", "n_inner", "ffn_dim")),
        "context_length": _int_or_zero(_first(config, "max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")),
        "tie_word_embeddings": _first(config, "tie_word_embeddings"),
        "quantization": str(quantization.get("quant_method", "")) if isinstance(quantization, dict) else "",
        "weights_format": weights_format,
        "weights_bytes": sum(p.stat().st_size for p in weight_files),
        "files": files,
    }
