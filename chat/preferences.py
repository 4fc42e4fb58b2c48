"""Clinicians' judgements in chat → preference pairs for review (curation's service writes them).

Three sources, each pair authored by the clinician who judged (so another clinician confirms it)
and submitted for review at once:

* an arena vote: the winner's answer chosen, the loser's rejected; ties, "both bad" and void
  battles are left out;
* two answers to the same question (regenerate keeps the earlier ones) that the same clinician
  rated differently: the rubric mean decides when both have rubric scores, else the thumbs
  (up over down); equal ratings are left out;
* a correction: the clinician's corrected answer chosen over the model's answer;
* rated evaluation samples: two answers to the same prompt in one comparison group of
  evaluation runs rated differently by one clinician (``training.services.eval_preferences``).

``preference_pairs_collect`` is idempotent: a judgement already turned into a pair (same source
reference) is skipped, and an exact duplicate of a stored pair is counted, not stored twice.
chat imports curation; curation never imports chat.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from itertools import combinations

from django.db import transaction
from django.utils.translation import gettext as _

from chat.models import ArenaBattle, ChatMessage, Rating
from chat.services import conversation_exchanges
from curation.models_pref import PreferencePair
from curation.services.preferences import DuplicatePreference, near_duplicate_index, preference_pair_create
from medportal.audit import audit_record
from medportal.errors import InvalidInput, NotAllowed
from medportal.roles import CURATOR, has_role

K = PreferencePair.SourceKind


@dataclass
class CollectResult:
    created: dict[str, int] = field(default_factory=lambda: {K.ARENA_VOTE: 0, K.RATING: 0, K.CORRECTION: 0, K.EVAL_RATING: 0})
    existing: int = 0
    duplicates: int = 0
    refused: int = 0
    pairs: list[int] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.created.values())


def _context(message: ChatMessage) -> tuple[str, list[list[str]], str] | None:
    """(system, history, question) of an assistant message: the question is the last user message
    before it (superseded answers of a regenerate share it), the history the answered exchanges
    still current before that question."""
    session = message.session
    question = session.messages.filter(role=ChatMessage.Role.USER, id__lt=message.id).order_by("-id").first()
    if question is None:
        return None
    before = session.messages.filter(superseded=False, id__lt=question.id).order_by("id")
    exchanges, _pending = conversation_exchanges(before)
    return session.system_prompt, [[q.content, a.content] for q, a in exchanges], question.content


def _score(rating: Rating) -> tuple[str, float] | None:
    rubric = [getattr(rating, name) for name in Rating.RUBRIC if getattr(rating, name) is not None]
    if rubric:
        return "rubric", sum(rubric) / len(rubric)
    if rating.thumb:
        return "thumb", 1.0 if rating.thumb == Rating.Thumb.UP else -1.0
    return None


class _Collector:
    def __init__(self, result: CollectResult):
        self.result = result
        self.index = near_duplicate_index()
        self.seen = set(PreferencePair.objects.exclude(source_ref="").values_list("source_kind", "source_ref"))

    def add(self, *, kind: str, ref: str, judge, **fields) -> None:
        if (kind, ref) in self.seen:
            self.result.existing += 1
            return
        try:
            with transaction.atomic():
                pair = preference_pair_create(author=judge, judged_by=judge, source_kind=kind, source_ref=ref, submit=True, index=self.index, **fields)
        except DuplicatePreference:
            self.result.duplicates += 1
            return
        except InvalidInput:
            self.result.refused += 1  # e.g. two answers with the same text
            return
        self.seen.add((kind, ref))
        self.result.created[kind] += 1
        self.result.pairs.append(pair.pk)


def _from_arena(c: _Collector) -> None:
    battles = ArenaBattle.objects.filter(vote__in=[ArenaBattle.Vote.A, ArenaBattle.Vote.B], voided_at__isnull=True).select_related(
        "user", "model_a", "model_b", "job_a", "job_b", "department"
    )
    for battle in battles.order_by("id").iterator(chunk_size=500):
        a_wins = battle.vote == ArenaBattle.Vote.A
        winner, loser = (battle.answer_a, battle.answer_b) if a_wins else (battle.answer_b, battle.answer_a)
        c.add(
            kind=K.ARENA_VOTE,
            ref=f"arena-battle:{battle.pk}",
            judge=battle.user,
            prompt=battle.prompt,
            system=battle.system_prompt,
            chosen=winner,
            rejected=loser,
            chosen_model=battle.label_a if a_wins else battle.label_b,
            rejected_model=battle.label_b if a_wins else battle.label_a,
            department=battle.department.name if battle.department_id else "",
            extra={"arena_battle": battle.pk, "vote_counts": battle.vote_counts},
        )


def _from_ratings(c: _Collector) -> None:
    ratings = (
        Rating.objects.filter(message__role=ChatMessage.Role.ASSISTANT)
        .exclude(message__status=ChatMessage.Status.FAILED)
        .select_related("user", "message", "message__session", "message__session__department", "message__base_model", "message__job")
        .order_by("message_id")
    )
    by_question: dict[tuple[int, int], list[Rating]] = defaultdict(list)
    question_of: dict[int, int] = {}
    for rating in ratings.iterator(chunk_size=500):
        message = rating.message
        if message.pk not in question_of:
            q = message.session.messages.filter(role=ChatMessage.Role.USER, id__lt=message.id).order_by("-id").values_list("id", flat=True).first()
            question_of[message.pk] = q
        if question_of[message.pk] is not None:
            by_question[(rating.user_id, question_of[message.pk])].append(rating)
        if rating.corrected_answer.strip() and rating.corrected_answer.strip() != message.content.strip():
            context = _context(message)
            if context is not None:
                system, history, question = context
                c.add(
                    kind=K.CORRECTION,
                    ref=f"rating:{rating.pk}",
                    judge=rating.user,
                    prompt=question,
                    system=system,
                    history=history,
                    chosen=rating.corrected_answer,
                    rejected=message.content,
                    chosen_model="",
                    rejected_model=message.model_label,
                    department=message.session.department.name if message.session.department_id else "",
                    extra={"chat_message": message.pk, "rating": rating.pk},
                )
    for (_user, _question), group in sorted(by_question.items()):
        for r1, r2 in combinations(sorted(group, key=lambda r: r.message_id), 2):
            s1, s2 = _score(r1), _score(r2)
            if s1 is None or s2 is None:
                continue
            if s1[0] != s2[0]:  # one has rubric scores, the other only a thumb: compare thumbs if both have one
                if not (r1.thumb and r2.thumb):
                    continue
                s1, s2 = _score_thumb(r1), _score_thumb(r2)
            if s1[1] == s2[1]:
                continue
            better, worse = (r1, r2) if s1[1] > s2[1] else (r2, r1)
            if not (better.message.content.strip() and worse.message.content.strip()):
                continue
            context = _context(better.message)
            if context is None:
                continue
            system, history, question = context
            c.add(
                kind=K.RATING,
                ref=f"chat-messages:{better.message_id}>{worse.message_id}:user{better.user_id}",
                judge=better.user,
                prompt=question,
                system=system,
                history=history,
                chosen=better.message.content,
                rejected=worse.message.content,
                chosen_model=better.message.model_label,
                rejected_model=worse.message.model_label,
                department=better.message.session.department.name if better.message.session.department_id else "",
                extra={"chosen_message": better.message_id, "rejected_message": worse.message_id, "by": s1[0]},
            )


def _score_thumb(rating: Rating) -> tuple[str, float]:
    return "thumb", 1.0 if rating.thumb == Rating.Thumb.UP else -1.0


def _from_eval_ratings(c: _Collector) -> None:
    from training.services.eval_preferences import preference_pairs_from_eval_ratings

    found = preference_pairs_from_eval_ratings(seen=c.seen, index=c.index)
    c.result.created[K.EVAL_RATING] += found["created"]
    c.result.existing += found["existing"]
    c.result.duplicates += found["duplicates"]
    c.result.refused += found["refused"]
    c.result.pairs += found["pairs"]


def preference_pairs_collect(*, actor) -> CollectResult:
    """Turn every arena vote, differently rated pair of answers and correction not yet collected
    into a preference pair in review. Curators and admins; audited."""
    if not has_role(actor, CURATOR):
        raise NotAllowed(_("Only curators and admins collect preference pairs."))
    result = CollectResult()
    collector = _Collector(result)
    _from_arena(collector)
    _from_ratings(collector)
    _from_eval_ratings(collector)
    if result.total or result.duplicates or result.refused:
        from curation.models_pref import PreferencePair as _P

        target = _P.objects.filter(pk__in=result.pairs).first()
        if target is not None:
            audit_record(
                actor=actor,
                action="preference_pair.collect",
                target=target,
                summary=f"Collected {result.total} preference pairs from chat",
                changes={"created": dict(result.created), "existing": result.existing, "duplicates": result.duplicates, "refused": result.refused},
            )
    return result
