"""curation.lib.fingerprint: normalization, exact hashes, SimHash and the near-duplicate index."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from curation.lib.fingerprint import (
    MIN_NEAR_DUP_CHARS,
    NearDuplicateIndex,
    content_hash,
    hamming,
    near_duplicate_distance,
    near_duplicate_text,
    normalize,
    record_fingerprints,
    record_fingerprints_many,
    record_simhash,
    simhash64,
)

MASK = (1 << 64) - 1


def reference_simhash(text: str) -> int:
    """The documented algorithm in plain Python: distinct character 3-grams of the normalized
    text, key = three 21-bit code points, SplitMix64 finalizer, majority vote per bit."""
    norm = normalize(text)
    if not norm:
        return 0
    cps = [ord(c) for c in norm] + [0] * max(0, 3 - len(norm))
    keys = {(cps[i] << 42) | (cps[i + 1] << 21) | cps[i + 2] for i in range(len(cps) - 2)}
    hashes = []
    for z in keys:
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        hashes.append(z ^ (z >> 31))
    value = 0
    for bit in range(64):
        if 2 * sum((h >> bit) & 1 for h in hashes) > len(hashes):
            value |= 1 << bit
    return value - (1 << 64) if value >> 63 else value


LONG_ZH = (
    "我有高血压这两天女婿来的时候给我拿了些党参泡水喝，您好高血压可以吃党参吗？"
    "高血压病人可以口服党参的。党参有降血脂，降血压的作用，可以彻底消除血液中的垃圾，"
    "从而对冠心病以及心血管疾病的患者都有一定的稳定预防工作作用。另外党参除了益气养血，"
    "降低中枢神经作用，调整消化系统功能，健脾补肺的功能。感谢您的进行咨询，期望我的解释对你有所帮助。"
    "高血压患者首先要注意控制食盐摄入量，每天不超过六克，注意不要吃太油腻的食物，"
    "多吃新鲜的绿色蔬菜水果，有助于控制血压。"
)


# --------------------------------------------------------------------------- normalize


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("高血压能吃党参吗？", "高血压能吃党参吗"),
        ("  Hello,\u3000 WORLD!!\n\tｈｉ ", "hello world hi"),
        ("【注意】“少盐”、多运动……", "注意少盐多运动"),
        ("ＡＢＣ１２３", "abc123"),
        ("Straße", "strasse"),
        ("e.g. don't", "eg dont"),
        ("", ""),
        ("？！。", ""),
        ("可以 适量，多 喝水", "可以适量多喝水"),  # spaces between Chinese characters are noise
        ("血压 150/100 mmHg", "血压 150100 mmhg"),
    ],
)
def test_normalize(raw, expected):
    assert normalize(raw) == expected


def test_normalize_is_idempotent():
    for text in ("高血压能吃党参吗？", "Ｔｈｅ  Quick， brown", LONG_ZH):
        assert normalize(normalize(text)) == normalize(text)


# --------------------------------------------------------------------------- content_hash


def test_content_hash_ignores_punctuation_case_and_spacing():
    a = content_hash("高血压能吃党参吗？", "", "可以，适量。")
    b = content_hash(" 高血压能吃党参吗 ", "", "可以 适量")
    assert a == b
    assert a == hashlib.sha256("高血压能吃党参吗\x1f\x1f可以适量".encode()).hexdigest()
    assert len(a) == 64 and int(a, 16) >= 0


def test_content_hash_separates_fields_and_content():
    assert content_hash("ab", "", "c") != content_hash("a", "b", "c")
    assert content_hash("q", "", "a") != content_hash("a", "", "q")
    assert content_hash("高血压", "", "可以") != content_hash("低血压", "", "可以")


# --------------------------------------------------------------------------- simhash64


@pytest.mark.parametrize("text", ["", "a", "ab", "abc", "高血压", LONG_ZH, "The quick brown fox jumps over the lazy dog."])
def test_simhash_matches_the_documented_algorithm(text):
    assert simhash64(text) == reference_simhash(text)


def test_simhash_is_a_signed_int64_and_deterministic():
    texts = [f"问题{i}：第{i * 7}号病例的主诉是{i * 13}天的头痛" for i in range(200)]
    values = [simhash64(t) for t in texts]
    assert all(-(1 << 63) <= v < (1 << 63) for v in values)
    assert any(v < 0 for v in values) and any(v > 0 for v in values)  # the top bit is used
    assert values == [simhash64(t) for t in texts]
    assert simhash64("") == 0


def test_simhash_is_stable_across_processes():
    code = "from curation.lib.fingerprint import simhash64; print(simhash64(%r))" % LONG_ZH
    root = Path(__file__).resolve().parents[2]
    outputs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(root)}
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
        outputs.add(int(result.stdout))
    assert outputs == {simhash64(LONG_ZH)}


def test_simhash_ignores_punctuation_and_case():
    assert simhash64("高血压，能吃党参吗？") == simhash64("高血压能吃党参吗")
    assert simhash64("Hello World") == simhash64("hello, world!")


def test_near_duplicates_are_close_and_unrelated_texts_are_far():
    assert hamming(simhash64(LONG_ZH), simhash64(LONG_ZH.replace("另外", "此外"))) <= 3
    assert hamming(simhash64(LONG_ZH), simhash64(LONG_ZH.replace("感谢您的进行咨询，", ""))) <= 3
    unrelated = "患者男，45岁，反复上腹痛三年，进食后加重，胃镜提示十二指肠球部溃疡，幽门螺杆菌阳性，如何治疗？"
    assert hamming(simhash64(LONG_ZH), simhash64(unrelated)) > 10


def test_hamming():
    assert hamming(0, 0) == 0
    assert hamming(0, 0b1011) == 3
    assert hamming(-1, 0) == 64  # signed -1 is all 64 bits set
    assert hamming(-1, (1 << 64) - 1) == 0
    assert hamming(1 << 63, -(1 << 63)) == 0  # the same bits, unsigned and signed


# --------------------------------------------------------------------------- record helpers


def test_record_simhash_skips_short_texts():
    assert MIN_NEAR_DUP_CHARS == 8
    assert record_simhash("头痛？", "", "休息。") is None  # "头痛休息" has 5 normalized chars
    assert record_simhash("头痛怎么办", "", "多休息一下") == simhash64("头痛怎么办多休息一下")
    assert near_duplicate_text("头痛怎么办？", "", "多休息。") == "头痛怎么办多休息"


def test_record_fingerprints_match_the_separate_functions():
    digest, fingerprint = record_fingerprints("高血压能吃党参吗？", "", LONG_ZH)
    assert digest == content_hash("高血压能吃党参吗？", "", LONG_ZH)
    assert fingerprint == record_simhash("高血压能吃党参吗？", "", LONG_ZH)
    assert near_duplicate_text("Q?", "", "A!") == "q a"
    assert record_fingerprints("q", "", "a") == (content_hash("q", "", "a"), None)


# --------------------------------------------------------------------------- NearDuplicateIndex


def flip(value: int, bits: list[int]) -> int:
    for bit in bits:
        value ^= 1 << bit
    return value


def test_index_finds_within_three_bits_across_bands():
    rng = random.Random(7)
    base = rng.getrandbits(64)
    index = NearDuplicateIndex()
    index.add("base", base - (1 << 64) if base >> 63 else base)  # stored signed, like the database
    # Three flipped bits in three different bands still leave one band intact.
    for bits in ([0], [5, 20], [3, 19, 40], [15, 16, 63], [48, 49, 50]):
        assert index.query(flip(base, bits)) == "base", bits
    assert index.query(flip(base, [1, 17, 33, 49])) is None  # 4 bits: one per band
    assert index.query(flip(base, [1, 2, 3, 4])) is None  # 4 bits in one band
    assert len(index) == 1


def test_index_returns_the_closest_and_earliest():
    index = NearDuplicateIndex()
    assert index.query(123) is None
    target = 0xF0F0F0F0F0F0F0F0
    index.add("far", flip(target, [1, 2, 3]))
    index.add("near", flip(target, [9]))
    index.add("near-too", flip(target, [30]))
    assert index.query(target) == "near"
    index.add("exact", target)
    assert index.query(target) == "exact"


def test_index_random_property():
    rng = random.Random(11)
    index = NearDuplicateIndex(max_distance=3)
    stored = {f"k{i}": rng.getrandbits(64) for i in range(2000)}
    for key, value in stored.items():
        index.add(key, value)
    for key, value in list(stored.items())[:300]:
        bits = rng.sample(range(64), rng.randint(0, 3))
        assert index.query(flip(value, bits)) == key
    # Random queries are essentially never within 3 bits of 2,000 random fingerprints.
    misses = sum(index.query(rng.getrandbits(64)) is None for _ in range(300))
    assert misses == 300


def test_index_other_distances():
    exact = NearDuplicateIndex(max_distance=0)
    exact.add("a", 42)
    assert exact.query(42) == "a" and exact.query(43) is None
    wide = NearDuplicateIndex(max_distance=5)  # 6 bands
    wide.add("a", 0)
    assert wide.query(flip(0, [0, 11, 22, 33, 44])) == "a"
    assert wide.query(flip(0, [0, 11, 22, 33, 44, 55])) is None
    with pytest.raises(ValueError):
        NearDuplicateIndex(max_distance=64)


def test_query_with_a_per_text_threshold():
    index = NearDuplicateIndex(max_distance=4)
    index.add("a", 0)
    assert index.query(flip(0, [1, 2, 3, 4])) == "a"
    assert index.query(flip(0, [1, 2, 3, 4]), max_distance=3) is None
    assert index.query_with_distance(flip(0, [7, 8])) == ("a", 2)
    with pytest.raises(ValueError):
        index.query(0, max_distance=5)  # the bands cannot guarantee more than the index's distance


def test_near_duplicate_distance_depends_on_the_script():
    assert near_duplicate_distance(normalize("高血压能吃党参吗？")) == 4
    assert near_duplicate_distance("what are the symptoms of abcd syndrome") == 3
    assert near_duplicate_distance("血压 150100 mmhg") == 3  # mostly digits and Latin letters
    assert near_duplicate_distance("") == 3


def test_bit_counts_do_not_overflow_on_huge_texts():
    import numpy as np

    from curation.lib import fingerprint

    counts = fingerprint._bit_counts(np.full(70000, (1 << 64) - 1, dtype=np.uint64))
    assert counts.tolist() == [70000] * 64
    counts = fingerprint._bit_counts(np.array([1, 3], dtype=np.uint64))
    assert int(counts.sum()) == 3


# --------------------------------------------------------------------------- batches


def toyhom_rows(shared_datasets) -> list[tuple[str, str, str]]:
    from curation.importers import ParsedRecord, open_source

    path = shared_datasets / "toyhom_chinese_medical_dialogue" / "样例_内科5000-6000.csv"
    return [(r.instruction, r.input, r.output) for r in open_source(path).records() if isinstance(r, ParsedRecord)]


EDGE_ROWS = [
    ("", "", ""),
    ("？！", "", "。。"),  # nothing left after normalizing
    ("头痛？", "", "休息。"),  # 5 normalized characters: too short for a SimHash
    ("头痛怎么办", "", "多休"),  # "头痛怎么办多休": 7 characters, one too few
    ("头痛怎么办", "", "多休息"),  # 8 characters: the shortest with a SimHash
    ("abcdefg", "", "h"),  # Latin: "abcdefg h"
    ("What is hypertension?", "", "High blood pressure: 140/90 mmHg or more."),
    ("高血压 CT 检查", "ＭＲＩ", "血压 150/100 mmHg，可以吃党参吗？Yes."),
    ("哈哈哈哈哈哈哈哈哈哈哈哈", "", "哈哈哈哈哈哈"),  # one distinct 3-gram, repeated
    ("ab" * 400, "", "ba" * 300),  # two distinct 3-grams, hundreds of times
    ("😀 emoji 😀😀 and \U0010fffd plane-16 code points", "", "Ωmega ΣΣΣ ǅ"),  # 21-bit code points
    (LONG_ZH, "", LONG_ZH[::-1]),  # more than 255 distinct 3-grams per text
    (" ".join(f"word{i}" for i in range(3000)), "", "end"),  # tens of thousands of 3-grams
]


def test_record_fingerprints_many_gives_record_fingerprints_for_every_edge_case():
    expected = [record_fingerprints(*row) for row in EDGE_ROWS]
    assert record_fingerprints_many(EDGE_ROWS) == expected
    assert [fp for _, fp in expected[:4]] == [None] * 4
    assert all(fp is not None for _, fp in expected[4:])
    # Alone, in reverse order and one by one: a row's values never depend on its neighbours.
    assert record_fingerprints_many(EDGE_ROWS[::-1]) == expected[::-1]
    assert [record_fingerprints_many([row])[0] for row in EDGE_ROWS] == expected
    assert record_fingerprints_many([]) == []


def test_record_fingerprints_many_matches_on_the_toyhom_file(shared_datasets):
    rows = toyhom_rows(shared_datasets)
    assert len(rows) == 7644
    assert record_fingerprints_many(rows) == [record_fingerprints(*row) for row in rows]


def test_record_fingerprints_many_is_the_same_in_small_batches(monkeypatch):
    from curation.lib import fingerprint

    rng = random.Random(5)
    alphabet = "高血压头痛发烧咳嗽可以吃药吗 abcxyz0123😀"
    rows = [("".join(rng.choices(alphabet, k=rng.randint(0, 60))), "", "".join(rng.choices(alphabet, k=rng.randint(0, 200)))) for _ in range(300)]
    expected = [record_fingerprints(*row) for row in rows]
    monkeypatch.setattr(fingerprint, "BATCH_CHARS", 50)  # most texts fill a batch of their own
    assert record_fingerprints_many(rows) == expected


def test_simhash_many_matches_the_documented_algorithm():
    from curation.lib.fingerprint import simhash_many

    texts = ["", "a", "ab", "abc", "高血压", normalize(LONG_ZH), "the quick brown fox jumps over the lazy dog"]
    assert simhash_many(texts) == [reference_simhash(t) for t in texts]
    assert simhash_many(texts[3:]) == [reference_simhash(t) for t in texts[3:]]


def first_occurrences_reference(values, groups) -> list[bool]:
    seen = set()
    mask = []
    for pair in zip(groups.tolist(), values.tolist()):
        mask.append(pair not in seen)
        seen.add(pair)
    return mask


@pytest.mark.parametrize("size", [0, 1, 2, 17, 5000])
def test_first_occurrences_marks_the_first_of_each_pair(size):
    import numpy as np

    from curation.lib.fingerprint import first_occurrences

    rng = np.random.default_rng(size)
    values = rng.integers(0, 40, size, dtype=np.uint64)  # many repeats
    groups = np.sort(rng.integers(0, 9, size))
    assert first_occurrences(values, groups).tolist() == first_occurrences_reference(values, groups)


def test_first_occurrences_is_exact_when_every_pair_collides(monkeypatch):
    import numpy as np

    from curation.lib import fingerprint

    rng = np.random.default_rng(3)
    values = rng.integers(0, 1 << 63, 400, dtype=np.uint64)
    values[200:] = values[:200]  # every value twice ...
    groups = rng.integers(0, 3, 400)  # ... not always in the same group
    expected = first_occurrences_reference(values, groups)
    # A zero multiplier files every pair in slot 0: one pair is settled per round, the rest
    # go to the sorting fallback.
    monkeypatch.setattr(fingerprint, "_SALTS", (np.uint64(0), np.uint64(0)))
    assert fingerprint.first_occurrences(values, groups).tolist() == expected
    monkeypatch.setattr(fingerprint, "_SALTS", ())
    assert fingerprint.first_occurrences(values, groups).tolist() == expected


def test_core_derive_many_gives_core_derive_for_every_record(shared_datasets):
    from curation.services import core

    contents = [{"instruction": q, "input": i, "output": a} for q, i, a in toyhom_rows(shared_datasets)[::3]]
    contents += [
        {"instruction": "短"},  # the other fields take derive's defaults
        {"instruction": "Patient ID 110105199003071234", "output": "电话 010-62345678", "system": "MRN: 12345678"},
        {"instruction": "接上文", "output": "继续观察。", "reasoning": "先排除急症。", "history": [["头痛", "手机 13812345678"]]},
    ]
    derived = core.derive_many(contents)
    assert derived == [core.derive(**content) for content in contents]
    assert derived[-1].has_identifiers and derived[-1].identifiers[0]["field"] == "history"
