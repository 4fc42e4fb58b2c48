"""merge_adapter: the standalone folder computes exactly what base + adapter computes."""

from __future__ import annotations

import json

import pytest
import torch

from training.engine.merge import MERGE_INFO, merge_adapter


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Two cores shared by every helper: one intra-op thread avoids oversubscription stalls.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def adapter_dir(demo_model_dir, tmp_path_factory):
    """A LoRA adapter with random (not zero) B matrices, so that merging really changes the weights."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(demo_model_dir),
        LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM"),
    )
    out = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(demo_model_dir).save_pretrained(out)
    (out / "medportal_training.json").write_text(json.dumps({"template": "default"}))
    return out


def test_the_merged_model_gives_the_logits_of_base_plus_adapter(demo_model_dir, adapter_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = merge_adapter(base_path=demo_model_dir, adapter_path=adapter_dir, out_dir=tmp_path / "merged")
    assert result["path"] == str((tmp_path / "merged").resolve())

    tokenizer = AutoTokenizer.from_pretrained(result["path"])
    ids = torch.tensor([tokenizer("糖尿病患者可以吃水果吗？", add_special_tokens=False)["input_ids"]])
    merged = AutoModelForCausalLM.from_pretrained(result["path"])
    base = AutoModelForCausalLM.from_pretrained(demo_model_dir)
    base_parameters = sum(p.numel() for p in base.parameters())
    with torch.no_grad():
        plain = base(input_ids=ids).logits
        adapted = PeftModel.from_pretrained(base, adapter_dir)(input_ids=ids).logits
        standalone = merged(input_ids=ids).logits
    assert not torch.allclose(plain, adapted, atol=1e-3)
    torch.testing.assert_close(standalone, adapted, rtol=1e-4, atol=1e-4)
    assert result["num_parameters"] == base_parameters
    assert not any("lora" in name for name, _ in merged.named_parameters())


def test_the_merged_folder_is_standalone_and_remembers_its_origin(demo_model_dir, adapter_dir, tmp_path):
    result = merge_adapter(base_path=demo_model_dir, adapter_path=adapter_dir, out_dir=tmp_path / "merged")
    folder = tmp_path / "merged"
    for name in ("config.json", "model.safetensors", "generation_config.json", "tokenizer_config.json", "medportal_training.json"):
        assert (folder / name).is_file(), name
    assert not (folder / "adapter_config.json").exists()
    info = json.loads((folder / MERGE_INFO).read_text())
    assert info["adapter_path"] == str(adapter_dir.resolve()) and info["num_parameters"] == result["num_parameters"]


def test_a_folder_that_is_not_an_adapter_is_refused(demo_model_dir, tmp_path):
    with pytest.raises(FileNotFoundError):
        merge_adapter(base_path=demo_model_dir, adapter_path=demo_model_dir, out_dir=tmp_path / "merged")
