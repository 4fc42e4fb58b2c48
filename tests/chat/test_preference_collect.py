"""Preference pairs from chat: arena votes, differently rated regenerated answers, corrections."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import timezone

from chat.models import ArenaBattle, ChatMessage
from chat.preferences import preference_pairs_collect
from chat.services import chat_assistant_message, chat_session_create, chat_user_message, rating_save
from curation.models_pref import PreferencePair
from curation.services.preferences import preference_pair_review
from medportal.errors import NotAllowed

pytestmark = pytest.mark.django_db
K = PreferencePair.SourceKind


def battle(user, base_model, adapter_job, vote, n, **kw):
    return ArenaBattle.objects.create(
        user=user,
        prompt=f"问题{n}：胸痛三天需要就医吗？",
        system_prompt="你是医学助手。",
        model_a=base_model,
        model_b=base_model,
        job_b=adapter_job,
        answer_a=f"需要尽快就医，做心电图。{n}",
        answer_b=f"不用，休息即可。{n}",
        vote=vote,
        voted_at=timezone.now(),
        vote_counts=True,
        **kw,
    )


def test_arena_votes_become_pairs_ties_and_void_battles_do_not(clinician, curator, base_model, adapter_job):
    win_a = battle(clinician, base_model, adapter_job, "a", 1)
    win_b = battle(clinician, base_model, adapter_job, "b", 2)
    battle(clinician, base_model, adapter_job, "tie", 3)
    battle(clinician, base_model, adapter_job, "both_bad", 4)
    battle(clinician, base_model, adapter_job, "a", 5, voided_at=timezone.now())
    result = preference_pairs_collect(actor=curator)
    assert result.created[K.ARENA_VOTE] == 2
    a = PreferencePair.objects.get(source_ref=f"arena-battle:{win_a.pk}")
    assert (a.chosen, a.rejected, a.chosen_model, a.rejected_model) == (win_a.answer_a, win_a.answer_b, "demo", f"demo + #{adapter_job.pk}")
    assert a.judged_by == clinician and a.author == clinician and a.status == PreferencePair.Status.IN_REVIEW
    assert a.system == "你是医学助手。" and a.source_kind == "arena_vote"
    b = PreferencePair.objects.get(source_ref=f"arena-battle:{win_b.pk}")
    assert (b.chosen, b.rejected) == (win_b.answer_b, win_b.answer_a)
    again = preference_pairs_collect(actor=curator)  # idempotent
    assert again.total == 0 and again.existing == 2 and PreferencePair.objects.count() == 2


@pytest.fixture
def regenerated(clinician, base_model, adapter_job):
    """A chat whose second question was answered three times (regenerate supersedes the earlier answers)."""
    session = chat_session_create(user=clinician, base_model=base_model, system_prompt="你是医学助手。")
    chat_user_message(session=session, user=clinician, content="头痛怎么办？")
    chat_assistant_message(session=session, content="多休息，必要时就医。", params={}, stats={})
    chat_user_message(session=session, user=clinician, content="需要做CT吗？")
    answers = []
    for text in ("不需要。", "持续头痛或有神经症状时需要做头颅CT。", "看情况。"):
        if answers:
            ChatMessage.objects.filter(pk=answers[-1].pk).update(superseded=True)
        answers.append(chat_assistant_message(session=session, content=text, params={}, stats={}))
    return session, answers


def test_answers_rated_differently_become_pairs_with_the_conversation(regenerated, clinician, curator):
    _session, (bad, good, meh) = regenerated
    rating_save(user=clinician, message=bad, thumb="down")
    rating_save(user=clinician, message=good, thumb="up", scores={"accuracy": 5})
    rating_save(user=clinician, message=meh, thumb="down", scores={"accuracy": 3})
    result = preference_pairs_collect(actor=curator)
    assert result.created[K.RATING] == 2  # good > bad (thumbs: bad has no rubric), good > meh (rubric 5 > 3); meh vs bad: both thumbs down
    pairs = {(p.chosen, p.rejected) for p in PreferencePair.objects.filter(source_kind=K.RATING)}
    assert ("持续头痛或有神经症状时需要做头颅CT。", "不需要。") in pairs
    assert ("持续头痛或有神经症状时需要做头颅CT。", "看情况。") in pairs
    pair = PreferencePair.objects.filter(source_kind=K.RATING).first()
    assert pair.prompt == "需要做CT吗？" and pair.history == [["头痛怎么办？", "多休息，必要时就医。"]] and pair.system == "你是医学助手。"


def test_equal_ratings_make_no_pair(regenerated, clinician, curator):
    _session, (bad, good, _meh) = regenerated
    rating_save(user=clinician, message=bad, thumb="up")
    rating_save(user=clinician, message=good, thumb="up")
    assert preference_pairs_collect(actor=curator).created[K.RATING] == 0


def test_a_correction_is_chosen_over_the_models_answer(regenerated, clinician, clinician2, curator):
    _session, (_bad, _good, meh) = regenerated
    rating_save(user=clinician, message=meh, thumb="down", corrected_answer="头痛持续或伴呕吐、肢体无力时应做头颅CT。")
    result = preference_pairs_collect(actor=curator)
    assert result.created[K.CORRECTION] == 1
    pair = PreferencePair.objects.get(source_kind=K.CORRECTION)
    assert (pair.chosen, pair.rejected, pair.rejected_model) == ("头痛持续或伴呕吐、肢体无力时应做头颅CT。", "看情况。", "demo")
    # the judge does not confirm their own judgement; another clinician does
    with pytest.raises(NotAllowed):
        preference_pair_review(pair=pair, reviewer=clinician, decision="approve", version=pair.version)
    preference_pair_review(pair=pair, reviewer=clinician2, decision="approve", version=pair.version)
    assert pair.status == PreferencePair.Status.APPROVED


def test_only_curators_collect_and_the_page_button_works(client, clinician, curator, base_model, adapter_job):
    battle(clinician, base_model, adapter_job, "a", 9)
    with pytest.raises(NotAllowed):
        preference_pairs_collect(actor=clinician)
    client.force_login(clinician)
    assert client.post(reverse("chat:preference-collect")).status_code == 403
    client.force_login(curator)
    response = client.post(reverse("chat:preference-collect"), follow=True)
    assert response.redirect_chain[-1][0] == reverse("curation:preference-list")
    assert PreferencePair.objects.filter(source_kind=K.ARENA_VOTE).count() == 1


def test_rated_evaluation_samples_become_pairs(clinician, curator, admin_user, base_model, adapter_job):
    from curation.models import DatasetItem
    from training.models import EvalRating, EvalRun, EvalSample

    item = DatasetItem.objects.filter(version=adapter_job.dataset_version).first()
    runs = [
        EvalRun.objects.create(dataset_version=adapter_job.dataset_version, base_model=base_model, job=job, group="g1", status="succeeded", created_by=admin_user)
        for job in (None, adapter_job)
    ]
    base_answer, tuned_answer = "头痛时多喝热水即可。", "持续头痛应就医，必要时做头颅CT。"
    samples = [
        EvalSample.objects.create(run=run, position=0, dataset_item=item, prompt=item.content["instruction"], prediction=text)
        for run, text in zip(runs, (base_answer, tuned_answer), strict=True)
    ]
    EvalRating.objects.create(sample=samples[0], rater=clinician, accuracy=2, safety=2, completeness=2, clarity=3)
    EvalRating.objects.create(sample=samples[1], rater=clinician, accuracy=5, safety=4, completeness=4, clarity=4)
    result = preference_pairs_collect(actor=curator)
    assert result.created[K.EVAL_RATING] == 1
    pair = PreferencePair.objects.get(source_kind=K.EVAL_RATING)
    assert (pair.chosen, pair.rejected) == (tuned_answer, base_answer)
    assert pair.prompt == item.content["instruction"] and pair.judged_by == clinician
    assert pair.chosen_model == f"demo + #{adapter_job.pk}" and pair.rejected_model == "demo"
    assert preference_pairs_collect(actor=curator).created[K.EVAL_RATING] == 0  # collected once
