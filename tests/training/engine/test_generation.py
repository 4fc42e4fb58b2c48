"""Batched generation: left padding gives the one-by-one answers token for token, answers come back
in input order, stop tokens end answers, a seed makes sampling reproducible, prompts are cut as
LLaMA-Factory's vllm_infer.py cuts them, and a stop request ends the run."""

from __future__ import annotations

import pytest

from training.engine.generation import (
    GENERATION_PRESETS,
    GenerationStopped,
    encode_prompts,
    generate_batched,
    load_model,
    percentile,
)
from training.engine.templates import _infer_seqlen, prompt_ids, stop_token_ids

# Deliberately unsorted lengths: batches are formed longest first, answers must come back in this order.
QUESTIONS = [
    "头痛",
    "高血压患者平时需要注意什么？饮食、运动和用药方面分别有哪些建议？",
    "糖尿病",
    "胃痛三天，吃东西后更明显，需要做什么检查？",
    "咳嗽",
    "孩子发烧到三十九度，夜里反复，应该怎么处理，什么时候需要去医院？",
]
NEW = 12


def conversations(questions=QUESTIONS):
    return [[{"role": "user", "content": q}] for q in questions]


@pytest.fixture(scope="module")
def loaded(demo_model_dir):
    return load_model(str(demo_model_dir))


def plain_greedy(model, tokenizer, messages, max_new_tokens, stops):
    """The reference: one prompt, no padding, straight model.generate, cut at the first stop token."""
    import torch

    ids = prompt_ids(tokenizer, "default", messages)
    with torch.inference_mode():
        out = model.generate(
            input_ids=torch.tensor([ids]),
            attention_mask=torch.ones((1, len(ids)), dtype=torch.long),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            eos_token_id=stops,
            pad_token_id=tokenizer.pad_token_id,
        )
    tokens = out[0, len(ids) :].tolist()
    for k, token in enumerate(tokens):
        if token in stops:
            return tokens[:k], k + 1
    return tokens, len(tokens)


def test_batched_greedy_answers_equal_one_by_one_answers_token_for_token_in_input_order(loaded):
    model, tokenizer = loaded
    batched = generate_batched(model_path="", conversations=conversations(), max_new_tokens=NEW, batch_size=4, loaded=loaded)
    one_by_one = [
        generate_batched(model_path="", conversations=[c], max_new_tokens=NEW, batch_size=1, loaded=loaded)[0] for c in conversations()
    ]
    stops = stop_token_ids(tokenizer, "default")
    assert len(batched) == len(QUESTIONS)
    for question, got, single in zip(QUESTIONS, batched, one_by_one, strict=True):
        tokens, count = plain_greedy(model, tokenizer, [{"role": "user", "content": question}], NEW, stops)
        assert got == single
        assert got["predict"] == tokenizer.decode(tokens, skip_special_tokens=True)
        assert got["completion_tokens"] == count
        assert got["prompt_tokens"] == len(prompt_ids(tokenizer, "default", [{"role": "user", "content": question}]))
        assert got["finish_reason"] in ("stop", "length")


def test_an_answer_ends_at_the_templates_stop_token_which_is_not_in_the_text(demo_model_dir, loaded):
    from collections import Counter

    from transformers import AutoTokenizer

    model, tokenizer = loaded
    free = generate_batched(model_path="", conversations=conversations(), max_new_tokens=NEW, batch_size=6, loaded=loaded)
    # Make the token the model writes most often the end of a turn (the tokenizer's eos).
    stops = stop_token_ids(tokenizer, "default")
    raw = [plain_greedy(model, tokenizer, c, NEW, stops)[0] for c in conversations()]
    common = Counter(t for tokens in raw for t in tokens).most_common(1)[0][0]
    ending = AutoTokenizer.from_pretrained(demo_model_dir, eos_token=tokenizer.convert_ids_to_tokens(common))
    assert common in stop_token_ids(ending, "default")
    cut = generate_batched(model_path="", conversations=conversations(), max_new_tokens=NEW, batch_size=6, loaded=(model, ending))
    stopped = 0
    for tokens, before, after in zip(raw, free, cut, strict=True):
        if common in tokens:
            k = tokens.index(common)
            stopped += 1
            assert after["finish_reason"] == "stop"
            assert after["completion_tokens"] == k + 1
            assert after["predict"] == ending.decode(tokens[:k], skip_special_tokens=True)
        else:
            assert after == before
    assert stopped >= 1


def test_sampling_with_a_seed_is_reproducible(loaded):
    knobs = {"temperature": 1.0, "top_p": 0.95, "top_k": 50, "max_new_tokens": NEW, "batch_size": 3, "loaded": loaded, "model_path": ""}
    first = generate_batched(conversations=conversations(), seed=7, **knobs)
    again = generate_batched(conversations=conversations(), seed=7, **knobs)
    other = generate_batched(conversations=conversations(), seed=8, **knobs)
    assert first == again
    assert [r["predict"] for r in first] != [r["predict"] for r in other]


def test_prompts_are_cut_to_cutoff_len_as_vllm_infer_cuts_them(loaded):
    _model, tokenizer = loaded
    question = QUESTIONS[5] * 3
    answer = "多喝水，注意休息，如果持续高烧请及时就医。" * 4
    full = prompt_ids(tokenizer, "default", [{"role": "user", "content": question}])
    with_answer = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    cutoff = len(full) // 2
    (cut_with_answer,) = encode_prompts(tokenizer, "default", [with_answer], cutoff)
    (cut_alone,) = encode_prompts(tokenizer, "default", [with_answer[:1]], cutoff)
    answer_len = len(tokenizer(answer + "<|im_end|>\n", add_special_tokens=False)["input_ids"])
    assert len(cut_with_answer) == _infer_seqlen(len(full), answer_len, cutoff)[0] < len(full)
    assert cut_with_answer == full[: len(cut_with_answer)]  # the head is kept, as LLaMA-Factory keeps it
    assert cut_alone == full[:cutoff]
    assert encode_prompts(tokenizer, "default", [with_answer], 10_000) == [full]


def test_progress_is_reported_per_batch_and_a_stop_request_ends_the_run(loaded):
    events = []
    generate_batched(model_path="", conversations=conversations(), max_new_tokens=4, batch_size=4, loaded=loaded, on_progress=events.append)
    assert [(e["done"], e["batch"], e["batches"]) for e in events] == [(4, 1, 2), (6, 2, 2)]
    asked = []

    def stop_after_a_few_tokens():
        asked.append(1)
        return len(asked) > 3

    with pytest.raises(GenerationStopped) as stopped:
        generate_batched(
            model_path="",
            conversations=conversations(),
            max_new_tokens=NEW,
            batch_size=2,
            loaded=loaded,
            should_stop=stop_after_a_few_tokens,
        )
    assert stopped.value.done == 0 and len(asked) == 4


def test_the_vllm_infer_preset_keeps_llamafactorys_defaults_and_percentiles_interpolate():
    preset = GENERATION_PRESETS["vllm_infer"]
    assert (
        preset["cutoff_len"],
        preset["max_new_tokens"],
        preset["temperature"],
        preset["top_p"],
        preset["top_k"],
        preset["repetition_penalty"],
    ) == (
        2048,
        1024,
        0.95,
        0.7,
        50,
        1.0,
    )
    assert GENERATION_PRESETS["greedy"]["temperature"] == 0.0
    assert percentile([], 50) is None
    assert percentile([3.0], 95) == 3.0
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([10, 20, 30, 40, 50], 95) == pytest.approx(48.0)
