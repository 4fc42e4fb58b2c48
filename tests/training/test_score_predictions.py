"""manage.py score_predictions on LLaMA-Factory generated_predictions.jsonl files, good and broken."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command

from training.engine.metrics import score_pairs

GOOD = [
    {"prompt": "头痛怎么办？", "predict": "多喝水，注意休息。", "label": "注意休息，多喝水。"},
    {"prompt": "血压高吗？", "predict": "a a a b", "label": "a b"},
    {"prompt": "?", "predict": "", "label": "请及时就医。"},
]


def write(path, lines: list[str]) -> str:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def run(*args) -> tuple[list[str], list[str]]:
    out, err = io.StringIO(), io.StringIO()
    call_command("score_predictions", *args, stdout=out, stderr=err)
    return out.getvalue().splitlines(), err.getvalue().splitlines()


def expected_summary(records, mode="llamafactory") -> dict:
    return score_pairs([r["predict"] for r in records], [r["label"] for r in records], mode=mode)["summary"]


def test_the_json_flag_ends_stdout_with_exactly_the_averages_and_the_count(tmp_path):
    path = write(tmp_path / "generated_predictions.jsonl", [json.dumps(r, ensure_ascii=False) for r in GOOD])
    out, err = run(path, "--json")
    last = json.loads(out[-1])
    assert list(last) == ["bleu-4", "rouge-1", "rouge-2", "rouge-l", "count"]
    assert last == expected_summary(GOOD)
    assert last["count"] == 3
    assert err == []
    assert any(line.startswith("mode llamafactory") for line in out)  # the readable summary names the mode


def test_broken_lines_are_reported_with_their_numbers_and_the_rest_is_scored(tmp_path):
    lines = [
        json.dumps(GOOD[0], ensure_ascii=False),
        "",
        '{"predict": "多喝水", "label": ',
        json.dumps({"predict": "没有标签"}, ensure_ascii=False),
        json.dumps({"label": "没有预测"}, ensure_ascii=False),
        "   ",
        json.dumps({"predict": 42, "label": "数字"}, ensure_ascii=False),
        "[1, 2]",
        json.dumps(GOOD[1], ensure_ascii=False),
    ]
    path = write(tmp_path / "broken.jsonl", lines)
    out, err = run(path, "--json")
    assert err == [
        f"{path}: line 2: empty line",
        f"{path}: line 3: not valid JSON (Expecting value at column 29)",
        f"{path}: line 4: missing key 'label'",
        f"{path}: line 5: missing key 'predict'",
        f"{path}: line 6: empty line",
        f"{path}: line 7: 'predict' is a number, not a string",
        f"{path}: line 8: a JSON list, not an object with 'predict' and 'label'",
    ]
    assert json.loads(out[-1]) == expected_summary([GOOD[0], GOOD[1]])
    assert out[0] == f"{path}: 2 samples scored, 7 problem lines skipped"


def test_an_empty_file_is_a_clear_error(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    with pytest.raises(CommandError, match=r"Nothing to score in .*empty\.jsonl: .*\(the file is empty\)"):
        run(str(path), "--json")


def test_a_file_of_only_broken_lines_is_an_error_after_listing_them(tmp_path):
    path = write(tmp_path / "bad.jsonl", ["not json", json.dumps({"prompt": "only"})])
    err = io.StringIO()
    with pytest.raises(CommandError, match=r"2 problem lines reported above"):
        call_command("score_predictions", path, stdout=io.StringIO(), stderr=err)
    assert err.getvalue().splitlines() == [
        f"{path}: line 1: not valid JSON (Expecting value at column 1)",
        f"{path}: line 2: missing key 'predict'",
        f"{path}: line 2: missing key 'label'",
    ]


def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(CommandError, match="File not found: .*nope.jsonl"):
        run(str(tmp_path / "nope.jsonl"))
    with pytest.raises(CommandError, match="Not a file"):
        run(str(tmp_path))


def test_standard_mode_counts_repeated_words(tmp_path):
    path = write(tmp_path / "p.jsonl", [json.dumps(GOOD[1])])
    llamafactory = json.loads(run(path, "--json")[0][-1])
    standard = json.loads(run(path, "--json", "--mode", "standard")[0][-1])
    assert (llamafactory["rouge-1"], standard["rouge-1"]) == (100.0, 66.6667)  # sets vs counts
    assert standard == expected_summary([GOOD[1]], mode="standard")


def test_per_sample_scores_are_written_next_to_their_line_and_texts(tmp_path):
    lines = [json.dumps(GOOD[0], ensure_ascii=False), "oops", json.dumps(GOOD[2], ensure_ascii=False)]
    path = write(tmp_path / "p.jsonl", lines)
    target = tmp_path / "scores.jsonl"
    out, _ = run(path, "--per-sample", str(target))
    rows = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    per_sample = score_pairs([GOOD[0]["predict"], ""], [GOOD[0]["label"], GOOD[2]["label"]])["per_sample"]
    assert rows == [
        {"line": 1, **GOOD[0], **per_sample[0]},
        {"line": 3, **GOOD[2], **per_sample[1]},
    ]
    assert rows[1]["bleu-4"] == rows[1]["rouge-l"] == 0.0
    assert not out[-1].startswith("{")  # no --json, no JSON line
