"""Evaluation suites beyond the reference answers: multiple choice, diagnosis, rubric judge; and
comparison runs of several contenders (docs/evaluation-suites.md has each suite's exact rule).

* ``suites_clean`` validates the suites a run scores ("reference", "mcq", "diagnosis", "rubric").
* ``evaluation_compare_create`` (admins) queues one run per contender — a base model, a fine-tune's
  adapter, a hosted model — in one comparison group, on the same split, with the same suites,
  parameters and judge; the report compares the group's runs item by item.
* ``score_suites`` (called by the evaluation worker once the answers are generated) scores every
  answer in the run's suites: the chosen option (``training.engine.scoring.options``), the disease
  named (``…scoring.diagnosis`` with the knowledge graph's names and synonyms), the judge's rubric
  scores (``…scoring.judge``, the judge model resolved through ``training.runnables``); it returns
  the per-sample scores and the run's per-suite summary. A judge reply that cannot be read is
  retried, then recorded on the sample; it never fails the run.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections import defaultdict
from collections.abc import Callable, Sequence

from django.db import transaction
from django.utils.translation import gettext as _

from curation.models import DatasetItem, DatasetVersion
from medportal.errors import InvalidInput
from training.models import BaseModel, EvalRun, FineTuneJob
from training.services import require_admin

logger = logging.getLogger(__name__)

SUITES = ("reference", "mcq", "diagnosis", "rubric")
JUDGE_LANGS = ("zh", "en")
JUDGE_ATTEMPTS = 3
JUDGE_MAX_NEW_TOKENS = 160
_OPTION_LINE = re.compile(r"^\s*([A-J])\s*[.．、:：)]\s*(.*\S)\s*$")
_DISEASE_CODE = re.compile(r"^(ORPHA|OMIM|CCRD|DECIPHER):\S+$")


# --------------------------------------------------------------------------- validation


def suites_clean(suites) -> list[str]:
    """The suites in canonical order; InvalidInput naming an unknown one or an empty choice."""
    if isinstance(suites, str):
        suites = [s for s in re.split(r"[,\s]+", suites) if s]
    suites = [str(s).strip().lower() for s in (suites or ())]
    unknown = [s for s in suites if s not in SUITES]
    if unknown:
        message = _("Unknown suite %(suites)s; choose from %(known)s.") % {"suites": ", ".join(unknown), "known": ", ".join(SUITES)}
        raise InvalidInput(message, details={"suites": message})
    if not suites:
        message = _("Choose at least one suite.")
        raise InvalidInput(message, details={"suites": message})
    return [s for s in SUITES if s in suites]


# --------------------------------------------------------------------------- items


def mcq_item(content: dict) -> dict | None:
    """{"question", "options", "answer", "subject"} of a multiple-choice item (as the CMMLU-style
    importer writes them: option lines "A. …" ending the instruction, the output "B. …"), or None."""
    instruction = str(content.get("instruction") or "")
    lines = instruction.rstrip().split("\n")
    options: dict[str, str] = {}
    while lines:
        m = _OPTION_LINE.match(lines[-1])
        if not m or m.group(1) in options:
            break
        options[m.group(1)] = m.group(2)
        lines.pop()
    if len(options) < 2 or set(options) != {chr(ord("A") + i) for i in range(len(options))}:
        return None
    keys = []
    for line in str(content.get("output") or "").strip().split("\n"):
        m = _OPTION_LINE.match(line) or re.fullmatch(r"\s*([A-J])\s*", line)
        if m and m.group(1) in options:
            keys.append(m.group(1))
    if len(keys) != 1:
        return None  # no answer key, or a multiple-answer item (not scored by this suite)
    subject = ""
    for tag in content.get("tags") or ():
        prefix, _sep, rest = str(tag).partition(":")
        if prefix in ("cmmlu", "mcq") and rest:
            subject = rest
            break
    options = dict(sorted(options.items()))
    return {"question": "\n".join(lines).strip(), "options": options, "answer": keys[0], "subject": subject}


def diagnosis_reference(content: dict) -> str | None:
    """The disease an item's answer should name: its first ORPHA/OMIM/CCRD/DECIPHER code."""
    for code in content.get("disease_codes") or ():
        if _DISEASE_CODE.match(str(code)):
            return str(code)
    return None


