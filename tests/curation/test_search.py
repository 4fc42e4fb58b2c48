"""curation.lib.search: the CJK-bigram search document and its bulk version."""

from __future__ import annotations

import random

import pytest

from curation.lib import fingerprint
from curation.lib.search import index_text, index_texts, is_cjk_bigram, query_tokens

CASES = [
    (("高血压",), "高血 血压"),
    (("头 痛",), "头 痛"),  # lone characters are tokens of their own
    (("痛",), "痛"),
    (("Hypertension, CT and MRI",), "hypertension ct and mri"),
    (("ＣＴ检查 １２３",), "ct 123 检查"),  # full-width letters and digits fold to ASCII
    (("\uf900\uf901",), "豈更"),  # compatibility ideographs become the unified ones ...
    (("\ufa0e\ufa0f\ufa11",), "\ufa0e\ufa0f \ufa0f\ufa11"),  # ... except the 12 that are unified ideographs
    (("Straße ÉCOLE",), "straße école"),
    (("a_b c-d",), "a b c d"),
    (("血压高血压",), "血压 压高 高血"),  # each token once, in order of first appearance
    (("高", "血"), "高 血"),  # no bigram across two fields
    (("",), ""),
    (("", "", ""), ""),
    (
        ("高血压患者做CT检查，3天后复查。", "", "血压150/100mmHg"),
        "ct 3 150 100mmhg 高血 血压 压患 患者 者做 检查 天后 后复 复查",  # words first, then bigrams
    ),
    (("x\ud800y 高血",), "x y 高血"),  # a lone surrogate (from a JSON "\ud800" escape) is no token
    (("😀 emoji 高血压😀",), "emoji 高血 血压"),
]


@pytest.mark.parametrize("texts, expected", CASES)
def test_index_text_writes_the_documented_tokens(texts, expected):
    assert index_text(*texts) == expected


def test_index_texts_gives_index_text_for_every_case():
    records = [texts for texts, _ in CASES]
    assert index_texts(records) == [expected for _, expected in CASES]
    # A record's document never depends on its neighbours.
    assert index_texts(records[::-1]) == [expected for _, expected in CASES][::-1]
    assert index_texts([]) == []


def test_index_texts_is_the_same_in_small_batches(monkeypatch):
    rng = random.Random(3)
    alphabet = "高血压头痛发烧咳嗽可以吃药吗豈 \nabcＸＹ12_😀，。"
    records = [tuple("".join(rng.choices(alphabet, k=rng.randint(0, 80))) for _ in range(3)) for _ in range(300)]
    expected = [index_text(*texts) for texts in records]
    monkeypatch.setattr(fingerprint, "BATCH_CHARS", 40)  # most records fill a batch of their own
    assert index_texts(records) == expected


def test_index_texts_matches_index_text_on_the_toyhom_file(shared_datasets):
    from curation.importers import ParsedRecord, open_source

    path = shared_datasets / "toyhom_chinese_medical_dialogue" / "样例_内科5000-6000.csv"
    records = [(r.instruction, r.input, r.output) for r in open_source(path).records() if isinstance(r, ParsedRecord)]
    assert len(records) == 7644
    assert index_texts(records) == [index_text(*texts) for texts in records]


def test_query_tokens_are_analysed_like_the_document():
    document = set(index_text("我有高血压，做了 CT。").split())
    assert set(query_tokens("血压")) <= document
    assert set(query_tokens("ct 高血压")) <= document
    assert query_tokens("血压") == ["血压"]
    assert len(query_tokens(" ".join(f"w{i}" for i in range(50)))) == 32


def test_is_cjk_bigram():
    assert is_cjk_bigram("血压")
    assert not is_cjk_bigram("ct")
    assert not is_cjk_bigram("血")
