"""Drafting QA candidates from an abstract with a model. Django-free.

One candidate takes two generations, each a plain reply that any model can give:

1. the *question*: the model reads the numbered abstract and writes one question of the asked
   type (fact, mechanism, treatment, clinical scenario) that the abstract answers;
2. the *answer*: the model answers that question from the abstract, in Chinese or English, and
   names the sentences it rests on as ``[S3]``.

The prompts are versioned (``PROMPT_VERSION``) and stored with each run, so a reviewer can see
exactly what the model was asked. A reply that names no sentence gets the sentences that share
most words with its answer (``support_by = "aligner"``; the review page says so). Every
candidate is then checked by ``grounding.check`` against its supporting sentences.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from curation.literature import grounding

PROMPT_VERSION = "literature-draft.v1"
QUESTION_TYPES = ("fact", "mechanism", "treatment", "scenario")
LANGS = ("zh", "en")
MAX_QUESTION_CHARS = 500
MAX_ANSWER_CHARS = 4000

PROMPTS: dict = {
    "version": PROMPT_VERSION,
    "system": {
        "en": (
            "You are a medical educator who writes question-answer pairs for training clinicians, strictly from the "
            "PubMed abstract you are given. Use only facts stated in the abstract; never add numbers, drugs or doses "
            "that it does not state."
        ),
        "zh": (
            "你是一名医学教育者，严格依据给出的 PubMed 摘要为临床医生编写问答对。只使用摘要中写明的事实；"
            "不要添加摘要中没有的数字、药物或剂量。"
        ),
    },
    "question": {
        "en": (
            "Abstract (each sentence numbered):\n{abstract}\n\n"
            "Write one {type_text} that this abstract answers. Reply with the question only, on one line."
        ),
        "zh": "摘要（每句已编号）：\n{abstract}\n\n请写一个这篇摘要能够回答的{type_text}。只回复问题本身，写成一行。",
    },
    "answer": {
        "en": (
            "Abstract (each sentence numbered):\n{abstract}\n\nQuestion: {question}\n\n"
            "Answer the question in English using only the abstract, in two to four sentences. "
            "After each statement, cite the sentence numbers it rests on, like [S2] or [S2][S5]."
        ),
        "zh": (
            "摘要（每句已编号）：\n{abstract}\n\n问题：{question}\n\n"
            "请只依据摘要，用中文回答这个问题，两到四句话。每个陈述后用 [S2] 或 [S2][S5] 的形式注明所依据的句子编号。"
        ),
    },
    "types": {
        "fact": {"en": "factual question about a finding or figure", "zh": "关于研究发现或数据的事实性问题"},
        "mechanism": {"en": "question about a mechanism or cause", "zh": "关于机制或原因的问题"},
        "treatment": {"en": "question about a treatment, drug or management decision", "zh": "关于治疗、药物或处理决策的问题"},
        "scenario": {
            "en": "short clinical scenario (a patient vignette) ending in a question",
            "zh": "以问题结尾的简短临床情景（病例描述）",
        },
    },
}

_CITE = re.compile(r"\[\s*S\s*(\d{1,4})(?:\s*[,，、]\s*S?\s*(\d{1,4}))*\s*\]|(?<![A-Za-z])S(\d{1,4})(?!\d)")
_CITE_NUMS = re.compile(r"\d{1,4}")
_QUESTION_PREFIX = re.compile(r"^\s*(?:question|q|问题)\s*[:：]\s*", re.IGNORECASE)
_ANSWER_PREFIX = re.compile(r"^\s*(?:answer|a|答案|回答)\s*[:：]\s*", re.IGNORECASE)
_CITE_STRIP = re.compile(r"\s*\[\s*S\s*\d{1,4}(?:\s*[,，、]\s*S?\s*\d{1,4})*\s*\]")


class DraftFailed(Exception):
    """The model could not answer (the message says why)."""


Generate = Callable[..., str]  # generate(messages, *, max_new_tokens, temperature, top_p, repetition_penalty, seed[, on_piece]) -> str


@dataclass(frozen=True)
class DraftParams:
    per_document: int = 2
    types: tuple[str, ...] = QUESTION_TYPES
    lang: str = "en"
    max_new_tokens: int = 192
    temperature: float = 0.7
    seed: int = 0

    def to_dict(self) -> dict:
        data = asdict(self)
        data["types"] = list(self.types)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> DraftParams:
        return cls(
            per_document=int(data.get("per_document", 2)),
            types=tuple(data.get("types") or QUESTION_TYPES),
            lang=data.get("lang", "en"),
            max_new_tokens=int(data.get("max_new_tokens", 192)),
            temperature=float(data.get("temperature", 0.7)),
            seed=int(data.get("seed", 0)),
        )


@dataclass
class Candidate:
    question: str
    answer: str
    question_type: str
    lang: str
    support: list[int]
    support_by: str  # "model" or "aligner"
    grounding: dict
    seed: int
    raw: dict = field(default_factory=dict)  # the model's replies, as given


def numbered_abstract(sentences: Sequence[dict]) -> str:
    return "\n".join(f"[S{s['n']}] {s['text']}" for s in sentences)


def cited_sentences(text: str, count: int) -> list[int]:
    """The sentence numbers an answer cites (``[S3]``, ``[S2, S5]``, ``S4``), valid ones only, in order."""
    found: list[int] = []
    for m in _CITE.finditer(text or ""):
        for n in map(int, _CITE_NUMS.findall(m.group())):
            if 1 <= n <= count and n not in found:
                found.append(n)
    return sorted(found)


_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.DOTALL)
_THINK_TAG = re.compile(r"</?think>")


def without_thinking(text: str) -> str:
    """The reply without a reasoning model's ``<think>…</think>`` block (Qwen3 writes one)."""
    return _THINK_TAG.sub("", _THINK.sub("", text or ""))


