"""The blind A/B arena: the system draws the two contenders, names stay hidden until the vote
(page, socket), a battle can be voided (by its voter instead of voting, by an admin afterwards),
and the leaderboard ranks only models with enough counted votes."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from asgiref.sync import async_to_sync
from django.urls import reverse

from chat.lib.pairing import draw_pair, pair_key
from chat.models import ArenaBattle
from chat.selectors import arena_pair_votes, contestant_key, leaderboard
from chat.services import arena_battle_answer, arena_battle_create, arena_battle_draw, arena_battle_void, arena_vote
from medportal.errors import InvalidInput, InvalidTransition, NotAllowed
from medportal.models import AuditEvent

from .test_chat_consumer import communicator, frames_until
from .test_chat_consumer import headers as _headers

FAST = {"max_new_tokens": 8, "temperature": 0.0, "repetition_penalty": 1.0}
FORM_PARAMS = {**FAST, "top_p": 1, "top_k": 0}


def headers(user):
    """The socket headers of a logged-in page on http://testserver (Origin and Host must match)."""
    out = _headers(user)
    return out if any(name == b"host" for name, _value in out) else [*out, (b"host", b"testserver")]


def answered(battle):
    arena_battle_answer(battle=battle, side="a", content="答A", stats={"ttft_ms": 12.0, "tokens_per_second": 33.3})
    arena_battle_answer(battle=battle, side="b", content="答B", stats={"ttft_ms": 15.0, "tokens_per_second": 31.1})
    return battle


def voted(user, a, b, vote="a"):
    battle = answered(arena_battle_create(user=user, prompt="头痛？", contestant_a=a, contestant_b=b, params=FAST))
    return arena_vote(user=user, battle=battle, vote=vote)


@pytest.fixture
def kappa(db, admin_user, demo_model_dir):
    """A second registered base model (the demo weights under another name)."""
    from training.models import BaseModel

    return BaseModel.objects.create(name="Kappa-Chat", path=str(demo_model_dir), has_chat_template=True, registered_by=admin_user)


@pytest.fixture
def three(base_model, adapter_job, kappa):
    """Three contenders: two base models and an adapter."""
    return [(base_model, None), (base_model, adapter_job), (kappa, None)]


def labels(three):
    return ["demo", f"demo + #{three[1][1].pk}", "Kappa-Chat"]


# --------------------------------------------------------------------------- the draw


def test_the_draw_never_pits_a_contender_against_itself_and_randomises_the_sides():
    rng = random.Random(1)
    drawn = [draw_pair(["x", "y"], {}, rng=rng) for _ in range(200)]
    assert all(a != b for a, b in drawn)
    assert Counter(drawn).keys() == {("x", "y"), ("y", "x")}  # either may be "A"
    with pytest.raises(ValueError):
        draw_pair(["x", "x"], {})


def test_the_draw_prefers_pairs_with_fewer_votes():
    rng = random.Random(7)
    votes = {pair_key("x", "y"): 10}  # x–y has 10 votes, x–z and y–z none: weights 1/11, 1, 1
    drawn = Counter(pair_key(*draw_pair(["x", "y", "z"], votes, rng=rng)) for _ in range(3000))
    assert drawn[pair_key("x", "y")] / 3000 == pytest.approx((1 / 11) / (2 + 1 / 11), abs=0.02)
    assert drawn[pair_key("x", "z")] > 1200 and drawn[pair_key("y", "z")] > 1200


@pytest.mark.django_db
def test_pair_votes_count_only_counted_votes(clinician, three):
    x, y, z = three
    voted(clinician, x, y)
    voted(clinician, y, x, vote="tie")
    void = answered(arena_battle_create(user=clinician, prompt="q", contestant_a=x, contestant_b=z))
    arena_battle_void(user=clinician, battle=void)
    arena_battle_create(user=clinician, prompt="not voted yet", contestant_a=y, contestant_b=z)
    keys = [contestant_key(m.pk, j.pk if j else None) for m, j in three]
    assert arena_pair_votes() == {pair_key(keys[0], keys[1]): 2}


