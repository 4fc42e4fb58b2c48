"""LoRA SFT on transformers' ``Trainer`` + PEFT, reporting through callbacks.

One orchestration function, ``train``: check the hardware → tokenizer → data (template,
truncation, packing) → model (+ QLoRA) → LoRA → Trainer → save adapter. Progress, metrics and
cancellation go through ``EventCallback`` (a ``TrainerCallback``); the caller gets plain dict
events (see docs/training-engine.md) and decides where they go. Checkpoints are the Trainer's
own (``output_dir/checkpoints/checkpoint-N``) so a retry resumes with optimizer, scheduler and
RNG state. Launched under ``torchrun`` / ``accelerate launch`` every rank runs this function;
only rank 0 emits events and writes files, and the cancel flag is all-reduced so all ranks stop
at the same step. Nothing is printed to stdout (the CLI's stdout is the event stream).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import shutil
import time
import traceback
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from training.engine import templates
from training.engine.config import ConfigError, FinetuneConfig
from training.engine.data import DataError, ListDataset, SFTCollator, prepare_data

TRAINING_INFO = "medportal_training.json"
RUN_INFO = "run.json"
LOG_FILE = "train_log.jsonl"

Event = dict[str, Any]


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def last_valid_checkpoint(checkpoints_dir: str | Path) -> Path | None:
    """Newest ``checkpoint-N`` whose trainer_state.json (written last by the Trainer) is readable."""
    folder = Path(checkpoints_dir)
    if not folder.is_dir():
        return None
    candidates = []
    for path in folder.iterdir():
        name = path.name
        if path.is_dir() and name.startswith("checkpoint-") and name[len("checkpoint-") :].isdigit():
            candidates.append((int(name[len("checkpoint-") :]), path))
    for step, path in sorted(candidates, reverse=True):
        try:
            state = json.loads((path / "trainer_state.json").read_text())
        except (OSError, ValueError):
            continue
        if state.get("global_step") == step and step > 0:
            return path
    return None


def _file_digest(path: str | Path | None) -> str | None:
    if not path:
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _EventSink:
    """Sends events to the caller and appends them to train_log.jsonl (rank 0 only)."""

    def __init__(self, on_event: Callable[[Event], None], log_path: Path):
        self.on_event = on_event
        self.log_path = log_path
        self.main = is_main_process()

    def __call__(self, event: Event) -> None:
        if not self.main:
            return
        event = {**event, "time": round(time.time(), 3)}
        with self.log_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(event, ensure_ascii=False) + "\n")
        self.on_event(event)

    def message(self, level: str, text: str) -> None:
        self({"type": "message", "level": level, "text": text})


def _stop_everywhere(local: bool) -> bool:
    """True on every rank as soon as one rank was asked to stop (no-op when not distributed)."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return local
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local
    import torch

    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    flag = torch.tensor([1 if local else 0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def _make_callback(emit: _EventSink, should_stop: Callable[[], bool], start_info: dict[str, Any], checkpoints_dir: Path):
    from transformers import TrainerCallback

    class EventCallback(TrainerCallback):
        """Trainer hooks → MedPortal events; cancellation at each step end."""

        def __init__(self) -> None:
            self.cancelled = False
            self.started = False
            self.last_eval_loss: float | None = None
            self.train_seconds = 0.0
            self.train_cpu_seconds = 0.0  # process CPU time of the same intervals (robust to other load on the host)
            self._recent: deque[float] = deque(maxlen=20)
            self._step_began = self._step_began_cpu = 0.0
            self._last_end = self._last_end_cpu = 0.0
            self._interrupted = False  # an evaluation or a save happened since the last step end
            self._tokens_at_start = 0
            self._tokens_at_log = 0
            self._seconds_at_log = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            self._last_end, self._last_end_cpu = time.perf_counter(), time.process_time()
            self._tokens_at_start = self._tokens_at_log = state.num_input_tokens_seen
            if not self.started:
                self.started = True
                emit({"type": "start", "total_steps": state.max_steps, **start_info, "resumed_from_step": state.global_step})

        def on_step_begin(self, args, state, control, **kwargs):
            self._step_began, self._step_began_cpu = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kwargs):
            now, now_cpu = time.perf_counter(), time.process_time()
            duration = (now - self._step_began) if self._interrupted else (now - self._last_end)
            self.train_cpu_seconds += (now_cpu - self._step_began_cpu) if self._interrupted else (now_cpu - self._last_end_cpu)
            self._interrupted = False
            self._last_end, self._last_end_cpu = now, now_cpu
            self.train_seconds += duration
            self._recent.append(duration)
            if _stop_everywhere(bool(should_stop())):
                self.cancelled = True
                control.should_training_stop = True
                control.should_save = True  # a retry resumes from here
                control.should_log = True
            return control

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            if "loss" not in logs:
                return
            tokens = state.num_input_tokens_seen
            seconds = self.train_seconds - self._seconds_at_log
            tps = (tokens - self._tokens_at_log) / seconds if seconds > 0 else None
            self._tokens_at_log, self._seconds_at_log = tokens, self.train_seconds
            remaining = max(0, state.max_steps - state.global_step)
            eta = (sum(self._recent) / len(self._recent)) * remaining if self._recent else None
            emit(
                {
                    "type": "log",
                    "step": state.global_step,
                    "epoch": round(state.epoch or 0.0, 4),
                    "loss": _num(logs["loss"]),  # NaN/inf → null: the stream stays strict JSON
                    "learning_rate": float(logs.get("learning_rate", 0.0)),
                    "grad_norm": _num(logs.get("grad_norm")),
                    "tokens_per_second": round(tps, 1) if tps is not None else None,
                    "progress": round(state.global_step / state.max_steps, 4) if state.max_steps else 0.0,
                    "eta_seconds": round(eta, 1) if eta is not None else None,
                }
            )

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            self._interrupted = True
            if metrics and "eval_loss" in metrics:
                self.last_eval_loss = _num(metrics["eval_loss"])
                emit({"type": "eval", "step": state.global_step, "epoch": round(state.epoch or 0.0, 4), "eval_loss": self.last_eval_loss})

        def on_save(self, args, state, control, **kwargs):
            self._interrupted = True
            emit({"type": "checkpoint", "step": state.global_step, "path": str(checkpoints_dir / f"checkpoint-{state.global_step}")})

    return EventCallback()


def _engine_trainer_class():
    from transformers import Trainer

    class EngineTrainer(Trainer):
        """The Trainer, with the count of input tokens kept on the device between logs.

        transformers reads the count back (``.item()``) after every micro-batch, which waits for the
        GPU each step. Here it is summed on the device and read when the Trainer is about to log,
        save, evaluate or stop (the same points on every rank), so ``state.num_input_tokens_seen`` is
        exact whenever a callback, a checkpoint or the end of the run reads it.
        """

        _pending_tokens = None

        def _track_num_input_tokens(self, inputs):
            if self.args.include_num_input_tokens_seen == "no":
                return
            if "attention_mask" in inputs:
                count = inputs["attention_mask"].sum()
            else:
                count = (inputs["input_ids"] != self.processing_class.pad_token_id).sum()
            self._pending_tokens = count if self._pending_tokens is None else self._pending_tokens + count

        def flush_token_count(self) -> None:
            import torch

            if self._pending_tokens is None:
                return
            pending = torch.as_tensor(self._pending_tokens, device=self.args.device, dtype=torch.int64)
            self._pending_tokens = None
            self.state.num_input_tokens_seen += int(self.accelerator.gather(pending).sum().item())

        def _maybe_log_save_evaluate(self, *args, **kwargs):
            control = self.control
            if control.should_log or control.should_save or control.should_evaluate or control.should_training_stop:
                self.flush_token_count()
            return super()._maybe_log_save_evaluate(*args, **kwargs)

        def _save_checkpoint(self, *args, **kwargs):
            self.flush_token_count()
            return super()._save_checkpoint(*args, **kwargs)

    return EngineTrainer


def _use_fused_loss(config: FinetuneConfig, model, emit: _EventSink) -> str | None:
    """Wire the chunked (or Liger's) fused loss into the model; None when the plain loss stays."""
    from training.engine.fused_loss import enable_fused_loss, unsupported_reason

    if not (config.fused_loss or config.use_liger_kernel):
        return None
    reason = unsupported_reason(model)
    if reason:
        if config.use_liger_kernel:
            raise ConfigError({"use_liger_kernel": f"Liger's fused loss cannot be used here: {reason}"})
        emit.message("warning", f"the fused loss is off for this model ({reason}); the loss is computed over the full logits")
        return None
    try:
        enable_fused_loss(model, use_liger=config.use_liger_kernel)
    except RuntimeError as exc:
        raise ConfigError({"use_liger_kernel": str(exc)}) from exc
    return "liger" if config.use_liger_kernel else "chunked"


def _num(value: Any) -> float | None:
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _check_hardware(config: FinetuneConfig) -> None:
    import torch

    if not torch.cuda.is_available():
        problems = config.gpu_only_fields()
        if problems:
            raise ConfigError(problems)
    if config.quantization_bit and importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError({"quantization_bit": "bitsandbytes is not installed (pip install 'medportal[gpu]')"})
    if config.deepspeed_stage and importlib.util.find_spec("deepspeed") is None:
        raise ConfigError({"deepspeed_stage": "deepspeed is not installed (pip install 'medportal[gpu]')"})
    if config.use_liger_kernel and importlib.util.find_spec("liger_kernel") is None:
        raise ConfigError({"use_liger_kernel": "liger-kernel is not installed (pip install liger-kernel)"})


def _training_arguments(config: FinetuneConfig, checkpoints_dir: Path, has_eval: bool):
    import dataclasses

    import torch
    from transformers import TrainingArguments

    eval_steps = config.eval_steps or config.save_steps
    # transformers 5 renamed gradient_checkpointing to activation_checkpointing (the old name warns).
    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    prefix = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    checkpointing = {
        prefix: config.gradient_checkpointing,
        f"{prefix}_kwargs": {"use_reentrant": False} if config.gradient_checkpointing else None,
    }
    return TrainingArguments(
        **checkpointing,
        output_dir=str(checkpoints_dir),
        per_device_train_batch_size=config.per_device_train_batch_size,
        # One example per eval batch: the Trainer averages batch means, so this makes eval_loss the mean
        # of per-example losses, the same whatever the training batch size or packing (and the least memory).
        per_device_eval_batch_size=1,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler_type,
        # transformers 5: warmup_steps < 1 is a ratio of the total steps.
        warmup_steps=config.warmup_steps if config.warmup_steps > 0 else config.warmup_ratio,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps if config.max_steps is not None else -1,
        max_grad_norm=config.max_grad_norm,
        weight_decay=config.weight_decay,
        seed=config.seed,
        data_seed=config.seed,
        bf16=config.bf16,
        fp16=config.fp16,
        deepspeed=config.deepspeed_config() if config.deepspeed_stage else None,
        logging_strategy="steps",
        logging_steps=config.logging_steps,
        logging_first_step=True,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=eval_steps if has_eval else None,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        report_to="none",
        disable_tqdm=True,
        log_level="warning",
        log_level_replica="error",
        remove_unused_columns=False,
        label_names=["labels"],
        include_num_input_tokens_seen="non_padding",
        # No host-device synchronisation in a step unless it logs: the loss is not checked for NaN on the host
        # every step (a non-finite loss is reported as null in the log event instead), batches are copied to
        # the GPU asynchronously from pinned memory, and the token count is read back at logging (EngineTrainer).
        logging_nan_inf_filter=False,
        accelerator_config={"non_blocking": True} if torch.cuda.is_available() else None,
        optim="adamw_torch_fused",  # one fused kernel for every LoRA tensor (CPU and CUDA)
        torch_compile=config.torch_compile,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        ddp_find_unused_parameters=False,
        use_cpu=False,
    )


def _load_model(config: FinetuneConfig, model_path: str):
    import torch

    from .loading import load_base

    kwargs: dict[str, Any] = {}
    compute_dtype = torch.bfloat16 if config.bf16 else torch.float16 if config.fp16 else torch.float32
    kwargs["dtype"] = compute_dtype
    if config.quantization_bit:
        from transformers import BitsAndBytesConfig

        if config.quantization_bit == 4:
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute_dtype
            )
        else:
            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    model = load_base(model_path, attn_implementation="sdpa", **kwargs)
    model.config.use_cache = False
    if config.quantization_bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=config.gradient_checkpointing, gradient_checkpointing_kwargs={"use_reentrant": False}
        )
    return model


