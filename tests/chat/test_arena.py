"""The blind A/B arena: battles stream both answers, votes count only before the reveal,
and the leaderboard ranks by Bradley–Terry."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from django.urls import reverse

from chat.models import ArenaBattle
from chat.selectors import leaderboard
from chat.services import arena_battle_answer, arena_battle_create, arena_reveal, arena_vote
from medportal.errors import InvalidInput, InvalidTransition

from .test_chat_consumer import communicator, frames_until, headers

FAST = {"max_new_tokens": 8, "temperature": 0.0, "repetition_penalty": 1.0}


def answered(battle):
    arena_battle_answer(battle=battle, side="a", content="答A", stats={})
    arena_battle_answer(battle=battle, side="b", content="答B", stats={})
    return battle


@pytest.mark.django_db
def test_votes_before_the_reveal_count_and_after_it_do_not(clinician, base_model, adapter_job):
    battle = answered(arena_battle_create(user=clinician, prompt="头痛？", contestant_a=(base_model, None), contestant_b=(base_model, adapter_job), params=FAST))
    with pytest.raises(InvalidTransition):
        arena_vote(user=clinician, battle=arena_battle_create(user=clinician, prompt="x", contestant_a=(base_model, None), contestant_b=(base_model, adapter_job)), vote="a")
    voted = arena_vote(user=clinician, battle=battle, vote="b")
    assert voted.vote_counts is True and voted.revealed_at is not None
    with pytest.raises(InvalidTransition, match="already voted"):
        arena_vote(user=clinician, battle=battle, vote="a")

    late = answered(arena_battle_create(user=clinician, prompt="发烧？", contestant_a=(base_model, adapter_job), contestant_b=(base_model, None)))
    arena_reveal(user=clinician, battle=late)
    assert arena_vote(user=clinician, battle=late, vote="a").vote_counts is False

    rows = {r.name: r for r in leaderboard(bootstrap=0)}
    assert rows[f"demo + #{adapter_job.pk}"].votes == 1 and rows[f"demo + #{adapter_job.pk}"].wins == 1.0  # the late vote is ignored


@pytest.mark.django_db
def test_a_battle_needs_two_different_models_and_a_prompt(clinician, base_model):
    with pytest.raises(InvalidInput, match="two different"):
        arena_battle_create(user=clinician, prompt="x", contestant_a=(base_model, None), contestant_b=(base_model, None))
    with pytest.raises(InvalidInput, match="prompt"):
        arena_battle_create(user=clinician, prompt=" ", contestant_a=(base_model, None), contestant_b=(base_model, None))


@pytest.mark.django_db
def test_the_battle_page_hides_names_until_the_vote(client, clinician, base_model, adapter_job):
    client.force_login(clinician)
    r = client.post(reverse("chat:arena"), {"prompt": "咳嗽两周", "model_1": str(base_model.pk), "model_2": f"{base_model.pk}:{adapter_job.pk}", **FAST, "top_p": 1, "top_k": 0})
    battle = ArenaBattle.objects.get()
    assert r.status_code == 302 and r["Location"] == reverse("chat:arena-battle", args=[battle.pk])
    answered(battle)
    page = client.get(r["Location"]).content.decode()
    assert f"demo + #{adapter_job.pk}" not in page and "Model A" in page
    client.post(r["Location"], {"vote": "tie"})
    page = client.get(r["Location"]).content.decode()
    assert f"demo + #{adapter_job.pk}" in page and battle.label_a in page
    assert client.get(reverse("chat:leaderboard")).status_code == 200


@pytest.mark.django_db(transaction=True)
def test_the_arena_socket_streams_both_sides_without_names(clinician, base_model, adapter_job):
    battle = arena_battle_create(user=clinician, prompt="胸痛怎么办？", contestant_a=(base_model, None), contestant_b=(base_model, adapter_job), params=FAST)

    hdrs = headers(clinician)

    async def scenario():
        ws = communicator(f"/ws/arena/{battle.pk}/", hdrs)
        await ws.connect(timeout=60)
        ready = await ws.receive_json_from(timeout=60)
        await ws.send_json_to({"type": "run"})
        frames = []
        while sum(1 for f in frames if f["type"] == "done") < 2:
            frames += await frames_until(ws, "done")
        await ws.disconnect()
        return ready, frames

    ready, frames = async_to_sync(scenario)()
    assert ready == {"type": "ready", "battle": battle.pk, "answered": False}
    assert {f["side"] for f in frames if f["type"] == "token"} == {"a", "b"}
    assert "demo" not in str(frames)  # no model names over the socket
    battle.refresh_from_db()
    done = {f["side"]: f["content"] for f in frames if f["type"] == "done"}
    assert battle.answer_a == done["a"] and battle.answer_b == done["b"] and battle.answer_a
