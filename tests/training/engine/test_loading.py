"""The one model loader: dtype policy, pad token, the adapter's tokenizer, clear missing-folder errors."""

from __future__ import annotations

import shutil

import pytest
import torch

from training.engine import loading


def test_dtype_policy(monkeypatch):
    assert loading.inference_dtype("cpu") is torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert loading.inference_dtype("cuda") is torch.bfloat16
    assert loading.inference_dtype("cuda:1") is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert loading.inference_dtype("cuda") is torch.float16


def test_load_model_on_cpu_is_float32_in_eval_mode_with_a_pad_token(demo_model_dir):
    model, tokenizer = loading.load_model(demo_model_dir, device="cpu")
    assert next(model.parameters()).dtype is torch.float32
    assert not model.training
    assert tokenizer.pad_token_id is not None


def test_a_tokenizer_without_pad_token_pads_with_eos(demo_model_dir, tmp_path):
    from transformers import AutoTokenizer

    folder = tmp_path / "tok"
    tok = AutoTokenizer.from_pretrained(demo_model_dir)
    tok.pad_token = None
    tok.save_pretrained(folder)
    shutil.copy(demo_model_dir / "config.json", folder / "config.json")
    loaded = loading.load_tokenizer(folder)
    assert loaded.pad_token_id == loaded.eos_token_id is not None


def test_the_adapter_tokenizer_wins_when_the_adapter_has_one(demo_model_dir, tmp_path):
    assert loading.tokenizer_folder(demo_model_dir, tmp_path) == str(demo_model_dir)
    (tmp_path / "tokenizer_config.json").write_text("{}")
    assert loading.tokenizer_folder(demo_model_dir, tmp_path) == str(tmp_path)


def test_missing_folders_are_named(tmp_path, demo_model_dir):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        loading.load_base(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no adapter_config.json"):
        loading.load_model(demo_model_dir, tmp_path, device="cpu")


def test_merge_keeps_the_base_dtype_and_training_its_own(demo_model_dir):
    """dtype="auto" (merge) reads the folder's dtype; an explicit dtype (training) is used as is."""
    assert loading.load_base(demo_model_dir, dtype=torch.bfloat16).dtype is torch.bfloat16
    auto = loading.load_base(demo_model_dir, dtype="auto")
    plain = loading.load_base(demo_model_dir)
    assert plain.dtype is torch.float32
    assert auto.dtype in (torch.float32, torch.bfloat16, torch.float16)
