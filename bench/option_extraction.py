"""Option extraction against hand labels: agreement of ``training.engine.scoring.options.extract_choice``
with the labelled set kept with the tests (tests/training/engine/data/option_answers.tsv, 316
free-text answers in Chinese and English to 13 questions). Prints one JSON line; --show lists
every disagreement.

    .venv/bin/python bench/option_extraction.py [--show]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._setup import machine  # noqa: E402
from training.engine.scoring.labelled import read_labelled  # noqa: E402
from training.engine.scoring.options import extract_choice  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--show", action="store_true", help="print every disagreement")
    args = parser.parse_args()
    items = read_labelled(ROOT / "tests" / "training" / "engine" / "data")
    t0 = time.perf_counter()
    agree = 0
    wrong = []
    rules: Counter = Counter()
    by_lang: Counter = Counter()
    by_lang_ok: Counter = Counter()
    for item in items:
        choice = extract_choice(item.answer, item.options, item.question)
        rules[choice.rule] += 1
        lang = item.key.split("-")[0]
        by_lang[lang] += 1
        if choice.key == item.label:
            agree += 1
            by_lang_ok[lang] += 1
        else:
            wrong.append({"line": item.line, "answer": item.answer, "label": item.label, "got": choice.key, "rule": choice.rule})
    elapsed = time.perf_counter() - t0
    if args.show:
        for w in wrong:
            print(json.dumps(w, ensure_ascii=False), file=sys.stderr)
    print(
        json.dumps(
            {
                "bench": "option_extraction",
                "answers": len(items),
                "unparseable_labels": sum(1 for i in items if i.label is None),
                "agreement": round(agree / len(items), 4),
                "disagreements": len(wrong),
                "agreement_zh": round(by_lang_ok["zh"] / by_lang["zh"], 4),
                "agreement_en": round(by_lang_ok["en"] / by_lang["en"], 4),
                "rules": dict(rules),
                "ms_per_answer": round(elapsed * 1000 / len(items), 3),
                "machine": machine(),
            },
            ensure_ascii=False,
        )
    )


if __name__ == "__main__":
    main()
