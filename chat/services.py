"""Writes of the chat app: sessions, messages, ratings and corrections, arena battles and votes.

Roles: clinicians (and admins) chat, rate, correct and vote. Reads live in chat/selectors.py;
the WebSocket consumers and views only call these.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from chat.inference import GenerationParams, InferenceError, ParamsError
from chat.inference.registry import model_ref
from chat.models import ArenaBattle, ChatMessage, ChatSession, Rating
from medportal.audit import audit_record
from medportal.errors import InvalidInput, InvalidTransition, NotAllowed
from medportal.roles import ADMIN, CLINICIAN, has_role

DEFAULT_SYSTEM_PROMPT = (
    "你是一名严谨的医学助手。请根据用户描述给出清晰、有依据的医学信息和建议，"
    "不确定时要说明；始终提醒用户：以上内容仅供参考，诊断和治疗请以医生面诊意见为准。"
)
MAX_MESSAGE_CHARS = 8000


def _require_chat_role(user) -> None:
    if not has_role(user, CLINICIAN):
        raise NotAllowed(_("Only clinicians and admins chat with models."))


def params_clean(params: dict | None) -> dict:
    """Generation parameters as stored (validated); InvalidInput names the bad fields."""
    try:
        return GenerationParams.from_dict(params or {}).to_dict()
    except ParamsError as exc:
        raise InvalidInput(_("Some generation parameters are invalid."), details=exc.errors) from None


def contestant_check(base_model, job) -> None:
    """The model (and adapter) can answer: active, and the job succeeded on that base model."""
    if base_model is None or not base_model.is_active:
        raise InvalidInput(_("Pick an active base model."))
    if job is not None:
        try:
            model_ref(base_model, job)
        except InferenceError as exc:
            raise InvalidInput(str(exc)) from None


def chat_session_create(*, user, base_model, job=None, system_prompt: str | None = None, params: dict | None = None, title: str = "", department=None) -> ChatSession:
    _require_chat_role(user)
    contestant_check(base_model, job)
    session = ChatSession(
        user=user,
        base_model=base_model,
        job=job,
        system_prompt=DEFAULT_SYSTEM_PROMPT if system_prompt is None else system_prompt.strip(),
        params=params_clean(params),
        title=(title or "").strip()[:200],
        department=department,
    )
    session.full_clean()
    session.save()
    return session


def chat_session_update(*, user, session: ChatSession, base_model=None, job=None, system_prompt: str | None = None, params: dict | None = None, title: str | None = None) -> ChatSession:
    _require_chat_role(user)
    if session.user_id != user.pk:
        raise NotAllowed(_("This is not your chat."))
    if base_model is not None:
        contestant_check(base_model, job)
        session.base_model, session.job = base_model, job
    if system_prompt is not None:
        session.system_prompt = system_prompt.strip()
    if params is not None:
        session.params = params_clean(params)
    if title is not None:
        session.title = title.strip()[:200]
    session.full_clean()
    session.save()
    return session


def chat_history(session: ChatSession) -> list[dict]:
    """The conversation as the model sees it: system prompt + the current turns."""
    messages = [{"role": "system", "content": session.system_prompt}] if session.system_prompt else []
    messages += [
        {"role": m.role, "content": m.content}
        for m in session.messages.filter(superseded=False).only("role", "content").order_by("id")
    ]
    return messages


def chat_user_message(*, session: ChatSession, user, content: str) -> ChatMessage:
    _require_chat_role(user)
    if session.user_id != user.pk:
        raise NotAllowed(_("This is not your chat."))
    content = (content or "").strip()
    if not content:
        raise InvalidInput(_("Type a message first."))
    if len(content) > MAX_MESSAGE_CHARS:
        raise InvalidInput(_("A message may have at most %(n)d characters.") % {"n": MAX_MESSAGE_CHARS})
    with transaction.atomic():
        message = ChatMessage.objects.create(session=session, role=ChatMessage.Role.USER, content=content)
        if not session.title:
            session.title = content[:60]
        session.save(update_fields=["title", "updated_at"])
    return message


def chat_assistant_message(*, session: ChatSession, content: str, params: dict, stats: dict) -> ChatMessage:
    """Store an answer (complete or stopped) with the contestant that wrote it."""
    return ChatMessage.objects.create(
        session=session,
        role=ChatMessage.Role.ASSISTANT,
        content=content,
        base_model_id=session.base_model_id,
        job_id=session.job_id,
        params=params,
        stats=stats,
    )


def chat_regenerate_prepare(*, session: ChatSession, user) -> None:
    """Retire the last answer so the next generation replaces it."""
    _require_chat_role(user)
    if session.user_id != user.pk:
        raise NotAllowed(_("This is not your chat."))
    last = session.messages.filter(superseded=False).order_by("-id").first()
    if last is None or last.role != ChatMessage.Role.ASSISTANT:
        raise InvalidTransition(_("There is no answer to regenerate."))
    last.superseded = True
    last.save(update_fields=["superseded"])


# --------------------------------------------------------------------------- ratings


def _score(name: str, value) -> int | None:
    if value in (None, ""):
        return None
    try:
        value = int(value)
    except (TypeError, ValueError):
        raise InvalidInput(_("%(name)s must be a score from 1 to 5.") % {"name": name}, details={name: "1-5"}) from None
    if not 1 <= value <= 5:
        raise InvalidInput(_("%(name)s must be a score from 1 to 5.") % {"name": name}, details={name: "1-5"})
    return value


def rating_save(
    *,
    user,
    message: ChatMessage,
    thumb: str = "",
    scores: dict | None = None,
    reason_tags: Iterable[str] = (),
    comment: str = "",
    corrected_answer: str = "",
) -> Rating:
    """Create or update ``user``'s rating of an answer. A new or changed corrected answer
    becomes a draft QA pair submitted for review (the conversation so far as question and
    history, the correction as answer), naming the model and adapter that answered."""
    from curation.services.editing import qa_pair_create_from_correction

    _require_chat_role(user)
    if message.role != ChatMessage.Role.ASSISTANT:
        raise InvalidInput(_("Only answers can be rated."))
    if message.session.user_id != user.pk and not has_role(user, ADMIN):
        raise NotAllowed(_("You can rate answers in your own chats only."))
    if thumb not in ("", *Rating.Thumb.values):
        raise InvalidInput(_("Unknown thumb '%(v)s'.") % {"v": thumb})
    known = {k for k, _label in Rating.REASON_TAGS}
    tags = list(dict.fromkeys(t for t in reason_tags if t))
    unknown = [t for t in tags if t not in known]
    if unknown:
        raise InvalidInput(_("Unknown reason tags: %(tags)s.") % {"tags": ", ".join(unknown)})
    scores = scores or {}
    bad = sorted(set(scores) - set(Rating.RUBRIC))
    if bad:
        raise InvalidInput(_("Unknown rubric items: %(items)s.") % {"items": ", ".join(bad)})
    values = {name: _score(name, scores.get(name)) for name in Rating.RUBRIC}
    corrected_answer = (corrected_answer or "").strip()
    with transaction.atomic():
        rating, created = Rating.objects.select_for_update().get_or_create(message=message, user=user)
        old_correction = rating.corrected_answer
        rating.thumb = thumb
        for name, value in values.items():
            setattr(rating, name, value)
        rating.reason_tags = tags
        rating.comment = (comment or "").strip()
        rating.corrected_answer = corrected_answer
        if corrected_answer and corrected_answer != old_correction:
            rating.correction_pair = _correction_pair(user=user, message=message, corrected_answer=corrected_answer, create=qa_pair_create_from_correction)
        rating.full_clean()
        rating.save()
        audit_record(
            actor=user,
            action="chat.rate",
            target=message,
            summary=f"{message.model_label}: {thumb or '-'} {values}"[:200],
            changes={"correction_pair": rating.correction_pair_id, "created": created},
        )
    return rating


def _correction_pair(*, user, message: ChatMessage, corrected_answer: str, create):
    turns = list(message.session.messages.filter(superseded=False, id__lt=message.id).order_by("id").values_list("role", "content"))
    if not turns or turns[-1][0] != ChatMessage.Role.USER:
        raise InvalidInput(_("This answer has no question before it."))
    question = turns[-1][1]
    history, pending = [], None
    for role, content in turns[:-1]:
        if role == ChatMessage.Role.USER:
            pending = content
        elif pending is not None:
            history.append([pending, content])
            pending = None
    session = message.session
    return create(
        author=user,
        instruction=question,
        output=corrected_answer,
        system=session.system_prompt,
        history=history,
        department=session.department.name if session.department_id else "",
        source_ref=f"chat-message:{message.pk}",
        extra={
            "model": message.base_model.name if message.base_model_id else "",
            "adapter_job": message.job_id,
            "model_label": message.model_label,
            "original_answer": message.content,
            "chat_session": session.pk,
            "chat_message": message.pk,
        },
    )


# --------------------------------------------------------------------------- arena


def arena_battle_create(*, user, prompt: str, contestant_a: tuple, contestant_b: tuple, params: dict | None = None, system_prompt: str | None = None, department=None) -> ArenaBattle:
    """A blind battle; the order of the two contestants is the caller's (the view shuffles)."""
    _require_chat_role(user)
    prompt = (prompt or "").strip()
    if not prompt:
        raise InvalidInput(_("Type a prompt first."))
    (model_a, job_a), (model_b, job_b) = contestant_a, contestant_b
    contestant_check(model_a, job_a)
    contestant_check(model_b, job_b)
    if (model_a.pk, getattr(job_a, "pk", None)) == (model_b.pk, getattr(job_b, "pk", None)):
        raise InvalidInput(_("Pick two different models."))
    battle = ArenaBattle(
        user=user,
        prompt=prompt[:MAX_MESSAGE_CHARS],
        system_prompt=DEFAULT_SYSTEM_PROMPT if system_prompt is None else system_prompt.strip(),
        department=department,
        params=params_clean(params),
        model_a=model_a,
        job_a=job_a,
        model_b=model_b,
        job_b=job_b,
    )
    battle.full_clean()
    battle.save()
    return battle


