"""Reads of the chat app. ``*_get_for_user`` are the only way to reach a user's sessions,
messages and battles: another user's object is a 404, never a hint that it exists."""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Avg, Count, Q
from django.http import Http404

from chat.lib.bradley_terry import fit
from chat.models import ArenaBattle, ChatMessage, ChatSession, Rating, contestant_label
from medportal.roles import ADMIN, has_role


def contestant_key(base_model_id: int, job_id: int | None) -> str:
    """``"<base id>"`` or ``"<base id>:<job id>"``."""
    return f"{base_model_id}" if job_id is None else f"{base_model_id}:{job_id}"


@dataclass(frozen=True)
class Contestant:
    """A model that can answer: a base model, or a succeeded job's adapter on it."""

    base_model: object
    job: object | None

    @property
    def key(self) -> str:
        return contestant_key(self.base_model.pk, None if self.job is None else self.job.pk)

    @property
    def label(self) -> str:
        return contestant_label(self.base_model, self.job)


def contestants() -> list[Contestant]:
    """Every model that can answer here (training.runnables: hosted ones only when allowed)."""
    from training.runnables import runnable_bases, runnable_jobs

    bases = list(runnable_bases().order_by("name"))
    jobs = runnable_jobs().order_by("-finished_at", "-id")
    out = [Contestant(b, None) for b in bases]
    out += [Contestant(j.base_model, j) for j in jobs]
    return out


def contestant_from_key(key: str) -> Contestant:
    """Parse ``"<base id>"`` or ``"<base id>:<job id>"``; Http404 for anything unknown."""
    from training.models import FineTuneJob
    from training.runnables import runnable_bases

    try:
        parts = [int(p) for p in str(key).split(":")]
    except ValueError:
        raise Http404("unknown model") from None
    if len(parts) not in (1, 2):
        raise Http404("unknown model")
    base = runnable_bases().filter(pk=parts[0]).first()
    if base is None:
        raise Http404("unknown model")
    job = None
    if len(parts) == 2:
        job = FineTuneJob.objects.filter(pk=parts[1], base_model=base, status=FineTuneJob.Status.SUCCEEDED).exclude(adapter_path="").first()
        if job is None:
            raise Http404("unknown adapter")
    return Contestant(base, job)


def session_list(*, user):
    return ChatSession.objects.filter(user=user).select_related("base_model", "base_model__endpoint", "job").annotate(n_messages=Count("messages"))


def session_get_for_user(*, user, pk) -> ChatSession:
    session = ChatSession.objects.filter(pk=pk, user=user).select_related("base_model", "base_model__endpoint", "job", "department").first()
    if session is None:
        raise Http404("no such chat")
    return session


def session_messages(session: ChatSession, *, user) -> list[ChatMessage]:
    """The current messages with the user's ratings; ``unanswered`` marks a question the model
    never answered and that is left out of the history (chat.services.conversation_exchanges)."""
    from chat.services import conversation_exchanges

    messages = list(session.messages.filter(superseded=False).select_related("base_model", "base_model__endpoint", "job").order_by("id"))
    exchanges, pending = conversation_exchanges(messages)
    answered = {q.pk for q, _a in exchanges} | ({pending.pk} if pending is not None else set())
    for m in messages:
        m.unanswered = m.role == ChatMessage.Role.USER and m.pk not in answered
    ratings = {r.message_id: r for r in Rating.objects.filter(message__in=[m.pk for m in messages], user=user)}
    for m in messages:
        m.my_rating = ratings.get(m.pk)
    return messages


def message_get_for_user(*, user, pk) -> ChatMessage:
    qs = ChatMessage.objects.select_related("session", "session__department", "base_model", "base_model__endpoint", "job")
    message = qs.filter(pk=pk).first()
    if message is None or (message.session.user_id != user.pk and not has_role(user, ADMIN)):
        raise Http404("no such message")
    return message


_BATTLE_RELATED = ("user", "model_a", "model_b", "model_a__endpoint", "model_b__endpoint", "job_a", "job_b", "department", "voided_by")


