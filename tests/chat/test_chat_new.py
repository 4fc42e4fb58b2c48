"""New chat in one click (the last chat's model and settings), and what the chat page shows of
interrupted, failed and unanswered turns."""

from __future__ import annotations

import pytest
from django.urls import reverse

from chat.models import ChatMessage, ChatSession
from chat.services import chat_assistant_message, chat_session_create, chat_user_message

pytestmark = pytest.mark.django_db


def test_new_chat_opens_the_prompt_with_the_model_and_settings_of_the_last_chat(client, clinician, base_model, adapter_job):
    last = chat_session_create(user=clinician, base_model=base_model, job=adapter_job, system_prompt="简短回答。", params={"max_new_tokens": 64})
    chat_user_message(session=last, user=clinician, content="问题")
    client.force_login(clinician)
    r = client.post(reverse("chat:new"))
    new = ChatSession.objects.exclude(pk=last.pk).get()
    assert r.status_code == 302 and r["Location"] == reverse("chat:session", args=[new.pk])
    assert (new.base_model, new.job, new.system_prompt, new.params["max_new_tokens"]) == (base_model, adapter_job, "简短回答。", 64)
    page = client.get(r["Location"]).content.decode()
    assert 'id="chat-input"' in page and "autofocus" in page


def test_new_chat_reuses_an_untouched_chat_and_starts_with_the_defaults_the_first_time(client, clinician, base_model):
    client.force_login(clinician)
    first = client.post(reverse("chat:new"))
    session = ChatSession.objects.get()
    assert session.base_model == base_model and session.params["temperature"] == 0.1  # the seed preset
    again = client.post(reverse("chat:new"))
    assert again["Location"] == first["Location"] and ChatSession.objects.count() == 1


def test_new_chat_needs_the_clinician_role_a_post_and_a_model(client, curator, clinician):
    client.force_login(curator)
    assert client.post(reverse("chat:new")).status_code == 403
    client.force_login(clinician)
    assert client.get(reverse("chat:new")).status_code == 405
    r = client.post(reverse("chat:new"), follow=True)  # no model registered
    assert "No model is registered yet" in r.content.decode() and not ChatSession.objects.exists()


def test_the_page_marks_interrupted_failed_and_unanswered_turns(client, clinician, base_model):
    session = chat_session_create(user=clinician, base_model=base_model)
    chat_user_message(session=session, user=clinician, content="被打断的问题")
    chat_assistant_message(session=session, content="说到一半", params={}, stats={}, status=ChatMessage.Status.INTERRUPTED)
    chat_user_message(session=session, user=clinician, content="没有回答的问题")
    chat_user_message(session=session, user=clinician, content="失败的问题")
    chat_assistant_message(session=session, content="", params={}, stats={}, status=ChatMessage.Status.FAILED, error="The model folder has no config.json")
    client.force_login(clinician)
    page = client.get(reverse("chat:session", args=[session.pk])).content.decode()
    assert "interrupted: the connection closed mid-answer" in page and "说到一半" in page
    assert page.count("(no answer: left out of the conversation)") == 2  # the orphan, and the one whose answer failed
    assert "The model folder has no config.json" in page and page.count('class="rating-form') == 2  # the interrupted answer and the page's template: a failed answer is not rated
