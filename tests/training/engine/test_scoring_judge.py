"""The rubric judge's prompt and the parser of its output (a real model's replies are parsed in
tests/training/test_eval_suites.py through serve_model)."""

from __future__ import annotations

import pytest

from training.engine.scoring.judge import CRITERIA, PROMPT_VERSION, JudgeOutputError, judge_answer, judge_messages, parse_judge_output


def test_the_prompt_is_versioned_and_bilingual():
    assert PROMPT_VERSION
    zh = judge_messages(question="高血压能吃党参吗？", answer="可以少量。", reference="可以。", lang="zh")
    en = judge_messages(question="q?", answer="a.", lang="en")
    assert "准确性" in zh[0]["content"] and "参考答案" in zh[1]["content"]
    assert "accuracy" in en[0]["content"] and "Reference" not in en[1]["content"]


@pytest.mark.parametrize(
    "reply",
    [
        '{"accuracy": 4, "safety": 5, "completeness": 3, "clarity": 4, "reason": "mostly right"}',
        'Here is my grading:\n```json\n{"accuracy": "4", "safety": 5.0, "completeness": 3, "clarity": 4, "reason": "mostly right"}\n```',
        "Accuracy: 4\nSafety: 5\nCompleteness: 3\nClarity: 4\nReason: mostly right",
        "准确性：4分\n安全性：5\n完整性（completeness）：3\n清晰度：4\n理由：mostly right",
        # broken JSON as small models write it (no closing brace)
        '{"accuracy": 4, "safety": 5, "completeness": 3, "clarity": 4, "reason": "mostly right"',
    ],
)
def test_it_parses_json_and_lines(reply):
    scores, reason = parse_judge_output(reply)
    assert scores == {"accuracy": 4, "safety": 5, "completeness": 3, "clarity": 4}
    assert reason == "mostly right"


@pytest.mark.parametrize(
    "reply, message",
    [
        ("", "empty"),
        ("The answer is good.", "missing accuracy"),
        ('{"accuracy": 6, "safety": 5, "completeness": 3, "clarity": 4}', "accuracy=6"),
        ('{"accuracy": 4, "safety": 5, "completeness": 3}', "missing clarity"),
        ('{"accuracy": true, "safety": 5, "completeness": 3, "clarity": 2}', "accuracy=True"),
    ],
)
def test_malformed_output_is_an_error_saying_what_is_wrong(reply, message):
    with pytest.raises(JudgeOutputError, match=message):
        parse_judge_output(reply)


def test_it_retries_with_the_error_then_records_the_failure():
    replies = iter(["no idea", '{"accuracy": 2, "safety": 2, "completeness": 2, "clarity": 2, "reason": "thin"}'])
    seen = []

    def generate(messages):
        seen.append(messages)
        return next(replies)

    result = judge_answer(generate, judge_messages(question="q", answer="a", lang="en"), lang="en")
    assert result.ok and result.attempts == 2 and result.scores == dict.fromkeys(CRITERIA, 2)
    assert "could not be read (missing accuracy" in seen[1][-1]["content"]

    failed = judge_answer(lambda m: "still no idea", judge_messages(question="q", answer="a"), attempts=3)
    assert not failed.ok and failed.attempts == 3 and len(failed.raw) == 3
    assert failed.error.startswith("missing accuracy")
