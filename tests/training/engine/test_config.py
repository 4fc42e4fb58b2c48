"""FinetuneConfig: validation of every rule, dict / override round trips, presets, DeepSpeed, estimate."""

from __future__ import annotations

import dataclasses
import json

import pytest

from training.engine.config import PRESET_LABELS, PRESETS, SCHEDULER_TYPES, ConfigError, FinetuneConfig, estimate, field_help


def errors_of(**kwargs) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        FinetuneConfig(**kwargs)
    return caught.value.errors


def test_the_defaults_are_valid_and_follow_the_contract():
    config = FinetuneConfig()
    assert config.template == "default"
    assert config.cutoff_len == 2048
    assert config.lora_target == "all"
    assert config.effective_lora_alpha == 16
    assert config.lora_target_modules == "all-linear"
    assert not config.requires_gpu


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("cutoff_len", 15),
        ("max_samples", 0),
        ("val_size", 1.0),
        ("val_size", -0.1),
        ("lora_rank", 0),
        ("lora_alpha", 0),
        ("lora_dropout", 1.0),
        ("lora_dropout", -0.5),
        ("lora_target", ""),
        ("lora_target", "q_proj, v proj"),
        ("learning_rate", 0.0),
        ("learning_rate", float("nan")),
        ("lr_scheduler_type", "cosine_annealing"),
        ("warmup_ratio", 1.0),
        ("warmup_steps", -1),
        ("num_train_epochs", 0.0),
        ("max_steps", 0),
        ("per_device_train_batch_size", 0),
        ("gradient_accumulation_steps", 0),
        ("max_grad_norm", -1.0),
        ("weight_decay", -0.01),
        ("seed", -1),
        ("quantization_bit", 2),
        ("deepspeed_stage", 1),
        ("save_steps", 0),
        ("logging_steps", 0),
        ("eval_steps", 0),
        ("save_total_limit", 0),
        ("template", "vicuna"),
    ],
)
def test_each_out_of_range_value_is_rejected_with_its_field_named(field, value):
    assert field in errors_of(**{field: value})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("cutoff_len", "1024"),
        ("cutoff_len", 1024.0),
        ("packing", 1),
        ("learning_rate", "1e-4"),
        ("bf16", "yes"),
        ("max_samples", True),
        ("template", 3),
    ],
)
def test_values_of_the_wrong_type_are_rejected(field, value):
    assert "expected" in errors_of(**{field: value})[field]


def test_every_bad_field_is_reported_at_once():
    errors = errors_of(cutoff_len=4, lora_rank=0, learning_rate=-1.0, lr_scheduler_type="nope")
    assert set(errors) == {"cutoff_len", "lora_rank", "learning_rate", "lr_scheduler_type"}
    assert "cutoff_len" in str(ConfigError(errors))


def test_bf16_and_fp16_together_are_rejected():
    assert "fp16" in errors_of(bf16=True, fp16=True)


def test_qlora_cannot_be_sharded_with_zero3_but_can_with_zero2():
    assert "deepspeed_stage" in errors_of(quantization_bit=4, deepspeed_stage=3)
    assert FinetuneConfig(quantization_bit=4, deepspeed_stage=2).requires_gpu


def test_integers_are_accepted_for_float_fields_and_stored_as_floats():
    config = FinetuneConfig(num_train_epochs=2, learning_rate=1)
    assert config.num_train_epochs == 2.0 and isinstance(config.num_train_epochs, float)
    assert isinstance(config.learning_rate, float)


def test_the_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        FinetuneConfig().cutoff_len = 10  # type: ignore[misc]


def test_to_dict_and_from_dict_round_trip_through_json():
    config = FinetuneConfig(template="qwen3", lora_target="q_proj,v_proj", max_samples=10, quantization_bit=4, bf16=True)
    assert FinetuneConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_from_dict_rejects_unknown_keys_and_non_mappings():
    with pytest.raises(ConfigError) as caught:
        FinetuneConfig.from_dict({"cutoff_len": 512, "lora_r": 8, "model_name_or_path": "x"})
    assert set(caught.value.errors) == {"lora_r", "model_name_or_path"}
    with pytest.raises(ConfigError):
        FinetuneConfig.from_dict(["cutoff_len", 512])  # type: ignore[arg-type]


def test_overrides_are_coerced_by_the_field_type():
    config = FinetuneConfig().with_overrides(
        [
            "cutoff_len=512",
            "learning_rate=2e-4",
            "packing=true",
            "bf16=no",
            "max_samples=100",
            "lora_target=q_proj,v_proj",
            "num_train_epochs=2",
        ]
    )
    assert config.cutoff_len == 512 and config.learning_rate == 2e-4 and config.packing is True and config.bf16 is False
    assert config.max_samples == 100 and config.lora_target_modules == ["q_proj", "v_proj"] and config.num_train_epochs == 2.0


def test_none_clears_an_optional_override_and_is_refused_for_a_required_one():
    assert FinetuneConfig(max_samples=5).with_overrides(["max_samples=none"]).max_samples is None
    assert FinetuneConfig().with_overrides(["lora_alpha=None"]).lora_alpha is None
    with pytest.raises(ConfigError) as caught:
        FinetuneConfig().with_overrides(["cutoff_len=none"])
    assert "cutoff_len" in caught.value.errors


