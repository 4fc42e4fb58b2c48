"""BLEU-4 and ROUGE for generated answers, with numbers that compare with LLaMA-Factory's.

LLaMA-Factory scores a prediction against its label with jieba + rouge-chinese + nltk
(``scripts/eval_bleu_rouge.py`` and ``ComputeSimilarity`` in ``src/llamafactory/train/sft/metric.py``).
Mode ``llamafactory`` (the default) reproduces what that code really computes, value for value,
but over ten times faster (bench/score_bench.py): rouge-chinese fills an O(n·m) Python dict for
ROUGE-L, nltk counts n-grams pair by pair with Fractions, jieba walks its DAG through generators.
Here the LCS is a bit-parallel big-integer loop, BLEU's clipped n-gram counts of all pairs come
from one numpy sort per order, and jieba's algorithm runs as one fused loop over its own
dictionary, memoised per block. Tests check every value against the real libraries;
docs/evaluation-metrics.md gives the formulas and the fine print.

Mode ``standard`` is the usual rouge-score definition (n-gram counts with multiplicity) on a
Chinese-aware tokenizer; BLEU-4 stays the per-sample character BLEU of the other mode.

No Django here; jieba is imported on first use.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

MODES = ("llamafactory", "standard")
DEFAULT_MODE = "llamafactory"
METRIC_KEYS = ("bleu-4", "rouge-1", "rouge-2", "rouge-l")
MODE_LABELS = {
    "llamafactory": "llamafactory: ROUGE on jieba words as rouge-chinese computes it (distinct n-grams), "
    "BLEU-4 on characters (nltk, method3)",
    "standard": "standard: rouge-score ROUGE (n-gram counts) on lower-cased jieba words without punctuation, "
    "BLEU-4 on characters (nltk, method3)",
}


# ---------------------------------------------------------------------------------------------
# jieba, exactly as ``list(jieba.cut(text))`` (precise mode, HMM on), memoised per Chinese block


_ABSENT = object()
_NO_WORD = -math.inf


class _WordTable(dict):
    """fragment -> log(freq) - log(total) for a word, None for a mere prefix, _ABSENT otherwise.

    Filled lazily from jieba's FREQ, so the hot loop does one C-level lookup per fragment."""

    def __init__(self, freq: dict[str, int], logtotal: float):
        super().__init__()
        self.freq = freq
        self.logtotal = logtotal

    def __missing__(self, fragment: str) -> Any:
        f = self.freq.get(fragment)
        value = _ABSENT if f is None else (math.log(f) - self.logtotal if f else None)
        if len(self) >= 400_000:  # about 40 MB
            self.clear()
        self[fragment] = value
        return value


