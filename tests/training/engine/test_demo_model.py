"""The demo model: a real, small Qwen3 folder built from the project's corpus, deterministic for a seed."""

from __future__ import annotations

import hashlib
import json
import math

import pytest

from training.engine.demo_model import ENDOFTEXT, IM_END, METADATA_FILE, build_demo_model, demo_corpus


@pytest.fixture(scope="module")
def loaded(demo_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(demo_model_dir), AutoTokenizer.from_pretrained(demo_model_dir)


def test_demo_corpus_is_the_projects_demo_texts():
    from training.engine.demo_model import DEMO_DATA_DIR

    records = [
        json.loads(line)
        for path in sorted(DEMO_DATA_DIR.glob("*.jsonl"))
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    texts = demo_corpus()

    assert len(texts) == len(records) >= 20
    for record, text in zip(records, texts, strict=True):
        assert text == "\n".join(part for part in (record["instruction"], record.get("input"), record["output"]) if part)


def test_it_is_a_qwen3_of_a_few_million_parameters_with_a_chat_template(loaded, demo_model_dir):
    model, tokenizer = loaded

    assert type(model).__name__ == "Qwen3ForCausalLM"
    assert model.config.model_type == "qwen3"
    assert 1_000_000 < sum(p.numel() for p in model.parameters()) < 10_000_000
    assert model.config.tie_word_embeddings is True
    assert model.config.num_key_value_heads < model.config.num_attention_heads  # grouped-query attention
    assert model.config.vocab_size == len(tokenizer)
    assert type(tokenizer).__name__ == "Qwen2Tokenizer"
    assert (tokenizer.eos_token, tokenizer.pad_token) == (IM_END, ENDOFTEXT)
    assert set(model.generation_config.eos_token_id) == {
        tokenizer.convert_tokens_to_ids(IM_END),
        tokenizer.convert_tokens_to_ids(ENDOFTEXT),
    }
    assert (demo_model_dir / "chat_template.jinja").is_file()
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "头痛"}], tokenize=False, add_generation_prompt=True, enable_thinking=False
    )
    assert prompt == "<|im_start|>user\n头痛<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"


def test_the_tokenizer_round_trips_chinese_it_never_saw(loaded):
    _, tokenizer = loaded
    text = "鼹鼠与麒麟：罕见病「法布雷病」的酶替代疗法 ✓ naïve 😀"

    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert all(0 <= i < len(tokenizer) for i in ids)


def test_pretraining_brings_the_loss_well_below_chance(loaded, demo_model_dir):
    import torch

    model, tokenizer = loaded
    metadata = json.loads((demo_model_dir / METADATA_FILE).read_text())
    chance = math.log(len(tokenizer))

    assert abs(metadata["initial_loss"] - chance) < 1.0  # an untrained model is uniform
    assert metadata["final_loss"] < chance - 1.0
    # measured again on the saved weights, over the whole corpus
    stream = []
    for text in demo_corpus():
        stream += tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.pad_token_id]
    windows = torch.tensor([stream[i : i + 128] for i in range(0, len(stream) - 128, 128)])
    with torch.no_grad():
        assert model(input_ids=windows, labels=windows).loss.item() < chance - 1.0


def test_it_greedy_generates_text_made_of_corpus_tokens(loaded):
    import torch

    model, tokenizer = loaded
    corpus_ids = {i for text in demo_corpus() for i in tokenizer(text, add_special_tokens=False)["input_ids"]}
    prompt = tokenizer("高血压患者", return_tensors="pt")

    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    new = out[0, prompt["input_ids"].shape[1] :].tolist()
    assert new, "nothing generated"
    assert set(new) <= corpus_ids | set(model.generation_config.eos_token_id)
    assert tokenizer.decode(new).strip()


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# The same code path as the real demo, at a size that builds in a second.
TINY = {"hidden_size": 64, "num_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 128}


def test_the_build_is_deterministic_for_a_seed(tmp_path):
    texts = demo_corpus()
    first = build_demo_model(tmp_path / "a", texts, pretrain_steps=3, seed=7, seq_len=32, batch_size=2, **TINY)
    second = build_demo_model(tmp_path / "b", texts, pretrain_steps=3, seed=7, seq_len=32, batch_size=2, **TINY)
    other = build_demo_model(tmp_path / "c", texts, pretrain_steps=3, seed=8, seq_len=32, batch_size=2, **TINY)

    assert first["final_loss"] == second["final_loss"]
    assert _digest(tmp_path / "a" / "model.safetensors") == _digest(tmp_path / "b" / "model.safetensors")
    assert _digest(tmp_path / "a" / "tokenizer.json") == _digest(tmp_path / "b" / "tokenizer.json")
    assert other["final_loss"] != first["final_loss"]
    assert _digest(tmp_path / "c" / "model.safetensors") != _digest(tmp_path / "a" / "model.safetensors")
    metadata = json.loads((tmp_path / "a" / METADATA_FILE).read_text())
    assert (metadata["steps"], metadata["seed"], metadata["corpus_texts"]) == (3, 7, len(texts))


def test_extra_texts_shape_the_vocabulary(tmp_path):
    extra = ["法布雷病是一种罕见的溶酶体贮积症。"] * 5
    plain = build_demo_model(tmp_path / "plain", demo_corpus(), pretrain_steps=1, **TINY)
    more = build_demo_model(tmp_path / "more", [*demo_corpus(), *extra], pretrain_steps=1, **TINY)

    assert more["vocab_size"] > plain["vocab_size"]
    assert json.loads((tmp_path / "more" / METADATA_FILE).read_text())["corpus_texts"] == len(demo_corpus()) + 5


def test_an_empty_corpus_is_refused(tmp_path):
    with pytest.raises(ValueError, match="corpus is empty"):
        build_demo_model(tmp_path / "empty", ["", "  "], pretrain_steps=1)