def test_bad_overrides_report_every_problem():
    with pytest.raises(ConfigError) as caught:
        FinetuneConfig().with_overrides(["cutoff_len=abc", "packing=maybe", "nope=1", "noequals"])
    assert set(caught.value.errors) == {"cutoff_len", "packing", "nope", "noequals"}


def test_overrides_are_validated_like_construction():
    with pytest.raises(ConfigError) as caught:
        FinetuneConfig().with_overrides(["val_size=1.5"])
    assert "val_size" in caught.value.errors


def test_every_preset_is_valid_and_labelled():
    assert set(PRESETS) == {"llamafactory", "qwen3_medical", "cpu_demo"} == set(PRESET_LABELS)
    for name in PRESETS:
        assert FinetuneConfig.from_preset(name) == FinetuneConfig.from_dict(PRESETS[name])


def test_the_llamafactory_preset_matches_the_example_yaml():
    config = FinetuneConfig.from_preset("llamafactory")
    assert (config.lora_rank, config.lora_target, config.cutoff_len, config.learning_rate) == (8, "all", 2048, 1e-4)
    assert (config.num_train_epochs, config.lr_scheduler_type, config.warmup_ratio) == (3.0, "cosine", 0.1)
    assert (config.per_device_train_batch_size, config.gradient_accumulation_steps, config.bf16) == (1, 8, True)
    assert (config.val_size, config.save_steps, config.logging_steps) == (0.1, 500, 10)


def test_the_cpu_demo_preset_needs_no_gpu_and_the_gpu_presets_do():
    assert not FinetuneConfig.from_preset("cpu_demo").requires_gpu
    assert FinetuneConfig.from_preset("llamafactory").requires_gpu
    assert FinetuneConfig.from_preset("qwen3_medical", ["bf16=false"]).requires_gpu is False


def test_an_unknown_preset_is_a_config_error():
    with pytest.raises(ConfigError):
        FinetuneConfig.from_preset("axolotl")


def test_gpu_only_fields_name_each_gpu_setting():
    assert set(FinetuneConfig(fp16=True, quantization_bit=4, deepspeed_stage=2).gpu_only_fields()) == {
        "fp16",
        "quantization_bit",
        "deepspeed_stage",
    }
    assert FinetuneConfig().gpu_only_fields() == {}


def test_deepspeed_configs_for_zero2_and_zero3_leave_batch_knobs_to_transformers():
    for stage in (2, 3):
        ds = FinetuneConfig(deepspeed_stage=stage, bf16=True).deepspeed_config()
        assert ds["zero_optimization"]["stage"] == stage
        for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping"):
            assert ds[key] == "auto"
        assert ds["bf16"]["enabled"] == "auto" and ds["fp16"]["enabled"] == "auto"
        json.dumps(ds)
    z3 = FinetuneConfig(deepspeed_stage=3).deepspeed_config()["zero_optimization"]
    assert z3["stage3_gather_16bit_weights_on_model_save"] is True
    with pytest.raises(ConfigError):
        FinetuneConfig().deepspeed_config()


def test_the_scheduler_names_are_transformers_scheduler_types():
    from transformers.trainer_utils import SchedulerType

    assert set(SCHEDULER_TYPES) <= {s.value for s in SchedulerType}


def test_every_field_has_help_text():
    helps = field_help()
    assert set(helps) == {f.name for f in dataclasses.fields(FinetuneConfig)}
    assert all(entry["help"] and entry["group"] for entry in helps.values())


QWEN3_06B = {"num_parameters": 596_049_920, "hidden_size": 1024, "num_layers": 28, "vocab_size": 151_936}


def test_the_estimate_grows_with_batch_size_and_cutoff():
    base = FinetuneConfig.from_preset("qwen3_medical")
    kwargs = {**QWEN3_06B, "num_examples": 1000, "avg_tokens": 400}
    small = estimate(base, **kwargs)
    assert estimate(dataclasses.replace(base, per_device_train_batch_size=8), **kwargs)["gpu_memory_gb"] > small["gpu_memory_gb"]
    wide = {**kwargs, "avg_tokens": 4000}
    assert estimate(dataclasses.replace(base, cutoff_len=4096), **wide)["gpu_memory_gb"] > estimate(base, **wide)["gpu_memory_gb"]
    assert estimate(base, **{**kwargs, "num_examples": 2000})["seconds_gpu"] > small["seconds_gpu"]


def test_the_estimate_counts_steps_tokens_and_cheaper_settings():
    config = FinetuneConfig.from_preset("qwen3_medical")
    kwargs = {**QWEN3_06B, "num_examples": 1000, "avg_tokens": 400}
    result = estimate(config, **kwargs)
    # 900 training examples, 16 per step, 3 epochs.
    assert result["steps"] == 57 * 3
    assert result["total_tokens"] == 900 * 400 * 3
    assert 1 < result["gpu_memory_gb"] < 80 and result["seconds_gpu"] > 0
    assert estimate(dataclasses.replace(config, quantization_bit=4), **kwargs)["gpu_memory_gb"] < result["gpu_memory_gb"]
    assert estimate(dataclasses.replace(config, gradient_checkpointing=True), **kwargs)["gpu_memory_gb"] < result["gpu_memory_gb"]
    assert estimate(dataclasses.replace(config, max_steps=10), **kwargs)["steps"] == 10
    assert estimate(dataclasses.replace(config, packing=True), **kwargs)["steps"] < result["steps"]