def _split_items(version: DatasetVersion, split: str):
    return DatasetItem.objects.filter(version=version, split=split).only("pk", "content").order_by("position", "pk")


def _check_suites_apply(*, dataset_version: DatasetVersion, split: str, suites: list[str], judge_model: BaseModel | None) -> None:
    if "rubric" in suites and judge_model is None:
        message = _("The rubric suite needs a judge model.")
        raise InvalidInput(message, details={"judge": message})
    contents = [item.content or {} for item in _split_items(dataset_version, split)]
    if "mcq" in suites and not any(mcq_item(c) for c in contents):
        message = _("The %(split)s split of '%(name)s' holds no multiple-choice item (option lines A., B., … and a one-letter answer).") % {
            "split": split,
            "name": dataset_version.name,
        }
        raise InvalidInput(message, details={"suites": message})
    if "diagnosis" in suites and not any(diagnosis_reference(c) for c in contents):
        message = _("The %(split)s split of '%(name)s' holds no item with a disease code to check a diagnosis against.") % {
            "split": split,
            "name": dataset_version.name,
        }
        raise InvalidInput(message, details={"suites": message})


# --------------------------------------------------------------------------- create


def judge_prompt_record(lang: str) -> dict:
    from training.engine.scoring.judge import PROMPT_VERSION, judge_prompt

    return {"version": PROMPT_VERSION, "lang": lang, **judge_prompt(lang)}


def evaluation_compare_create(
    *,
    actor,
    dataset_version: DatasetVersion,
    contenders: Sequence[tuple[BaseModel, FineTuneJob | None]],
    suites=("reference",),
    judge_model: BaseModel | None = None,
    judge_lang: str = "zh",
    split: str = "test",
    mode: str = "llamafactory",
    params: dict | None = None,
    preset: str = "",
    sets: Sequence[str] = (),
    max_samples: int | None = None,
    enqueue: bool = True,
) -> list[EvalRun]:
    """One run per contender, in one comparison group, scoring ``suites``. Admins only.

    InvalidInput for no contender, a contender given twice, unknown suites, a rubric suite without
    a judge, an mcq / diagnosis suite on a split without such items, and everything
    ``evaluation_create`` refuses."""
    from training.services.evaluations import evaluation_create

    require_admin(actor, _("Only admins can start evaluation runs."))
    clean = suites_clean(suites)
    if judge_lang not in JUDGE_LANGS:
        message = _("The judge prompt language must be zh or en.")
        raise InvalidInput(message, details={"judge_lang": message})
    if not contenders:
        message = _("Choose at least one model to evaluate.")
        raise InvalidInput(message, details={"contenders": message})
    keys = [(b.pk, j.pk if j else None) for b, j in contenders]
    if len(set(keys)) != len(keys):
        message = _("A model is listed twice among the contenders.")
        raise InvalidInput(message, details={"contenders": message})
    if judge_model is not None and "rubric" not in clean:
        judge_model = None
    _check_suites_apply(dataset_version=dataset_version, split=split, suites=clean, judge_model=judge_model)
    group = "cmp-" + secrets.token_hex(4)
    runs = []
    with transaction.atomic():
        for base_model, job in contenders:
            run = evaluation_create(
                actor=actor,
                dataset_version=dataset_version,
                base_model=base_model,
                job=job,
                split=split,
                mode=mode,
                params=params,
                preset=preset,
                sets=sets,
                max_samples=max_samples,
                group=group,
                enqueue=enqueue,
            )
            # Queued after commit: the worker reads these fields.
            prompt = judge_prompt_record(judge_lang) if judge_model is not None else {}
            EvalRun.objects.filter(pk=run.pk).update(suites=clean, judge_model=judge_model, judge_prompt=prompt)
            run.suites, run.judge_model, run.judge_prompt = clean, judge_model, prompt
            runs.append(run)
    return runs


# --------------------------------------------------------------------------- scoring


