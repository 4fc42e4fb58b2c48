"""Writes of the chat app: sessions, messages, ratings and corrections, arena battles and votes.

Roles: clinicians (and admins) chat, rate, correct and vote. Reads live in chat/selectors.py;
the WebSocket consumers and views only call these.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _

from training.inference import SEED_CHAT_PARAMS, GenerationParams, InferenceError, ParamsError
from training.runnables import external_messages, runnable
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
    """The model (and adapter) can answer: active, the job succeeded on that base model, its
    endpoint is on (and allowed, when external)."""
    if base_model is None or not base_model.is_active:
        raise InvalidInput(_("Pick an active base model."))
    try:
        runnable(base_model, job)
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


def chat_session_start(*, user) -> ChatSession:
    """A new chat, straight to its prompt: with the settings of the user's last chat (model,
    adapter, system prompt, parameters, department) while that model can still answer, else
    the defaults and the first available model. An untouched last chat is reused, so "New chat"
    never piles up empty ones."""
    from chat.selectors import contestants

    _require_chat_role(user)
    last = ChatSession.objects.filter(user=user).select_related("base_model", "job").order_by("-updated_at", "-id").first()
    if last is not None:
        if not last.messages.exists():
            return last
        try:
            contestant_check(last.base_model, last.job)
        except InvalidInput:
            pass
        else:
            return chat_session_create(
                user=user, base_model=last.base_model, job=last.job, system_prompt=last.system_prompt, params=last.params, department=last.department
            )
    available = contestants()
    if not available:
        raise InvalidTransition(_("No model is registered yet. An admin registers a base model (make demo registers the demo model)."))
    return chat_session_create(user=user, base_model=available[0].base_model, job=available[0].job, params=SEED_CHAT_PARAMS.to_dict())


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


# --------------------------------------------------------------------------- the conversation
#
# Chat never loses anything: a question is stored only once its chat is claimed for the answer,
# and every claimed answer ends as a stored answer (complete, stopped, interrupted or failed);
# the claim is released on every exit path. Chats stored before that (or damaged by a crash)
# are repaired when the history is built: see ``conversation_exchanges``.

CLAIM_STALE_SECONDS = 60  # a claim not refreshed for this long belonged to a process that died
CLAIM_HEARTBEAT_SECONDS = 15  # how often a streaming answer refreshes its claim


class ChatBusy(InvalidTransition):
    code = "busy"


def _require_own_chat(session: ChatSession, user) -> None:
    _require_chat_role(user)
    if session.user_id != user.pk:
        raise NotAllowed(_("This is not your chat."))


def conversation_exchanges(messages: Iterable[ChatMessage]) -> tuple[list[tuple[ChatMessage, ChatMessage]], ChatMessage | None]:
    """The current messages of a chat (ordered by id) as the model may see them: the answered
    (question, answer) exchanges, and the question still waiting for its answer (or None).

    This is the one place that repairs a conversation the chat template would reject: a
    question with no usable answer before the next question (a failed or empty answer, or one
    lost by a crash or by an older version of MedPortal) is left out, and so is an answer with
    no question before it. Left out means "not sent to the model": the page still shows them.
    """
    exchanges: list[tuple[ChatMessage, ChatMessage]] = []
    pending: ChatMessage | None = None
    for m in messages:
        if m.superseded:
            continue
        if m.role == ChatMessage.Role.USER:
            pending = m  # an earlier pending question had no answer: it is left out
        elif pending is not None:
            if m.status != ChatMessage.Status.FAILED and m.content.strip():
                exchanges.append((pending, m))
            pending = None  # a failed or empty answer leaves its question out too
    return exchanges, pending


def chat_history(session: ChatSession) -> list[dict]:
    """The conversation as the model sees it: system prompt + the answered exchanges + the
    question to answer (see ``conversation_exchanges``)."""
    current = session.messages.filter(superseded=False).only("role", "content", "status", "superseded").order_by("id")
    exchanges, pending = conversation_exchanges(current)
    messages = [{"role": "system", "content": session.system_prompt}] if session.system_prompt else []
    for question, answer in exchanges:
        messages += [{"role": "user", "content": question.content}, {"role": "assistant", "content": answer.content}]
    if pending is not None:
        messages.append({"role": "user", "content": pending.content})
    return messages


def chat_prepare(*, session: ChatSession, user):
    """(runnable, messages) for the answer to generate: the model resolved (InferenceError when
    it cannot run), the conversation, masked and audited when the model is external."""
    run = runnable(session.base_model, session.job)
    messages = chat_history(session)
    [messages] = external_messages(run, [messages], actor=user, purpose="chat", target=session)
    return run, messages


def chat_claim(*, session: ChatSession) -> str:
    """Claim the chat for one generation (any process): a conditional UPDATE that succeeds only
    when the chat is free or its claim went stale. Returns the claim's token; ChatBusy if taken."""
    token = uuid.uuid4().hex
    now = timezone.now()
    stale = now - timedelta(seconds=CLAIM_STALE_SECONDS)
    claimed = (
        ChatSession.objects.filter(pk=session.pk)
        .filter(Q(busy_token="") | Q(busy_since__isnull=True) | Q(busy_since__lt=stale))
        .update(busy_token=token, busy_since=now)
    )
    if not claimed:
        raise ChatBusy(_("This chat is answering another question (in another tab or window?): wait until it is done."))
    return token


