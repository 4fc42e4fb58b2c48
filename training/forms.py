"""Forms of the training pages: register a base model, create a fine-tune job.

The job form has one field per ``FinetuneConfig`` knob, built from the dataclass (types,
defaults and help text), so a knob added to the engine appears here without an edit. It
validates the whole configuration through the engine (``ConfigError`` → field errors) before
the service sees it; the service validates again (it is the API's and the command's path too).
"""

from __future__ import annotations

import dataclasses
import typing
from functools import cache
from typing import Any

from django import forms
from django.utils.functional import lazy
from django.utils.translation import gettext, gettext_noop
from django.utils.translation import gettext_lazy as _

from curation.models import DatasetVersion
from training.engine.config import (
    PRESET_LABELS,
    PRESETS,
    SCHEDULER_TYPES,
    ConfigError,
    FinetuneConfig,
    field_help,
)
from training.engine.templates import TEMPLATE_NAMES
from training.models import BaseModel, FineTuneJob

# Human labels of the knobs; the LLaMA-Factory name is shown beside each (it is what the
# command line's --set and the API take).
CONFIG_LABELS: dict[str, Any] = {
    "template": _("Prompt template"),
    "cutoff_len": _("Cutoff length (tokens)"),
    "max_samples": _("Maximum training records"),
    "val_size": _("Validation share"),
    "packing": _("Packing"),
    "lora_rank": _("LoRA rank"),
    "lora_alpha": _("LoRA alpha"),
    "lora_dropout": _("LoRA dropout"),
    "lora_target": _("LoRA target modules"),
    "learning_rate": _("Learning rate"),
    "lr_scheduler_type": _("Learning-rate schedule"),
    "warmup_ratio": _("Warm-up share"),
    "warmup_steps": _("Warm-up steps"),
    "num_train_epochs": _("Epochs"),
    "max_steps": _("Maximum steps"),
    "per_device_train_batch_size": _("Batch size per device"),
    "gradient_accumulation_steps": _("Gradient accumulation"),
    "max_grad_norm": _("Gradient clipping"),
    "weight_decay": _("Weight decay"),
    "seed": _("Seed"),
    "bf16": _("bfloat16"),
    "fp16": _("float16"),
    "gradient_checkpointing": _("Gradient checkpointing"),
    "quantization_bit": _("Quantization (QLoRA)"),
    "deepspeed_stage": _("DeepSpeed ZeRO stage"),
    "fused_loss": _("Fused loss (chunked)"),
    "use_liger_kernel": _("Liger kernels"),
    "torch_compile": _("torch.compile"),
    "save_steps": _("Checkpoint every (steps)"),
    "logging_steps": _("Log every (steps)"),
    "eval_steps": _("Evaluate every (steps)"),
    "save_total_limit": _("Checkpoints kept"),
}

CONFIG_GROUPS: dict[str, Any] = {
    "data": _("Data and template"),
    "lora": _("LoRA"),
    "optim": _("Optimisation"),
    "hardware": _("Hardware"),
    "output": _("Checkpoints and logging"),
}