def battle_get_for_user(*, user, pk) -> ArenaBattle:
    """The user's own battle (the voter's page and socket); anyone else's is a 404."""
    battle = ArenaBattle.objects.select_related(*_BATTLE_RELATED).filter(pk=pk, user=user).first()
    if battle is None:
        raise Http404("no such battle")
    return battle


def battle_get_for_admin(*, user, pk) -> ArenaBattle:
    """Any battle, for an admin (to void it); a 404 for everyone else."""
    battle = ArenaBattle.objects.select_related(*_BATTLE_RELATED).filter(pk=pk).first() if has_role(user, ADMIN) else None
    if battle is None:
        raise Http404("no such battle")
    return battle


def battle_list_for_admin(*, status: str = ""):
    """Every battle, newest first; ``status``: counted, void, open (no vote yet), or all."""
    qs = ArenaBattle.objects.select_related(*_BATTLE_RELATED)
    if status == "counted":
        qs = qs.counted()
    elif status == "void":
        qs = qs.filter(voided_at__isnull=False)
    elif status == "open":
        qs = qs.filter(vote="", voided_at__isnull=True)
    return qs


def battle_recent_for_user(*, user, limit: int = 20) -> list[ArenaBattle]:
    return list(ArenaBattle.objects.filter(user=user).select_related(*_BATTLE_RELATED)[:limit])


def arena_pair_votes() -> Counter:
    """Counted votes per unordered pair of contestant keys (what the draw balances)."""
    from chat.lib.pairing import pair_key

    rows = ArenaBattle.objects.counted().values_list("model_a_id", "job_a_id", "model_b_id", "job_b_id")
    out: Counter = Counter()
    for model_a, job_a, model_b, job_b in rows:
        out[pair_key(contestant_key(model_a, job_a), contestant_key(model_b, job_b))] += 1
    return out


# --------------------------------------------------------------------------- leaderboard


def battle_score(vote: str) -> float:
    """Score of side A: a win 1, a loss 0, a tie or 'both bad' ½ (LMSYS counts both as ties)."""
    return {"a": 1.0, "b": 0.0}.get(vote, 0.5)


@dataclass(frozen=True)
class Standing:
    """A leaderboard row: ``rank`` is None while the model has fewer than ``min_votes`` votes."""

    name: str
    rating: float
    low: float | None
    high: float | None
    votes: int
    wins: float
    rank: int | None
    min_votes: int

    @property
    def provisional(self) -> bool:
        return self.rank is None


def counted_battles(*, department_id: int | None = None):
    qs = ArenaBattle.objects.counted()
    return qs if department_id is None else qs.filter(department_id=department_id)


def leaderboard(*, department_id: int | None = None, bootstrap: int = 200, seed: int = 0, min_votes: int | None = None) -> list[Standing]:
    """Bradley–Terry standings from the counted votes: ranked models (at least ``min_votes``,
    default MEDPORTAL_ARENA_MIN_VOTES) best first, then the provisional ones, unranked."""
    min_votes = settings.MEDPORTAL_ARENA_MIN_VOTES if min_votes is None else min_votes
    qs = counted_battles(department_id=department_id).select_related("model_a", "model_b", "model_a__endpoint", "model_b__endpoint", "job_a", "job_b")
    rated = fit([(b.label_a, b.label_b, battle_score(b.vote)) for b in qs], bootstrap=bootstrap, seed=seed)
    ranked = [r for r in rated if r.votes >= min_votes]
    provisional = [r for r in rated if r.votes < min_votes]
    rows = [Standing(**vars(r), rank=i, min_votes=min_votes) for i, r in enumerate(ranked, start=1)]
    return rows + [Standing(**vars(r), rank=None, min_votes=min_votes) for r in provisional]


def leaderboard_departments():
    from curation.models import Department

    return Department.objects.filter(pk__in=ArenaBattle.objects.counted().values("department_id")).order_by("name")


# --------------------------------------------------------------------------- ratings