def chat_claim_heartbeat(*, session: ChatSession, token: str) -> bool:
    """Keep a running generation's claim fresh; False if it is no longer ours."""
    return bool(ChatSession.objects.filter(pk=session.pk, busy_token=token).update(busy_since=timezone.now()))


def chat_release(*, session: ChatSession, token: str) -> None:
    """Free the chat (only the claim ``token`` names: a stale claim taken over stays taken)."""
    ChatSession.objects.filter(pk=session.pk, busy_token=token).update(busy_token="", busy_since=None)


def _check_question(content) -> str:
    # NUL has no visible form and no database column holds it (PostgreSQL refuses the row).
    content = (content if isinstance(content, str) else "").replace("\x00", "").strip()
    if not content:
        raise InvalidInput(_("Type a message first."))
    if len(content) > MAX_MESSAGE_CHARS:
        raise InvalidInput(_("A message may have at most %(n)d characters.") % {"n": MAX_MESSAGE_CHARS})
    return content


def _claimed(session: ChatSession, work):
    """Claim the chat, run ``work(token)`` in a transaction; release the claim if it fails."""
    token = chat_claim(session=session)
    try:
        with transaction.atomic():
            return work(token)
    except BaseException:
        chat_release(session=session, token=token)
        raise


def chat_user_message(*, session: ChatSession, user, content: str) -> ChatMessage:
    """Store a question (and title an untitled chat with it). Callers that generate go
    through ``chat_ask`` / ``chat_question_edit``, which claim the chat first."""
    _require_own_chat(session, user)
    content = _check_question(content)
    with transaction.atomic():
        message = ChatMessage.objects.create(session=session, role=ChatMessage.Role.USER, content=content)
        if not session.title:
            session.title = content[:60]
        session.save(update_fields=["title", "updated_at"])
    return message


def chat_ask(*, session: ChatSession, user, content: str) -> tuple[ChatMessage, str]:
    """Claim the chat and store the question to answer: (question, claim token). Nothing is
    stored when the question is invalid or the chat is busy."""
    _require_own_chat(session, user)
    content = _check_question(content)
    return _claimed(session, lambda token: (chat_user_message(session=session, user=user, content=content), token))


def _last_current(session: ChatSession) -> ChatMessage | None:
    return session.messages.filter(superseded=False).order_by("-id").first()


def chat_question_edit(*, session: ChatSession, user, message_id, content: str) -> tuple[ChatMessage, str]:
    """Edit and resend the last question: the old question and its answer stay for the
    record (superseded, out of the history), the new text is asked. (question, claim token)."""
    _require_own_chat(session, user)
    content = _check_question(content)

    def work(token):
        last_question = session.messages.filter(superseded=False, role=ChatMessage.Role.USER).order_by("-id").first()
        if last_question is None or str(last_question.pk) != str(message_id):
            raise InvalidTransition(_("Only your last question can be edited and sent again."))
        session.messages.filter(superseded=False, id__gte=last_question.pk).update(superseded=True)
        return chat_user_message(session=session, user=user, content=content), token

    return _claimed(session, work)


def chat_retry(*, session: ChatSession, user) -> str:
    """Answer the last question again (regenerate, or retry a failed or interrupted answer):
    the last answer stays for the record, superseded. Returns the claim token."""
    _require_own_chat(session, user)

    def work(token):
        last = _last_current(session)
        if last is None:
            raise InvalidTransition(_("There is no answer to regenerate."))
        if last.role == ChatMessage.Role.ASSISTANT:
            last.superseded = True
            last.save(update_fields=["superseded"])
        return token

    return _claimed(session, work)