# The engine (no Django) writes its help texts and preset labels in English. Marking copies
# here lets makemessages extract them; the pages translate the engine's strings at render
# time (tests/training/test_pages.py checks that the copies match the engine).
ENGINE_HELP_TEXTS: dict[str, str] = {
    "template": gettext_noop("Prompt template: 'default' is the model's own chat template; or llama3, qwen3, alpaca, medical_inquiry."),
    "cutoff_len": gettext_noop("Maximum tokens per example (prompt + answer); longer ones are truncated."),
    "max_samples": gettext_noop("Use at most this many training records (none = all)."),
    "val_size": gettext_noop("Fraction of the training records held out for validation when no validation file is given."),
    "packing": gettext_noop("Pack several examples into one row (no cross-example attention): faster, same loss."),
    "lora_rank": gettext_noop("LoRA rank r."),
    "lora_alpha": gettext_noop("LoRA alpha (none = 2 × rank, as in LLaMA-Factory)."),
    "lora_dropout": gettext_noop("Dropout on the LoRA branch."),
    "lora_target": gettext_noop("'all' = every linear layer except the output head; or a comma list such as q_proj,v_proj."),
    "learning_rate": gettext_noop("Peak learning rate (AdamW)."),
    "lr_scheduler_type": gettext_noop(
        "Learning-rate schedule: linear, cosine, cosine_with_restarts, polynomial, constant, constant_with_warmup, inverse_sqrt."
    ),
    "warmup_ratio": gettext_noop("Fraction of the steps used for linear warm-up."),
    "warmup_steps": gettext_noop("Warm-up steps (overrides warmup_ratio when > 0)."),
    "num_train_epochs": gettext_noop("Epochs over the training records."),
    "max_steps": gettext_noop("Stop after this many optimizer steps (none = epochs decide)."),
    "per_device_train_batch_size": gettext_noop("Rows per device per forward pass."),
    "gradient_accumulation_steps": gettext_noop("Forward passes per optimizer step."),
    "max_grad_norm": gettext_noop("Gradient clipping norm (0 = off)."),
    "weight_decay": gettext_noop("AdamW weight decay."),
    "seed": gettext_noop("Seed for the split, the shuffling and the LoRA initialisation."),
    "bf16": gettext_noop("bfloat16 mixed precision (GPU)."),
    "fp16": gettext_noop("float16 mixed precision (GPU)."),
    "gradient_checkpointing": gettext_noop("Recompute activations in the backward pass: less memory, about a third slower."),
    "quantization_bit": gettext_noop("Load the base weights in 4 bits (QLoRA) or 8 bits; CUDA only."),
    "deepspeed_stage": gettext_noop("DeepSpeed ZeRO stage 2 or 3 for multi-GPU (needs the gpu extra)."),
    "fused_loss": gettext_noop("Compute the loss in chunks of tokens without the full logits: far less memory, the same loss."),
    "use_liger_kernel": gettext_noop("Liger's Triton kernels for the loss, RMSNorm, RoPE and SwiGLU (CUDA, needs liger-kernel)."),
    "torch_compile": gettext_noop("Compile the model with torch.compile: a slower start, faster steps."),
    "save_steps": gettext_noop("Save a resumable checkpoint every N optimizer steps."),
    "logging_steps": gettext_noop("Report the training loss every N optimizer steps."),
    "eval_steps": gettext_noop("Validation loss every N steps (none = at each checkpoint and at the end)."),
    "save_total_limit": gettext_noop("Keep at most this many checkpoints."),
}
ENGINE_PRESET_LABELS: dict[str, str] = {
    "llamafactory": gettext_noop("LLaMA-Factory defaults (llama3_lora_sft.yaml)"),
    "qwen3_medical": gettext_noop("Qwen3-0.6B medical recipe (seed)"),
    "cpu_demo": gettext_noop("Quick CPU demo"),
}

NONE_LABEL = _("none")
DEFAULT_PRESET = "llamafactory" if "llamafactory" in PRESETS else next(iter(PRESETS))
CPU_PRESET = "cpu_demo"


@cache
def cuda_available() -> bool:
    """Whether this machine has a CUDA GPU (asked once per process; torch loads on first use)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return bool(torch.cuda.is_available())


def default_preset() -> str:
    """The preset the job form starts on: the GPU recipe where there is a GPU, the CPU demo otherwise
    (the GPU presets train in bf16, which a CPU-only host refuses)."""
    if not cuda_available() and CPU_PRESET in PRESETS:
        return CPU_PRESET
    return DEFAULT_PRESET


def preset_label(name: str) -> str:
    """A preset's label in the current language (the engine's English one, translated)."""
    label = PRESET_LABELS.get(name)
    return gettext(label) if label else name


preset_label_lazy = lazy(preset_label, str)


def config_field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(FinetuneConfig)]


@cache
def preset_values(name: str) -> dict[str, Any]:
    """Every knob's value under a preset (the preset over the dataclass defaults)."""
    return FinetuneConfig.from_dict(PRESETS[name]).to_dict()


def all_preset_values() -> dict[str, dict[str, Any]]:
    """For the form's script: switching the preset refills the advanced fields."""
    return {name: preset_values(name) for name in PRESETS}


def _split_optional(tp: Any) -> tuple[Any, bool]:
    args = typing.get_args(tp)
    if args and type(None) in args:
        return next(a for a in args if a is not type(None)), True
    return tp, False


def _int_or_none(value: str) -> int | None:
    return None if value in ("", None) else int(value)