@pytest.mark.django_db
def test_the_system_draws_two_different_available_contenders(clinician, three, admin_user, lora_adapter_dir):
    from tests.training.ui_factories import job_update
    from training.models import BaseModel, FineTuneJob

    retired = BaseModel.objects.create(name="Retired", path=three[0][0].path, is_active=False, registered_by=admin_user)
    failed = FineTuneJob.objects.get(pk=three[1][1].pk)
    failed.pk = None
    failed.save()
    job_update(failed, status=FineTuneJob.Status.FAILED, adapter_path=str(lora_adapter_dir))
    available = {(m.pk, j.pk if j else None) for m, j in three}
    seen = set()
    for seed in range(12):
        b = arena_battle_draw(user=clinician, prompt="胸痛？", params=FAST, rng=random.Random(seed))
        a_key, b_key = (b.model_a_id, b.job_a_id), (b.model_b_id, b.job_b_id)
        assert a_key != b_key and {a_key, b_key} <= available
        seen |= {a_key, b_key}
        assert retired.pk not in (b.model_a_id, b.model_b_id) and failed.pk not in (b.job_a_id, b.job_b_id)
    assert seen == available


@pytest.mark.django_db
def test_with_fewer_than_two_models_the_arena_says_so(client, clinician, base_model):
    with pytest.raises(InvalidTransition, match="at least two models"):
        arena_battle_draw(user=clinician, prompt="胸痛？")
    client.force_login(clinician)
    page = client.get(reverse("chat:arena")).content.decode()
    assert 'id="arena-unavailable"' in page
    r = client.post(reverse("chat:arena"), {"prompt": "胸痛？", **FORM_PARAMS}, HTTP_ACCEPT_LANGUAGE="en")
    assert r.status_code == 200 and "at least two models" in r.content.decode() and not ArenaBattle.objects.exists()


@pytest.mark.django_db
def test_a_battle_needs_two_different_models_and_a_prompt(clinician, base_model):
    with pytest.raises(InvalidInput, match="two different"):
        arena_battle_create(user=clinician, prompt="x", contestant_a=(base_model, None), contestant_b=(base_model, None))
    with pytest.raises(InvalidInput, match="prompt"):
        arena_battle_create(user=clinician, prompt=" ", contestant_a=(base_model, None), contestant_b=(base_model, None))


# --------------------------------------------------------------------------- blind until the vote


@pytest.mark.django_db
def test_the_new_battle_form_lets_nobody_pick_and_names_no_model(client, clinician, three):
    client.force_login(clinician)
    page = client.get(reverse("chat:arena")).content.decode()
    assert "model_1" not in page and "model_2" not in page and "<select name=\"model" not in page
    assert not any(label in page for label in labels(three))
    r = client.post(reverse("chat:arena"), {"prompt": "咳嗽两周", "model_1": "1", "model_2": "1", **FORM_PARAMS})
    battle = ArenaBattle.objects.get()
    assert r.status_code == 302 and r["Location"] == reverse("chat:arena-battle", args=[battle.pk])
    assert (battle.model_a_id, battle.job_a_id) != (battle.model_b_id, battle.job_b_id)  # drawn, whatever was posted


@pytest.mark.django_db
def test_names_stay_hidden_until_the_vote_then_the_next_battle_is_one_click_away(client, clinician, three):
    client.force_login(clinician)
    client.post(reverse("chat:arena"), {"prompt": "咳嗽两周", **FORM_PARAMS})
    battle = answered(ArenaBattle.objects.get())
    url = reverse("chat:arena-battle", args=[battle.pk])
    page = client.get(url).content.decode()
    assert not any(label in page for label in labels(three))
    assert "tokens/s" not in page and "33.3" not in page  # statistics (speed) only after the vote
    assert 'value="reveal"' not in page and 'value="void"' in page  # no peeking: vote or void
    assert "next-battle" not in page
    client.post(url, {"vote": "tie"})
    page = client.get(url).content.decode()
    battle.refresh_from_db()
    assert battle.label_a in page and battle.label_b in page and "33.3" in page
    assert 'id="next-battle"' in page and 'action="%s"' % reverse("chat:arena") in page
    # One click: the form carries the department and parameters; only the prompt is new.
    r = client.post(reverse("chat:arena"), {"prompt": "发烧三天", "temperature": "0.0", "top_p": "1.0", "top_k": "0", "max_new_tokens": "8", "repetition_penalty": "1.0", "department": ""})
    fresh = ArenaBattle.objects.exclude(pk=battle.pk).get()
    assert r["Location"] == reverse("chat:arena-battle", args=[fresh.pk]) and fresh.prompt == "发烧三天" and not fresh.vote