class JiebaSegmenter:
    """``list(jieba.cut(text))`` token for token (precise mode, HMM on), about twice as fast.

    jieba splits a text into runs of Chinese/latin word characters ("blocks", cut with its
    dictionary and HMM) and everything else (one token per character, each whitespace character
    a token, ``\\r\\n`` one token). Cutting a block depends only on the block, so:

    - a block seen before is not cut again (bounded memo, ``max_blocks``; 0 turns it off);
    - a new block is cut by ``_cut_block``: jieba 0.42.1's ``get_DAG`` + ``calc`` + ``__cut_DAG`` fused
      into one loop over the same dictionary (``jieba.dt.FREQ``), with the same float arithmetic
      (``log(freq) - log(total) + route``, memoised per word) and the same tie-break (the longer
      word wins a tie), and jieba's own HMM (``jieba.finalseg.cut``, memoised) for unknown runs.
      With another jieba version jieba's own block cutter is used.

    Memos are bounded (tens of MB at most) and dropped when jieba's dictionary changes
    (``add_word``, ``del_word``, ``load_userdict``, ``set_dictionary``)."""

    def __init__(self, max_blocks: int = 50_000):
        self.max_blocks = max_blocks
        self._blocks: dict[str, list[str]] = {}
        self._hmm: dict[str, list[str]] = {}
        self._stamp: tuple[int, ...] | None = None
        self._dt: Any = None

    def _prepare(self) -> None:
        if self._dt is None:
            import jieba
            import jieba.finalseg

            if logging.getLogger("jieba").level < logging.WARNING:  # not configured: no "Building prefix dict" chatter
                jieba.setLogLevel(logging.WARNING)
            self._dt = jieba.dt
            self._finalseg = jieba.finalseg
            self._re_han = jieba.re_han_default
            self._re_skip = jieba.re_skip_default
            if jieba.__version__ == "0.42.1":
                self._cut_new_block = self._cut_block
            else:  # jieba's own block cutter, or its public cut() as a last resort
                self._cut_new_block = getattr(self._dt, "_Tokenizer__cut_DAG", None) or self._dt.cut
        dt = self._dt
        dt.check_initialized()
        stamp = (id(dt.FREQ), dt.total, len(dt.FREQ), len(self._finalseg.Force_Split_Words))
        if stamp != self._stamp:
            self._stamp = stamp
            self._freq = dt.FREQ
            self._unknown = 0.0 - math.log(dt.total)  # calc(): log(FREQ.get(char) or 1) - logtotal, no word
            self.clear()

    def clear(self) -> None:
        """Forget every memo (the bench times cold runs with it)."""
        self._blocks.clear()
        self._hmm.clear()
        if self._dt is not None:
            self._words = _WordTable(self._dt.FREQ, math.log(self._dt.total))

    def cut(self, text: str) -> list[str]:
        self._prepare()
        return self._cut(text)

    def cut_many(self, texts: Sequence[str]) -> list[list[str]]:
        self._prepare()
        return [self._cut(text) for text in texts]

    def _cut(self, text: str) -> list[str]:
        out: list[str] = []
        blocks = self._blocks
        re_skip = self._re_skip
        # re.split with one group alternates [other, block, other, block, ...]: odd items are blocks.
        for index, part in enumerate(self._re_han.split(text)):
            if not part:
                continue
            if index & 1:
                words = blocks.get(part)
                if words is None:
                    words = list(self._cut_new_block(part))
                    if self.max_blocks > 0:
                        if len(blocks) >= self.max_blocks:
                            blocks.clear()
                        blocks[part] = words
                out += words
            else:
                # odd items are whitespace separators (kept as tokens), even ones split into characters
                for j, piece in enumerate(re_skip.split(part)):
                    if j & 1:
                        out.append(piece)
                    else:
                        out += piece
        return out

    def _cut_block(self, sentence: str) -> list[str]:
        """jieba.Tokenizer.__cut_DAG(sentence) for jieba 0.42.1, as one right-to-left pass."""
        words = self._words
        n = len(sentence)
        score = [0.0] * (n + 1)
        end = [0] * n
        unknown = self._unknown
        for idx in range(n - 1, -1, -1):
            # get_DAG: each word sentence[idx:j] with a non-zero frequency, scanning j while the fragment
            # is a dictionary prefix; calc: max((log(f) - logtotal + score[j], j - 1)), the larger j on a tie.
            best = _NO_WORD
            best_end = idx
            j = idx + 1
            value = words[sentence[idx]]
            while value is not _ABSENT:
                if value is not None:
                    s = value + score[j]
                    if s >= best:
                        best = s
                        best_end = j - 1
                j += 1
                if j > n:
                    break
                value = words[sentence[idx:j]]
            if best == _NO_WORD:  # no word starts here: the single character, with frequency 1
                best = unknown + score[idx + 1]
            score[idx] = best
            end[idx] = best_end
        out: list[str] = []
        buf = ""
        x = 0
        while x < n:
            y = end[x] + 1
            if y - x == 1:
                buf += sentence[x]
            else:
                if buf:
                    self._flush(buf, out)
                    buf = ""
                out.append(sentence[x:y])
            x = y
        if buf:
            self._flush(buf, out)
        return out

    def _flush(self, buf: str, out: list[str]) -> None:
        # a run of single characters: one token, jieba's HMM for an unknown run, else characters
        if len(buf) == 1:
            out.append(buf)
        elif not self._freq.get(buf):
            words = self._hmm.get(buf)
            if words is None:
                if len(self._hmm) >= 20_000:
                    self._hmm.clear()
                words = self._hmm[buf] = list(self._finalseg.cut(buf))
            out += words
        else:
            out += buf


_SEGMENTER = JiebaSegmenter()


def jieba_tokens(text: str) -> list[str]:
    """``list(jieba.cut(text))``."""
    return _SEGMENTER.cut(text)


# ---------------------------------------------------------------------------------------------
# rouge-chinese, as LLaMA-Factory calls it: Rouge().get_scores(" ".join(hyp_tokens), " ".join(ref_tokens))