def ratings_for_export(*, job_id: int | None = None, base_model_id: int | None = None):
    qs = Rating.objects.select_related("message", "message__session", "message__base_model", "message__base_model__endpoint", "message__job", "user", "correction_pair").order_by("id")
    if job_id is not None:
        qs = qs.filter(message__job_id=job_id)
    if base_model_id is not None:
        qs = qs.filter(message__base_model_id=base_model_id, message__job__isnull=True)
    return qs


def rating_rows(qs) -> list[dict]:
    """Export rows; the question an answer replied to comes from one query for all ratings."""
    ratings = list(qs)
    questions: dict[int, list[tuple[int, str]]] = {}  # session id → [(message id, content)] ascending
    asked = ChatMessage.objects.filter(
        session_id__in={r.message.session_id for r in ratings}, role=ChatMessage.Role.USER, superseded=False
    ).order_by("id")
    for session_id, pk, content in asked.values_list("session_id", "id", "content"):
        questions.setdefault(session_id, []).append((pk, content))
    rows = []
    for r in ratings:
        m = r.message
        before = questions.get(m.session_id, [])
        i = bisect.bisect_left(before, (m.id,))  # the last user turn before this answer
        question = before[i - 1][1] if i else None
        rows.append(
            {
                "rating_id": r.pk,
                "rated_by": r.user.get_username(),
                "rated_at": r.updated_at.isoformat(),
                "model": m.base_model.name if m.base_model_id else "",
                "adapter_job": m.job_id,
                "model_label": m.model_label,
                "question": question or "",
                "answer": m.content,
                "thumb": r.thumb,
                "accuracy": r.accuracy,
                "safety": r.safety,
                "completeness": r.completeness,
                "clarity": r.clarity,
                "reason_tags": list(r.reason_tags),
                "comment": r.comment,
                "corrected_answer": r.corrected_answer,
                "correction_pair": r.correction_pair_id,
                "ttft_ms": (m.stats or {}).get("ttft_ms"),
                "tokens_per_second": (m.stats or {}).get("tokens_per_second"),
            }
        )
    return rows


def rating_summary(*, job_id: int | None = None, base_model_id: int | None = None) -> dict:
    """Counts and rubric means of the ratings of one adapter (or a base model alone)."""
    qs = ratings_for_export(job_id=job_id, base_model_id=base_model_id)
    agg = qs.aggregate(
        n=Count("id"),
        up=Count("id", filter=Q(thumb="up")),
        down=Count("id", filter=Q(thumb="down")),
        corrections=Count("id", filter=~Q(corrected_answer="")),
        accuracy=Avg("accuracy"),
        safety=Avg("safety"),
        completeness=Avg("completeness"),
        clarity=Avg("clarity"),
    )
    return agg


def answer_ratings(answers: list[tuple[int, int | None, str, str]]) -> list[list[dict]]:
    """Clinicians' chat ratings of the same answers, for the judge–clinician agreement of an
    evaluation (training reads it through MEDPORTAL_CHAT_ANSWER_RATINGS; it does not import chat).

    ``answers``: (base_model_id, job_id or None, question, answer). For each, the rubric scores
    ({criterion: 1-5 or None}) of every rating of a chat answer by the same model (that adapter, or
    the base model without one) whose text equals the answer and which replied to the same question
    (both compared without surrounding whitespace)."""
    out: list[list[dict]] = [[] for _ in answers]
    wanted: dict[tuple, list[int]] = {}
    for i, (base_id, job_id, question, answer) in enumerate(answers):
        answer = (answer or "").strip()
        if answer:
            wanted.setdefault((base_id, job_id, (question or "").strip(), answer), []).append(i)
    if not wanted:
        return out
    # Rated answers are few (a clinician's rating each): read the models' rated answers, compare here.
    qs = ratings_for_export().filter(
        message__role=ChatMessage.Role.ASSISTANT, message__superseded=False, message__base_model_id__in={key[0] for key in wanted}
    )
    ratings = list(qs)
    for r, row in zip(ratings, rating_rows(ratings)):
        key = (r.message.base_model_id, r.message.job_id, (row["question"] or "").strip(), (r.message.content or "").strip())
        scores = {c: getattr(r, c) for c in Rating.RUBRIC}
        for i in wanted.get(key, ()):
            out[i].append(scores)
    return out