@pytest.mark.django_db(transaction=True)
def test_the_arena_socket_streams_both_sides_without_names_or_statistics(clinician, base_model, adapter_job):
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
    assert "demo" not in str(frames) and f"job-{adapter_job.pk}" not in str(frames)  # no model names over the socket
    done = {f["side"]: f for f in frames if f["type"] == "done"}
    assert all(set(f) == {"type", "side", "content"} for f in done.values())  # token counts would tell tokenizers apart
    battle.refresh_from_db()
    assert battle.answer_a == done["a"]["content"] and battle.answer_b == done["b"]["content"] and battle.answer_a
    assert battle.stats_a["completion_tokens"] >= 1  # kept for after the vote


@pytest.mark.django_db(transaction=True)
def test_a_side_that_fails_is_reported_without_its_name_or_path(clinician, base_model, adapter_job, tmp_path):
    from training.models import FineTuneJob

    secret = tmp_path / "Kappa-secret-adapter"
    secret.mkdir()  # no adapter_config.json: the backend refuses it, naming the folder
    FineTuneJob.objects.filter(pk=adapter_job.pk).update(adapter_path=str(secret))
    adapter_job.refresh_from_db()
    battle = arena_battle_create(user=clinician, prompt="胸痛？", contestant_a=(base_model, adapter_job), contestant_b=(base_model, None), params=FAST)
    hdrs = headers(clinician)

    async def scenario():
        ws = communicator(f"/ws/arena/{battle.pk}/", hdrs)
        await ws.connect(timeout=60)
        await ws.receive_json_from(timeout=60)
        await ws.send_json_to({"type": "run"})
        frames = []
        while not any(f["type"] == "error" for f in frames) or not any(f["type"] == "done" for f in frames):
            frames.append(await ws.receive_json_from(timeout=60))
        await ws.disconnect()
        return frames

    frames = async_to_sync(scenario)()
    error = next(f for f in frames if f["type"] == "error")
    assert error["code"] == "inference" and error["details"] == {"side": "a"}
    assert "Kappa-secret" not in str(frames) and "demo" not in str(frames) and str(tmp_path) not in str(frames)


@pytest.mark.django_db(transaction=True)
def test_the_socket_of_a_finished_battle_generates_nothing(clinician, three):
    battle = answered(arena_battle_create(user=clinician, prompt="q", contestant_a=three[0], contestant_b=three[2]))
    arena_battle_void(user=clinician, battle=battle)
    ArenaBattle.objects.filter(pk=battle.pk).update(answer_a="", answer_b="")
    hdrs = headers(clinician)

    async def scenario():
        ws = communicator(f"/ws/arena/{battle.pk}/", hdrs)
        await ws.connect(timeout=60)
        await ws.receive_json_from(timeout=60)
        await ws.send_json_to({"type": "run"})
        frame = await ws.receive_json_from(timeout=60)
        await ws.disconnect()
        return frame

    frame = async_to_sync(scenario)()
    assert (frame["type"], frame["code"]) == ("error", "done") and frame["message"]
    battle.refresh_from_db()
    assert battle.answer_a == "" and battle.answer_b == ""  # nothing generated


# --------------------------------------------------------------------------- void battles


@pytest.mark.django_db
def test_a_voter_voids_a_battle_instead_of_voting_and_it_does_not_count(client, clinician, clinician2, three):
    client.force_login(clinician)
    x, y, z = three
    voted(clinician, x, y, vote="a")
    battle = answered(arena_battle_create(user=clinician, prompt="你是哪个模型？", contestant_a=y, contestant_b=x))
    url = reverse("chat:arena-battle", args=[battle.pk])
    with pytest.raises(NotAllowed):
        arena_battle_void(user=clinician2, battle=battle)
    assert client.post(url, {"action": "void"}).status_code == 302
    battle.refresh_from_db()
    assert battle.voided_at and battle.voided_by == clinician and battle.void_reason == "identity" and not battle.vote
    page = client.get(url).content.decode()
    assert battle.label_a in page and battle.label_b in page and 'id="next-battle"' in page  # over: names shown
    with pytest.raises(InvalidTransition, match="void"):
        arena_vote(user=clinician, battle=battle, vote="b")
    event = AuditEvent.objects.get(action="arena.void")
    assert event.actor == clinician and event.target_id == str(battle.pk) and event.changes["reason"] == "identity"
    rows = {r.name: r for r in leaderboard(bootstrap=0)}
    assert rows[battle.label_b].votes == 1 and rows[battle.label_b].wins == 1.0  # only the first battle counts
    # A voter who already voted knows the names: voiding is then for an admin.
    with pytest.raises(InvalidTransition, match="admin"):
        arena_battle_void(user=clinician, battle=ArenaBattle.objects.exclude(pk=battle.pk).get())


