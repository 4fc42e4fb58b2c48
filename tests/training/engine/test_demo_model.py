"""The demo model: a real, small Qwen3 folder built from the project's corpus, deterministic for a seed."""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import pytest

from training.engine.demo_model import ENDOFTEXT, IM_END, METADATA_FILE, build_demo_model, chat_turn, corpus_overlap, demo_corpus

REPO_ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def loaded(demo_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(demo_model_dir), AutoTokenizer.from_pretrained(demo_model_dir)


def _windows(text: str, n: int) -> set[str]:
    """Every run of n CJK characters or n words of a text (punctuation and spacing dropped)."""
    units = re.findall(r"[\u3400-\u9fff]|[a-z0-9]+", text.lower())
    return {" ".join(units[i : i + n]) for i in range(len(units) - n + 1)}


def test_the_pretraining_corpus_is_prose_that_shares_no_text_with_any_demo_pair():
    from training.engine.demo_model import DEMO_CORPUS_FILE, DEMO_DATA_DIR

    records = [
        json.loads(line)
        for path in sorted(DEMO_DATA_DIR.glob("*.jsonl"))
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    texts = demo_corpus()
    corpus = "\n".join(texts)

    assert len(texts) >= 100 and sum(map(len, texts)) >= 12_000
    assert texts == [" ".join(p.split()) for p in DEMO_CORPUS_FILE.read_text(encoding="utf-8").split("\n\n") if p.strip()]
    corpus_windows = set().union(*(_windows(text, 8) for text in texts))
    for record in records:
        for key in ("instruction", "input", "output"):
            field = (record.get(key) or "").strip()
            if not field:
                continue
            assert field not in corpus and field.rstrip("？?。.") not in corpus, field
            assert not _windows(field, 8) & corpus_windows, (field, sorted(_windows(field, 8) & corpus_windows)[:3])


def test_a_corpus_that_leaks_a_pair_is_refused(tmp_path, monkeypatch):
    from training.engine import demo_model

    pair = {"instruction": "脂肪肝能逆转吗？", "output": "早期的非酒精性脂肪肝通过减重、控制饮食、规律运动，多数可以明显改善。"}
    assert corpus_overlap(["心脏是一个由心肌构成的中空器官。"], [pair]) == []
    assert corpus_overlap(["请问：脂肪肝能逆转吗"], [pair]) == ["corpus text 1 repeats the demo pair '脂肪肝能逆转吗？'"]
    assert corpus_overlap(["另一段话，控制饮食、规律运动，多数可以改善。"], [pair])  # an 8-character run

    leaky = tmp_path / "corpus.txt"
    leaky.write_text("心脏位于胸腔中部偏左。\n\n" + demo_model.demo_pairs()[-1]["output"] + "\n", encoding="utf-8")
    monkeypatch.setattr(demo_model, "DEMO_CORPUS_FILE", leaky)
    with pytest.raises(ValueError, match="overlaps the demo QA pairs"):
        demo_model.demo_corpus()


def test_the_demo_set_is_large_enough_to_score_a_fine_tune_on_its_own_test_split():
    from medportal.management.commands.setup_demo import DEMO_SPLIT
    from training.engine.demo_model import demo_pairs

    approved = [
        json.loads(line)
        for line in (REPO_ROOT / "curation" / "demo_data" / "demo_reviewed.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    assert len(approved) >= 150 and len(demo_pairs()) > len(approved)
    assert len({r["instruction"] for r in approved}) == len(approved)
    assert DEMO_SPLIT[2] * len(approved) >= 30


def test_pretraining_chat_turns_are_rendered_as_the_models_own_chat_template(loaded):
    _, tokenizer = loaded
    text = "心脏位于胸腔中部偏左。右心接收静脉血，左心把血液泵向全身。"

    turn = chat_turn(text)

    expected = tokenizer.apply_chat_template(
        [{"role": "user", "content": "心脏位于胸腔中部偏左。"}, {"role": "assistant", "content": "右心接收静脉血，左心把血液泵向全身。"}],
        tokenize=False,
        enable_thinking=False,
    )
    assert turn == expected
    assert chat_turn("只有一句话。") is None
    assert chat_turn("The heart is a pump. The lungs take in oxygen.").startswith("<|im_start|>user\nThe heart is a pump.<|im_end|>")


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
