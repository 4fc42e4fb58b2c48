"""One frozen, validated configuration for a LoRA SFT run, with LLaMA-Factory's knob names.

The Django side stores ``FinetuneConfig.to_dict()`` on the job and the worker rebuilds it with
``from_dict``; the command line and the form reach it through ``with_overrides``. Everything is
checked in ``__post_init__`` and every bad field is reported at once (``ConfigError.errors``).
This module imports neither torch nor transformers so that forms and management commands stay
cheap; the scheduler names are pinned here and checked against transformers in the tests.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from training.engine.templates import TEMPLATE_NAMES

# transformers.trainer_utils.SchedulerType values that need no extra ``lr_scheduler_kwargs``
# (cosine_with_min_lr, warmup_stable_decay, reduce_lr_on_plateau, greedy … need more knobs).
SCHEDULER_TYPES = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "inverse_sqrt")

_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f"}
_NONE = {"none", "null", ""}


# The fused loss computes the output head chunk by chunk: one chunk's fp32 logits hold about this many
# elements (2**25 × 4 bytes = 128 MiB; 220 tokens of a 151,936 vocabulary). Here so that the estimate
# and training/engine/fused_loss.py agree without this module importing torch.
LOSS_CHUNK_ELEMENTS = 1 << 25


def loss_chunk_tokens(vocab_size: int) -> int:
    """Tokens per chunk of the fused loss: one chunk's fp32 logits ≈ 128 MiB (16 … 8192 tokens)."""
    return max(16, min(8192, LOSS_CHUNK_ELEMENTS // max(1, int(vocab_size))))


class ConfigError(ValueError):
    """Invalid configuration; ``errors`` maps each bad field to a message."""

    def __init__(self, errors: dict[str, str]):
        self.errors = dict(errors)
        super().__init__("; ".join(f"{key}: {message}" for key, message in self.errors.items()))


def _help(text: str, group: str) -> dict[str, str]:
    return {"help": text, "group": group}


@dataclass(frozen=True)
class FinetuneConfig:
    """Every knob of the LLaMA-Factory LoRA SFT recipe that MedPortal exposes."""

    # data
    template: str = field(
        default="default",
        metadata=_help("Prompt template: 'default' is the model's own chat template; or llama3, qwen3, alpaca, medical_inquiry.", "data"),
    )
    cutoff_len: int = field(
        default=2048, metadata=_help("Maximum tokens per example (prompt + answer); longer ones are truncated.", "data")
    )
    max_samples: int | None = field(default=None, metadata=_help("Use at most this many training records (none = all).", "data"))
    val_size: float = field(
        default=0.0, metadata=_help("Fraction of the training records held out for validation when no validation file is given.", "data")
    )
    packing: bool = field(
        default=False, metadata=_help("Pack several examples into one row (no cross-example attention): faster, same loss.", "data")
    )
    # LoRA
    lora_rank: int = field(default=8, metadata=_help("LoRA rank r.", "lora"))
    lora_alpha: int | None = field(default=None, metadata=_help("LoRA alpha (none = 2 × rank, as in LLaMA-Factory).", "lora"))
    lora_dropout: float = field(default=0.0, metadata=_help("Dropout on the LoRA branch.", "lora"))
    lora_target: str = field(
        default="all", metadata=_help("'all' = every linear layer except the output head; or a comma list such as q_proj,v_proj.", "lora")
    )
    # optimisation
    learning_rate: float = field(default=5e-5, metadata=_help("Peak learning rate (AdamW).", "optim"))
    lr_scheduler_type: str = field(default="cosine", metadata=_help("Learning-rate schedule: " + ", ".join(SCHEDULER_TYPES) + ".", "optim"))
    warmup_ratio: float = field(default=0.0, metadata=_help("Fraction of the steps used for linear warm-up.", "optim"))
    warmup_steps: int = field(default=0, metadata=_help("Warm-up steps (overrides warmup_ratio when > 0).", "optim"))
    num_train_epochs: float = field(default=3.0, metadata=_help("Epochs over the training records.", "optim"))
    max_steps: int | None = field(default=None, metadata=_help("Stop after this many optimizer steps (none = epochs decide).", "optim"))
    per_device_train_batch_size: int = field(default=2, metadata=_help("Rows per device per forward pass.", "optim"))
    gradient_accumulation_steps: int = field(default=8, metadata=_help("Forward passes per optimizer step.", "optim"))
    max_grad_norm: float = field(default=1.0, metadata=_help("Gradient clipping norm (0 = off).", "optim"))
    weight_decay: float = field(default=0.0, metadata=_help("AdamW weight decay.", "optim"))
    seed: int = field(default=42, metadata=_help("Seed for the split, the shuffling and the LoRA initialisation.", "optim"))
    # hardware
    bf16: bool = field(default=False, metadata=_help("bfloat16 mixed precision (GPU).", "hardware"))
    fp16: bool = field(default=False, metadata=_help("float16 mixed precision (GPU).", "hardware"))
    gradient_checkpointing: bool = field(
        default=False, metadata=_help("Recompute activations in the backward pass: less memory, about a third slower.", "hardware")
    )
    quantization_bit: int | None = field(
        default=None, metadata=_help("Load the base weights in 4 bits (QLoRA) or 8 bits; CUDA only.", "hardware")
    )
    deepspeed_stage: int | None = field(
        default=None, metadata=_help("DeepSpeed ZeRO stage 2 or 3 for multi-GPU (needs the gpu extra).", "hardware")
    )
    fused_loss: bool = field(
        default=True,
        metadata=_help("Compute the loss in chunks of tokens without the full logits: far less memory, the same loss.", "hardware"),
    )
    use_liger_kernel: bool = field(
        default=False, metadata=_help("Liger's Triton kernels for the loss, RMSNorm, RoPE and SwiGLU (CUDA, needs liger-kernel).", "hardware")
    )
    torch_compile: bool = field(
        default=False, metadata=_help("Compile the model with torch.compile: a slower start, faster steps.", "hardware")
    )
    # checkpoints and logging
    save_steps: int = field(default=100, metadata=_help("Save a resumable checkpoint every N optimizer steps.", "output"))
    logging_steps: int = field(default=5, metadata=_help("Report the training loss every N optimizer steps.", "output"))
    eval_steps: int | None = field(
        default=None, metadata=_help("Validation loss every N steps (none = at each checkpoint and at the end).", "output")
    )
    save_total_limit: int = field(default=2, metadata=_help("Keep at most this many checkpoints.", "output"))

    def __post_init__(self) -> None:
        errors: dict[str, str] = {}
        hints = _type_hints()
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            ok, normalised = _check_type(value, hints[f.name])
            if not ok:
                errors[f.name] = f"expected {_type_label(hints[f.name])}, got {value!r}"
            elif normalised is not value:
                object.__setattr__(self, f.name, normalised)
        if not errors:
            errors.update(self._rule_errors())
        if errors:
            raise ConfigError(errors)

    def _rule_errors(self) -> dict[str, str]:
        errors: dict[str, str] = {}

        def at_least(name: str, low: float, *, optional: bool = False) -> None:
            value = getattr(self, name)
            if optional and value is None:
                return
            if value < low:
                errors[name] = f"must be ≥ {low:g}"

        if self.template not in TEMPLATE_NAMES:
            errors["template"] = "unknown template; choose one of " + ", ".join(TEMPLATE_NAMES)
        at_least("cutoff_len", 16)
        at_least("max_samples", 1, optional=True)
        if not 0.0 <= self.val_size < 1.0:
            errors["val_size"] = "must be in [0, 1)"
        at_least("lora_rank", 1)
        at_least("lora_alpha", 1, optional=True)
        if not 0.0 <= self.lora_dropout < 1.0:
            errors["lora_dropout"] = "must be in [0, 1)"
        if self.lora_target != "all":
            names = [part.strip() for part in self.lora_target.split(",")]
            if not names or any(not _MODULE_NAME.match(name) for name in names):
                errors["lora_target"] = "must be 'all' or a comma list of module names such as q_proj,v_proj"
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            errors["learning_rate"] = "must be a positive number"
        if self.lr_scheduler_type not in SCHEDULER_TYPES:
            errors["lr_scheduler_type"] = "unknown scheduler; choose one of " + ", ".join(SCHEDULER_TYPES)
        if not 0.0 <= self.warmup_ratio < 1.0:
            errors["warmup_ratio"] = "must be in [0, 1)"
        at_least("warmup_steps", 0)
        if not (self.num_train_epochs > 0 and math.isfinite(self.num_train_epochs)):
            errors["num_train_epochs"] = "must be a positive number"
        at_least("max_steps", 1, optional=True)
        at_least("per_device_train_batch_size", 1)
        at_least("gradient_accumulation_steps", 1)
        at_least("max_grad_norm", 0)
        at_least("weight_decay", 0)
        at_least("seed", 0)
        if self.bf16 and self.fp16:
            errors["fp16"] = "bf16 and fp16 cannot both be on"
        if self.quantization_bit not in (None, 4, 8):
            errors["quantization_bit"] = "must be none, 4 (QLoRA) or 8"
        if self.deepspeed_stage not in (None, 2, 3):
            errors["deepspeed_stage"] = "must be none, 2 or 3"
        elif self.deepspeed_stage == 3 and self.quantization_bit is not None:
            errors["deepspeed_stage"] = "quantized base weights cannot be sharded with ZeRO-3; use stage 2"
        at_least("save_steps", 1)
        at_least("logging_steps", 1)
        at_least("eval_steps", 1, optional=True)
        at_least("save_total_limit", 1)
        return errors

    # ---- conversions -------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FinetuneConfig:
        if not isinstance(data, dict):
            raise ConfigError({"config": f"expected a mapping, got {type(data).__name__}"})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError({key: "unknown setting" for key in unknown})
        return cls(**data)

    @classmethod
    def from_preset(cls, name: str, overrides: Iterable[str] = ()) -> FinetuneConfig:
        if name not in PRESETS:
            raise ConfigError({"preset": "unknown preset; choose one of " + ", ".join(PRESETS)})
        return cls.from_dict(PRESETS[name]).with_overrides(overrides)

    def with_overrides(self, overrides: Iterable[str]) -> FinetuneConfig:
        """Apply ``key=value`` strings, each coerced by the field's type (``none`` for optional)."""
        hints = _type_hints()
        changes: dict[str, Any] = {}
        errors: dict[str, str] = {}
        for item in overrides:
            key, sep, raw = item.partition("=")
            key = key.strip()
            if not sep or not key:
                errors[item or "?"] = "expected key=value"
                continue
            if key not in hints:
                errors[key] = "unknown setting"
                continue
            try:
                changes[key] = _coerce(raw.strip(), hints[key])
            except ValueError as exc:
                errors[key] = str(exc)
        if errors:
            raise ConfigError(errors)
        return dataclasses.replace(self, **changes)

    # ---- derived -----------------------------------------------------------------------

    @property
    def effective_lora_alpha(self) -> int:
        return self.lora_alpha if self.lora_alpha is not None else 2 * self.lora_rank

    @property
    def lora_target_modules(self) -> str | list[str]:
        """What PEFT's ``LoraConfig(target_modules=…)`` gets: ``"all-linear"`` or a list."""
        if self.lora_target == "all":
            return "all-linear"
        return [part.strip() for part in self.lora_target.split(",")]

    @property
    def requires_gpu(self) -> bool:
        return bool(self.bf16 or self.fp16 or self.quantization_bit or self.deepspeed_stage or self.use_liger_kernel)

    def gpu_only_fields(self) -> dict[str, str]:
        """The fields that need CUDA, with why (the runner refuses them on a CPU-only machine)."""
        found: dict[str, str] = {}
        if self.bf16:
            found["bf16"] = "mixed precision is a GPU setting here; set bf16=false to train on CPU"
        if self.fp16:
            found["fp16"] = "float16 needs a CUDA GPU; set fp16=false to train on CPU"
        if self.quantization_bit:
            found["quantization_bit"] = "QLoRA (bitsandbytes) needs a CUDA GPU; set quantization_bit=none to train on CPU"
        if self.deepspeed_stage:
            found["deepspeed_stage"] = "DeepSpeed needs CUDA GPUs; set deepspeed_stage=none to train on CPU"
        if self.use_liger_kernel:
            found["use_liger_kernel"] = "Liger's kernels need a CUDA GPU; set use_liger_kernel=false to train on CPU"
        return found

    def deepspeed_config(self) -> dict[str, Any]:
        """The ZeRO-2 / ZeRO-3 JSON that transformers' DeepSpeed integration fills in ("auto" values).

        Same content as LLaMA-Factory's examples/deepspeed/ds_z{2,3}_config.json, minus the monitor.
        """
        if self.deepspeed_stage is None:
            raise ConfigError({"deepspeed_stage": "no DeepSpeed stage set"})
        config: dict[str, Any] = {
            "train_batch_size": "auto",
            "train_micro_batch_size_per_gpu": "auto",
            "gradient_accumulation_steps": "auto",
            "gradient_clipping": "auto",
            "zero_allow_untested_optimizer": True,
            "fp16": {
                "enabled": "auto",
                "loss_scale": 0,
                "loss_scale_window": 1000,
                "initial_scale_power": 16,
                "hysteresis": 2,
                "min_loss_scale": 1,
            },
            "bf16": {"enabled": "auto"},
        }
        if self.deepspeed_stage == 2:
            config["zero_optimization"] = {
                "stage": 2,
                "allgather_partitions": True,
                "allgather_bucket_size": 5e8,
                "overlap_comm": False,
                "reduce_scatter": True,
                "reduce_bucket_size": 5e8,
                "contiguous_gradients": True,
                "round_robin_gradients": True,
            }
        else:
            config["zero_optimization"] = {
                "stage": 3,
                "overlap_comm": False,
                "contiguous_gradients": True,
                "sub_group_size": 1e9,
                "reduce_bucket_size": "auto",
                "stage3_prefetch_bucket_size": "auto",
                "stage3_param_persistence_threshold": "auto",
                "stage3_max_live_parameters": 1e9,
                "stage3_max_reuse_distance": 1e9,
                "stage3_gather_16bit_weights_on_model_save": True,
            }
        return config


def field_help() -> dict[str, dict[str, str]]:
    """name -> {"help", "group"} for forms and docs."""
    return {f.name: dict(f.metadata) for f in dataclasses.fields(FinetuneConfig)}


# ---- presets -----------------------------------------------------------------------------

PRESETS: dict[str, dict[str, Any]] = {
    # hiyouga/LLaMA-Factory examples/train_lora/llama3_lora_sft.yaml (val_size from its commented eval block);
    # the yaml names template llama3 because it trains Llama 3 — here the model's own template.
    "llamafactory": {
        "template": "default",
        "cutoff_len": 2048,
        "max_samples": 1000,
        "val_size": 0.1,
        "lora_rank": 8,
        "lora_target": "all",
        "learning_rate": 1e-4,
        "lr_scheduler_type": "cosine",
        "warmup_ratio": 0.1,
        "num_train_epochs": 3.0,
        "per_device_train_batch_size": 1,
        "gradient_accumulation_steps": 8,
        "bf16": True,
        "save_steps": 500,
        "logging_steps": 10,
    },
    # The seed's medical recipe for Qwen3-0.6B (LoRA SFT on medical QA).
    "qwen3_medical": {
        "template": "qwen3",
        "cutoff_len": 1024,
        "val_size": 0.1,
        "lora_rank": 8,
        "lora_alpha": 16,
        "lora_target": "all",
        "learning_rate": 1e-4,
        "lr_scheduler_type": "cosine",
        "warmup_ratio": 0.1,
        "num_train_epochs": 3.0,
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 8,
        "bf16": True,
        "save_steps": 100,
        "logging_steps": 10,
    },
    # A run that visibly learns in a minute or two on two CPU cores with the demo model: a fixed
    # budget of 120 steps whatever the dataset size (a dozen epochs of the ~120 demo train pairs,
    # a part of an epoch of a large set), fp32, packed rows of 256 tokens. Rank 32 at 5e-3: the
    # demo model is a few million parameters, and rank 8 at 1e-3 barely moved its loss in that
    # budget (docs/BENCHMARKS.md, "The demo fine-tune").
    "cpu_demo": {
        "template": "default",
        "cutoff_len": 256,
        "max_samples": 400,
        "val_size": 0.1,
        "lora_rank": 32,
        "lora_alpha": 64,
        "lora_target": "all",
        "learning_rate": 5e-3,
        "lr_scheduler_type": "cosine",
        "warmup_ratio": 0.05,
        "num_train_epochs": 3.0,
        "max_steps": 120,
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 1,
        "packing": True,
        "save_steps": 25,
        "logging_steps": 1,
        "eval_steps": 25,
    },
}

PRESET_LABELS: dict[str, str] = {
    "llamafactory": "LLaMA-Factory defaults (llama3_lora_sft.yaml)",
    "qwen3_medical": "Qwen3-0.6B medical recipe (seed)",
    "cpu_demo": "Quick CPU demo",
}


# ---- estimate ----------------------------------------------------------------------------

# LoRA adds r × (in + out) parameters per adapted linear layer. With the usual decoder shapes
# (q, k, v, o ≈ h → h; gate, up, down ≈ h ↔ 3h) "all" is ≈ 20·h per rank per layer.
_MODULE_WIDTH = {"q_proj": 2, "k_proj": 2, "v_proj": 2, "o_proj": 2, "gate_proj": 4, "up_proj": 4, "down_proj": 4}


def estimate(
    config: FinetuneConfig,
    *,
    num_parameters: int,
    hidden_size: int,
    num_layers: int,
    num_examples: int,
    avg_tokens: float,
    vocab_size: int | None = None,
    gpu_tflops: float = 100.0,
    mfu: float = 0.4,
) -> dict[str, Any]:
    """Rough single-GPU memory and time for this run (see docs/training-engine.md, "Estimate").

    memory = weights (2 bytes/param in bf16/fp16, 4 in fp32, 0.5 in 4-bit, 1 in 8-bit)
           + LoRA parameters × 16 bytes (fp32 weight + grad + two Adam moments)
           + activations ≈ batch × cutoff × hidden × layers × (34 bytes, or 2 with checkpointing) × (dtype/2)
           + logits ≈ batch × cutoff × vocab × 8 bytes (with the fused loss one chunk: ≈ 2**25 × (4 + 2) bytes)
           + 1 GiB CUDA context, all × 1.1.
    time   = train tokens × (4·N, or 6·N with checkpointing) FLOPs / (gpu_tflops × mfu):
             forward 2N per token, backward through frozen weights 2N (input gradients only),
             recomputation another 2N.
    """
    n_examples = max(0, int(num_examples))
    if config.max_samples is not None:
        n_examples = min(n_examples, config.max_samples)
    n_train = n_examples - round(n_examples * config.val_size) if config.val_size else n_examples
    tokens_per_example = min(float(avg_tokens), float(config.cutoff_len))
    rows_per_step = config.per_device_train_batch_size * config.gradient_accumulation_steps
    if config.packing:
        rows = math.ceil(n_train * tokens_per_example / config.cutoff_len) if n_train else 0
    else:
        rows = n_train
    steps_per_epoch = max(1, math.ceil(rows / rows_per_step)) if rows else 0
    steps = config.max_steps if config.max_steps is not None else math.ceil(steps_per_epoch * config.num_train_epochs)
    epochs = steps / steps_per_epoch if steps_per_epoch else 0.0
    total_tokens = int(n_train * tokens_per_example * epochs)

    if config.quantization_bit == 4:
        weight_bytes = 0.5
    elif config.quantization_bit == 8:
        weight_bytes = 1.0
    else:
        weight_bytes = 2.0 if (config.bf16 or config.fp16) else 4.0
    act_bytes = 2.0 if (config.bf16 or config.fp16) else 4.0
    if config.lora_target == "all":
        width = sum(_MODULE_WIDTH.values())
    else:
        width = sum(_MODULE_WIDTH.get(name.split(".")[-1], 2) for name in config.lora_target_modules)
    lora_params = int(config.lora_rank * width * hidden_size * num_layers)

    gib = 1024**3
    weights_gb = num_parameters * weight_bytes / gib
    lora_gb = lora_params * 16 / gib
    seq = config.cutoff_len if config.packing else tokens_per_example
    per_token_layer = 2.0 if config.gradient_checkpointing else 34.0
    activations_gb = config.per_device_train_batch_size * seq * hidden_size * num_layers * per_token_layer * (act_bytes / 2) / gib
    tokens_per_forward = config.per_device_train_batch_size * seq
    if config.fused_loss or config.use_liger_kernel:
        # one chunk at a time: its fp32 logits, reused in place for their gradient, plus its copy in the compute dtype
        logits_gb = min(tokens_per_forward, loss_chunk_tokens(vocab_size or 1)) * (vocab_size or 0) * (4 + act_bytes) / gib
    else:
        logits_gb = tokens_per_forward * (vocab_size or 0) * 8 / gib
    gpu_memory_gb = (weights_gb + lora_gb + activations_gb + logits_gb + 1.0) * 1.1

    flops_per_token = (6.0 if config.gradient_checkpointing else 4.0) * num_parameters
    seconds = total_tokens * flops_per_token / (gpu_tflops * 1e12 * mfu) if total_tokens else 0.0
    return {
        "gpu_memory_gb": round(gpu_memory_gb, 2),
        "seconds_gpu": round(seconds, 1),
        "total_tokens": total_tokens,
        "steps": int(steps),
        "train_examples": n_train,
        "trainable_parameters": lora_params,
        "breakdown_gb": {
            "weights": round(weights_gb, 3),
            "lora_and_optimizer": round(lora_gb, 3),
            "activations": round(activations_gb, 3),
            "logits": round(logits_gb, 3),
        },
        "assumptions": {"gpu_tflops": gpu_tflops, "mfu": mfu},
    }


# ---- typing helpers ----------------------------------------------------------------------


def _type_hints() -> dict[str, Any]:
    return typing.get_type_hints(FinetuneConfig)


def _split_optional(tp: Any) -> tuple[Any, bool]:
    args = typing.get_args(tp)
    if args and type(None) in args:
        inner = [a for a in args if a is not type(None)]
        return inner[0], True
    return tp, False


def _type_label(tp: Any) -> str:
    inner, optional = _split_optional(tp)
    name = {bool: "true/false", int: "an integer", float: "a number", str: "text"}[inner]
    return f"{name} or none" if optional else name


def _check_type(value: Any, tp: Any) -> tuple[bool, Any]:
    inner, optional = _split_optional(tp)
    if value is None:
        return optional, value
    if inner is bool:
        return isinstance(value, bool), value
    if inner is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if inner is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False, value
        return True, value if isinstance(value, float) else float(value)
    if inner is str:
        return isinstance(value, str), value
    return False, value


def _coerce(raw: str, tp: Any) -> Any:
    inner, optional = _split_optional(tp)
    if optional and raw.lower() in _NONE:
        return None
    if inner is bool:
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise ValueError(f"expected true/false, got {raw!r}")
    if inner is int:
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"expected an integer, got {raw!r}") from None
    if inner is float:
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"expected a number, got {raw!r}") from None
    return raw