def disease_catalogue():
    """Every disease of the knowledge graph as DiseaseNames (id, English, Chinese, synonyms)."""
    from curation.models_rare import Disease
    from training.engine.scoring.diagnosis import DiseaseNames

    return [
        DiseaseNames.build(code, name, name_zh, [str(s) for s in (synonyms or ()) if s])
        for code, name, name_zh, synonyms in Disease.objects.values_list("code", "name", "name_zh", "synonyms").iterator(chunk_size=2000)
    ]


def judge_generator(run: EvalRun) -> Callable[[list[dict]], str]:
    """``generate(messages) -> reply`` with the run's judge model (greedy, short), through the one
    runnable selector; identifiers are masked before they reach an external endpoint."""
    from training.inference.base import GenerationParams
    from training.runnables import external_messages, runnable

    judge = runnable(run.judge_model)
    backend = judge.backend()
    params = GenerationParams(max_new_tokens=JUDGE_MAX_NEW_TOKENS, temperature=0.0)

    def generate(messages: list[dict]) -> str:
        if judge.external:
            messages = external_messages(judge, [messages], actor=None, purpose="evaluation judge", target=run)[0]
        return "".join(backend.stream(judge.ref, messages, params))

    # A judge on a server answers several requests at once; an in-process one, one at a time (and
    # an external one too: each request's masking is audited, from this thread).
    generate.concurrency = 1 if backend.name == "local" or judge.external else judge_concurrency()
    return generate


def judge_concurrency() -> int:
    from django.conf import settings

    return max(1, int(getattr(settings, "MEDPORTAL_EVAL_CONCURRENCY", 8) or 8))


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _score_mcq(items: list[dict | None], predictions: list[str]) -> tuple[list[dict | None], dict]:
    from training.engine.scoring.options import extract_choice

    rows: list[dict | None] = []
    by_subject: dict[str, list[int]] = defaultdict(list)
    correct, unparsed, chance = [], 0, []
    for item, prediction in zip(items, predictions, strict=True):
        if item is None:
            rows.append(None)
            continue
        choice = extract_choice(prediction, item["options"], item["question"])
        ok = choice.key == item["answer"]
        rows.append({"answer": item["answer"], "choice": choice.key, "rule": choice.rule, "correct": ok, "subject": item["subject"]})
        correct.append(int(ok))
        unparsed += choice.key is None
        chance.append(1 / len(item["options"]))
        by_subject[item["subject"]].append(int(ok))
    n = len(correct)
    summary = {
        "n": n,
        "accuracy": _mean(correct),
        "unparseable_rate": unparsed / n if n else None,
        "chance": _mean(chance),
        "by_subject": {s: {"n": len(v), "accuracy": _mean(v)} for s, v in sorted(by_subject.items())},
    }
    return rows, summary


def _score_diagnosis(references: list[str | None], predictions: list[str], ranker_top1: list[bool | None]) -> tuple[list[dict | None], dict]:
    from training.engine.scoring.diagnosis import DiagnosisMatcher

    rows: list[dict | None] = [None] * len(references)
    if not any(references):
        return rows, {"n": 0}
    matcher = DiagnosisMatcher(disease_catalogue())
    top1, within, ranker = [], [], []
    for i, (reference, prediction) in enumerate(zip(references, predictions, strict=True)):
        if reference is None:
            continue
        score = matcher.score(prediction, reference)
        rows[i] = {"reference": reference, **score.to_dict(), "ranker_top1": ranker_top1[i]}
        top1.append(int(score.top1))
        within.append(int(score.in_differential))
        if ranker_top1[i] is not None:
            ranker.append(int(ranker_top1[i]))
    return rows, {
        "n": len(top1),
        "top1": _mean(top1),
        "in_differential": _mean(within),
        "ranker_top1": _mean(ranker),
        "ranker_n": len(ranker),
    }


