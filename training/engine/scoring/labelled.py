"""Reader of the hand-labelled option-extraction set (tests/training/engine/data/): shared by the
tests and bench/option_extraction.py."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LabelledAnswer", "read_labelled"]


@dataclass(frozen=True, slots=True)
class LabelledAnswer:
    line: int
    key: str
    question: str
    options: dict[str, str]
    answer: str
    label: str | None  # None: the answer commits to no single option


def read_labelled(folder: str | Path) -> list[LabelledAnswer]:
    folder = Path(folder)
    questions = json.loads((folder / "mcq_questions.json").read_text(encoding="utf-8"))
    out = []
    for number, line in enumerate((folder / "option_answers.tsv").read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        key, label, text = line.split("\t", 2)
        q = questions[key]
        out.append(
            LabelledAnswer(
                line=number,
                key=key,
                question=q["question"],
                options=q["options"],
                answer=text.replace("\\n", "\n"),
                label=None if label == "-" else label,
            )
        )
    return out