def _apply_lora(config: FinetuneConfig, model):
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.effective_lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, lora)
    except ValueError as exc:  # e.g. a target module that is not in the model
        raise ConfigError({"lora_target": str(exc)}) from exc


def _load_tokenizer(model_path: str):
    from .loading import load_tokenizer

    return load_tokenizer(model_path)


def _loss_bounds(log_history: list[dict[str, Any]]) -> tuple[float | None, float | None]:
    losses = [entry["loss"] for entry in log_history if "loss" in entry]
    return (_num(losses[0]), _num(losses[-1])) if losses else (None, None)


def train(
    config: FinetuneConfig,
    *,
    model_path: str | Path,
    train_file: str | Path,
    output_dir: str | Path,
    on_event: Callable[[Event], None],
    should_stop: Callable[[], bool] = lambda: False,
    resume: bool = True,
    eval_file: str | Path | None = None,
) -> Event:
    """Train a LoRA adapter; returns the ``done`` event (also sent through ``on_event``)."""
    output_dir = Path(output_dir)
    checkpoints_dir = output_dir / "checkpoints"
    adapter_dir = output_dir / "adapter"
    main = is_main_process()
    if main:
        output_dir.mkdir(parents=True, exist_ok=True)
    emit = _EventSink(on_event, output_dir / LOG_FILE)
    try:
        return _train(config, str(model_path), train_file, eval_file, output_dir, checkpoints_dir, adapter_dir, emit, should_stop, resume)
    except Exception as exc:
        if main:
            # Keep the failure in the run's own log too; the caller turns the exception into its error event.
            with (output_dir / LOG_FILE).open("a", encoding="utf-8") as handle:
                record = {
                    "type": "error",
                    "message": str(exc) or type(exc).__name__,
                    "traceback": traceback.format_exc(),
                    "time": round(time.time(), 3),
                }
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        raise


