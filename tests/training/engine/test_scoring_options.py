"""Option extraction: agreement with the hand-labelled set, and the rules one by one."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.engine.scoring.labelled import read_labelled
from training.engine.scoring.options import extract_choice

DATA = Path(__file__).parent / "data"
ITEMS = read_labelled(DATA)
OPTS = {"A": "卵巢", "B": "前庭大腺", "C": "前庭球", "D": "乳腺"}
EN = {"A": "Vitamin A", "B": "Vitamin B12", "C": "Vitamin C", "D": "Vitamin D"}


def test_the_labelled_set_is_large_and_bilingual():
    assert len(ITEMS) >= 300
    langs = {i.key.split("-")[0] for i in ITEMS}
    assert langs == {"zh", "en"}
    assert sum(1 for i in ITEMS if i.label is None) >= 30  # unparseable answers are labelled too
    assert all(i.label is None or i.label in i.options for i in ITEMS)


def test_it_agrees_with_the_hand_labels_on_at_least_99_percent():
    wrong = [(i.line, i.answer, i.label, extract_choice(i.answer, i.options, i.question).key) for i in ITEMS]
    wrong = [w for w in wrong if w[2] != w[3]]
    assert len(wrong) <= len(ITEMS) // 100, wrong


@pytest.mark.parametrize(
    "answer, key, rule",
    [
        ("答案是B", "B", "explicit"),
        ("正确答案：（C）", "C", "explicit"),
        ("排除A、C、D，答案为B。", "B", "explicit"),
        ("不选A，选D", "D", "explicit"),
        ("A或B", None, "list"),
        ("【B】", "B", "letter"),
        ("B、前庭大腺", "B", "leading"),
        ("我觉得是C", "C", "mention"),
        ("卵巢", "A", "text"),
        ("这个问题无法回答", None, "none"),
        ("", None, "none"),
    ],
)
def test_chinese_rules(answer, key, rule):
    choice = extract_choice(answer, OPTS, "女性生殖腺是")
    assert (choice.key, choice.rule) == (key, rule)


@pytest.mark.parametrize(
    "answer, key",
    [
        ("The answer is C.", "C"),
        ("answer is b", "B"),
        ("The answer is a deficiency of vitamin C", "C"),  # "a" is the article, the text decides
        ("A patient with scurvy lacks vitamin C.", "C"),
        ("It is not vitamin A (A) but vitamin C (C).", "C"),
        ("B or C", None),
        ("Vitamin B12", "B"),  # the whole word: not "Vitamin B"
        ("vitamin causes", None),  # words are not squeezed together into "vitaminc"
        ("A. Vitamin A", "A"),
    ],
)
def test_english_rules(answer, key):
    assert extract_choice(answer, EN, "Deficiency of which vitamin causes scurvy?").key == key


def test_a_text_inside_a_longer_option_does_not_count():
    options = {"A": "肝", "B": "脉", "C": "冲脉", "D": "心"}
    assert extract_choice("冲脉", options).key == "C"
    assert extract_choice("是脉", options).key == "B"


def test_short_texts_match_case_sensitively():
    options = {"A": "GG", "B": "gg", "C": "Gg", "D": "无法确定"}
    assert extract_choice("基因型为Gg", options).key == "C"
    assert extract_choice("GG或Gg", options).key is None


def test_options_must_be_letters():
    with pytest.raises(ValueError):
        extract_choice("1", {"1": "a", "2": "b"})
