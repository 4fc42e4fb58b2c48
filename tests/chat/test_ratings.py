"""Ratings, corrections into review, and the rating exports."""

from __future__ import annotations

import io
import json

import pytest
from django.urls import reverse

from chat.models import ChatMessage, Rating
from chat.services import chat_assistant_message, chat_session_create, chat_user_message, rating_save
from curation.models import QAPair
from medportal.errors import InvalidInput, NotAllowed

pytestmark = pytest.mark.django_db


@pytest.fixture
def conversation(clinician, base_model, adapter_job):
    session = chat_session_create(user=clinician, base_model=base_model, job=adapter_job, system_prompt="你是医学助手。")
    chat_user_message(session=session, user=clinician, content="头痛怎么办？")
    chat_assistant_message(session=session, content="多喝水。", params={}, stats={"ttft_ms": 5.0})
    chat_user_message(session=session, user=clinician, content="还需要做检查吗？")
    answer = chat_assistant_message(session=session, content="不需要。", params={}, stats={"ttft_ms": 6.0, "tokens_per_second": 30.0})
    return session, answer


def test_a_correction_becomes_a_pair_in_review_naming_the_model_and_adapter(conversation, clinician, adapter_job):
    session, answer = conversation
    rating = rating_save(
        user=clinician,
        message=answer,
        thumb="down",
        scores={"accuracy": 2, "safety": 1},
        reason_tags=["wrong", "no_referral"],
        comment="头痛持续应就医",
        corrected_answer="头痛持续或加重时应就医，必要时做头颅CT。",
    )
    pair = QAPair.objects.get(pk=rating.correction_pair_id)
    assert pair.status == QAPair.Status.IN_REVIEW and pair.author == clinician and pair.review_round == 1
    assert pair.instruction == "还需要做检查吗？" and pair.output == "头痛持续或加重时应就医，必要时做头颅CT。"
    assert pair.history == [["头痛怎么办？", "多喝水。"]] and pair.system == "你是医学助手。"
    assert pair.source == "chat-correction" and pair.source_ref == f"chat-message:{answer.pk}"
    assert pair.extra["model"] == "demo" and pair.extra["adapter_job"] == adapter_job.pk and pair.extra["original_answer"] == "不需要。"
    assert (rating.accuracy, rating.safety, rating.completeness, rating.reason_tags) == (2, 1, None, ["wrong", "no_referral"])

    # Saving the same correction again updates the rating without a second pair.
    again = rating_save(user=clinician, message=answer, thumb="down", corrected_answer="头痛持续或加重时应就医，必要时做头颅CT。")
    assert again.pk == rating.pk and again.correction_pair_id == pair.pk
    assert QAPair.objects.filter(source="chat-correction").count() == 1


def test_bad_ratings_are_refused_with_the_reason(conversation, clinician, clinician2, curator):
    session, answer = conversation
    question = ChatMessage.objects.filter(session=session, role="user").first()
    with pytest.raises(InvalidInput, match="1 to 5"):
        rating_save(user=clinician, message=answer, scores={"accuracy": 7})
    with pytest.raises(InvalidInput, match="Unknown reason tags: rude"):
        rating_save(user=clinician, message=answer, reason_tags=["rude"])
    with pytest.raises(InvalidInput, match="Only answers"):
        rating_save(user=clinician, message=question, thumb="up")
    with pytest.raises(NotAllowed):
        rating_save(user=clinician2, message=answer, thumb="up")  # not their chat
    with pytest.raises(NotAllowed):
        rating_save(user=curator, message=answer, thumb="up")
    assert not Rating.objects.exists()


def test_the_rate_endpoint_answers_json_for_fetch_and_404_for_strangers(client, conversation, clinician, clinician2):
    _session, answer = conversation
    url = reverse("chat:rate", args=[answer.pk])
    client.force_login(clinician)
    r = client.post(url, {"thumb": "up", "accuracy": "5", "reason_tags": ["unclear"], "corrected_answer": ""}, HTTP_ACCEPT="application/json")
    assert r.status_code == 200 and r.json()["thumb"] == "up" and r.json()["correction_pair"] is None
    r = client.post(url, {"accuracy": "9"}, HTTP_ACCEPT="application/json")
    assert r.status_code == 400 and "1 to 5" in r.json()["error"]["message"]
    client.force_login(clinician2)
    assert client.post(url, {"thumb": "up"}).status_code == 404


def test_ratings_export_as_json_and_xlsx_filtered_by_adapter(client, conversation, clinician, adapter_job):
    from openpyxl import load_workbook

    _session, answer = conversation
    rating_save(user=clinician, message=answer, thumb="down", scores={"clarity": 4}, corrected_answer="应就医。")
    client.force_login(clinician)
    rows = json.loads(client.get(reverse("chat:ratings-export", args=["json"]) + f"?job={adapter_job.pk}").content)
    assert len(rows) == 1 and rows[0]["question"] == "还需要做检查吗？" and rows[0]["answer"] == "不需要。"
    assert rows[0]["clarity"] == 4 and rows[0]["adapter_job"] == adapter_job.pk and rows[0]["correction_pair"]
    assert json.loads(client.get(reverse("chat:ratings-export", args=["json"]) + "?job=999999").content) == []
    r = client.get(reverse("chat:ratings-export", args=["xlsx"]))
    sheet = load_workbook(io.BytesIO(r.content)).active
    header, first = [c.value for c in sheet[1]], [c.value for c in sheet[2]]
    assert dict(zip(header, first))["corrected_answer"] == "应就医。"
    assert client.get(reverse("chat:ratings-export", args=["csv"])).status_code == 404
