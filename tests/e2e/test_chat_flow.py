"""In Chromium: a clinician chats with the demo model, sees the answer arrive token by token,
rates it and sends a correction into review; model output with script tags stays inert.

Daphne serves HTTP and the chat socket on one port (the ``asgi_server`` fixture); the model is
the session-built demo model, generating for real on the CPU.
"""

from __future__ import annotations

import os
import shutil
import time

import pytest

from tests.training.conftest import demo_model_dir  # noqa: F401  (session fixture)

from .conftest import login

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def base_model(admin_user, demo_model_dir):  # noqa: F811
    from training.runnables import reset_backends
    from training.models import BaseModel

    reset_backends()
    yield BaseModel.objects.create(name="demo", path=str(demo_model_dir), has_chat_template=True, registered_by=admin_user)
    reset_backends()


def test_a_clinician_chats_rates_and_corrects_an_answer(browser, asgi_server, clinician, base_model):
    from chat.models import ChatMessage
    from curation.models import QAPair

    ctx = browser.new_context(locale="en-US", viewport={"width": 1400, "height": 1000})
    ctx.set_default_timeout(60_000)
    page = ctx.new_page()
    login(page, asgi_server, "clinician", "pw-clinician")
    page.goto(f"{asgi_server.url}/chat/")
    page.click("text=New chat with other settings")
    page.fill("#id_max_new_tokens", "24")
    page.fill("#id_temperature", "0")
    page.click("#new-chat button[type=submit]")
    page.wait_for_selector("#socket-state.text-bg-success")

    # Count the distinct texts the answer bubble shows while it streams.
    page.evaluate(
        """() => {
        window.__states = new Set();
        new MutationObserver(() => {
          const el = document.querySelector('.chat-assistant .chat-content');
          if (el) window.__states.add(el.textContent);
        }).observe(document.getElementById('chat-log'), {subtree: true, childList: true, characterData: true});
    }"""
    )
    page.fill("#chat-input", "头痛三天了怎么办？")
    page.click("#chat-send")
    page.wait_for_selector(".chat-assistant .rating-form", state="attached")  # appears with the done frame
    assert page.evaluate("() => window.__states.size") >= 3  # placeholder + several partial answers
    answer = ChatMessage.objects.get(role="assistant")
    assert answer.stats["completion_tokens"] >= 2

    page.click(".chat-assistant details summary")
    page.click(".chat-assistant label[for^=down-]")
    assert page.is_checked(".chat-assistant input[value=down]")
    page.select_option(".chat-assistant select[name=accuracy]", "2")
    page.check(".chat-assistant input[value=no_referral]")
    page.fill(".chat-assistant textarea[name=corrected_answer]", "头痛持续三天应就医，查明原因，必要时做头颅CT。")
    page.click(".chat-assistant .rating-form button[type=submit]")
    page.wait_for_selector(".rating-result.text-success")
    pair = QAPair.objects.get(source="chat-correction")
    assert str(pair.pk) in page.inner_text(".rating-result")
    assert pair.status == QAPair.Status.IN_REVIEW and pair.output.startswith("头痛持续三天应就医")
    assert pair.extra["chat_message"] == answer.pk and pair.extra["model"] == "demo"
    ctx.close()


def test_model_output_with_script_tags_stays_inert_in_the_browser(browser, asgi_server, clinician, base_model):
    from chat.services import chat_assistant_message, chat_session_create, chat_user_message

    session = chat_session_create(user=clinician, base_model=base_model)
    chat_user_message(session=session, user=clinician, content="hi")
    chat_assistant_message(
        session=session,
        content='**bold** <script>window.__pwned = 1</script><img src="x" onerror="window.__pwned = 2"> [link](javascript:window.__pwned=3)',
        params={},
        stats={},
    )
    ctx = browser.new_context(locale="en-US")
    page = ctx.new_page()
    login(page, asgi_server, "clinician", "pw-clinician")
    page.goto(f"{asgi_server.url}/chat/{session.pk}/")
    page.wait_for_selector(".chat-assistant strong")  # markdown rendered
    page.click(".chat-assistant a", timeout=5_000) if page.locator(".chat-assistant a").count() else None
    assert page.evaluate("() => window.__pwned") is None
    assert page.locator(".chat-assistant script").count() == 0
    assert page.locator(".chat-assistant img[onerror]").count() == 0
    ctx.close()


