"""Chat pages: creating a chat, the chat page, access by role and owner, inert model output."""

from __future__ import annotations

import pytest
from django.urls import reverse

from chat.models import ChatSession
from chat.services import DEFAULT_SYSTEM_PROMPT, chat_assistant_message, chat_session_create, chat_user_message

pytestmark = pytest.mark.django_db
PARAMS = {"temperature": "0.1", "top_p": "0.9", "top_k": "40", "max_new_tokens": "512", "repetition_penalty": "1.1"}


def test_a_clinician_starts_a_chat_with_the_seed_defaults(client, clinician, base_model, adapter_job):
    client.force_login(clinician)
    page = client.get(reverse("chat:index")).content.decode()
    assert f"demo + #{adapter_job.pk}" in page and DEFAULT_SYSTEM_PROMPT in page
    r = client.post(reverse("chat:index"), {"model": f"{base_model.pk}:{adapter_job.pk}", "system_prompt": DEFAULT_SYSTEM_PROMPT, **PARAMS})
    session = ChatSession.objects.get()
    assert r.status_code == 302 and r["Location"] == reverse("chat:session", args=[session.pk])
    assert session.job == adapter_job and session.params == {
        "max_new_tokens": 512, "temperature": 0.1, "top_p": 0.9, "top_k": 40, "repetition_penalty": 1.1, "seed": None
    }


def test_bad_parameters_are_shown_on_the_form(client, clinician, base_model):
    client.force_login(clinician)
    r = client.post(reverse("chat:index"), {"model": str(base_model.pk), **PARAMS, "temperature": "9"})
    assert r.status_code == 200 and not ChatSession.objects.exists()
    assert "Ensure this value is less than or equal to 5" in r.content.decode()


def test_model_output_with_script_tags_stays_inert(client, clinician, base_model):
    session = chat_session_create(user=clinician, base_model=base_model)
    chat_user_message(session=session, user=clinician, content="hi")
    chat_assistant_message(session=session, content='<script>alert("x")</script><img src=x onerror=alert(1)>', params={}, stats={})
    client.force_login(clinician)
    page = client.get(reverse("chat:session", args=[session.pk])).content.decode()
    assert "<script>alert" not in page and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "<img src=x" not in page
    assert "vendor/dompurify/purify.min.js" in page  # markdown is sanitised in the browser too


def test_chats_are_private_and_need_the_clinician_role(client, clinician, clinician2, curator, base_model):
    session = chat_session_create(user=clinician, base_model=base_model)
    client.force_login(clinician2)
    assert client.get(reverse("chat:session", args=[session.pk])).status_code == 404
    client.force_login(curator)
    assert client.get(reverse("chat:index")).status_code == 403
    assert client.get(reverse("chat:arena")).status_code == 403
    assert client.get(reverse("chat:leaderboard")).status_code == 200  # every role reads the leaderboard


def test_settings_can_switch_the_model_of_a_chat(client, clinician, base_model, adapter_job):
    session = chat_session_create(user=clinician, base_model=base_model)
    client.force_login(clinician)
    r = client.post(reverse("chat:session", args=[session.pk]), {"model": f"{base_model.pk}:{adapter_job.pk}", "system_prompt": "简短回答。", **PARAMS})
    session.refresh_from_db()
    assert r.status_code == 302 and session.job == adapter_job and session.system_prompt == "简短回答。"
    r = client.post(reverse("chat:session", args=[session.pk]), {"model": "999", **PARAMS})
    assert r.status_code == 200 and "Select a valid choice" in r.content.decode()