# rouge_chinese.Rouge.cut_sent, pattern for pattern.
_CUT_SENT = (
    (re.compile("([。！？\\?])([^”’])"), r"\1\n\2"),
    (re.compile("(\\.{6})([^”’])"), r"\1\n\2"),
    (re.compile("(…{2})([^”’])"), r"\1\n\2"),
    (re.compile("([。！？\\?][”’])([^，。！？\\?])"), r"\1\n\2"),
)


def rouge_chinese_words(tokens: Sequence[str]) -> list[str] | None:
    """The word list rouge-chinese scores for ``" ".join(tokens)``; None where LLaMA-Factory scores 0.

    rouge-chinese cuts the joined string into sentences (a newline after 。！？? and a few more
    patterns, then ``split("\\n")``), collapses whitespace inside each sentence and splits on
    spaces. So jieba's whitespace tokens vanish, and every whitespace-only piece between two cut
    points (a blank line, a newline after 。) becomes one empty-string word."""
    para = " ".join(tokens)
    if not para.split():
        return None
    for pattern, repl in _CUT_SENT:
        para = pattern.sub(repl, para)
    words: list[str] = []
    for piece in para.rstrip().split("\n"):
        if piece:
            words += piece.split() or [""]
    return words


def lcs_length(a: Sequence[Any], b: Sequence[Any]) -> int:
    """Length of the longest common subsequence, bit-parallel (Hyyrö 2004) on Python integers.

    One bit per item of the longer sequence; one add/or/and per item of the shorter one."""
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return 0
    masks: dict[Any, int] = {}
    get = masks.get
    bit = 1
    for item in a:
        masks[item] = get(item, 0) | bit
        bit <<= 1
    full = bit - 1
    v = full
    for item in b:
        m = get(item)
        if m is not None:
            u = v & m
            v = ((v + u) | (v - u)) & full
    return len(a) - v.bit_count()


def _f_rouge_chinese(overlap: int, hyp_count: int, ref_count: int) -> float:
    # rouge_chinese.rouge_score.f_r_p_rouge_n (and rouge_l_summary_level, same expression)
    precision = overlap / hyp_count if hyp_count else 0.0
    recall = overlap / ref_count if ref_count else 0.0
    return 2.0 * ((precision * recall) / (precision + recall + 1e-8))


def rouge_llamafactory(hyp_tokens: Sequence[str], ref_tokens: Sequence[str]) -> tuple[float, float, float]:
    """Unrounded ROUGE-1/2/L F values (0..1) exactly as rouge-chinese gives them to LLaMA-Factory."""
    hyp = rouge_chinese_words(hyp_tokens)
    ref = rouge_chinese_words(ref_tokens)
    if hyp is None or ref is None:
        return 0.0, 0.0, 0.0
    h1, r1 = set(hyp), set(ref)
    h2, r2 = set(pairwise(hyp)), set(pairwise(ref))
    rouge1 = _f_rouge_chinese(len(h1 & r1), len(h1), len(r1))
    rouge2 = _f_rouge_chinese(len(h2 & r2), len(h2), len(r2))
    lcs = lcs_length(ref, hyp)
    r_lcs = lcs / len(ref)
    p_lcs = lcs / len(hyp)
    rouge_l = 2.0 * ((p_lcs * r_lcs) / (p_lcs + r_lcs + 1e-8))
    return rouge1, rouge2, rouge_l


# ---------------------------------------------------------------------------------------------
# nltk sentence_bleu([list(label)], list(pred), smoothing_function=SmoothingFunction().method3)


def _char_ngrams(text: str, n: int) -> Counter:
    if n == 1:
        return Counter(text)
    return Counter(zip(*(text[k:] for k in range(n))))


def _bleu_from_counts(numerators: Sequence[int], hyp_len: int, ref_len: int) -> float:
    # nltk corpus_bleu for one sentence: p_n = num/den with den = max(1, hyp_len - n + 1); 0 when
    # nothing matches; method3 turns a zero p_n into 1/(2^k·den); bp = exp(1 - r/c) unless c > r.
    if numerators[0] == 0:
        return 0.0
    bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    logs = []
    k = 1
    for n, num in enumerate(numerators, start=1):
        den = max(1, hyp_len - n + 1)
        if num == 0:
            p = 1 / (2**k * den)
            k += 1
        else:
            p = num / den
        logs.append(0.25 * math.log(p))
    return bp * math.exp(math.fsum(logs))