def _config_formfield(name: str, tp: Any, help_text: str) -> forms.Field:
    inner, optional = _split_optional(tp)
    label = CONFIG_LABELS.get(name, name)
    common: dict[str, Any] = {"label": label, "help_text": help_text, "required": False}
    attrs = {"data-config-field": name}
    if name == "template":
        return forms.ChoiceField(
            choices=[(t, t) for t in TEMPLATE_NAMES], widget=forms.Select(attrs={**attrs, "class": "form-select"}), **common
        )
    if name == "lr_scheduler_type":
        return forms.ChoiceField(
            choices=[(s, s) for s in SCHEDULER_TYPES], widget=forms.Select(attrs={**attrs, "class": "form-select"}), **common
        )
    if name == "quantization_bit":
        choices = [("", NONE_LABEL), ("4", _("4 bits (QLoRA)")), ("8", _("8 bits"))]
        return forms.TypedChoiceField(
            choices=choices, coerce=int, empty_value=None, widget=forms.Select(attrs={**attrs, "class": "form-select"}), **common
        )
    if name == "deepspeed_stage":
        choices = [("", NONE_LABEL), ("2", "ZeRO-2"), ("3", "ZeRO-3")]
        return forms.TypedChoiceField(
            choices=choices, coerce=int, empty_value=None, widget=forms.Select(attrs={**attrs, "class": "form-select"}), **common
        )
    if inner is bool:
        return forms.BooleanField(widget=forms.CheckboxInput(attrs={**attrs, "class": "form-check-input"}), **common)
    placeholder = {"placeholder": str(NONE_LABEL)} if optional else {}
    common["required"] = not optional
    if inner is int:
        return forms.IntegerField(widget=forms.NumberInput(attrs={**attrs, **placeholder, "class": "form-control", "step": "1"}), **common)
    if inner is float:
        return forms.FloatField(widget=forms.NumberInput(attrs={**attrs, **placeholder, "class": "form-control", "step": "any"}), **common)
    return forms.CharField(max_length=500, strip=True, widget=forms.TextInput(attrs={**attrs, "class": "form-control"}), **common)


class BaseModelRegisterForm(forms.Form):
    name = forms.SlugField(
        label=_("Name"),
        max_length=100,
        help_text=_("Letters, digits, hyphens and underscores; chat and jobs refer to the model by it."),
        widget=forms.TextInput(attrs={"class": "form-control", "autofocus": True}),
    )
    path = forms.CharField(
        label=_("Model folder"),
        max_length=500,
        help_text=_("A local Hugging Face model folder on the server (config.json, weights, tokenizer). Nothing is downloaded."),
        widget=forms.TextInput(attrs={"class": "form-control font-monospace", "placeholder": "/srv/models/Qwen3-0.6B"}),
    )
    description = forms.CharField(label=_("Description"), required=False, widget=forms.Textarea(attrs={"class": "form-control", "rows": 2}))


class VersionChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: DatasetVersion) -> str:
        counts = obj.counts or {}
        return gettext("%(name)s (%(train)s train, %(validation)s validation)") % {
            "name": obj.name,
            "train": counts.get("train", 0),
            "validation": counts.get("validation", 0),
        }


class BaseModelChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: BaseModel) -> str:
        from training.templatetags.training_ui import params

        return f"{obj.name} ({obj.architecture or obj.model_type or '?'}, {params(obj.num_parameters)})"


def trainable_versions():
    """Dataset versions a job can train on: the ones with a non-empty train split."""
    ids = [pk for pk, counts in DatasetVersion.objects.values_list("pk", "counts") if (counts or {}).get("train", 0) > 0]
    return DatasetVersion.objects.filter(pk__in=ids).order_by("-created_at", "-id")


NO_TEST_SPLIT_NOTE = _(
    "Evaluation after training is off: the chosen dataset version has no test split. Freeze a version with a test share to compare base and tuned."
)


