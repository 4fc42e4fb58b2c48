"""Reads of the chat app. ``*_get_for_user`` are the only way to reach a user's sessions,
messages and battles: another user's object is a 404, never a hint that it exists."""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from django.db.models import Avg, Count, Q
from django.http import Http404

from chat.lib.bradley_terry import fit
from chat.models import ArenaBattle, ChatMessage, ChatSession, Rating, contestant_label
from medportal.roles import ADMIN, has_role


@dataclass(frozen=True)
class Contestant:
    """A model that can answer: a base model, or a succeeded job's adapter on it."""

    base_model: object
    job: object | None

    @property
    def key(self) -> str:
        return f"{self.base_model.pk}" if self.job is None else f"{self.base_model.pk}:{self.job.pk}"

    @property
    def label(self) -> str:
        return contestant_label(self.base_model, self.job)


def contestants() -> list[Contestant]:
    from training.models import BaseModel, FineTuneJob

    bases = list(BaseModel.objects.filter(is_active=True).order_by("name"))
    jobs = (
        FineTuneJob.objects.filter(status=FineTuneJob.Status.SUCCEEDED, base_model__is_active=True)
        .exclude(adapter_path="")
        .select_related("base_model", "dataset_version")
        .order_by("-finished_at", "-id")
    )
    out = [Contestant(b, None) for b in bases]
    out += [Contestant(j.base_model, j) for j in jobs]
    return out


def contestant_from_key(key: str) -> Contestant:
    """Parse ``"<base id>"`` or ``"<base id>:<job id>"``; Http404 for anything unknown."""
    from training.models import BaseModel, FineTuneJob

    try:
        parts = [int(p) for p in str(key).split(":")]
    except ValueError:
        raise Http404("unknown model") from None
    if len(parts) not in (1, 2):
        raise Http404("unknown model")
    base = BaseModel.objects.filter(pk=parts[0], is_active=True).first()
    if base is None:
        raise Http404("unknown model")
    job = None
    if len(parts) == 2:
        job = FineTuneJob.objects.filter(pk=parts[1], base_model=base, status=FineTuneJob.Status.SUCCEEDED).exclude(adapter_path="").first()
        if job is None:
            raise Http404("unknown adapter")
    return Contestant(base, job)


def session_list(*, user):
    return ChatSession.objects.filter(user=user).select_related("base_model", "job").annotate(n_messages=Count("messages"))


def session_get_for_user(*, user, pk) -> ChatSession:
    session = ChatSession.objects.filter(pk=pk, user=user).select_related("base_model", "job", "department").first()
    if session is None:
        raise Http404("no such chat")
    return session


def session_messages(session: ChatSession, *, user) -> list[ChatMessage]:
    messages = list(session.messages.filter(superseded=False).select_related("base_model", "job").order_by("id"))
    ratings = {r.message_id: r for r in Rating.objects.filter(message__in=[m.pk for m in messages], user=user)}
    for m in messages:
        m.my_rating = ratings.get(m.pk)
    return messages


def message_get_for_user(*, user, pk) -> ChatMessage:
    qs = ChatMessage.objects.select_related("session", "session__department", "base_model", "job")
    message = qs.filter(pk=pk).first()
    if message is None or (message.session.user_id != user.pk and not has_role(user, ADMIN)):
        raise Http404("no such message")
    return message


def battle_get_for_user(*, user, pk) -> ArenaBattle:
    battle = ArenaBattle.objects.select_related("model_a", "model_b", "job_a", "job_b", "department").filter(pk=pk, user=user).first()
    if battle is None:
        raise Http404("no such battle")
    return battle


# --------------------------------------------------------------------------- leaderboard


def battle_score(vote: str) -> float:
    """Score of side A: a win 1, a loss 0, a tie or 'both bad' ½ (LMSYS counts both as ties)."""
    return {"a": 1.0, "b": 0.0}.get(vote, 0.5)


def leaderboard(*, department_id: int | None = None, bootstrap: int = 200, seed: int = 0) -> list:
    qs = ArenaBattle.objects.filter(vote_counts=True).exclude(vote="").select_related("model_a", "model_b", "job_a", "job_b")
    if department_id is not None:
        qs = qs.filter(department_id=department_id)
    battles = [(b.label_a, b.label_b, battle_score(b.vote)) for b in qs]
    return fit(battles, bootstrap=bootstrap, seed=seed)


def leaderboard_departments():
    from curation.models import Department

    return Department.objects.filter(pk__in=ArenaBattle.objects.filter(vote_counts=True).values("department_id")).order_by("name")


# --------------------------------------------------------------------------- ratings


def ratings_for_export(*, job_id: int | None = None, base_model_id: int | None = None):
    qs = Rating.objects.select_related("message", "message__session", "message__base_model", "message__job", "user", "correction_pair").order_by("id")
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