def clean_question(text: str) -> str:
    lines = [line.strip() for line in without_thinking(text).strip().splitlines() if line.strip()]
    if not lines:
        return ""
    question = _QUESTION_PREFIX.sub("", lines[0]).strip().strip('"“”')
    return question[:MAX_QUESTION_CHARS]


def clean_answer(text: str) -> str:
    text = _ANSWER_PREFIX.sub("", without_thinking(text).strip())
    text = _CITE_STRIP.sub("", text)
    return re.sub(r"[ \t]+", " ", text).strip()[:MAX_ANSWER_CHARS]


def messages_for(step: str, *, lang: str, abstract: str, question: str = "", question_type: str = "fact", prompts: dict = PROMPTS) -> list[dict]:
    type_text = prompts["types"][question_type][lang]
    user = prompts[step][lang].format(abstract=abstract, question=question, type_text=type_text)
    return [{"role": "system", "content": prompts["system"][lang]}, {"role": "user", "content": user}]


def draft_candidate(
    sentences: Sequence[dict],
    generate: Generate,
    *,
    question_type: str,
    lang: str,
    params: DraftParams,
    seed: int,
    prompts: dict = PROMPTS,
    on_piece: Callable[[], bool] | None = None,
) -> Candidate:
    """Ask the model for one candidate; ``DraftFailed`` when it gave nothing usable.

    ``on_piece`` (optional) is handed to ``generate``: called after each streamed piece, True
    stops the generation with ``DraftFailed`` (the caller then knows why)."""
    if question_type not in QUESTION_TYPES:
        raise ValueError(f"unknown question type {question_type!r}")
    abstract = numbered_abstract(sentences)
    sampling = {"max_new_tokens": params.max_new_tokens, "temperature": params.temperature, "top_p": 0.9, "repetition_penalty": 1.1}
    if on_piece is not None:
        sampling["on_piece"] = on_piece
    raw_question = generate(messages_for("question", lang=lang, abstract=abstract, question_type=question_type, prompts=prompts), seed=seed, **sampling)
    question = clean_question(raw_question)
    if not question:
        raise DraftFailed("the model wrote no question")
    raw_answer = generate(
        messages_for("answer", lang=lang, abstract=abstract, question=question, question_type=question_type, prompts=prompts),
        seed=seed + 1,
        **sampling,
    )
    answer = clean_answer(raw_answer)
    if not answer:
        raise DraftFailed("the model wrote no answer")
    texts = [s["text"] for s in sentences]
    support = cited_sentences(without_thinking(raw_answer), len(texts))
    support_by = "model"
    if not support:
        support = grounding.best_support(answer, texts)
        support_by = "aligner"
    result = grounding.check(answer, [texts[n - 1] for n in support])
    return Candidate(
        question=question,
        answer=answer,
        question_type=question_type,
        lang=lang,
        support=support,
        support_by=support_by,
        grounding=result.as_dict(),
        seed=seed,
        raw={"question": raw_question[:2000], "answer": raw_answer[:MAX_ANSWER_CHARS]},
    )


def plan(document_count: int, params: DraftParams) -> list[tuple[int, int, str]]:
    """``(document index, candidate index, question type)`` for every candidate of a run: the
    types rotate, so N candidates per document cover N different types where N allows."""
    out = []
    for d in range(document_count):
        for i in range(params.per_document):
            out.append((d, i, params.types[(d + i) % len(params.types)]))
    return out
