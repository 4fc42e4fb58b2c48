"""Optional rewrite of generated vignettes through the configured inference model.

The generator's vignettes are grounded in the knowledge graph but formulaic; a paraphrase
makes them read more like real notes. The facts stay the generator's: the original text is
kept in ``synthetic_meta["original_question"]``, the pair is marked ``rewritten`` with the
model that wrote it, and — like every synthetic pair — it goes through clinician review.

The model is a registered base model (``MEDPORTAL_REWRITE_MODEL``), optionally with a
succeeded fine-tune job's adapter (``MEDPORTAL_REWRITE_JOB``); generation goes through the
one inference interface, on the model's endpoint (training.runnables, plugged in by the
setting MEDPORTAL_REWRITE_PROVIDER: curation does not import training). Sampling is seeded per case, so a rewrite is
reproducible on the in-process backend.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.utils.translation import gettext as _

from medportal.errors import InvalidInput

logger = logging.getLogger(__name__)

PROMPTS = {
    "zh": (
        "你是一名临床医学编辑。请用自然、专业的中文改写下面的病例描述，像真实病历一样通顺；"
        "保留所有年龄、性别、症状、阴性症状、检查结果和最后的问题，不要增加、删除或推测任何医学事实，不要给出诊断。"
        "只输出改写后的文本。"
    ),
    "en": (
        "You are a clinical editor. Rewrite the case description below in natural, professional English, like a real "
        "clinical note; keep every age, sex, finding, pertinent negative, test result and the final question; do not "
        "add, drop or infer any medical fact and do not give the diagnosis. Output only the rewritten text."
    ),
}


class RewriteFailed(Exception):
    """The model could not answer (the message says why)."""


# The provider (MEDPORTAL_REWRITE_PROVIDER, a dotted path; default training.runnables.rewrite_provider):
# (model name, job id or None, *, actor) → (label, generate); generate(messages, *, max_new_tokens,
# temperature, top_p, repetition_penalty, seed) → text, or RewriteFailed. Curation imports neither
# training nor chat: the inference layer is plugged in by the setting, as Django plugs in backends.


def rewrite_provider() -> Callable[..., tuple[str, Callable[..., str]]]:
    from django.utils.module_loading import import_string

    return import_string(settings.MEDPORTAL_REWRITE_PROVIDER)


@dataclass(frozen=True)
class Rewriter:
    model_label: str
    generate: Callable[..., str]
    max_new_tokens: int

    def __call__(self, question: str, *, lang: str, seed: int) -> tuple[str | None, str]:
        """(rewritten text or None, problem) — a failed or implausible rewrite keeps the original."""
        messages = [{"role": "system", "content": PROMPTS.get(lang, PROMPTS["en"])}, {"role": "user", "content": question}]
        try:
            text = self.generate(messages, max_new_tokens=self.max_new_tokens, temperature=0.7, top_p=0.9, repetition_penalty=1.1, seed=seed).strip()
        except RewriteFailed as exc:
            return None, str(exc)
        if len(text) < max(10, len(question) // 4):
            return None, "the rewrite was too short"
        if len(text) > 3 * len(question) + 200:
            return None, "the rewrite was too long"
        return text, ""


def rewrite_available() -> bool:
    return bool(settings.MEDPORTAL_REWRITE_MODEL)


def rewriter_get(*, actor=None) -> Rewriter:
    """The configured rewriter, or InvalidInput saying what is missing."""
    name = settings.MEDPORTAL_REWRITE_MODEL
    if not name:
        raise InvalidInput(_("No rewrite model is configured: set MEDPORTAL_REWRITE_MODEL to a registered base model."))
    label, generate = rewrite_provider()(name, settings.MEDPORTAL_REWRITE_JOB, actor=actor)
    return Rewriter(model_label=label, generate=generate, max_new_tokens=settings.MEDPORTAL_REWRITE_MAX_NEW_TOKENS)