def chat_assistant_message(*, session: ChatSession, content: str, params: dict, stats: dict, status: str = ChatMessage.Status.COMPLETE, error: str = "") -> ChatMessage:
    """Store an answer (complete, stopped, interrupted or failed) with the contestant that wrote it."""
    message = ChatMessage.objects.create(
        session=session,
        role=ChatMessage.Role.ASSISTANT,
        content=content,
        status=status,
        error=error[:2000],
        base_model_id=session.base_model_id,
        job_id=session.job_id,
        params=params,
        stats=stats,
    )
    ChatSession.objects.filter(pk=session.pk).update(updated_at=timezone.now())
    return message


def chat_answer_finish(*, session: ChatSession, token: str, content: str, params: dict, stats: dict, status: str, error: str = "") -> ChatMessage:
    """Store the answer of a claimed generation and release the chat, in one transaction."""
    with transaction.atomic():
        message = chat_assistant_message(session=session, content=content, params=params, stats=stats, status=status, error=error)
        chat_release(session=session, token=token)
    return message


def chat_message_delete(*, session: ChatSession, user, message_id) -> list[int]:
    """Delete a message of one's chat, for good: a question goes with its answers (also the
    superseded ones), an answer alone (its question then waits for a retry, or is left out of
    the history). Not while the chat is answering. Audited. Returns the deleted ids."""
    _require_own_chat(session, user)

    def work(token):
        message = session.messages.filter(pk=message_id if str(message_id).isdigit() else None).first()
        if message is None:
            raise InvalidInput(_("There is no such message in this chat."))
        ids = [message.pk]
        if message.role == ChatMessage.Role.USER:
            next_question = session.messages.filter(role=ChatMessage.Role.USER, id__gt=message.pk).order_by("id").values_list("id", flat=True).first()
            answers = session.messages.filter(role=ChatMessage.Role.ASSISTANT, id__gt=message.pk)
            if next_question is not None:
                answers = answers.filter(id__lt=next_question)
            ids += list(answers.values_list("id", flat=True))
        ChatMessage.objects.filter(pk__in=ids).delete()
        audit_record(actor=user, action="chat.delete", target=session, summary=f"deleted messages {ids}", changes={"messages": ids})
        chat_release(session=session, token=token)
        return ids

    return _claimed(session, work)


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
    if message.status == ChatMessage.Status.FAILED:
        raise InvalidInput(_("A failed answer cannot be rated: retry it."))
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
    exchanges, asked = conversation_exchanges(message.session.messages.filter(superseded=False, id__lt=message.id).order_by("id"))
    if asked is None:
        raise InvalidInput(_("This answer has no question before it."))
    question = asked.content
    history = [[q.content, a.content] for q, a in exchanges]
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
    """A blind battle between two given contestants, in the given order. Users never choose:
    pages call ``arena_battle_draw``, which draws the pair."""
    _require_chat_role(user)
    prompt = (prompt or "").strip()
    if not prompt:
        raise InvalidInput(_("Type a prompt first."))
    if len(prompt) > MAX_MESSAGE_CHARS:
        raise InvalidInput(_("A message may have at most %(n)d characters.") % {"n": MAX_MESSAGE_CHARS})
    (model_a, job_a), (model_b, job_b) = contestant_a, contestant_b
    contestant_check(model_a, job_a)
    contestant_check(model_b, job_b)
    if (model_a.pk, getattr(job_a, "pk", None)) == (model_b.pk, getattr(job_b, "pk", None)):
        raise InvalidInput(_("A battle needs two different models."))
    battle = ArenaBattle(
        user=user,
        prompt=prompt,
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


def arena_battle_draw(*, user, prompt: str, params: dict | None = None, system_prompt: str | None = None, department=None, rng=None) -> ArenaBattle:
    """A blind battle between two different contestants drawn by the system among the
    available ones (registered base models, succeeded adapters), pairs with fewer counted votes
    first (chat.lib.pairing), in random order."""
    from chat.lib.pairing import draw_pair
    from chat.selectors import arena_pair_votes, contestants

    _require_chat_role(user)
    if not (prompt or "").strip():
        raise InvalidInput(_("Type a prompt first."))
    available = {c.key: c for c in contestants()}
    if len(available) < 2:
        raise InvalidTransition(_("The arena needs at least two models: register another base model or finish a fine-tune."))
    key_a, key_b = draw_pair(list(available), arena_pair_votes(), rng=rng)
    a, b = available[key_a], available[key_b]
    return arena_battle_create(
        user=user,
        prompt=prompt,
        contestant_a=(a.base_model, a.job),
        contestant_b=(b.base_model, b.job),
        params=params,
        system_prompt=system_prompt,
        department=department,
    )


def arena_prepare(*, battle: ArenaBattle, base_model, job, messages: list[dict], user):
    """(runnable, messages) for one side of a battle; masked and audited when external."""
    run = runnable(base_model, job)
    [sent] = external_messages(run, [messages], actor=user, purpose="arena", target=battle)
    return run, sent


def arena_battle_answer(*, battle: ArenaBattle, side: str, content: str, stats: dict) -> None:
    field = {"a": "answer_a", "b": "answer_b"}[side]
    ArenaBattle.objects.filter(pk=battle.pk).update(**{field: content, f"stats_{side}": stats})
    setattr(battle, field, content)
    setattr(battle, f"stats_{side}", stats)


def arena_vote(*, user, battle: ArenaBattle, vote: str) -> ArenaBattle:
    """Record the vote and reveal the names (nothing shows them before)."""
    _require_chat_role(user)
    if battle.user_id != user.pk:
        raise NotAllowed(_("This is not your battle."))
    if vote not in ArenaBattle.Vote.values:
        raise InvalidInput(_("Unknown vote '%(v)s'.") % {"v": vote})
    if battle.voided_at is not None:
        raise InvalidTransition(_("This battle is void: start the next one."))
    if battle.vote:
        raise InvalidTransition(_("You already voted in this battle."))
    if not (battle.answer_a and battle.answer_b):
        raise InvalidTransition(_("Wait for both answers before voting."))
    now = timezone.now()
    counts = battle.revealed_at is None  # False only for battles revealed before the arena was fully blind
    updated = ArenaBattle.objects.filter(pk=battle.pk, vote="", voided_at__isnull=True).update(
        vote=vote, vote_counts=counts, voted_at=now, revealed_at=battle.revealed_at or now
    )
    if not updated:
        raise InvalidTransition(_("This battle already has a vote or is void."))
    battle.refresh_from_db()
    audit_record(actor=user, action="arena.vote", target=battle, summary=f"{battle.label_a} vs {battle.label_b}: {vote}", changes={"counts": counts})
    return battle


def arena_battle_void(*, user, battle: ArenaBattle, reason: str = ArenaBattle.VoidReason.IDENTITY, note: str = "") -> ArenaBattle:
    """Void a battle so that it never counts. Its voter may, instead of voting (an answer gave
    away which model wrote it); an admin may void any battle, also after the vote. Audited."""
    if reason not in ArenaBattle.VoidReason.values:
        raise InvalidInput(_("Unknown void reason '%(v)s'.") % {"v": reason})
    note = (note or "").strip()
    if battle.voided_at is not None:
        raise InvalidTransition(_("This battle is already void."))
    own_open = battle.user_id == user.pk and not battle.vote and has_role(user, CLINICIAN)
    if not own_open and not has_role(user, ADMIN):
        if battle.user_id == user.pk:
            raise InvalidTransition(_("You already voted in this battle; only an admin can void it now."))
        raise NotAllowed(_("Only the voter (before voting) or an admin can void a battle."))
    if reason == ArenaBattle.VoidReason.OTHER and not note:
        raise InvalidInput(_("Say why the battle is void."), details={"note": "required"})
    now = timezone.now()
    with transaction.atomic():
        updated = ArenaBattle.objects.filter(pk=battle.pk, voided_at__isnull=True).update(
            voided_at=now, voided_by=user, void_reason=reason, void_note=note[:2000], revealed_at=battle.revealed_at or now
        )
        if not updated:
            raise InvalidTransition(_("This battle is already void."))
        battle.refresh_from_db()
        audit_record(
            actor=user,
            action="arena.void",
            target=battle,
            summary=f"{battle.label_a} vs {battle.label_b}: void ({reason}){' ' + note if note else ''}"[:200],
            changes={"reason": reason, "note": note, "vote": battle.vote, "counted_before": battle.vote_counts and bool(battle.vote)},
        )
    return battle
