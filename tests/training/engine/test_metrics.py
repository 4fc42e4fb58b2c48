"""BLEU-4 / ROUGE: hand-checked values, equality with LLaMA-Factory's libraries, the evaluate module, the reader.

The reference implementation below is LLaMA-Factory's ``compute_metrics`` (scripts/eval_bleu_rouge.py)
line for line: jieba + rouge-chinese + nltk, the libraries whose numbers we must reproduce.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import random
from itertools import islice

import jieba
import pytest
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
from rouge_chinese import Rouge
from rouge_score.rouge_scorer import RougeScorer

from training.engine import metrics
from training.engine.metrics import (
    JiebaSegmenter,
    bleu4_chars,
    bleu4_chars_many,
    jieba_tokens,
    lcs_length,
    read_predictions,
    rouge_chinese_words,
    score_pairs,
    standard_tokens,
)

jieba.setLogLevel(logging.CRITICAL)


def llamafactory_raw(predict: str, label: str) -> dict[str, float]:
    """LLaMA-Factory scripts/eval_bleu_rouge.py compute_metrics, before ×100 and rounding."""
    hypothesis = list(jieba.cut(predict))
    reference = list(jieba.cut(label))
    bleu_score = sentence_bleu([list(label)], list(predict), smoothing_function=SmoothingFunction().method3)
    if len(" ".join(hypothesis).split()) == 0 or len(" ".join(reference).split()) == 0:
        result = {"rouge-1": {"f": 0.0}, "rouge-2": {"f": 0.0}, "rouge-l": {"f": 0.0}}
    else:
        result = Rouge().get_scores(" ".join(hypothesis), " ".join(reference))[0]
    return {"bleu-4": bleu_score, **{k: v["f"] for k, v in result.items()}}


def llamafactory_reference(predict: str, label: str) -> dict[str, float]:
    """LLaMA-Factory scripts/eval_bleu_rouge.py compute_metrics: each value ×100, rounded to 4 decimals."""
    return {k: round(v * 100, 4) for k, v in llamafactory_raw(predict, label).items()}


def one(predict: str, label: str, mode: str = "llamafactory") -> dict[str, float]:
    return score_pairs([predict], [label], mode=mode)["per_sample"][0]


# --- hand-checked values ----------------------------------------------------------------------


def test_an_identical_short_answer_gets_full_rouge_but_a_smoothed_bleu():
    # jieba: 我 | 头痛 on both sides. ROUGE F = 2·(1·1)/(1 + 1 + 1e-8) = 0.999999995 -> 100.0.
    # BLEU over characters 我 头 痛: p1 = 3/3, p2 = 2/2, p3 = 1/1, and no 4-gram in 3 characters:
    # p4 = 0/1 -> method3 gives 1/(2^1·1) = 1/2. c = r = 3, so bp = exp(1 - 3/3) = 1.
    # BLEU = (1·1·1·1/2)^(1/4) = 0.840896… -> 84.0896.
    assert one("我头痛", "我头痛") == {"bleu-4": 84.0896, "rouge-1": 100.0, "rouge-2": 100.0, "rouge-l": 100.0}
    assert one("我头痛", "我头痛") == llamafactory_reference("我头痛", "我头痛")


def test_rouge_1_and_2_count_distinct_ngrams_while_standard_mode_counts_repetitions():
    # Words (spaces vanish): prediction a a a b, reference a b.
    # llamafactory, sets: unigrams {a, b} vs {a, b}: P = R = 1 -> 100.0;
    #   bigrams {aa, ab} vs {ab}: P = 1/2, R = 1 -> 2·(0.5/(1.5 + 1e-8)) -> 66.6667;
    #   LCS(a a a b, a b) = 2: P = 2/4, R = 2/2 -> 66.6667.
    # BLEU on the 7 characters "a a a b" against "a b": p1 = 3/7 (a, space, b clipped to 1 each),
    #   p2 = 2/6 ("a " clipped to 1, " b"), p3 = 1/5 ("a b"), p4 = 0/4 -> 1/(2·4) = 1/8; c > r so bp = 1.
    #   BLEU = (3/7 · 1/3 · 1/5 · 1/8)^(1/4) = (1/280)^(1/4) = 0.244461… -> 24.4462.
    assert one("a a a b", "a b") == {"bleu-4": 24.4462, "rouge-1": 100.0, "rouge-2": 66.6667, "rouge-l": 66.6667}
    assert one("a a a b", "a b") == llamafactory_reference("a a a b", "a b")
    # standard, counts: unigrams a:3 b:1 vs a:1 b:1 -> overlap 2, P = 2/4, R = 2/2 -> F = 2/3;
    #   bigrams aa:2 ab:1 vs ab:1 -> P = 1/3, R = 1 -> F = 0.5; ROUGE-L as above. BLEU is the same.
    assert one("a a a b", "a b", "standard") == {"bleu-4": 24.4462, "rouge-1": 66.6667, "rouge-2": 50.0, "rouge-l": 66.6667}


def test_a_newline_after_a_sentence_end_becomes_an_empty_word_as_in_rouge_chinese():
    # jieba: 你好 | 。 | \n | 再见. Joined with spaces and cut after "。" by rouge-chinese, the piece
    # between the two newlines is whitespace only and becomes the word "": 你好 。 "" 再见.
    # The reference 你好。再见 gives 你好 。 再见.
    assert rouge_chinese_words(jieba_tokens("你好。\n再见")) == ["你好", "。", "", "再见"]
    assert rouge_chinese_words(jieba_tokens("你好。再见")) == ["你好", "。", "再见"]
    # ROUGE-1: 3 of 4 distinct words match: P = 3/4, R = 1 -> 2·(0.75/(1.75 + 1e-8)) -> 85.7143.
    # ROUGE-2: {你好。, 。"", ""再见} vs {你好。, 。再见}: P = 1/3, R = 1/2 -> 0.4 -> 40.0.
    # ROUGE-L: LCS 3, P = 3/4, R = 1 -> 85.7143.
    # BLEU (6 characters vs 5): p1 = 5/6, p2 = 3/5, p3 = 1/4, p4 = 0/3 -> 1/6; bp = 1.
    #   (5/6 · 3/5 · 1/4 · 1/6)^(1/4) = (1/48)^(1/4) = 0.379918 -> 37.9918.
    expected = {"bleu-4": 37.9918, "rouge-1": 85.7143, "rouge-2": 40.0, "rouge-l": 85.7143}
    assert one("你好。\n再见", "你好。再见") == expected == llamafactory_reference("你好。\n再见", "你好。再见")


@pytest.mark.parametrize(
    ("predict", "label", "bleu"),
    [
        ("", "你好", 0.0),
        ("你好", "", 0.0),
        ("", "", 0.0),
        ("   \n", "你好", 0.0),
        ("你好", "\n\t ", 0.0),
        # one matching character, no 2-, 3-, 4-grams: (1 · 1/2 · 1/4 · 1/8)^(1/4) = 64^(-1/4) -> 35.3553
        (" ", " ", 35.3553),
    ],
)
def test_empty_or_whitespace_only_texts_get_zero_rouge(predict, label, bleu):
    scores = one(predict, label)
    assert scores == {"bleu-4": bleu, "rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0}
    assert scores == llamafactory_reference(predict, label)


def test_mixed_chinese_and_english_is_case_sensitive_only_in_llamafactory_mode():
    # llamafactory words: Hello World , 你好 vs hello world 你好 ！ -> one shared word (你好) of 4 each:
    #   ROUGE-1 = ROUGE-L = 2·(1/16)/(1/2 + 1e-8) -> 25.0; no shared bigram -> 0.
    lf = one("Hello World, 你好", "hello world 你好！")
    assert lf == llamafactory_reference("Hello World, 你好", "hello world 你好！")
    assert (lf["rouge-1"], lf["rouge-2"], lf["rouge-l"]) == (25.0, 0.0, 25.0)
    # standard: lower-cased, punctuation dropped -> hello world 你好 on both sides.
    assert standard_tokens("Hello World, 你好") == standard_tokens("hello world 你好！") == ["hello", "world", "你好"]
    st = one("Hello World, 你好", "hello world 你好！", "standard")
    assert (st["rouge-1"], st["rouge-2"], st["rouge-l"]) == (100.0, 100.0, 100.0)
    assert st["bleu-4"] == lf["bleu-4"]  # BLEU-4 is the same in both modes


LONG = (
    "高血压患者首先要注意控制食盐摄入量，每天不超过六克，注意不要吃太多的咸菜和腌制食品。"
    "其次要戒烟限酒，保持心情舒畅，避免情绪激动和过度劳累。\n"
    "如果血压控制不理想，建议在医生指导下口服降压药物，例如氨氯地平5mg每日一次，并定期监测血压。"
)


def test_a_long_identical_answer_scores_100_and_a_prefix_pays_only_the_brevity_penalty():
    text = LONG * 8  # 1,000+ characters, several hundred words
    assert one(text, text) == {"bleu-4": 100.0, "rouge-1": 100.0, "rouge-2": 100.0, "rouge-l": 100.0}
    # Every n-gram of a prefix occurs in the full text at least as often, so p1..p4 = 1 and
    # BLEU = bp = exp(1 - r/c) with c = len(prefix), r = len(text).
    prefix = text[:300]
    assert one(prefix, text)["bleu-4"] == round(math.exp(1 - len(text) / 300) * 100, 4)
    assert one(prefix, text) == llamafactory_reference(prefix, text)


# --- building blocks against naive versions ---------------------------------------------------


def naive_lcs(a, b) -> int:
    row = [0] * (len(b) + 1)
    for x in a:
        prev = 0
        for j, y in enumerate(b, start=1):
            cur = row[j]
            row[j] = prev + 1 if x == y else max(row[j], row[j - 1])
            prev = cur
    return row[-1]


def test_the_bit_parallel_lcs_equals_the_dynamic_programme():
    rng = random.Random(7)
    assert lcs_length([], ["a"]) == lcs_length(["a"], []) == 0
    for _ in range(300):
        a = [rng.choice("abcde") for _ in range(rng.randint(0, 90))]
        b = [rng.choice("abcdef") for _ in range(rng.randint(0, 90))]
        assert lcs_length(a, b) == naive_lcs(a, b)


TRICKY = [
    "患者男，45岁，血压160/100mmHg，服用3.5mg氨氯地平。",
    "COVID-19 疫苗 接种后\r\n发热  怎么办？？\t请问",
    "他说：“我头痛。”然后……医生说‘多喝水’！",
    "糖尿病人能吃榴莲吗😊 ＡＢＣ１２３ full-width",
    "艾司奥美拉唑镁肠溶片联合枸橼酸铋钾治疗幽门螺杆菌",  # unknown words go through jieba's HMM
    # equal route scores: 急急|急 vs 急|急急, 变硬|变 vs 变|硬变 — jieba keeps the longer first word
    "急急急",
    "变硬变",
    "细胞组织细胞增生症的治疗",
    "a\u3000b\u00a0c\x0bd\u2028e",
    "",
    " ",
]


def test_the_segmenter_returns_exactly_jieba_cut():
    for text in TRICKY:
        assert jieba_tokens(text) == list(jieba.cut(text)), text
    cold = JiebaSegmenter(max_blocks=0)
    assert cold.cut_many(TRICKY) == [list(jieba.cut(t)) for t in TRICKY]


def test_the_segmenter_follows_changes_to_jiebas_dictionary(monkeypatch):
    jieba.dt.check_initialized()
    monkeypatch.setattr(jieba.dt, "FREQ", dict(jieba.dt.FREQ))  # restored after the test
    monkeypatch.setattr(jieba.dt, "total", jieba.dt.total)
    text = "服用瓜蒌薤白半夏汤三天"
    assert jieba_tokens(text) == list(jieba.cut(text))
    jieba.add_word("瓜蒌薤白半夏汤", freq=100000)
    assert "瓜蒌薤白半夏汤" in list(jieba.cut(text))
    assert jieba_tokens(text) == list(jieba.cut(text))


def test_batched_bleu_equals_pairwise_bleu_and_nltk(monkeypatch):
    rng = random.Random(3)
    pool = "头痛发热咳嗽的了是。，！ab1 \n"
    preds = ["".join(rng.choice(pool) for _ in range(rng.randint(0, 40))) for _ in range(60)]
    refs = ["".join(rng.choice(pool) for _ in range(rng.randint(0, 40))) for _ in range(60)]
    expected = [sentence_bleu([list(r)], list(p), smoothing_function=SmoothingFunction().method3) for p, r in zip(preds, refs)]
    assert bleu4_chars_many(preds, refs) == expected  # bit for bit
    assert [bleu4_chars(p, r) for p, r in zip(preds, refs)] == expected
    monkeypatch.setattr(metrics, "_BLEU_CHUNK", 7)  # several batches, some with empty texts only
    assert bleu4_chars_many(preds, refs) == expected


# --- randomized equality with the reference libraries -----------------------------------------

_PIECES = ["头痛", "发热", "咳嗽", "高血压", "建议", "多喝水", "注意休息", "医生", "的", "了", "吗", "是", "不"]
_PUNCT = ["。", "！", "？", "?", "，", "……", "......", "”", "’", "“", "\n", "\n\n", " ", "  ", "\t", "\r\n"]
_LATIN = ["CT", "mg", "3.5", "COVID-19", "Hello", "ok", "B超"]


def synthetic_text(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(0, 40)):
        roll = rng.random()
        parts.append(rng.choice(_PIECES if roll < 0.6 else _PUNCT if roll < 0.9 else _LATIN))
    return "".join(parts)


def real_answers(shared: object) -> list[str]:
    if shared is None:
        return []
    path = shared / "toyhom_chinese_medical_dialogue" / "样例_内科5000-6000.csv"
    with path.open(encoding="gb18030", newline="") as fh:
        answers = [row["answer"] for row in islice(csv.DictReader(fh), 400)]
    with (shared / "medicalgpt_medical_sft_1k" / "medical_sft_1K_format.jsonl").open(encoding="utf-8") as fh:
        answers += [json.loads(line)["conversations"][1]["value"] for line in islice(fh, 100)]
    return answers


@pytest.fixture
def sample_pairs(request) -> list[tuple[str, str]]:
    try:
        shared = request.getfixturevalue("shared_datasets")
    except pytest.skip.Exception:
        shared = None
    rng = random.Random(2024)
    pairs = [(synthetic_text(rng), synthetic_text(rng)) for _ in range(80)]
    answers = real_answers(shared)
    for _ in range(120 if answers else 0):
        label = rng.choice(answers)
        kind = rng.random()
        if kind < 0.3:
            predict = rng.choice(answers)  # another doctor's answer
        elif kind < 0.7:
            cut = rng.randint(0, len(label))
            predict = label[:cut] + rng.choice(answers)[cut:]  # half the reference, half another answer
        else:
            predict = label.replace("。", "。\n", 2) + synthetic_text(rng)  # edited
        pairs.append((predict, label))
    return pairs


def test_llamafactory_mode_equals_jieba_rouge_chinese_and_nltk_on_every_sample(sample_pairs):
    predictions = [p for p, _ in sample_pairs]
    labels = [label for _, label in sample_pairs]
    raw = [llamafactory_raw(p, label) for p, label in sample_pairs]
    # bit for bit before rounding ...
    assert bleu4_chars_many(predictions, labels) == [r["bleu-4"] for r in raw]
    rouge = [metrics.rouge_llamafactory(jieba_tokens(p), jieba_tokens(label)) for p, label in sample_pairs]
    assert rouge == [(r["rouge-1"], r["rouge-2"], r["rouge-l"]) for r in raw]
    # ... and so after
    result = score_pairs(predictions, labels)
    expected = [{k: round(v * 100, 4) for k, v in r.items()} for r in raw]
    assert result["per_sample"] == expected
    assert result["mode"] == "llamafactory"
    summary = result["summary"]
    assert summary["count"] == len(sample_pairs)
    for key in metrics.METRIC_KEYS:
        assert summary[key] == round(sum(e[key] for e in expected) / len(expected), 4)


def test_standard_mode_equals_rouge_score_with_the_chinese_tokenizer(sample_pairs):
    scorer = RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=metrics.StandardTokenizer())
    result = score_pairs([p for p, _ in sample_pairs], [label for _, label in sample_pairs], mode="standard")
    assert result["mode"] == "standard"
    for (predict, label), got in zip(sample_pairs, result["per_sample"]):
        want = scorer.score(label, predict)
        assert got["rouge-1"] == round(want["rouge1"].fmeasure * 100, 4)
        assert got["rouge-2"] == round(want["rouge2"].fmeasure * 100, 4)
        assert got["rouge-l"] == round(want["rougeL"].fmeasure * 100, 4)
        assert got["bleu-4"] == llamafactory_reference(predict, label)["bleu-4"]


def test_score_pairs_checks_its_arguments():
    with pytest.raises(ValueError, match="Unknown metric mode 'rouge'"):
        score_pairs(["a"], ["a"], mode="rouge")
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        score_pairs(["a", "b"], ["a"])
    with pytest.raises(TypeError, match="reference 0 is NoneType"):
        score_pairs(["a"], [None])
    assert score_pairs([], [])["summary"] == {"bleu-4": 0.0, "rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0, "count": 0}


# --- the evaluate module, offline ---------------------------------------------------------------


def test_the_local_evaluate_module_loads_offline_and_gives_the_same_numbers(monkeypatch):
    import evaluate

    from training.engine.metric_modules import MEDPORTAL_BLEU_ROUGE

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    predictions = ["多喝水，注意休息。", "a a a b", ""]
    references = ["注意休息，多喝水。", "a b", "你好"]
    metric = evaluate.load(MEDPORTAL_BLEU_ROUGE)
    got = metric.compute(predictions=predictions, references=references)
    assert {k: got[k] for k in (*metrics.METRIC_KEYS, "count")} == score_pairs(predictions, references)["summary"]
    assert got["mode"] == "llamafactory"

    standard = evaluate.load(MEDPORTAL_BLEU_ROUGE, "standard").compute(predictions=predictions, references=references, per_sample=True)
    want = score_pairs(predictions, references, mode="standard")
    assert standard["mode"] == "standard" and standard["per_sample"] == want["per_sample"]
    assert standard["rouge-1"] == want["summary"]["rouge-1"] != got["rouge-1"]
    with pytest.raises(ValueError, match="Unknown mode"):
        metric.compute(predictions=predictions, references=references, mode="bleu")


# --- read_predictions -------------------------------------------------------------------------


def test_read_predictions_keeps_good_lines_and_numbers_every_problem(tmp_path):
    path = tmp_path / "generated_predictions.jsonl"
    lines = [
        json.dumps({"prompt": "头痛怎么办", "predict": "多喝水。", "label": "注意休息。"}, ensure_ascii=False),
        "",
        "{not json",
        json.dumps({"predict": "x"}),
        json.dumps(["predict", "label"]),
        json.dumps({"predict": None, "label": 3}),
        json.dumps({"predict": "", "label": "空的预测也计分"}, ensure_ascii=False),
    ]
    path.write_bytes(("\ufeff" + "\r\n".join(lines) + "\n").encode("utf-8") + b'{"predict": "\xff", "label": "a"}\n')
    pairs, problems = read_predictions(path)
    assert [(p.line, p.predict, p.label, p.prompt) for p in pairs] == [
        (1, "多喝水。", "注意休息。", "头痛怎么办"),
        (7, "", "空的预测也计分", None),
    ]
    assert [str(p) for p in problems] == [
        "line 2: empty line",
        "line 3: not valid JSON (Expecting property name enclosed in double quotes at column 2)",
        "line 4: missing key 'label'",
        "line 5: a JSON list, not an object with 'predict' and 'label'",
        "line 6: 'predict' is null, not a string",
        "line 6: 'label' is a number, not a string",
        "line 8: not valid UTF-8 (byte 14 of the line)",
    ]


def test_read_predictions_reads_a_gb18030_file_and_says_so(tmp_path):
    path = tmp_path / "p.jsonl"
    records = [{"predict": "头痛", "label": "头痛"}, {"predict": "注意休息，多喝水。", "label": "多喝水。"}]
    # "头痛" in GB18030 (CD B7 CD B4) happens to be valid UTF-8 too ("ͷʹ"): the file decides, not the line.
    path.write_bytes("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("gb18030"))
    pairs, problems = read_predictions(path)
    assert [(p.predict, p.label) for p in pairs] == [("头痛", "头痛"), ("注意休息，多喝水。", "多喝水。")]
    assert [str(p) for p in problems] == ["The file is not UTF-8; it was read as GB18030."]
