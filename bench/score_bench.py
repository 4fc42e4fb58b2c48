"""Scoring speed: our BLEU-4/ROUGE (mode llamafactory) against LLaMA-Factory's own loop, 2,000 long answers.

References are the 2,000 longest doctor answers of the toyhom dialogue CSV (real consultations,
GB18030, read in place from ../shared/datasets). Each prediction is built from real text with a
realistic overlap: the reference's sentences with some dropped, some replaced by sentences of
other answers from the same department, neighbours swapped; one prediction in ten is another
doctor's whole answer from the same department. Seeded, so every run scores the same pairs.

The baseline is LLaMA-Factory's ``compute_metrics`` from scripts/eval_bleu_rouge.py, line for line
(jieba.cut, rouge_chinese.Rouge().get_scores, nltk sentence_bleu with method3), run in one
process. Ours is ``training.engine.metrics.score_pairs``; its memos are emptied before every timed
run, and it is also timed with the block memo switched off (``no_block_cache``: predictions share
whole clauses with their references here, which the memo exploits). Runs are interleaved; medians
of wall and CPU time are reported (CPU time is the steadier figure on a shared machine). Every
per-sample value is compared with the baseline's. Prints one JSON line.

    .venv/bin/python bench/score_bench.py               # about 1.5 min on 2 cores
    .venv/bin/python bench/score_bench.py --samples 500 --runs 1
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import random
import re
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))
from _setup import emit, machine  # noqa: E402

DATASET = ROOT.parent / "shared" / "datasets" / "toyhom_chinese_medical_dialogue"
_SENTENCE = re.compile(r"[^。！？；!?;\n]*[。！？；!?;\n]?")


def load_answers() -> list[dict[str, str]]:
    path = next(iter(sorted(DATASET.glob("*.csv"))), None)
    if path is None:
        return []
    with path.open(encoding="gb18030", newline="") as fh:
        return [row for row in csv.DictReader(fh) if row["answer"].strip()]


def sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE.findall(text) if s]


def build_pairs(rows: list[dict[str, str]], n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    by_department: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        by_department[row["department"]].append(row["answer"])
    chosen = sorted(rows, key=lambda r: (-len(r["answer"]), r["answer"]))[:n]
    predictions, references = [], []
    for row in chosen:
        reference = row["answer"]
        pool = by_department[row["department"]]
        if rng.random() < 0.1:
            other = reference
            while other == reference and len(pool) > 1:
                other = rng.choice(pool)
            prediction = other
        else:
            parts = []
            for sentence in sentences(reference):
                roll = rng.random()
                if roll < 0.2:
                    continue  # dropped
                if roll < 0.4:
                    parts.extend(rng.sample(sentences(rng.choice(pool)) or [sentence], 1))  # replaced
                else:
                    parts.append(sentence)
            for i in range(len(parts) - 1):
                if rng.random() < 0.1:
                    parts[i], parts[i + 1] = parts[i + 1], parts[i]
            prediction = "".join(parts)
        predictions.append(prediction)
        references.append(reference)
    return predictions, references


def baseline(predictions: list[str], references: list[str]) -> list[dict[str, float]]:
    """LLaMA-Factory scripts/eval_bleu_rouge.py compute_metrics, per sample."""
    import jieba
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    from rouge_chinese import Rouge

    out = []
    for predict, label in zip(predictions, references):
        hypothesis = list(jieba.cut(predict))
        reference = list(jieba.cut(label))
        bleu_score = sentence_bleu([list(label)], list(predict), smoothing_function=SmoothingFunction().method3)
        if len(" ".join(hypothesis).split()) == 0 or len(" ".join(reference).split()) == 0:
            result = {"rouge-1": {"f": 0.0}, "rouge-2": {"f": 0.0}, "rouge-l": {"f": 0.0}}
        else:
            rouge = Rouge()
            scores = rouge.get_scores(" ".join(hypothesis), " ".join(reference))
            result = scores[0]
        metric_result = {}
        for k, v in result.items():
            metric_result[k] = round(v["f"] * 100, 4)
        metric_result["bleu-4"] = round(bleu_score * 100, 4)
        out.append(metric_result)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each implementation; the median is reported")
    args = parser.parse_args()

    rows = load_answers()
    if not rows:
        emit({"bench": "score_speed", "skipped": f"dataset not found under {DATASET}"})
        return 1
    predictions, references = build_pairs(rows, args.samples)

    import jieba

    from training.engine import metrics

    jieba.setLogLevel(logging.CRITICAL)
    jieba.initialize()  # both sides start with jieba's dictionary loaded

    def ours(cache: bool):
        segmenter = metrics._SEGMENTER
        segmenter.clear()
        saved = segmenter.max_blocks
        segmenter.max_blocks = saved if cache else 0
        try:
            return metrics.score_pairs(predictions, references, mode="llamafactory")
        finally:
            segmenter.max_blocks = saved
            segmenter.clear()

    # Interleaved (baseline, ours, ours cold, baseline, ...) so that load from other processes on a
    # shared machine hits all three alike; wall and CPU (process) time are both recorded.
    contenders = {
        "baseline": lambda: baseline(predictions, references),
        "ours": lambda: ours(True),
        "ours_no_block_cache": lambda: ours(False),
    }
    wall: dict[str, list[float]] = {name: [] for name in contenders}
    cpu: dict[str, list[float]] = {name: [] for name in contenders}
    results = {}
    for _ in range(args.runs):
        for name, fn in contenders.items():
            start, cpu_start = time.perf_counter(), time.process_time()
            results[name] = fn()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - cpu_start)
    base_s, ours_s, cold_s = (statistics.median(wall[name]) for name in contenders)
    base_cpu, ours_cpu, cold_cpu = (statistics.median(cpu[name]) for name in contenders)
    expected, got, got_cold = results["baseline"], results["ours"], results["ours_no_block_cache"]

    max_diff = 0.0
    for want, have, have_cold in zip(expected, got["per_sample"], got_cold["per_sample"]):
        for key in metrics.METRIC_KEYS:
            max_diff = max(max_diff, abs(want[key] - have[key]), abs(want[key] - have_cold[key]))
    emit(
        {
            "bench": "score_speed",
            "samples": len(references),
            "reference_chars_mean": round(statistics.mean(map(len, references)), 1),
            "prediction_chars_mean": round(statistics.mean(map(len, predictions)), 1),
            "baseline_s": round(base_s, 3),
            "ours_s": round(ours_s, 3),
            "ratio": round(base_s / ours_s, 2),
            "ours_no_block_cache_s": round(cold_s, 3),
            "ratio_no_block_cache": round(base_s / cold_s, 2),
            "cpu_s": {"baseline": round(base_cpu, 3), "ours": round(ours_cpu, 3), "ours_no_block_cache": round(cold_cpu, 3)},
            "cpu_ratio": round(base_cpu / ours_cpu, 2),
            "cpu_ratio_no_block_cache": round(base_cpu / cold_cpu, 2),
            "runs_wall_s": {name: [round(t, 3) for t in times] for name, times in wall.items()},
            "load_avg_1min": round(os.getloadavg()[0], 2),
            "max_abs_diff": max_diff,
            "identical_to_1e-4": max_diff <= 1e-4,
            "summary": got["summary"],
            "machine": machine(),
        }
    )
    return 0 if max_diff <= 1e-4 else 2


if __name__ == "__main__":
    raise SystemExit(main())
