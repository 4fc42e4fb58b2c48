"""Direct Preference Optimisation (DPO, sigmoid loss) with LoRA, on the engine's own parts.

No Django. Why not TRL's ``DPOTrainer``: TRL is not a dependency (and not installable on
closed hospital networks without adding it and its own pins); DPO is a loss, not a training
framework, and everything around it already exists here: the templates and truncation rule
(``templates``), the model loading, LoRA, ``TrainingArguments``, the resumable ``Trainer``
checkpoints, the event stream and cancellation (``runner``). This module adds the pairwise
data, the loss and the reference model, and runs on transformers' ``Trainer`` like SFT.

The loss (Rafailov et al. 2023, TRL's ``loss_type="sigmoid"``), for a prompt x with chosen
answer y_w and rejected answer y_l, log-probabilities summed over the answer tokens:

    r_w = β (log π(y_w|x) − log π_ref(y_w|x))        (the implicit reward of the chosen answer)
    r_l = β (log π(y_l|x) − log π_ref(y_l|x))
    loss = −log σ(r_w − r_l)                          (mean over the pairs of a batch)

Logged: loss, rewards/chosen (mean r_w), rewards/rejected (mean r_l), rewards/margin (mean
r_w − r_l) and rewards/accuracy (share of pairs with r_w > r_l).

The reference π_ref is the starting point, frozen:
* from a base model: a fresh LoRA adapter on the base; π_ref is the base, i.e. the model with
  the adapter switched off (peft's ``disable_adapter()``);
* on top of a succeeded SFT adapter: that adapter is trained further (the result is one
  adapter on the base model, served like any other); π_ref is the SFT model as loaded.
Either way the reference log-probabilities are computed once, before the first step, in one
no-grad pass (adapter disabled for the first case), and stored in the run folder
(``reference_logps.json``) so that a resumed run uses the same reference and does not pay a
second forward pass per step.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.engine import templates
from training.engine.config import ConfigError, FinetuneConfig
from training.engine.data import IGNORE_INDEX, DataError, ListDataset, train_eval_records

REFERENCE_FILE = "reference_logps.json"
Event = dict[str, Any]


# --------------------------------------------------------------------------- configuration


@dataclass
class DPOConfig:
    """DPO's own knobs plus the LoRA / optimisation / hardware knobs of SFT (``finetune``)."""

    beta: float = 0.1
    label_smoothing: float = 0.0  # conservative DPO (cDPO); 0 = the plain sigmoid loss
    eval_batch_size: int = 4
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    def __post_init__(self) -> None:
        if isinstance(self.finetune, Mapping):
            self.finetune = FinetuneConfig.from_dict(dict(self.finetune))
        errors = {}
        if not isinstance(self.beta, (int, float)) or isinstance(self.beta, bool) or not 0 < float(self.beta) <= 10:
            errors["beta"] = "beta must be a number above 0 and at most 10"
        if not isinstance(self.label_smoothing, (int, float)) or not 0 <= float(self.label_smoothing) < 0.5:
            errors["label_smoothing"] = "label_smoothing must be at least 0 and below 0.5"
        if not isinstance(self.eval_batch_size, int) or self.eval_batch_size < 1:
            errors["eval_batch_size"] = "eval_batch_size must be a whole number of at least 1"
        if self.finetune.packing:
            errors["packing"] = "DPO compares whole answers: packing is not used"
        if errors:
            raise ConfigError(errors)

    def to_dict(self) -> dict[str, Any]:
        return {"beta": self.beta, "label_smoothing": self.label_smoothing, "eval_batch_size": self.eval_batch_size, "finetune": self.finetune.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DPOConfig:
        data = dict(data)
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError({k: "unknown DPO setting" for k in sorted(unknown)})
        return cls(**data)


# --------------------------------------------------------------------------- data


def preference_messages(record: Mapping[str, Any]) -> tuple[list[dict[str, Any]], str, str]:
    """(prompt messages, chosen, rejected) of a LLaMA-Factory pairwise record (instruction,
    input, system, history, chosen, rejected) or a TRL record (prompt, chosen, rejected as text or
    as messages)."""
    def answer(value, name):
        if isinstance(value, Mapping):
            value = value.get("content", value.get("value"))
        elif isinstance(value, (list, tuple)):
            if len(value) != 1 or not isinstance(value[0], Mapping):
                raise DataError(f"'{name}' must hold exactly one assistant message")
            value = value[0].get("content", value[0].get("value"))
        if not isinstance(value, str) or not value:
            raise DataError(f"'{name}' is empty or not text")
        return value

    if "prompt" in record:
        prompt = record["prompt"]
        if isinstance(prompt, (list, tuple)):
            messages = [{"role": m.get("role"), "content": m.get("content", "")} for m in prompt]
        else:
            messages = templates.records_to_messages({"instruction": prompt, "system": record.get("system", ""), "history": record.get("history") or []})
    else:
        messages = templates.records_to_messages({k: record.get(k) for k in ("instruction", "input", "system", "history")})
    if not messages or messages[-1].get("role") != "user" or not messages[-1].get("content"):
        raise DataError("the prompt must end with a non-empty user turn")
    return messages, answer(record.get("chosen"), "chosen"), answer(record.get("rejected"), "rejected")


def read_preference_records(path: str | Path) -> list[dict[str, Any]]:
    from training.engine.data import read_records

    return read_records(path)


def _answer_ids(tokenizer, template: str, messages, answer: str, prompt: list[int]) -> list[int]:
    full = templates.encode_conversation(tokenizer, template, [*messages, {"role": "assistant", "content": answer}], cutoff_len=10**9)["input_ids"]
    if full[: len(prompt)] != prompt:
        raise DataError("the template does not render the prompt as a prefix of the conversation")
    return list(full[len(prompt) :])


def encode_preference(tokenizer, template: str, record: Mapping[str, Any], cutoff_len: int) -> dict[str, list[int]]:
    """Token ids and labels of the chosen and the rejected conversation of one record: the same
    prompt (``templates.prompt_ids``), labels only on the final answer and its end-of-turn
    text. Truncated as LLaMA-Factory's pairwise data: the longer answer decides how the room of
    ``cutoff_len`` is shared (``templates._infer_seqlen``), the prompt loses its end."""
    messages, chosen, rejected = preference_messages(record)
    prompt = templates.prompt_ids(tokenizer, template, messages)
    chosen_ids = _answer_ids(tokenizer, template, messages, chosen, prompt)
    rejected_ids = _answer_ids(tokenizer, template, messages, rejected, prompt)
    source_len, target_len = templates._infer_seqlen(len(prompt), max(len(chosen_ids), len(rejected_ids)), cutoff_len)
    prompt = prompt[:source_len]
    out: dict[str, list[int]] = {}
    for name, ids in (("chosen", chosen_ids[:target_len]), ("rejected", rejected_ids[:target_len])):
        out[f"{name}_input_ids"] = prompt + ids
        out[f"{name}_labels"] = [IGNORE_INDEX] * len(prompt) + ids
    return out


def encode_preferences(tokenizer, template: str, records: Sequence[Mapping[str, Any]], cutoff_len: int) -> tuple[list[dict], int]:
    """(rows, dropped): rows whose answers were cut off entirely are dropped."""
    rows, dropped = [], 0
    for index, record in enumerate(records):
        try:
            row = encode_preference(tokenizer, template, record, cutoff_len)
        except (DataError, templates.TemplateError) as exc:
            raise DataError(f"record {index}: {exc}") from exc
        if all(x == IGNORE_INDEX for x in row["chosen_labels"]) or all(x == IGNORE_INDEX for x in row["rejected_labels"]):
            dropped += 1
            continue
        rows.append(row)
    return rows, dropped


class PreferenceCollator:
    """B pairs → 2B right-padded rows: the chosen conversations, then the rejected ones
    (``input_ids``, ``attention_mask``, ``labels``), plus the stored reference log-probabilities."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = int(pad_token_id)

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        import torch

        seqs = [(f["chosen_input_ids"], f["chosen_labels"]) for f in features] + [(f["rejected_input_ids"], f["rejected_labels"]) for f in features]
        width = max(len(ids) for ids, _ in seqs)
        input_ids, labels, mask = [], [], []
        for ids, lab in seqs:
            pad = width - len(ids)
            input_ids.append(list(ids) + [self.pad_token_id] * pad)
            labels.append(list(lab) + [IGNORE_INDEX] * pad)
            mask.append([1] * len(ids) + [0] * pad)
        batch = {
            "input_ids": torch.tensor(input_ids, dtype=torch.long),
            "attention_mask": torch.tensor(mask, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
        }
        if all("ref_chosen_logps" in f for f in features):
            batch["ref_chosen_logps"] = torch.tensor([f["ref_chosen_logps"] for f in features], dtype=torch.float32)
            batch["ref_rejected_logps"] = torch.tensor([f["ref_rejected_logps"] for f in features], dtype=torch.float32)
        return batch


# --------------------------------------------------------------------------- the loss


def sequence_logps(model, input_ids, attention_mask, labels):
    """Sum of the log-probabilities of the labelled tokens of each row (float32)."""
    import torch

    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, :-1, :].float()
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    safe = torch.where(mask, targets, torch.zeros_like(targets))
    per_token = torch.log_softmax(logits, dim=-1).gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    return (per_token * mask).sum(-1)


def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float, label_smoothing: float = 0.0):
    """Per-pair sigmoid DPO losses and the implicit rewards (chosen, rejected), all shape (B,)."""
    import torch.nn.functional as F

    chosen_rewards = beta * (policy_chosen - ref_chosen)
    rejected_rewards = beta * (policy_rejected - ref_rejected)
    logits = chosen_rewards - rejected_rewards
    losses = -F.logsigmoid(logits) * (1 - label_smoothing) - F.logsigmoid(-logits) * label_smoothing
    return losses, chosen_rewards.detach(), rejected_rewards.detach()


def pair_logps(model, batch) -> tuple[Any, Any]:
    """Policy log-probabilities of the chosen and the rejected answers of a collated batch."""
    logps = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
    n = logps.shape[0] // 2
    return logps[:n], logps[n:]


def reward_metrics(chosen_rewards, rejected_rewards) -> dict[str, float]:
    return {
        "rewards_chosen": float(chosen_rewards.mean()),
        "rewards_rejected": float(rejected_rewards.mean()),
        "reward_margin": float((chosen_rewards - rejected_rewards).mean()),
        "reward_accuracy": float((chosen_rewards > rejected_rewards).float().mean()),
    }


def _batches(rows: Sequence[Mapping], size: int):
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


def _device_of(model):
    return next(model.parameters()).device


def compute_reference_logps(model, rows: Sequence[Mapping], pad_token_id: int, *, batch_size: int = 4, disable_adapter: bool = False) -> list[tuple[float, float]]:
    """(log π_ref(chosen), log π_ref(rejected)) of each row: one no-grad pass, with the LoRA
    adapter switched off when ``disable_adapter`` (the reference of a run from a base model)."""
    import contextlib

    import torch

    collate = PreferenceCollator(pad_token_id)
    was_training = model.training
    model.eval()
    out: list[tuple[float, float]] = []
    context = model.disable_adapter() if disable_adapter else contextlib.nullcontext()
    device = _device_of(model)
    with torch.no_grad(), context:
        for chunk in _batches(rows, batch_size):
            batch = {k: v.to(device) for k, v in collate(chunk).items()}
            chosen, rejected = pair_logps(model, batch)
            out.extend(zip(chosen.tolist(), rejected.tolist(), strict=True))
    model.train(was_training)
    return out


def evaluate_preferences(model, rows: Sequence[Mapping], pad_token_id: int, beta: float, *, batch_size: int = 4) -> dict[str, float] | None:
    """Held-out figures of the model against the rows' stored reference: mean loss, reward
    accuracy (share of pairs whose implicit reward margin is above 0), mean margin and rewards."""
    import torch

    if not rows:
        return None
    collate = PreferenceCollator(pad_token_id)
    was_training = model.training
    model.eval()
    chosen_r, rejected_r, losses = [], [], []
    device = _device_of(model)
    with torch.no_grad():
        for chunk in _batches(rows, batch_size):
            batch = {k: v.to(device) for k, v in collate(chunk).items()}
            pc, pr = pair_logps(model, batch)
            loss, cr, rr = dpo_loss(pc, pr, batch["ref_chosen_logps"], batch["ref_rejected_logps"], beta)
            chosen_r.append(cr.cpu())
            rejected_r.append(rr.cpu())
            losses.append(loss.cpu())
    model.train(was_training)
    cr, rr = torch.cat(chosen_r), torch.cat(rejected_r)
    return {"loss": float(torch.cat(losses).mean()), **reward_metrics(cr, rr), "pairs": len(rows)}


# --------------------------------------------------------------------------- training


def _make_trainer_class():
    from transformers import Trainer

    class DPOTrainer(Trainer):
        """``Trainer`` whose loss is the DPO loss against the stored reference log-probabilities."""

        def __init__(self, *args, beta: float, label_smoothing: float, **kwargs):
            super().__init__(*args, **kwargs)
            self.beta = beta
            self.label_smoothing = label_smoothing
            self.model_accepts_loss_kwargs = False  # the loss is a mean per batch: the Trainer scales it for accumulation
            self._window: list[dict[str, float]] = []
            self.last_metrics: dict[str, float] = {}

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            pc, pr = pair_logps(model, inputs)
            losses, cr, rr = dpo_loss(pc, pr, inputs["ref_chosen_logps"], inputs["ref_rejected_logps"], self.beta, self.label_smoothing)
            if model.training:
                self._window.append({**reward_metrics(cr, rr), "logps_chosen": float(pc.detach().mean()), "logps_rejected": float(pr.detach().mean())})
            loss = losses.mean()
            return (loss, {"chosen_rewards": cr, "rejected_rewards": rr}) if return_outputs else loss

        def log(self, logs, *args, **kwargs):
            if "loss" in logs and self._window:
                keys = self._window[0].keys()
                self.last_metrics = {k: round(sum(w[k] for w in self._window) / len(self._window), 6) for k in keys}
                self._window = []
                logs = {**logs, **self.last_metrics}
            return super().log(logs, *args, **kwargs)

    return DPOTrainer


class _Sink:
    """The runner's event sink, with the latest DPO figures added to every ``log`` event."""

    def __init__(self, sink, metrics: Callable[[], dict]):
        self.sink, self.metrics, self.extra_done = sink, metrics, {}

    def __call__(self, event: Event) -> None:
        if event.get("type") == "log":
            event = {**event, **self.metrics()}
        elif event.get("type") == "done":
            event = {**event, **self.extra_done}
        self.sink(event)

    def message(self, level: str, text: str) -> None:
        self.sink.message(level, text)


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def train_dpo(
    config: DPOConfig,
    *,
    model_path: str | Path,
    train_file: str | Path,
    output_dir: str | Path,
    on_event: Callable[[Event], None],
    should_stop: Callable[[], bool] = lambda: False,
    resume: bool = True,
    eval_file: str | Path | None = None,
    adapter_path: str | Path | None = None,
) -> Event:
    """Train a LoRA adapter with DPO on preference records; returns the ``done`` event.

    ``adapter_path``: a succeeded SFT adapter to start from (and to use as the reference).
    Events are the SFT runner's (start, log, checkpoint, message, done) with the DPO figures
    added to ``log`` events and the held-out figures (before/after) to ``done``."""
    from training.engine import runner

    output_dir = Path(output_dir)
    main = runner.is_main_process()
    if main:
        output_dir.mkdir(parents=True, exist_ok=True)
    sink = runner._EventSink(on_event, output_dir / runner.LOG_FILE)
    try:
        return _train_dpo(config, str(model_path), train_file, eval_file, adapter_path, output_dir, sink, should_stop, resume)
    except Exception as exc:
        if main:
            with (output_dir / runner.LOG_FILE).open("a", encoding="utf-8") as handle:
                handle.write(json.dumps({"type": "error", "message": str(exc) or type(exc).__name__, "time": round(time.time(), 3)}) + "\n")
        raise


def _train_dpo(config: DPOConfig, model_path, train_file, eval_file, adapter_path, output_dir: Path, sink, should_stop, resume) -> Event:
    import peft
    import torch
    import transformers
    from transformers import PrinterCallback, set_seed

    from training.engine import runner

    ft = config.finetune
    for path, what in ((train_file, "training file"), (eval_file, "validation file")):
        if path and not Path(path).is_file():
            raise DataError(f"the {what} {path} does not exist")
    if not (Path(model_path) / "config.json").is_file():
        raise DataError(f"{model_path} is not a model folder (no config.json)")
    if adapter_path and not (Path(adapter_path) / "adapter_config.json").is_file():
        raise DataError(f"{adapter_path} is not an adapter folder (no adapter_config.json)")
    runner._check_hardware(ft)
    transformers.utils.logging.disable_progress_bar()
    checkpoints_dir, adapter_dir = output_dir / "checkpoints", output_dir / "adapter"
    if should_stop():
        return runner._done(sink, "cancelled", None, [], None, None, 0.0, 0)

    tokenizer = runner._load_tokenizer(model_path)
    train_records, eval_records = train_eval_records(ft, train_file, eval_file, read_preference_records)
    train_rows, dropped = encode_preferences(tokenizer, ft.template, train_records, ft.cutoff_len)
    eval_rows, dropped_eval = encode_preferences(tokenizer, ft.template, eval_records, ft.cutoff_len)
    if not train_rows:
        raise DataError(f"no usable preference pair in {train_file} (cutoff_len {ft.cutoff_len} leaves no answer token)")
    if dropped or dropped_eval:
        sink.message("warning", f"dropped {dropped} training and {dropped_eval} validation pairs whose answers cutoff_len={ft.cutoff_len} cut off")

    args = runner._training_arguments(ft, checkpoints_dir, has_eval=False)
    run_key = {
        "stage": "dpo",
        "config": config.to_dict(),
        "model_path": str(Path(model_path).resolve()),
        "adapter_path": str(Path(adapter_path).resolve()) if adapter_path else None,
        "train_sha256": runner._file_digest(train_file),
        "eval_sha256": runner._file_digest(eval_file),
    }
    with args.main_process_first(local=False, desc="choosing the checkpoint"):
        checkpoint = runner._choose_checkpoint(run_key, output_dir, checkpoints_dir, adapter_dir, sink, resume)

    set_seed(ft.seed)
    base = runner._load_model(ft, model_path)
    if adapter_path:
        model = peft.PeftModel.from_pretrained(base, str(adapter_path), is_trainable=True)
    else:
        model = runner._apply_lora(ft, base)
    if torch.cuda.is_available() and not ft.quantization_bit:
        import os

        model.to(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")  # each rank its own GPU under torchrun

    # The reference: computed once (adapter off from a base model; the SFT adapter as loaded), kept for resumes.
    ref_key = _digest({"run": run_key, "rows": [[r["chosen_input_ids"], r["rejected_input_ids"]] for r in train_rows + eval_rows]})
    ref_path = output_dir / REFERENCE_FILE
    stored = runner._read_json(ref_path)
    if isinstance(stored, dict) and stored.get("key") == ref_key:
        ref = stored["logps"]
        sink.message("info", "reference log-probabilities read from the run folder")
    else:
        started = time.perf_counter()
        ref = compute_reference_logps(model, train_rows + eval_rows, tokenizer.pad_token_id, batch_size=config.eval_batch_size, disable_adapter=not adapter_path)
        if runner.is_main_process():
            ref_path.write_text(json.dumps({"key": ref_key, "reference": "sft_adapter" if adapter_path else "adapter_disabled", "logps": ref}))
        sink.message("info", f"reference log-probabilities of {len(ref)} pairs computed in {time.perf_counter() - started:.1f} s")
    for row, (c, r) in zip(train_rows + eval_rows, ref, strict=True):
        row["ref_chosen_logps"], row["ref_rejected_logps"] = float(c), float(r)

    before = evaluate_preferences(model, eval_rows, tokenizer.pad_token_id, config.beta, batch_size=config.eval_batch_size) if checkpoint is None else None
    trainable, all_params = model.get_nb_trainable_parameters()
    device = f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu"
    sink.message("info", f"DPO on {device}, beta {config.beta}, template {ft.template}, starting from {'adapter ' + str(adapter_path) if adapter_path else 'the base model'}")
    start_info = {
        "stage": "dpo",
        "num_train_examples": len(train_rows),
        "num_eval_examples": len(eval_rows),
        "num_train_rows": len(train_rows),
        "trainable_parameters": int(trainable),
        "all_parameters": int(all_params),
        "template_fingerprint": templates.template_fingerprint(tokenizer, ft.template),
    }
    holder: dict[str, Any] = {}
    dsink = _Sink(sink, lambda: dict(holder["trainer"].last_metrics) if "trainer" in holder else {})
    callback = runner._make_callback(dsink, should_stop, start_info, checkpoints_dir)
    trainer = _make_trainer_class()(
        model=model,
        args=args,
        train_dataset=ListDataset(train_rows),
        data_collator=PreferenceCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        callbacks=[callback],
        beta=float(config.beta),
        label_smoothing=float(config.label_smoothing),
    )
    holder["trainer"] = trainer
    trainer.remove_callback(PrinterCallback)
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint is not None else None)
    history = trainer.state.log_history
    tokens = int(trainer.state.num_input_tokens_seen)
    tps = (tokens - callback._tokens_at_start) / callback.train_seconds if callback.train_seconds > 0 else None
    runtime = float(result.metrics.get("train_runtime", 0.0))
    if callback.cancelled:
        return runner._done(dsink, "cancelled", None, history, None, tps, runtime, tokens, step=trainer.state.global_step, cpu_seconds=callback.train_cpu_seconds)

    after = evaluate_preferences(model, eval_rows, tokenizer.pad_token_id, config.beta, batch_size=config.eval_batch_size)
    trainer.save_model(str(adapter_dir))
    first, last = runner._loss_bounds(history)
    if runner.is_main_process():
        tokenizer.save_pretrained(str(adapter_dir))
        info = {
            "stage": "dpo",
            "config": ft.to_dict(),
            "dpo": {k: v for k, v in config.to_dict().items() if k != "finetune"},
            "template": ft.template,
            "template_fingerprint": start_info["template_fingerprint"],
            "base_model_path": str(Path(model_path).resolve()),
            "parent_adapter_path": str(Path(adapter_path).resolve()) if adapter_path else None,
            "reference": "sft_adapter" if adapter_path else "adapter_disabled",
            "train_file": str(train_file),
            "eval_file": str(eval_file) if eval_file else None,
            "num_train_examples": len(train_rows),
            "num_eval_examples": len(eval_rows),
            "global_step": trainer.state.global_step,
            "train_loss_first": first,
            "train_loss_last": last,
            "eval_before": before,
            "eval_after": after,
            "trainable_parameters": int(trainable),
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (adapter_dir / runner.TRAINING_INFO).write_text(json.dumps(info, indent=2, ensure_ascii=False))
    dsink.extra_done = {"stage": "dpo", "eval_before": before, "eval_after": after, **({"reward_accuracy": after["reward_accuracy"], "reward_margin": after["reward_margin"]} if after else {})}
    done = runner._done(
        dsink, "succeeded", str(adapter_dir), history, after["loss"] if after else None, tps, runtime, tokens, step=trainer.state.global_step, cpu_seconds=callback.train_cpu_seconds
    )
    if runner.is_main_process():
        shutil.copyfile(output_dir / runner.LOG_FILE, adapter_dir / runner.LOG_FILE)
    return {**done, **dsink.extra_done}