@pytest.mark.django_db
def test_an_admin_voids_a_counted_battle_afterwards_audited(client, clinician, admin_user, three):
    x, y, z = three
    battle = voted(clinician, x, z, vote="a")
    assert [r.name for r in leaderboard(bootstrap=0)] == ["demo", "Kappa-Chat"]

    client.force_login(clinician)
    assert client.get(reverse("chat:arena-admin")).status_code == 403
    assert client.post(reverse("chat:arena-admin-void", args=[battle.pk]), {"reason": "identity"}).status_code == 403

    client.force_login(admin_user)
    page = client.get(reverse("chat:arena-admin")).content.decode()
    assert f'id="battle-{battle.pk}"' in page and "Kappa-Chat" in page
    void_url = reverse("chat:arena-admin-void", args=[battle.pk])
    r = client.post(void_url, {"reason": "other", "note": ""}, follow=True, HTTP_ACCEPT_LANGUAGE="en")
    assert "Say why" in r.content.decode()
    battle.refresh_from_db()
    assert battle.voided_at is None  # nothing half-done
    r = client.post(void_url, {"reason": "other", "note": "重复提问刷票", "next": reverse("chat:arena-admin") + "?status=counted"})
    assert r["Location"] == reverse("chat:arena-admin") + "?status=counted"
    battle.refresh_from_db()
    assert battle.voided_by == admin_user and battle.void_reason == "other" and battle.vote == "a"
    assert leaderboard(bootstrap=0) == []
    event = AuditEvent.objects.get(action="arena.void")
    assert event.actor == admin_user and event.changes["note"] == "重复提问刷票" and event.changes["counted_before"] is True
    assert client.post(void_url, {"reason": "identity"}, follow=True).status_code == 200
    assert AuditEvent.objects.filter(action="arena.void").count() == 1  # voiding twice changes nothing
    assert client.post(reverse("chat:arena-admin-void", args=[999999]), {"reason": "identity"}).status_code == 404
    page = client.get(reverse("chat:arena-admin") + "?status=void").content.decode()
    assert f'id="battle-{battle.pk}"' in page and "重复提问刷票" in page


# --------------------------------------------------------------------------- leaderboard


@pytest.mark.django_db
def test_the_leaderboard_ranks_only_models_with_enough_votes(client, clinician, three, settings):
    settings.MEDPORTAL_ARENA_MIN_VOTES = 3
    x, y, z = three
    for vote in ("a", "a", "b"):
        voted(clinician, x, y, vote=vote)
    voted(clinician, x, z, vote="b")  # x: 4 votes, y: 3, z: 1 (and won all its battles)
    rows = leaderboard(bootstrap=0)
    by = {r.name: r for r in rows}
    assert [(r.name, r.rank) for r in rows if not r.provisional] == [("demo", 1), (f"demo + #{y[1].pk}", 2)]
    assert by["Kappa-Chat"].provisional and by["Kappa-Chat"].rank is None and by["Kappa-Chat"].votes == 1
    assert rows[-1].name == "Kappa-Chat"  # listed after the ranked models, although its one vote was a win

    client.force_login(clinician)
    page = client.get(reverse("chat:leaderboard"), HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "provisional · not enough votes (1/3)" in page
    ranked_rows = page.split('class="ranked"')[1:]
    assert len(ranked_rows) == 2 and "Kappa-Chat" not in "".join(ranked_rows).split('class="provisional')[0]
    assert leaderboard(bootstrap=0, min_votes=10)[0].rank is None  # nobody has 10 votes


@pytest.mark.django_db
def test_the_leaderboard_page_shows_provisional_models_in_chinese_too(client, clinician, three):
    x, y, z = three
    voted(clinician, x, y)
    client.force_login(clinician)
    page = client.get(reverse("chat:leaderboard"), HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert "1/10" in page and "暂定" in page