def arena_battle_answer(*, battle: ArenaBattle, side: str, content: str, stats: dict) -> None:
    field = {"a": "answer_a", "b": "answer_b"}[side]
    ArenaBattle.objects.filter(pk=battle.pk).update(**{field: content, f"stats_{side}": stats})
    setattr(battle, field, content)
    setattr(battle, f"stats_{side}", stats)


def arena_reveal(*, user, battle: ArenaBattle) -> ArenaBattle:
    if battle.user_id != user.pk:
        raise NotAllowed(_("This is not your battle."))
    if battle.revealed_at is None:
        battle.revealed_at = timezone.now()
        ArenaBattle.objects.filter(pk=battle.pk, revealed_at__isnull=True).update(revealed_at=battle.revealed_at)
    return battle


def arena_vote(*, user, battle: ArenaBattle, vote: str) -> ArenaBattle:
    """Record the vote and reveal the names. A vote after the reveal is kept but does not count."""
    if battle.user_id != user.pk:
        raise NotAllowed(_("This is not your battle."))
    if vote not in ArenaBattle.Vote.values:
        raise InvalidInput(_("Unknown vote '%(v)s'.") % {"v": vote})
    if battle.vote:
        raise InvalidTransition(_("You already voted in this battle."))
    if not (battle.answer_a and battle.answer_b):
        raise InvalidTransition(_("Wait for both answers before voting."))
    now = timezone.now()
    counts = battle.revealed_at is None
    updated = ArenaBattle.objects.filter(pk=battle.pk, vote="").update(vote=vote, voted_at=now, vote_counts=counts, revealed_at=battle.revealed_at or now)
    if not updated:
        raise InvalidTransition(_("You already voted in this battle."))
    battle.refresh_from_db()
    audit_record(actor=user, action="arena.vote", target=battle, summary=f"{battle.label_a} vs {battle.label_b}: {vote}", changes={"counts": counts})
    return battle