def _score_rubric(run: EvalRun, samples: list[dict], predictions: list[str], generate, beat: Callable[[int], None] | None) -> tuple[list[dict | None], dict]:
    from training.engine.scoring.judge import CRITERIA, judge_answer, judge_messages

    lang = (run.judge_prompt or {}).get("lang") or "zh"
    def one(sample: dict, prediction: str) -> dict:
        messages = judge_messages(question=sample["prompt"], answer=prediction, reference=sample.get("reference") or "", lang=lang)
        try:
            result = judge_answer(generate, messages, lang=lang, attempts=JUDGE_ATTEMPTS)
        except Exception as exc:  # the judge's endpoint failed: recorded, the run goes on
            return {"scores": None, "reason": "", "attempts": 1, "error": f"{type(exc).__name__}: {exc}"[:500]}
        row = {"scores": result.scores, "reason": result.reason, "attempts": result.attempts, "error": result.error}
        row["raw"] = result.raw[-1][:2000] if result.ok else [r[:2000] for r in result.raw]
        if result.ok:
            row["mean"] = sum(result.scores.values()) / len(CRITERIA)
        return row

    workers = max(1, int(getattr(generate, "concurrency", 1) or 1))
    rows: list[dict | None] = [None] * len(samples)
    if workers == 1:
        for k, (sample, prediction) in enumerate(zip(samples, predictions, strict=True)):
            rows[k] = one(sample, prediction)
            if beat is not None:
                beat(k + 1)
    else:
        from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

        with ThreadPoolExecutor(max_workers=min(workers, len(samples)) or 1, thread_name_prefix=f"judge-{run.pk}") as pool:
            pending = {pool.submit(one, s, p): k for k, (s, p) in enumerate(zip(samples, predictions, strict=True))}
            done = 0
            try:
                while pending:
                    finished, _rest = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                    for future in finished:
                        rows[pending.pop(future)] = future.result()
                        done += 1
                    if beat is not None:
                        beat(done)  # in this thread: the heartbeat also says whether the run is still ours
            except BaseException:
                for future in pending:
                    future.cancel()
                raise
    per: dict[str, list[int]] = {c: [] for c in CRITERIA}
    failed = 0
    for row in rows:
        if row["scores"]:
            for c in CRITERIA:
                per[c].append(row["scores"][c])
        else:
            failed += 1
    n = len(per[CRITERIA[0]])
    means = [sum(per[c][i] for c in CRITERIA) / len(CRITERIA) for i in range(n)]
    return rows, {
        "n": n,
        "failed": failed,
        "mean": _mean(means),
        "criteria": {c: _mean(per[c]) for c in CRITERIA},
        "judge": run.judge_model.name if run.judge_model_id else "",
        "prompt_version": (run.judge_prompt or {}).get("version", ""),
    }


def score_suites(
    run: EvalRun,
    samples: list[dict],
    predictions: list[str],
    *,
    judge: Callable[[list[dict]], str] | None = None,
    beat: Callable[[int], None] | None = None,
) -> tuple[list[dict], dict]:
    """Per-sample ``suite_scores`` (one dict per sample, in order) and the run's ``suite_summary``
    for the run's suites other than reference. ``samples`` are ``eval_samples_read`` rows (with
    "item_id", "prompt", "reference"); ``judge`` overrides the run's judge model (tests, benches);
    ``beat(done)`` is called after every judged answer (the worker's heartbeat)."""
    suites = [s for s in (run.suites or ["reference"]) if s != "reference"]
    per_sample: list[dict] = [{} for _ in samples]
    summary: dict = {}
    if not suites:
        return per_sample, summary
    ids = [s.get("item_id") for s in samples]
    rows = {i.pk: i for i in DatasetItem.objects.filter(pk__in=[i for i in ids if i]).select_related("qa_pair").only("pk", "content", "qa_pair__synthetic_meta")}
    contents = [(rows[i].content or {}) if i in rows else {} for i in ids]
    if "mcq" in suites:
        scored, summary["mcq"] = _score_mcq([mcq_item(c) for c in contents], predictions)
        for out, row in zip(per_sample, scored, strict=True):
            if row is not None:
                out["mcq"] = row
    if "diagnosis" in suites:
        ranker = []
        for i in ids:
            meta = (rows[i].qa_pair.synthetic_meta or {}) if i in rows and rows[i].qa_pair_id else {}
            rank = meta.get("true_rank")
            ranker.append(None if rank is None else int(rank) == 1)
        scored, summary["diagnosis"] = _score_diagnosis([diagnosis_reference(c) for c in contents], predictions, ranker)
        for out, row in zip(per_sample, scored, strict=True):
            if row is not None:
                out["diagnosis"] = row
    if "rubric" in suites:
        generate = judge or judge_generator(run)
        scored, summary["rubric"] = _score_rubric(run, samples, predictions, generate, beat)
        for out, row in zip(per_sample, scored, strict=True):
            out["rubric"] = row
    return per_sample, summary


