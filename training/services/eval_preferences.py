"""Preference pairs from rated evaluation samples (curation's service writes them).

Two answers to the same prompt in one comparison group of evaluation runs (same split, same
prompts: the base and tuned runs of a fine-tune, the contenders of a comparison) that one
clinician rated differently on the rubric (``EvalRating``, mean of the scores given) make a
pair: the higher-rated answer chosen. The pair is authored by the rater and submitted for
review; collecting again skips what was collected (source reference
``eval-samples:<chosen>><rejected>:user<rater>``).
"""

from __future__ import annotations

from collections import defaultdict
from itertools import combinations

from django.db import transaction

from curation.models_pref import PreferencePair
from curation.services.preferences import DuplicatePreference, near_duplicate_index, preference_pair_create
from medportal.errors import InvalidInput
from training.models import EvalRating

K = PreferencePair.SourceKind
RUBRIC = ("accuracy", "safety", "completeness", "clarity")


def _mean(rating: EvalRating) -> float | None:
    scores = [getattr(rating, k) for k in RUBRIC if getattr(rating, k) is not None]
    return sum(scores) / len(scores) if scores else None


def _conversation(sample) -> tuple[str, list, str]:
    item = sample.dataset_item
    if item is not None:
        content = item.content
        prompt = "\n".join(p for p in (content.get("instruction", ""), content.get("input", "")) if p)
        return content.get("system", ""), [list(t) for t in content.get("history") or ()], prompt
    return "", [], sample.prompt


def _label(run) -> str:
    name = run.base_model.name if run.base_model_id else "?"
    return name if run.job_id is None else f"{name} + #{run.job_id}"


def preference_pairs_from_eval_ratings(*, seen: set | None = None, index=None) -> dict:
    """Create the pairs not collected yet; returns {"created", "existing", "duplicates", "refused", "pairs"}."""
    seen = seen if seen is not None else set(PreferencePair.objects.filter(source_kind=K.EVAL_RATING).values_list("source_kind", "source_ref"))
    index = index if index is not None else near_duplicate_index()
    out = {"created": 0, "existing": 0, "duplicates": 0, "refused": 0, "pairs": []}
    ratings = EvalRating.objects.select_related("rater", "sample", "sample__run", "sample__run__base_model", "sample__dataset_item").exclude(sample__run__group="")
    groups: dict[tuple, list[EvalRating]] = defaultdict(list)
    for rating in ratings.iterator(chunk_size=500):
        sample = rating.sample
        key = sample.dataset_item_id if sample.dataset_item_id else f"p{sample.position}"
        groups[(rating.rater_id, sample.run.group, key)].append(rating)
    for _key, group in sorted(groups.items(), key=lambda kv: str(kv[0])):
        for r1, r2 in combinations(sorted(group, key=lambda r: r.sample_id), 2):
            if r1.sample.run_id == r2.sample.run_id:
                continue
            m1, m2 = _mean(r1), _mean(r2)
            if m1 is None or m2 is None or m1 == m2:
                continue
            better, worse = (r1, r2) if m1 > m2 else (r2, r1)
            ref = f"eval-samples:{better.sample_id}>{worse.sample_id}:user{better.rater_id}"
            if (K.EVAL_RATING, ref) in seen:
                out["existing"] += 1
                continue
            system, history, prompt = _conversation(better.sample)
            try:
                with transaction.atomic():
                    pair = preference_pair_create(
                        author=better.rater,
                        judged_by=better.rater,
                        source_kind=K.EVAL_RATING,
                        source_ref=ref,
                        submit=True,
                        index=index,
                        prompt=prompt,
                        system=system,
                        history=history,
                        chosen=better.sample.prediction,
                        rejected=worse.sample.prediction,
                        chosen_model=_label(better.sample.run),
                        rejected_model=_label(worse.sample.run),
                        department=better.sample.department,
                        extra={"chosen_sample": better.sample_id, "rejected_sample": worse.sample_id, "group": better.sample.run.group},
                    )
            except DuplicatePreference:
                out["duplicates"] += 1
                continue
            except InvalidInput:
                out["refused"] += 1
                continue
            seen.add((K.EVAL_RATING, ref))
            out["created"] += 1
            out["pairs"].append(pair.pk)
    return out