def bleu4_chars(prediction: str, reference: str) -> float:
    """Unrounded sentence BLEU-4 over characters for one pair (the per-pair form of ``bleu4_chars_many``)."""
    numerators = []
    for n in (1, 2, 3, 4):
        hyp = _char_ngrams(prediction, n) if len(prediction) >= n else Counter()
        ref = _char_ngrams(reference, n) if len(reference) >= n else Counter()
        common = hyp.keys() & ref.keys()
        numerators.append(sum(map(min, map(hyp.__getitem__, common), map(ref.__getitem__, common))))
    return _bleu_from_counts(numerators, len(prediction), len(reference))


_BLEU_CHUNK = 4096  # pairs per vectorised batch


def bleu4_chars_many(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """nltk ``sentence_bleu([list(ref)], list(pred), smoothing_function=SmoothingFunction().method3)`` per pair.

    The clipped n-gram matches (sum over n-grams of min(count in prediction, count in reference))
    of all pairs are counted at once with numpy: characters get dense ids, each n-gram becomes
    one int64 key (pair, n-gram, side), one sort per order gives both counts of every n-gram.
    The final formula then runs in Python on the integer counts, with nltk's float operations."""
    out: list[float] = []
    for start in range(0, len(predictions), _BLEU_CHUNK):
        out += _bleu_batch(predictions[start : start + _BLEU_CHUNK], references[start : start + _BLEU_CHUNK])
    return out


def _bleu_batch(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    counts = _clipped_counts(predictions, references)
    if counts is not None:
        return [_bleu_from_counts(c, len(p), len(r)) for c, p, r in zip(counts, predictions, references)]
    if len(predictions) == 1:  # more than ~46,000 distinct characters in one pair
        return [bleu4_chars(predictions[0], references[0])]
    half = len(predictions) // 2  # too many distinct characters for 63-bit keys: smaller batches
    return _bleu_batch(predictions[:half], references[:half]) + _bleu_batch(predictions[half:], references[half:])


def _codes(texts: Sequence[str]):
    import numpy as np

    return np.frombuffer("".join(texts).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def _clipped_counts(predictions: Sequence[str], references: Sequence[str]) -> list[list[int]] | None:
    """[[matches of 1..4-grams] per pair], or None when the keys would not fit in 63 bits."""
    import numpy as np

    pairs = len(predictions)
    hyp_codes, ref_codes = _codes(predictions), _codes(references)
    if pairs == 0 or hyp_codes.size == 0 or ref_codes.size == 0:
        return [[0, 0, 0, 0] for _ in range(pairs)]
    both = np.concatenate([hyp_codes, ref_codes])
    dense = np.zeros(int(both.max()) + 1, dtype=np.int64)
    dense[both] = 1
    alphabet = int(dense.sum())
    np.cumsum(dense, out=dense)
    dense -= 1
    if pairs * alphabet**4 * 2 >= 2**63:
        return None

    def prepare(codes, texts):
        ids = dense[codes]
        lengths = np.fromiter(map(len, texts), dtype=np.int64, count=pairs)
        pair = np.repeat(np.arange(pairs, dtype=np.int64), lengths)
        left = np.repeat(np.cumsum(lengths), lengths) - np.arange(ids.size)  # characters left in its text
        return ids, pair, left

    hyp_ids, hyp_pair, hyp_left = prepare(hyp_codes, predictions)
    ref_ids, ref_pair, ref_left = prepare(ref_codes, references)
    matches = []
    hyp_key, ref_key = hyp_ids, ref_ids
    for n in (1, 2, 3, 4):
        if n > 1:
            hyp_key = hyp_key[:-1] * alphabet + hyp_ids[n - 1 :]
            ref_key = ref_key[:-1] * alphabet + ref_ids[n - 1 :]
        span = alphabet**n
        h_ok = hyp_left[: hyp_key.size] >= n
        r_ok = ref_left[: ref_key.size] >= n
        keys = np.concatenate(
            [
                (hyp_pair[: hyp_key.size][h_ok] * span + hyp_key[h_ok]) * 2,
                (ref_pair[: ref_key.size][r_ok] * span + ref_key[r_ok]) * 2 + 1,
            ]
        )
        if keys.size == 0:
            matches.append(np.zeros(pairs))
            continue
        keys.sort()
        gram = keys >> 1
        first = np.empty(keys.size, dtype=bool)
        first[0] = True
        np.not_equal(gram[1:], gram[:-1], out=first[1:])
        starts = np.flatnonzero(first)
        in_ref = np.add.reduceat(keys & 1, starts)
        in_hyp = np.diff(np.append(starts, keys.size)) - in_ref
        clipped = np.minimum(in_hyp, in_ref)
        hit = clipped > 0
        matches.append(np.bincount(gram[starts][hit] // span, weights=clipped[hit], minlength=pairs))
    return np.stack(matches, axis=1).astype(np.int64).tolist()


# ---------------------------------------------------------------------------------------------
# mode "standard": rouge-score (counts with multiplicity) on a Chinese-aware tokenizer

_WORDISH = re.compile(r"[^\W_]")  # a letter or digit in any script (str.isalnum)


def _standard_filter(tokens: list[str]) -> list[str]:
    return [token.lower() for token in tokens if _WORDISH.search(token)]


def standard_tokens(text: str) -> list[str]:
    """jieba words, lower-cased, keeping only tokens with a letter, digit or CJK character.

    rouge-score's default tokenizer lower-cases and drops everything that is not [a-z0-9] (so
    all Chinese); this keeps its spirit (no punctuation, no whitespace) for Chinese text."""
    return _standard_filter(_SEGMENTER.cut(text))


class StandardTokenizer:
    """The tokenizer object rouge_score.rouge_scorer.RougeScorer(tokenizer=...) expects."""

    def tokenize(self, text: str) -> list[str]:
        return standard_tokens(text)


def _fmeasure(precision: float, recall: float) -> float:
    # rouge_score.scoring.fmeasure
    if precision + recall > 0:
        return 2 * precision * recall / (precision + recall)
    return 0.0


def _score_counts(target: Counter, prediction: Counter) -> float:
    common = target.keys() & prediction.keys()
    overlap = sum(map(min, map(target.__getitem__, common), map(prediction.__getitem__, common)))
    precision = overlap / max(sum(prediction.values()), 1)
    recall = overlap / max(sum(target.values()), 1)
    return _fmeasure(precision, recall)


def rouge_standard(hyp_tokens: Sequence[str], ref_tokens: Sequence[str]) -> tuple[float, float, float]:
    """Unrounded rouge1/rouge2/rougeL F as rouge_score.RougeScorer computes them on these tokens."""
    rouge1 = _score_counts(Counter(ref_tokens), Counter(hyp_tokens))
    rouge2 = _score_counts(Counter(pairwise(ref_tokens)), Counter(pairwise(hyp_tokens)))
    if not ref_tokens or not hyp_tokens:
        rouge_l = 0.0
    else:
        lcs = lcs_length(ref_tokens, hyp_tokens)
        rouge_l = _fmeasure(lcs / len(hyp_tokens), lcs / len(ref_tokens))
    return rouge1, rouge2, rouge_l


# ---------------------------------------------------------------------------------------------
# public API


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"Unknown metric mode {mode!r}; choose one of {', '.join(MODES)}.")


def score_pairs(predictions: Sequence[str], references: Sequence[str], *, mode: str = DEFAULT_MODE) -> dict[str, Any]:
    """Score each prediction against its reference and average.

    Returns ``{"mode": mode, "summary": {"bleu-4", "rouge-1", "rouge-2", "rouge-l", "count"},
    "per_sample": [{"bleu-4", "rouge-1", "rouge-2", "rouge-l"}, ...]}``. Per-sample values are
    ×100 and rounded to 4 decimals (as LLaMA-Factory stores them); the summary is their plain
    mean, rounded to 4 decimals (LLaMA-Factory prints it with ``:.4f``)."""
    _check_mode(mode)
    predictions, references = list(predictions), list(references)
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references.")
    for name, texts in (("prediction", predictions), ("reference", references)):
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"{name} {i} is {type(text).__name__}, not a string.")
    if mode == "llamafactory":
        tokenize, rouge = _SEGMENTER.cut_many, rouge_llamafactory
    else:
        tokenize, rouge = (lambda texts: [_standard_filter(t) for t in _SEGMENTER.cut_many(texts)]), rouge_standard
    hyp_tokens = tokenize(predictions)
    ref_tokens = tokenize(references)
    per_sample = []
    bleus = bleu4_chars_many(predictions, references)
    for bleu, hyp_t, ref_t in zip(bleus, hyp_tokens, ref_tokens):
        r1, r2, rl = rouge(hyp_t, ref_t)
        per_sample.append(
            {
                "bleu-4": round(bleu * 100, 4),
                "rouge-1": round(r1 * 100, 4),
                "rouge-2": round(r2 * 100, 4),
                "rouge-l": round(rl * 100, 4),
            }
        )
    return {"mode": mode, "summary": summarize(per_sample), "per_sample": per_sample}


def summarize(per_sample: Sequence[dict[str, float]]) -> dict[str, Any]:
    """Mean of each metric over the samples (rounded to 4 decimals) plus ``count``; 0.0 when empty."""
    count = len(per_sample)
    summary: dict[str, Any] = {}
    for key in METRIC_KEYS:
        summary[key] = round(sum(sample[key] for sample in per_sample) / count, 4) if count else 0.0
    summary["count"] = count
    return summary


# ---------------------------------------------------------------------------------------------
# LLaMA-Factory generated_predictions.jsonl


@dataclass(frozen=True)
class PredictionPair:
    line: int
    predict: str
    label: str
    prompt: str | None = None


@dataclass(frozen=True)
class Problem:
    line: int  # 0 = the whole file
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


def _decode_lines(raw: bytes) -> tuple[list[tuple[int, str | None]], list[Problem]]:
    """Split into numbered lines and decode them as UTF-8 (a BOM is skipped).

    If at least half the lines with non-ASCII bytes are not UTF-8 and the whole file is valid GB18030 (the
    encoding of Chinese exports from Excel and of the toyhom CSV), the file is read as GB18030
    and a file-level problem says so. Otherwise each undecodable line is a problem."""
    problems: list[Problem] = []
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    chunks = [chunk[:-1] if chunk.endswith(b"\r") else chunk for chunk in raw.split(b"\n")]
    if chunks and chunks[-1] == b"":
        chunks.pop()
    lines: list[tuple[int, str | None]] = []
    errors: dict[int, UnicodeDecodeError] = {}
    non_ascii = 0
    for number, chunk in enumerate(chunks, start=1):
        non_ascii += not chunk.isascii()
        try:
            lines.append((number, chunk.decode("utf-8")))
        except UnicodeDecodeError as exc:
            errors[number] = exc
            lines.append((number, None))
    if errors and len(errors) * 2 >= non_ascii:
        try:
            lines = [(number, chunk.decode("gb18030")) for number, chunk in enumerate(chunks, start=1)]
        except UnicodeDecodeError:
            pass
        else:
            return lines, [Problem(0, "The file is not UTF-8; it was read as GB18030.")]
    for number, exc in errors.items():
        problems.append(Problem(number, f"not valid UTF-8 (byte {exc.start + 1} of the line)"))
    return lines, problems


def read_predictions(path: str | Path) -> tuple[list[PredictionPair], list[Problem]]:
    """Read LLaMA-Factory's ``generated_predictions.jsonl`` (one ``{"prompt", "predict", "label"}`` per line).

    Blank, undecodable, non-JSON lines and lines without string ``predict``/``label`` are
    reported as problems with their line number and skipped; they never stop the reading.
    Raises OSError when the file cannot be read."""
    raw = Path(path).read_bytes()
    lines, problems = _decode_lines(raw)
    pairs: list[PredictionPair] = []
    for number, text in lines:
        if text is None:
            continue
        if not text.strip():
            problems.append(Problem(number, "empty line"))
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            problems.append(Problem(number, f"not valid JSON ({exc.msg} at column {exc.colno})"))
            continue
        if not isinstance(record, dict):
            problems.append(Problem(number, f"a JSON {type(record).__name__}, not an object with 'predict' and 'label'"))
            continue
        bad = False
        for key in ("predict", "label"):
            if key not in record:
                problems.append(Problem(number, f"missing key '{key}'"))
                bad = True
            elif not isinstance(record[key], str):
                problems.append(Problem(number, f"'{key}' is {_json_type(record[key])}, not a string"))
                bad = True
        if bad:
            continue
        prompt = record.get("prompt")
        pairs.append(PredictionPair(number, record["predict"], record["label"], prompt if isinstance(prompt, str) else None))
    problems.sort(key=lambda problem: problem.line)  # stable: a line's problems keep their order
    return pairs, problems


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def score_file(path: str | Path, *, mode: str = DEFAULT_MODE) -> tuple[dict[str, Any], list[PredictionPair], list[Problem]]:
    """read_predictions + score_pairs; the result has no samples (count 0) when nothing was readable."""
    _check_mode(mode)
    pairs, problems = read_predictions(path)
    result = score_pairs([p.predict for p in pairs], [p.label for p in pairs], mode=mode)
    return result, pairs, problems
