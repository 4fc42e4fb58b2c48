"""Prompt templates, token for token: training ids, label masks and serving prompts agree with the chat templates."""

from __future__ import annotations

import json

import pytest

from training.engine.templates import (
    IGNORE_INDEX,
    TEMPLATE_NAMES,
    TemplateError,
    encode_conversation,
    medical_inquiry_fields,
    prompt_ids,
    records_to_messages,
    render_prompt,
    stop_token_ids,
    template_fingerprint,
)

# Meta-Llama-3-8B-Instruct's chat template, as it ships.
META_LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

TWO_TURNS = [
    {"role": "system", "content": "你是一名医生。"},
    {"role": "user", "content": "头痛怎么办？"},
    {"role": "assistant", "content": "注意休息。"},
    {"role": "user", "content": "需要吃药吗？"},
    {"role": "assistant", "content": "请遵医嘱。"},
]


@pytest.fixture(scope="module")
def tokenizer(demo_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(demo_model_dir)


@pytest.fixture(scope="module")
def llama3_tokenizer(demo_model_dir):
    """The demo tokenizer given Llama 3's control tokens and Meta's chat template (in memory only)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(demo_model_dir)
    tok.add_special_tokens({"bos_token": "<|begin_of_text|>"})
    tok.add_tokens(["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], special_tokens=True)
    tok.chat_template = META_LLAMA3_TEMPLATE
    return tok


def _ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def _spans(labels: list[int]) -> list[tuple[int, int]]:
    spans, start = [], None
    for i, label in enumerate([*labels, IGNORE_INDEX]):
        if label != IGNORE_INDEX and start is None:
            start = i
        elif label == IGNORE_INDEX and start is not None:
            spans.append((start, i))
            start = None
    return spans


def _trained(tok, encoded) -> list[str]:
    return [tok.decode(encoded["input_ids"][a:b]) for a, b in _spans(encoded["labels"])]


def test_default_template_trains_on_exactly_what_the_tokenizers_own_chat_template_renders(tokenizer):
    encoded = encode_conversation(tokenizer, "default", TWO_TURNS, cutoff_len=1024)

    own = tokenizer.apply_chat_template(TWO_TURNS, tokenize=True, enable_thinking=False)["input_ids"]
    assert encoded["input_ids"] == own
    assert encoded["input_ids"] == _ids(tokenizer, tokenizer.apply_chat_template(TWO_TURNS, tokenize=False, enable_thinking=False))
    assert len(encoded["labels"]) == len(encoded["input_ids"])


def test_only_the_answers_and_their_end_of_turn_are_trained(tokenizer):
    encoded = encode_conversation(tokenizer, "default", TWO_TURNS, cutoff_len=1024)

    assert _trained(tokenizer, encoded) == ["注意休息。<|im_end|>\n", "请遵医嘱。<|im_end|>\n"]
    for token, label in zip(encoded["input_ids"], encoded["labels"], strict=True):
        assert label in (IGNORE_INDEX, token)


@pytest.mark.parametrize("template", ["default", "qwen3", "alpaca", "medical_inquiry"])
def test_the_prompt_of_the_answered_turn_is_token_for_token_what_serving_encodes(tokenizer, template):
    encoded = encode_conversation(tokenizer, template, TWO_TURNS, cutoff_len=1024)
    last_answer_start = _spans(encoded["labels"])[-1][0]

    served = prompt_ids(tokenizer, template, TWO_TURNS[:-1])
    assert encoded["input_ids"][:last_answer_start] == served
    assert served == _ids(tokenizer, render_prompt(tokenizer, template, TWO_TURNS[:-1]))
    # and the whole sequence is the tokenization of the whole rendered text
    full = tokenizer.decode(encoded["input_ids"])
    assert encoded["input_ids"] == _ids(tokenizer, full)


def test_the_default_prompt_is_the_chat_templates_generation_prompt(tokenizer):
    own = tokenizer.apply_chat_template(TWO_TURNS[:-1], tokenize=False, add_generation_prompt=True, enable_thinking=False)

    assert render_prompt(tokenizer, "default", TWO_TURNS[:-1]) == own
    assert own.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_every_history_answer_is_trained(tokenizer):
    three = [*TWO_TURNS, {"role": "user", "content": "多久复查？"}, {"role": "assistant", "content": "一个月后复查。"}]

    for template in ("default", "qwen3", "alpaca", "medical_inquiry"):
        encoded = encode_conversation(tokenizer, template, three, cutoff_len=1024)
        answers = [text.split("<|im_end|>")[0] for text in _trained(tokenizer, encoded)]
        assert answers == ["注意休息。", "请遵医嘱。", "一个月后复查。"], template


def test_the_named_qwen3_template_is_qwen3s_own_template_in_non_thinking_mode(tokenizer):
    # The demo tokenizer ships Qwen3's chat template: the named template must render the same ids.
    for messages in (TWO_TURNS, TWO_TURNS[1:3], TWO_TURNS[1:]):
        named = encode_conversation(tokenizer, "qwen3", messages, cutoff_len=1024)
        own = encode_conversation(tokenizer, "default", messages, cutoff_len=1024)
        assert named == own
        assert render_prompt(tokenizer, "qwen3", messages) == render_prompt(tokenizer, "default", messages)
    assert template_fingerprint(tokenizer, "qwen3") == template_fingerprint(tokenizer, "default")


def test_qwen3_renders_the_reference_text(tokenizer):
    encoded = encode_conversation(tokenizer, "qwen3", TWO_TURNS, cutoff_len=1024)

    expected = (
        "<|im_start|>system\n你是一名医生。<|im_end|>\n"
        "<|im_start|>user\n头痛怎么办？<|im_end|>\n"
        "<|im_start|>assistant\n注意休息。<|im_end|>\n"
        "<|im_start|>user\n需要吃药吗？<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\n请遵医嘱。<|im_end|>\n"
    )
    assert tokenizer.decode(encoded["input_ids"]) == expected
    assert encoded["input_ids"] == _ids(tokenizer, expected)
    assert render_prompt(tokenizer, "qwen3", TWO_TURNS[:-1]) == expected.removesuffix("请遵医嘱。<|im_end|>\n")


def test_llama3_renders_the_reference_text(llama3_tokenizer):
    encoded = encode_conversation(llama3_tokenizer, "llama3", TWO_TURNS, cutoff_len=1024)

    expected = (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n你是一名医生。<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n头痛怎么办？<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n注意休息。<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n需要吃药吗？<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n请遵医嘱。<|eot_id|>"
    )
    assert llama3_tokenizer.decode(encoded["input_ids"]) == expected
    assert encoded["input_ids"] == _ids(llama3_tokenizer, expected)
    assert _trained(llama3_tokenizer, encoded) == ["注意休息。<|eot_id|>", "请遵医嘱。<|eot_id|>"]
    assert stop_token_ids(llama3_tokenizer, "llama3")[0] == llama3_tokenizer.convert_tokens_to_ids("<|eot_id|>")


def test_default_template_follows_metas_llama3_template_and_matches_the_named_llama3(llama3_tokenizer):
    named = encode_conversation(llama3_tokenizer, "llama3", TWO_TURNS, cutoff_len=1024)
    own = encode_conversation(llama3_tokenizer, "default", TWO_TURNS, cutoff_len=1024)

    assert own == named
    assert own["input_ids"] == llama3_tokenizer.apply_chat_template(TWO_TURNS, tokenize=True)["input_ids"]
    assert render_prompt(llama3_tokenizer, "default", TWO_TURNS[:-1]) == render_prompt(llama3_tokenizer, "llama3", TWO_TURNS[:-1])


def test_alpaca_renders_the_reference_text(tokenizer):
    encoded = encode_conversation(tokenizer, "alpaca", TWO_TURNS, cutoff_len=1024)

    expected = (
        "你是一名医生。\n\n"
        "### Instruction:\n头痛怎么办？\n\n### Response:\n注意休息。<|im_end|>\n\n"
        "### Instruction:\n需要吃药吗？\n\n### Response:\n请遵医嘱。<|im_end|>\n\n"
    )
    assert tokenizer.decode(encoded["input_ids"]) == expected
    assert encoded["input_ids"] == _ids(tokenizer, expected)


def test_alpaca_without_a_system_message_uses_llamafactorys_default_system(tokenizer):
    prompt = render_prompt(tokenizer, "alpaca", [{"role": "user", "content": "Hi"}])

    assert prompt == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
        "### Instruction:\nHi\n\n### Response:\n"
    )


def test_medical_inquiry_renders_the_reference_text(tokenizer):
    messages = [
        {"role": "system", "content": "你是一名医生。"},
        {"role": "user", "content": {"patient_info": "男，45岁", "symptoms": "头痛三天", "test_results": "血压160/100 mmHg"}},
        {"role": "assistant", "content": "考虑高血压。"},
        {"role": "user", "content": "需要吃药吗？"},
        {"role": "assistant", "content": "请遵医嘱。"},
    ]
    encoded = encode_conversation(tokenizer, "medical_inquiry", messages, cutoff_len=1024)

    expected = (
        "你是一名医生。\n\n"
        "患者信息：男，45岁\n症状描述：头痛三天\n检查结果：血压160/100 mmHg\n诊断建议：\n考虑高血压。<|im_end|>\n\n"
        "患者信息：无\n症状描述：需要吃药吗？\n检查结果：无\n诊断建议：\n请遵医嘱。<|im_end|>\n\n"
    )
    assert tokenizer.decode(encoded["input_ids"]) == expected
    assert encoded["input_ids"] == _ids(tokenizer, expected)
    assert _trained(tokenizer, encoded) == ["考虑高血压。<|im_end|>\n\n", "请遵医嘱。<|im_end|>\n\n"]


def test_medical_inquiry_reads_fields_from_a_json_object_or_chinese_labels():
    assert medical_inquiry_fields('{"symptoms": "发热", "test_results": "白细胞升高"}') == {
        "patient_info": "无",
        "symptoms": "发热",
        "test_results": "白细胞升高",
    }
    assert medical_inquiry_fields({"患者信息": "女，30岁", "症状描述": "咳嗽"}) == {
        "patient_info": "女，30岁",
        "symptoms": "咳嗽",
        "test_results": "无",
    }


def test_a_plain_question_is_the_symptom_description():
    assert medical_inquiry_fields("头晕乏力两周") == {"patient_info": "无", "symptoms": "头晕乏力两周", "test_results": "无"}
    # a JSON object without any inquiry field is just text
    assert medical_inquiry_fields('{"a": 1}')["symptoms"] == '{"a": 1}'


def test_medical_inquiry_refuses_unknown_fields():
    with pytest.raises(TemplateError, match="unknown: diagnosis"):
        medical_inquiry_fields({"symptoms": "发热", "diagnosis": "流感"})


def test_named_templates_refuse_a_tokenizer_without_their_control_tokens(tokenizer):
    with pytest.raises(TemplateError, match=r"'llama3' needs the special tokens <\|begin_of_text\|>, <\|start_header_id\|>"):
        encode_conversation(tokenizer, "llama3", TWO_TURNS, cutoff_len=1024)


def test_the_default_template_needs_a_chat_template(demo_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(demo_model_dir)
    tok.chat_template = None
    with pytest.raises(TemplateError, match="no chat template"):
        render_prompt(tok, "default", TWO_TURNS[:2])


@pytest.mark.parametrize(
    ("chat_template", "message"),
    [
        # DeepSeek-R1 style: the generation prompt opens a think block that training renders never show
        (
            (
                "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
                "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
            ),
            "training and serving would differ",
        ),
        # a template that leaves assistant answers out
        (
            "{% for m in messages %}{% if m.role == 'user' %}<|im_start|>user\n{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}",
            "does not write every assistant answer",
        ),
    ],
)
def test_the_default_template_refuses_chat_templates_that_would_train_and_serve_differently(demo_model_dir, chat_template, message):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(demo_model_dir)
    tok.chat_template = chat_template
    with pytest.raises(TemplateError, match=message):
        encode_conversation(tok, "default", TWO_TURNS, cutoff_len=1024)


def test_an_unknown_template_is_refused(tokenizer):
    with pytest.raises(TemplateError, match="unknown template 'vicuna'"):
        render_prompt(tokenizer, "vicuna", TWO_TURNS[:2])


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([], "empty"),
        ([{"role": "assistant", "content": "hi"}], "user expected"),
        ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}], "assistant expected"),
        (
            [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}, {"role": "assistant", "content": "c"}],
            "only the first message",
        ),
        ([{"role": "tool", "content": "a"}], "role 'tool'"),
        ([{"role": "user", "content": None}, {"role": "assistant", "content": "c"}], "no text content"),
        ([{"role": "user", "content": "a"}], "must end with an assistant answer"),
    ],
)
def test_malformed_conversations_are_refused_with_the_reason(tokenizer, messages, message):
    with pytest.raises(TemplateError, match=message):
        encode_conversation(tokenizer, "qwen3", messages, cutoff_len=1024)


def test_render_prompt_leaves_out_a_trailing_answer(tokenizer):
    for template in ("default", "qwen3", "alpaca", "medical_inquiry"):
        assert render_prompt(tokenizer, template, TWO_TURNS) == render_prompt(tokenizer, template, TWO_TURNS[:-1])


def _long(n: int) -> str:
    return "".join("高血压糖尿病冠心病哮喘"[i % 10] for i in range(n))


def test_a_short_answer_is_kept_whole_when_the_prompt_is_cut(tokenizer):
    messages = [{"role": "user", "content": _long(600)}, {"role": "assistant", "content": "多休息。"}]
    encoded = encode_conversation(tokenizer, "qwen3", messages, cutoff_len=64)

    assert len(encoded["input_ids"]) == 64
    assert _trained(tokenizer, encoded) == ["多休息。<|im_end|>\n"]
    # the prompt keeps its beginning (LLaMA-Factory cuts the end of the prompt)
    assert encoded["input_ids"][:3] == _ids(tokenizer, "<|im_start|>user\n")[:3]


def test_a_long_answer_loses_its_end_when_the_prompt_is_short(tokenizer):
    answer = _long(600)
    messages = [{"role": "user", "content": "怎么办？"}, {"role": "assistant", "content": answer}]
    encoded = encode_conversation(tokenizer, "qwen3", messages, cutoff_len=64)
    prompt_len = len(prompt_ids(tokenizer, "qwen3", messages))

    assert len(encoded["input_ids"]) == 64
    assert encoded["labels"][:prompt_len] == [IGNORE_INDEX] * prompt_len
    assert encoded["input_ids"][prompt_len:] == _ids(tokenizer, answer + "<|im_end|>\n")[: 64 - prompt_len]


def test_turns_that_no_longer_fit_are_dropped(tokenizer):
    full = encode_conversation(tokenizer, "qwen3", TWO_TURNS, cutoff_len=1024)
    first_turn_end = _spans(full["labels"])[0][1]
    cut = encode_conversation(tokenizer, "qwen3", TWO_TURNS, cutoff_len=first_turn_end)

    assert cut["input_ids"] == full["input_ids"][:first_turn_end]
    assert _trained(tokenizer, cut) == ["注意休息。<|im_end|>\n"]


def test_fingerprints_are_stable_and_tell_templates_apart(tokenizer, llama3_tokenizer, demo_model_dir):
    from transformers import AutoTokenizer

    prints = {name: template_fingerprint(tokenizer, name) for name in ("qwen3", "alpaca", "medical_inquiry")}
    prints["llama3"] = template_fingerprint(llama3_tokenizer, "llama3")

    assert len(set(prints.values())) == 4
    assert all(len(p) == 64 and int(p, 16) >= 0 for p in prints.values())
    reloaded = AutoTokenizer.from_pretrained(demo_model_dir)
    assert template_fingerprint(reloaded, "alpaca") == prints["alpaca"]


def test_a_different_chat_template_gives_a_different_default_fingerprint(demo_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(demo_model_dir)
    before = template_fingerprint(tok, "default")
    tok.chat_template = tok.chat_template.replace("'<|im_start|>system\\n'", "'<|im_start|>system\\n\\n'")

    assert template_fingerprint(tok, "default") != before


def test_stop_tokens_end_answers_where_the_template_ends_them(tokenizer):
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")

    for template in ("default", "qwen3", "alpaca", "medical_inquiry"):
        assert stop_token_ids(tokenizer, template)[0] == im_end


def test_records_become_messages_as_llamafactory_reads_alpaca_records():
    record = {
        "instruction": "解释检查结果",
        "input": "血糖 7.8 mmol/L",
        "output": "空腹血糖偏高。",
        "system": "你是内分泌科医生。",
        "history": [["我最近口渴", "多久了？"], ["两周", "建议查血糖。"]],
    }

    assert records_to_messages(record) == [
        {"role": "system", "content": "你是内分泌科医生。"},
        {"role": "user", "content": "我最近口渴"},
        {"role": "assistant", "content": "多久了？"},
        {"role": "user", "content": "两周"},
        {"role": "assistant", "content": "建议查血糖。"},
        {"role": "user", "content": "解释检查结果\n血糖 7.8 mmol/L"},
        {"role": "assistant", "content": "空腹血糖偏高。"},
    ]


def test_a_record_without_input_system_or_output_is_a_single_prompt():
    assert records_to_messages({"instruction": "头痛怎么办？", "input": "", "output": "", "system": "", "history": []}) == [
        {"role": "user", "content": "头痛怎么办？"}
    ]


def test_every_name_in_template_names_renders_the_demo_records(tokenizer, llama3_tokenizer):
    from training.engine.demo_model import DEMO_DATA_DIR

    record = json.loads((DEMO_DATA_DIR / "demo_reviewed.jsonl").read_text(encoding="utf-8").splitlines()[0])
    messages = records_to_messages(record)
    for template in TEMPLATE_NAMES:
        tok = llama3_tokenizer if template == "llama3" else tokenizer
        encoded = encode_conversation(tok, template, messages, cutoff_len=2048)
        assert record["output"] in _trained(tok, encoded)[0]


def test_template_chat_messages_for_a_server_that_applies_its_own_template():
    from training.engine.templates import MEDICAL_DEFAULT_SYSTEM, template_chat_messages

    user = {"role": "user", "content": '{"symptoms": "咳嗽三个月", "patient_info": "男，45岁"}'}
    assert template_chat_messages("medical_inquiry", [user]) == [
        {"role": "system", "content": MEDICAL_DEFAULT_SYSTEM},
        {"role": "user", "content": "患者信息：男，45岁\n症状描述：咳嗽三个月\n检查结果：无\n诊断建议："},
    ]
    own = [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}]
    assert template_chat_messages("alpaca", own) == own and template_chat_messages("default", own) == own
    with pytest.raises(TemplateError, match="unknown template"):
        template_chat_messages("nope", own)