# --------------------------------------------------------------------------- blind ratings by clinicians

RATING_SAMPLE = 30  # answers per contender offered for blind rating


def rating_pool(group: str) -> list[int]:
    """Ids of the answers offered for blind rating in a comparison: up to RATING_SAMPLE answers
    of every succeeded contender, drawn at random (seeded by the group, so every rater gets the
    same set) and shuffled together, so that the order says nothing about the model."""
    import hashlib
    import random

    from training.models import EvalSample

    rng = random.Random(int(hashlib.sha256(group.encode()).hexdigest()[:12], 16))
    runs = EvalRun.objects.filter(group=group, status=EvalRun.Status.SUCCEEDED).order_by("pk").values_list("pk", flat=True)
    pool: list[int] = []
    for run_id in runs:
        ids = list(EvalSample.objects.filter(run_id=run_id).order_by("position").values_list("pk", flat=True))
        pool += rng.sample(ids, min(RATING_SAMPLE, len(ids)))
    rng.shuffle(pool)
    return pool


def eval_rating_next(*, user, group: str):
    """The next answer of the pool ``user`` has not rated yet, with (done, total); None when done."""
    from training.models import EvalRating, EvalSample

    pool = rating_pool(group)
    rated = set(EvalRating.objects.filter(rater=user, sample_id__in=pool).values_list("sample_id", flat=True))
    for sample_id in pool:
        if sample_id not in rated:
            return EvalSample.objects.get(pk=sample_id), len(rated), len(pool)
    return None, len(rated), len(pool)


def eval_rating_record(*, actor, sample, scores: dict, comment: str = ""):
    """Store (or replace) ``actor``'s blind rating of ``sample``: every criterion an integer 1–5.
    Clinicians and admins only; InvalidInput naming each bad criterion."""
    from medportal.audit import audit_record
    from medportal.errors import NotAllowed
    from medportal.roles import ADMIN, CLINICIAN, has_role
    from training.engine.scoring.judge import CRITERIA
    from training.models import EvalRating

    if not has_role(actor, CLINICIAN, ADMIN):
        raise NotAllowed(_("Only clinicians and admins rate answers."))
    if sample.run.status != EvalRun.Status.SUCCEEDED or sample.pk not in set(rating_pool(sample.run.group)):
        raise InvalidInput(_("This answer is not offered for blind rating."))
    clean, errors = {}, {}
    for criterion in CRITERIA:
        raw = (scores or {}).get(criterion)
        try:
            value = int(raw)
            if str(value) != str(raw).strip() or not 1 <= value <= 5:
                raise ValueError
            clean[criterion] = value
        except (TypeError, ValueError):
            errors[criterion] = _("Choose a score from 1 to 5.")
    if errors:
        raise InvalidInput(_("Rate every criterion from 1 to 5 (%(fields)s).") % {"fields": ", ".join(errors)}, details=errors)
    with transaction.atomic():
        rating, _created = EvalRating.objects.update_or_create(sample=sample, rater=actor, defaults={**clean, "comment": str(comment or "")[:2000]})
        audit_record(actor=actor, action="evaluation.rate", target=sample.run, summary=f"sample {sample.pk}: {clean}", changes=clean)
    return rating


__all__ = [
    "RATING_SAMPLE",
    "SUITES",
    "eval_rating_next",
    "eval_rating_record",
    "rating_pool",
    "diagnosis_reference",
    "disease_catalogue",
    "evaluation_compare_create",
    "judge_generator",
    "judge_prompt_record",
    "mcq_item",
    "score_suites",
    "suites_clean",
]
