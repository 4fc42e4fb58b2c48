"""Streamed answers never carry U+FFFD from a token that ends inside a UTF-8 character.

The demo tokenizer is a byte-level BPE: most Chinese characters are split over two tokens,
each of which decodes alone to U+FFFD. The streamer gets the real tokenizer's ids one by one,
as ``model.generate`` hands them over, and the real demo model samples answers end to end.
"""

from __future__ import annotations

import pytest

from training.inference import GenerationParams, ModelRef, StreamStats
from training.inference.local import LocalBackend, TokenStreamer

TEXT = "罕见病的诊断：鳞屑性红斑，伴有瘙痒。"


@pytest.fixture(scope="module")
def tokenizer(demo_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(demo_model_dir)


def split_ids(tokenizer, text: str) -> list[int]:
    """The ids of ``text``; the test needs some that end inside a character."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert any("\ufffd" in tokenizer.decode([i]) for i in ids), "the tokenizer no longer splits these characters"
    return ids


def stream(tokenizer, ids: list[int]) -> list[str]:
    import torch

    streamer = TokenStreamer(tokenizer, timeout=5)
    streamer.put(torch.tensor([[1, 2, 3]]))  # the prompt: skipped
    for i in ids:
        streamer.put(torch.tensor([i]))
    streamer.end()
    return list(streamer)


def test_characters_split_over_tokens_come_out_whole(tokenizer):
    pieces = stream(tokenizer, split_ids(tokenizer, TEXT))
    assert all("\ufffd" not in p for p in pieces) and "".join(pieces) == TEXT
    assert len(pieces) > 3  # still streamed, not held to the end


def test_an_answer_that_stops_inside_a_character_drops_the_half_character(tokenizer):
    ids = split_ids(tokenizer, TEXT)
    cut = next(n for n in range(1, len(ids)) if tokenizer.decode(ids[:n]).endswith("\ufffd"))
    pieces = stream(tokenizer, ids[:cut])  # max_new_tokens (or Stop) ended the answer there
    assert "\ufffd" not in "".join(pieces) and TEXT.startswith("".join(pieces)) and len("".join(pieces)) == len(tokenizer.decode(ids[:cut])) - 1


def test_a_character_the_model_never_completes_is_left_out(tokenizer):
    ids = split_ids(tokenizer, TEXT)
    lead = next(i for i in ids if tokenizer.decode([i]).endswith("\ufffd"))  # begins a character…
    rest = tokenizer("好的。", add_special_tokens=False)["input_ids"]  # …that another one follows
    pieces = stream(tokenizer, [*tokenizer("是", add_special_tokens=False)["input_ids"], lead, *rest])
    assert "".join(pieces) == "是" + tokenizer.decode([lead]).replace("\ufffd", "") + "好的。"


@pytest.mark.parametrize("seed", [0, 1])
def test_sampled_answers_of_the_demo_model_have_no_replacement_characters(demo_model_dir, seed):
    backend = LocalBackend()
    stats = StreamStats()
    params = GenerationParams(max_new_tokens=24, temperature=2.0, seed=seed)  # wild sampling: many split characters
    pieces = list(backend.stream(ModelRef(base_path=str(demo_model_dir)), [{"role": "user", "content": "头痛三天了怎么办？"}], params, stats=stats))
    assert stats.completion_tokens > 0 and pieces
    assert not [p for p in pieces if "\ufffd" in p]
