"""In Chromium, as a clinician: a blind arena battle between two drawn models (the real demo
model generating on the CPU), names nowhere on the page until the vote, then the next battle
from the same page, a battle voided because an answer gave the model away, and the leaderboard
that keeps models with few votes provisional — in English and in Chinese.

Daphne serves HTTP, static files and the arena socket (``asgi_server``). Set
MEDPORTAL_SCREENSHOTS=<dir> to keep screenshots of the pages.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.training.conftest import demo_model_dir  # noqa: F401  (session fixture)

from .conftest import login

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

NAMES = ("Aurora-Med", "Borealis-Chat")


def _shot(page, name: str) -> None:
    folder = os.environ.get("MEDPORTAL_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


@pytest.fixture
def two_models(admin_user, demo_model_dir):  # noqa: F811
    from training.runnables import reset_backends
    from training.models import BaseModel

    reset_backends()
    yield [BaseModel.objects.create(name=n, path=str(demo_model_dir), has_chat_template=True, registered_by=admin_user) for n in NAMES]
    reset_backends()


def _answered(page) -> None:
    """On a battle page: wait until both answers are in and the vote buttons are live."""
    page.wait_for_selector('#vote-form button[name="vote"]:not([disabled])', timeout=120_000)
    assert page.inner_text("#answer-a").strip() and page.inner_text("#answer-b").strip()


def test_a_clinician_votes_blind_goes_on_to_the_next_battle_and_voids_one(browser, asgi_server, clinician, two_models):
    from chat.models import ArenaBattle

    ctx = browser.new_context(locale="en-US", viewport={"width": 1400, "height": 1000})
    ctx.set_default_timeout(60_000)
    page = ctx.new_page()
    errors: list[str] = []  # script errors and Content-Security-Policy violations
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
    login(page, asgi_server, "clinician", "pw-clinician")

    page.goto(f"{asgi_server.url}/chat/arena/")
    assert page.locator("#arena-form select[name^=model]").count() == 0  # nobody picks the contenders
    _shot(page, "arena-new-en")
    page.fill("#id_prompt", "头痛三天了怎么办？")
    page.fill("#id_max_new_tokens", "12")
    page.fill("#id_temperature", "0")
    page.click("#arena-form button[type=submit]")
    page.wait_for_url("**/chat/arena/*/")
    _answered(page)
    html = page.content()
    assert not any(name in html for name in NAMES)  # blind: not in the page, not in its attributes
    assert page.locator("#name-a").count() == 0 and page.locator("#next-battle").count() == 0
    _shot(page, "arena-battle-before-vote-en")

    page.click('#vote-form button[value="a"]')
    page.wait_for_selector("#name-a")
    first = ArenaBattle.objects.get()
    assert {page.inner_text("#name-a"), page.inner_text("#name-b")} == set(NAMES)
    assert page.inner_text("#name-a") == first.label_a and first.vote == "a" and first.vote_counts
    assert page.evaluate("() => document.activeElement && document.activeElement.name") == "prompt"  # type the next one
    _shot(page, "arena-battle-after-vote-en")

    page.fill("#next-battle textarea[name=prompt]", "你是哪个模型？")
    page.click("#next-battle button[type=submit]")
    page.wait_for_url(lambda url: re.search(r"/chat/arena/(\d+)/$", url) is not None and not url.endswith(f"/arena/{first.pk}/"))
    _answered(page)
    second = ArenaBattle.objects.exclude(pk=first.pk).get()
    assert second.params["max_new_tokens"] == 12  # same parameters, fresh draw
    page.click("#void-button")
    page.wait_for_selector("#name-a")
    assert "Void" in page.inner_text("#battle-outcome")
    second.refresh_from_db()
    assert second.voided_at and second.void_reason == "identity" and not second.vote
    _shot(page, "arena-battle-void-en")

    page.goto(f"{asgi_server.url}/chat/arena/leaderboard/")
    rows = page.locator("#leaderboard tbody tr.provisional")
    assert rows.count() == 2 and page.locator("#leaderboard tbody tr.ranked").count() == 0
    assert "provisional · not enough votes (1/10)" in page.inner_text("#leaderboard")
    _shot(page, "leaderboard-en")
    assert errors == []
    ctx.close()

    zh = browser.new_context(locale="zh-CN", viewport={"width": 1400, "height": 1000})
    page = zh.new_page()
    login(page, asgi_server, "clinician", "pw-clinician")
    page.goto(f"{asgi_server.url}/chat/arena/")
    assert "投票后才会看到模型名称" in page.content()
    _shot(page, "arena-new-zh")
    page.goto(f"{asgi_server.url}/chat/arena/{second.pk}/")
    assert "作废" in page.inner_text("#battle-outcome") and "下一场对战" in page.content()
    _shot(page, "arena-battle-void-zh")
    page.goto(f"{asgi_server.url}/chat/arena/leaderboard/")
    assert "暂定 · 票数不足（1/10）" in page.inner_text("#leaderboard")
    _shot(page, "leaderboard-zh")
    zh.close()


def test_an_admin_voids_a_counted_battle_from_the_battle_list(browser, asgi_server, admin_user, clinician, two_models):
    from chat.models import ArenaBattle
    from chat.services import arena_battle_answer, arena_battle_create, arena_vote

    a, b = two_models
    battle = arena_battle_create(user=clinician, prompt="胸痛怎么办？", contestant_a=(a, None), contestant_b=(b, None))
    arena_battle_answer(battle=battle, side="a", content="I am Aurora-Med, trained by …", stats={})
    arena_battle_answer(battle=battle, side="b", content="请尽快就医。", stats={})
    arena_vote(user=clinician, battle=battle, vote="a")

    ctx = browser.new_context(locale="zh-CN", viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
    login(page, asgi_server, "boss", "pw-boss")
    page.goto(f"{asgi_server.url}/chat/arena/leaderboard/")
    page.click("text=全部对战")
    row = page.locator(f"#battle-{battle.pk}")
    row.locator("select[name=reason]").select_option("identity")
    row.locator("input[name=note]").fill("A 的回答自报了模型名称")
    _shot(page, "arena-admin-zh")
    row.locator("button[type=submit]").click()
    page.wait_for_selector(f"#battle-{battle.pk} .badge.text-bg-secondary")
    assert "A 的回答自报了模型名称" in page.inner_text(f"#battle-{battle.pk}")
    battle.refresh_from_db()
    assert battle.voided_by == admin_user and battle.vote == "a"
    page.goto(f"{asgi_server.url}/chat/arena/leaderboard/")
    assert page.locator("#leaderboard").count() == 0  # the only vote no longer counts
    _shot(page, "arena-admin-after-void-zh")
    assert errors == []
    ctx.close()
    assert ArenaBattle.objects.counted().count() == 0
