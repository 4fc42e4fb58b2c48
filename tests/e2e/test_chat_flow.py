"""In Chromium: a clinician chats with the demo model, sees the answer arrive token by token,
rates it and sends a correction into review; model output with script tags stays inert.

Daphne serves HTTP and the chat socket on one port (the ``asgi_server`` fixture); the model is
the session-built demo model, generating for real on the CPU.
"""

from __future__ import annotations

import pytest

from tests.training.conftest import demo_model_dir  # noqa: F401  (session fixture)

from .conftest import login

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def base_model(admin_user, demo_model_dir):  # noqa: F811
    from chat.inference.registry import reset_backend
    from training.models import BaseModel

    reset_backend()
    yield BaseModel.objects.create(name="demo", path=str(demo_model_dir), has_chat_template=True, registered_by=admin_user)
    reset_backend()


def test_a_clinician_chats_rates_and_corrects_an_answer(browser, asgi_server, clinician, base_model):
    from chat.models import ChatMessage
    from curation.models import QAPair

    ctx = browser.new_context(locale="en-US", viewport={"width": 1400, "height": 1000})
    ctx.set_default_timeout(60_000)
    page = ctx.new_page()
    login(page, asgi_server, "clinician", "pw-clinician")
    page.goto(f"{asgi_server.url}/chat/")
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