def test_a_chat_survives_a_closed_page_and_answers_can_be_edited_deleted_and_retried(browser, asgi_server, clinician, base_model, tmp_path):
    """New chat opens to the prompt with the last chat's model and settings; the first question
    titles it at once; closing the page mid-answer keeps the partial answer, shown as
    interrupted, and the chat goes on; edit and resend, delete, retry."""
    from chat.models import ChatMessage, ChatSession
    from chat.services import chat_assistant_message, chat_session_create, chat_user_message

    shots = tmp_path
    earlier = chat_session_create(user=clinician, base_model=base_model, params={"max_new_tokens": 300, "temperature": 1.0, "seed": 3})
    chat_user_message(session=earlier, user=clinician, content="上一次的问题")
    chat_assistant_message(session=earlier, content="上一次的回答", params={}, stats={})
    ctx = browser.new_context(locale="en-US", viewport={"width": 1400, "height": 1000})
    ctx.set_default_timeout(60_000)
    page = ctx.new_page()
    login(page, asgi_server, "clinician", "pw-clinician")
    page.goto(f"{asgi_server.url}/chat/")
    page.click("#new-chat-button")
    page.wait_for_selector("#socket-state.text-bg-success")
    session = ChatSession.objects.exclude(pk=earlier.pk).get()
    assert page.url.endswith(f"/chat/{session.pk}/") and session.params["max_new_tokens"] == 300  # remembered
    assert page.evaluate("() => document.activeElement.id") == "chat-input"  # straight to the prompt

    page.fill("#chat-input", "孩子发烧三天怎么办？")
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.getElementById('chat-title').textContent === '孩子发烧三天怎么办？'")
    assert page.inner_text("#chat-list-current") == "孩子发烧三天怎么办？" and document_title(page).startswith("孩子发烧三天怎么办？")
    page.wait_for_function("() => { const el = document.querySelector('.chat-assistant .chat-content'); return el && el.textContent.length > 3 && !el.textContent.startsWith('Generating'); }")
    page.screenshot(path=str(shots / "1-streaming.png"))
    page.close()  # mid-answer

    deadline = time.monotonic() + 60
    while not ChatMessage.objects.filter(session=session, role="assistant").exists():
        assert time.monotonic() < deadline, "the partial answer was not stored"
        time.sleep(0.2)
    partial = ChatMessage.objects.get(session=session, role="assistant")
    assert partial.status == ChatMessage.Status.INTERRUPTED and partial.content and partial.stats["completion_tokens"] < 300
    ChatSession.objects.filter(pk=session.pk).update(params={"max_new_tokens": 8, "temperature": 0.0})  # quick answers from here on

    page = ctx.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(f"{asgi_server.url}/chat/{session.pk}/")
    page.wait_for_selector("#socket-state.text-bg-success")
    badge = page.locator(".chat-assistant[data-status=interrupted] .chat-status")
    assert "interrupted" in badge.inner_text()
    page.screenshot(path=str(shots / "2-reopened.png"))

    page.fill("#chat-input", "还要注意什么？")
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.querySelectorAll('.chat-assistant .rating-form').length === 2")
    assert ChatMessage.objects.filter(session=session, superseded=False).count() == 4

    page.click(".chat-actions [data-action=edit]")  # only the last question has one
    assert page.input_value("#chat-input") == "还要注意什么？"
    page.fill("#chat-input", "饮食上要注意什么？")
    page.keyboard.press("Enter")
    page.wait_for_function("() => [...document.querySelectorAll('.chat-user .chat-content')].map(e => e.textContent).join('|') === '孩子发烧三天怎么办？|饮食上要注意什么？'")
    page.wait_for_function("() => document.querySelectorAll('.chat-assistant .rating-form').length === 2")
    assert list(session.messages.filter(superseded=False, role="user").values_list("content", flat=True)) == ["孩子发烧三天怎么办？", "饮食上要注意什么？"]
    page.screenshot(path=str(shots / "3-edited.png"))

    page.locator(".chat-assistant").last.locator("[data-action=delete]").click()  # the last answer alone
    page.wait_for_function("() => document.querySelectorAll('.chat-assistant').length === 1")
    page.locator(".chat-user").last.locator("[data-action=retry]").click()  # its question is answered again
    page.wait_for_function("() => document.querySelectorAll('.chat-assistant .rating-form').length === 2")
    page.locator(".chat-user").first.locator("[data-action=delete]").click()  # a question goes with its answer
    page.wait_for_function("() => document.querySelectorAll('.chat-msg').length === 2")
    page.screenshot(path=str(shots / "4-after-delete.png"))
    remaining = list(session.messages.filter(superseded=False).order_by("id").values_list("role", "content"))
    assert [r for r, _c in remaining] == ["user", "assistant"] and remaining[0][1] == "饮食上要注意什么？"
    page.reload()
    page.wait_for_selector("#socket-state.text-bg-success")
    assert page.locator(".chat-msg").count() == 2 and page.inner_text("#chat-title") == "孩子发烧三天怎么办？"
    if os.environ.get("MEDPORTAL_SHOTS"):
        for shot in shots.glob("*.png"):
            shutil.copy(shot, os.environ["MEDPORTAL_SHOTS"])
    ctx.close()


def document_title(page) -> str:
    return page.evaluate("() => document.title")