def _train(config, model_path, train_file, eval_file, output_dir, checkpoints_dir, adapter_dir, emit, should_stop, resume) -> Event:
    for path, what in ((train_file, "training file"), (eval_file, "validation file")):
        if path and not Path(path).is_file():
            raise DataError(f"the {what} {path} does not exist")
    if not (Path(model_path) / "config.json").is_file():
        raise DataError(f"{model_path} is not a model folder (no config.json)")
    _check_hardware(config)

    import peft
    import torch
    import transformers
    from transformers import PrinterCallback, set_seed

    transformers.utils.logging.disable_progress_bar()
    if should_stop():
        return _done(emit, "cancelled", None, [], None, None, 0.0, 0)

    tokenizer = _load_tokenizer(model_path)
    fingerprint = templates.template_fingerprint(tokenizer, config.template)
    data = prepare_data(config, tokenizer, train_file=train_file, eval_file=eval_file, on_message=emit.message)

    # Built before the model (ZeRO-3 partitions at load time); under a launcher this also joins the process group.
    args = _training_arguments(config, checkpoints_dir, has_eval=bool(data.eval))
    run_key = {
        "config": config.to_dict(),
        "model_path": str(Path(model_path).resolve()),
        "train_sha256": _file_digest(train_file),
        "eval_sha256": _file_digest(eval_file),
    }
    # Rank 0 decides (and cleans up) first; the other ranks then see the same folder and run.json.
    with args.main_process_first(local=False, desc="choosing the checkpoint"):
        checkpoint = _choose_checkpoint(run_key, output_dir, checkpoints_dir, adapter_dir, emit, resume)
    set_seed(config.seed)  # the LoRA initialisation
    model = _apply_lora(config, _load_model(config, model_path))
    loss_kind = _use_fused_loss(config, model, emit)
    trainable, all_params = model.get_nb_trainable_parameters()
    device = f"cuda ({torch.cuda.get_device_name(0)}) × {torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu"
    emit.message(
        "info", f"training on {device}, world size {args.world_size}, template {config.template}, loss {loss_kind or 'plain'}"
    )

    start_info = {
        "num_train_examples": len(data.train) if not data.packed else sum(1 for row in data.train for p in row["position_ids"] if p == 0),
        "num_eval_examples": len(data.eval),
        "num_train_rows": len(data.train),
        "trainable_parameters": int(trainable),
        "all_parameters": int(all_params),
        "template_fingerprint": fingerprint,
    }
    callback = _make_callback(emit, should_stop, start_info, checkpoints_dir)
    pad_multiple = 8 if torch.cuda.is_available() and not data.packed else None
    trainer = _engine_trainer_class()(
        model=model,
        args=args,
        train_dataset=ListDataset(data.train),
        eval_dataset=ListDataset(data.eval) if data.eval else None,
        data_collator=SFTCollator(tokenizer.pad_token_id, pad_to_multiple_of=pad_multiple),
        processing_class=tokenizer,
        callbacks=[callback],
    )
    trainer.remove_callback(PrinterCallback)  # it print()s every log to stdout
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint is not None else None)
    trainer.flush_token_count()
    history = trainer.state.log_history
    tokens = int(trainer.state.num_input_tokens_seen)
    session_tokens = tokens - callback._tokens_at_start
    tps = session_tokens / callback.train_seconds if callback.train_seconds > 0 else None
    runtime = float(result.metrics.get("train_runtime", 0.0))

    if callback.cancelled:
        return _done(
            emit,
            "cancelled",
            None,
            history,
            callback.last_eval_loss,
            tps,
            runtime,
            tokens,
            step=trainer.state.global_step,
            cpu_seconds=callback.train_cpu_seconds,
        )

    trainer.save_model(str(adapter_dir))  # adapter weights + config + tokenizer (rank 0; gathers ZeRO-3 shards)
    first, last = _loss_bounds(history)
    if is_main_process():
        tokenizer.save_pretrained(str(adapter_dir))
        info = {
            "config": config.to_dict(),
            "template": config.template,
            "template_fingerprint": fingerprint,
            "base_model_path": str(Path(model_path).resolve()),
            "train_file": str(train_file),
            "eval_file": str(eval_file) if eval_file else None,
            "num_train_examples": start_info["num_train_examples"],
            "num_eval_examples": start_info["num_eval_examples"],
            "global_step": trainer.state.global_step,
            "train_loss_first": first,
            "train_loss_last": last,
            "eval_loss": callback.last_eval_loss,
            "trainable_parameters": start_info["trainable_parameters"],
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (adapter_dir / TRAINING_INFO).write_text(json.dumps(info, indent=2, ensure_ascii=False))
    done = _done(
        emit,
        "succeeded",
        str(adapter_dir),
        history,
        callback.last_eval_loss,
        tps,
        runtime,
        tokens,
        step=trainer.state.global_step,
        cpu_seconds=callback.train_cpu_seconds,
    )
    if is_main_process():
        shutil.copyfile(output_dir / LOG_FILE, adapter_dir / LOG_FILE)  # the adapter folder carries its own log
    return done


def _choose_checkpoint(run_key, output_dir: Path, checkpoints_dir: Path, adapter_dir: Path, emit: _EventSink, resume: bool) -> Path | None:
    """The checkpoint to resume from, or None after clearing the folder for a fresh start."""
    checkpoint = None
    if resume:
        checkpoint = last_valid_checkpoint(checkpoints_dir)
        previous = _read_json(output_dir / RUN_INFO)
        if checkpoint is not None and previous is not None and previous != run_key:
            emit.message("warning", "the configuration, model or data changed since the last checkpoint; starting over")
            checkpoint = None
    if is_main_process():
        if checkpoint is None:
            shutil.rmtree(checkpoints_dir, ignore_errors=True)
            shutil.rmtree(adapter_dir, ignore_errors=True)
        (output_dir / RUN_INFO).write_text(json.dumps(run_key, indent=2, ensure_ascii=False))
    if checkpoint is not None:
        emit.message("info", f"resuming from {checkpoint.name}")
    return checkpoint


def _done(emit, status, adapter_path, history, eval_loss, tps, runtime, tokens, step: int = 0, cpu_seconds: float | None = None) -> Event:
    first, last = _loss_bounds(history)
    if eval_loss is None:  # e.g. a resumed run cancelled before its first evaluation: the checkpoint's last one
        eval_loss = next((_num(entry["eval_loss"]) for entry in reversed(history) if "eval_loss" in entry), None)
    event = {
        "type": "done",
        "status": status,
        "adapter_path": adapter_path,
        "step": step,
        "train_loss_first": first,
        "train_loss_last": last,
        "eval_loss": eval_loss,
        "tokens_per_second": round(tps, 1) if tps else None,
        "train_runtime": round(runtime, 3),
        "train_cpu_seconds": round(cpu_seconds, 3) if cpu_seconds is not None else None,
        "total_tokens": tokens,
        "peak_gpu_memory_gb": _peak_gpu_memory_gb(),
    }
    emit(event)
    return event


def _peak_gpu_memory_gb() -> float | None:
    """Peak CUDA memory allocated by this process (None without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return None
    return round(torch.cuda.max_memory_allocated() / 1024**3, 3)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