class FineTuneJobForm(forms.Form):
    """Dataset version, base model, preset, and every knob (pre-filled from the preset)."""

    dataset_version = VersionChoiceField(
        label=_("Dataset version"),
        queryset=DatasetVersion.objects.none(),
        empty_label=None,
        help_text=_("Frozen versions with a train split. The validation split, if any, gives the eval loss."),
        widget=forms.Select(attrs={"class": "form-select"}),
    )
    base_model = BaseModelChoiceField(
        label=_("Base model"),
        queryset=BaseModel.objects.none(),
        empty_label=None,
        widget=forms.Select(attrs={"class": "form-select"}),
    )
    preset = forms.ChoiceField(
        label=_("Preset"),
        choices=[(k, preset_label_lazy(k)) for k in PRESETS],
        widget=forms.RadioSelect(attrs={"class": "form-check-input"}),
    )
    # The preset the advanced fields were filled from (the script keeps it equal to ``preset``;
    # without the script the user's edits are taken relative to it).
    config_preset = forms.ChoiceField(choices=[(k, k) for k in PRESETS], required=False, widget=forms.HiddenInput)
    on_worker_death = forms.ChoiceField(
        label=_("If the worker dies"),
        choices=FineTuneJob.OnWorkerDeath.choices,
        required=False,
        help_text=_("Empty choice: the site default."),
        widget=forms.Select(attrs={"class": "form-select"}),
    )

    evaluate_after = forms.BooleanField(
        label=_("Evaluate base and tuned when done"),
        required=False,
        initial=True,
        help_text=_("When the job succeeds, queue BLEU/ROUGE evaluations of the base and the tuned model on the held-out split."),
        widget=forms.CheckboxInput(attrs={"class": "form-check-input"}),
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["dataset_version"].queryset = trainable_versions()
        self.fields["base_model"].queryset = BaseModel.objects.filter(is_active=True).order_by("name")
        self.fields["on_worker_death"].choices = [("", _("site default")), *FineTuneJob.OnWorkerDeath.choices]
        preset = self.initial.get("preset") if self.initial.get("preset") in PRESETS else default_preset()
        self.fields["preset"].initial = preset
        self.fields["config_preset"].initial = self.initial.get("config_preset") or preset
        # Versions whose test split can be evaluated after training (the form's script unticks
        # "evaluate" when another one is chosen, and says why).
        self.test_split_versions = [v.pk for v in self.fields["dataset_version"].queryset if (v.counts or {}).get("test", 0) > 0]
        self.evaluate_note = ""
        if not self.is_bound:
            # The selects show their first option; make it the initial value so that the
            # first estimate has something to estimate. With "evaluate" on, the newest version
            # that has a test split comes first; without one, "evaluate" starts off and says why.
            if self.initial.get("dataset_version") is None and self.test_split_versions:
                self.initial["dataset_version"] = self.test_split_versions[0]
            for name in ("dataset_version", "base_model"):
                if self.initial.get(name) is None:
                    first = self.fields[name].queryset.values_list("pk", flat=True).first()
                    if first is not None:
                        self.initial[name] = first
            chosen = self.initial.get("dataset_version")
            chosen = getattr(chosen, "pk", chosen)
            if chosen is not None and chosen not in self.test_split_versions:
                self.initial["evaluate_after"] = False
                self.evaluate_note = str(NO_TEST_SPLIT_NOTE)
        hints = typing.get_type_hints(FinetuneConfig)
        helps = field_help()
        fill = preset_values(preset)
        for name in config_field_names():
            text = helps.get(name, {}).get("help", "")
            field = _config_formfield(name, hints[name], gettext(text) if text else "")
            field.initial = fill[name]
            self.fields[name] = field
        self.config: FinetuneConfig | None = None
        self.overrides: dict[str, Any] = {}

    # ---- template helpers ----------------------------------------------------------------

    def config_groups(self) -> list[tuple[str, list]]:
        """(group label, [bound fields]) in the dataclass's order."""
        helps = field_help()
        groups: dict[str, list] = {}
        for name in config_field_names():
            groups.setdefault(helps.get(name, {}).get("group", "other"), []).append(self[name])
        return [(CONFIG_GROUPS.get(key, key), fields) for key, fields in groups.items()]

    def config_field_errors(self) -> bool:
        return any(self.errors.get(name) for name in config_field_names())

    # ---- validation ----------------------------------------------------------------------

    def clean(self):
        cleaned = super().clean()
        preset = cleaned.get("preset")
        if not preset:
            return cleaned
        filled_from = cleaned.get("config_preset") or preset
        fill = preset_values(filled_from)
        names = config_field_names()
        if any(name in self.errors for name in names):
            return cleaned
        # The user's edits are what differs from the values the fields were filled with; the
        # job records those that differ from the chosen preset as its overrides.
        edits = {name: cleaned.get(name) for name in names if cleaned.get(name) != fill[name]}
        chosen = preset_values(preset)
        self.overrides = {k: v for k, v in edits.items() if v != chosen[k]}
        try:
            self.config = FinetuneConfig.from_dict({**PRESETS[preset], **self.overrides})
        except ConfigError as exc:
            for key, message in exc.errors.items():
                self.add_error(key if key in self.fields else None, message)
        return cleaned
