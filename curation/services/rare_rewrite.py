"""Optional rewrite of generated vignettes through the configured inference model.

The generator's vignettes are grounded in the knowledge graph but formulaic; a paraphrase
makes them read more like real notes. The facts stay the generator's: the original text is
kept in ``synthetic_meta["original_question"]``, the pair is marked ``rewritten`` with the
model that wrote it, and — like every synthetic pair — it goes through clinician review.

The model is a registered base model (``MEDPORTAL_REWRITE_MODEL``), optionally with a
succeeded fine-tune job's adapter (``MEDPORTAL_REWRITE_JOB``); generation goes through the
one inference interface (in-process or the OpenAI-compatible server). Sampling is seeded
per case, so a rewrite is reproducible on the in-process backend.
"""

from __future__ import annotations

import logging
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


@dataclass(frozen=True)
class Rewriter:
    model_label: str
    ref: object
    max_new_tokens: int

    def __call__(self, question: str, *, lang: str, seed: int) -> tuple[str | None, str]:
        """(rewritten text or None, problem) — a failed or implausible rewrite keeps the original."""
        from chat.inference import GenerationParams, InferenceError
        from chat.inference.registry import get_backend

        messages = [{"role": "system", "content": PROMPTS.get(lang, PROMPTS["en"])}, {"role": "user", "content": question}]
        params = GenerationParams(max_new_tokens=self.max_new_tokens, temperature=0.7, top_p=0.9, repetition_penalty=1.1, seed=seed)
        try:
            text = get_backend().generate(self.ref, messages, params).strip()
        except InferenceError as exc:
            return None, str(exc)
        if len(text) < max(10, len(question) // 4):
            return None, "the rewrite was too short"
        if len(text) > 3 * len(question) + 200:
            return None, "the rewrite was too long"
        return text, ""


def rewrite_available() -> bool:
    return bool(settings.MEDPORTAL_REWRITE_MODEL)


def rewriter_get() -> Rewriter:
    """The configured rewriter, or InvalidInput saying what is missing."""
    from chat.inference.base import InferenceError
    from chat.inference.registry import model_ref
    from training.models import BaseModel, FineTuneJob

    name = settings.MEDPORTAL_REWRITE_MODEL
    if not name:
        raise InvalidInput(_("No rewrite model is configured: set MEDPORTAL_REWRITE_MODEL to a registered base model."))
    base = BaseModel.objects.filter(name=name, is_active=True).first()
    if base is None:
        raise InvalidInput(_("The rewrite model '%(name)s' is not a registered, active base model.") % {"name": name})
    job = None
    if settings.MEDPORTAL_REWRITE_JOB:
        job = FineTuneJob.objects.filter(pk=settings.MEDPORTAL_REWRITE_JOB).select_related("base_model").first()
        if job is None:
            raise InvalidInput(_("The rewrite adapter job #%(id)s does not exist.") % {"id": settings.MEDPORTAL_REWRITE_JOB})
    try:
        ref = model_ref(base, job)
    except InferenceError as exc:
        raise InvalidInput(str(exc)) from None
    label = base.name if job is None else f"{base.name} + job #{job.pk}"
    return Rewriter(model_label=label, ref=ref, max_new_tokens=settings.MEDPORTAL_REWRITE_MAX_NEW_TOKENS)
