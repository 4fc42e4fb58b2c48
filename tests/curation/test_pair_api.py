"""The QA-pair API end to end: create, retrieve, patch with a version, the workflow actions,
comments, the error shape (400 / 404 / 409) and the OpenAPI schema."""

from __future__ import annotations

import json

import pytest
from django.test import override_settings

from curation.models import QAPair, Review
from medportal.models import AuditEvent

S = QAPair.Status



def post(client, url, body):
    return client.post(url, json.dumps(body), content_type="application/json")


def patch(client, url, body):
    return client.patch(url, json.dumps(body), content_type="application/json")


def test_a_curator_creates_a_pair_and_gets_it_back(client, curator):
    client.force_login(curator)
    response = post(
        client,
        "/api/v1/pairs/",
        {
            "instruction": "糖尿病患者能吃西瓜吗？",
            "output": "血糖控制平稳时可以少量食用。",
            "department": "内分泌科",
            "tags": ["饮食", "糖尿病"],
            "disease_codes": ["ICD10:E11.9", "OMIM:125853"],
            "difficulty": "medium",
            "history": [["我有糖尿病", "好的"]],
        },
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "draft" and body["version"] == 1 and body["author"] == "curator"
    assert body["department"] == "内分泌科" and body["tags"] == ["糖尿病", "饮食"]
    assert body["disease_codes"] == ["ICD10:E11.9", "OMIM:125853"]
    assert body["history"] == [["我有糖尿病", "好的"]]


@pytest.mark.parametrize(
    "body, field",
    [
        ({"output": "只有回答"}, "instruction"),
        ({"instruction": "问", "output": "答", "difficulty": "extreme"}, "difficulty"),
        ({"instruction": "问", "output": "答", "disease_codes": ["ORPHA:xyz"]}, "disease_codes"),
        ({"instruction": "问", "output": "答", "history": [["only one"]]}, "history"),
    ],
)
def test_create_explains_bad_input_in_the_common_error_shape(client, curator, body, field):
    client.force_login(curator)
    response = post(client, "/api/v1/pairs/", body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert field in error["details"]
    assert not QAPair.objects.exists()


def test_creating_a_duplicate_names_the_existing_pair(client, make_pair, curator):
    existing = make_pair(curator, instruction="头痛怎么办？", output="休息。")
    client.force_login(curator)
    response = post(client, "/api/v1/pairs/", {"instruction": "头痛怎么办？", "output": "休息。"})
    assert response.status_code == 400
    assert response.json()["error"]["details"]["duplicate_of"] == existing.pk


def test_retrieve_includes_reviews(client, make_pair, curator, clinician):
    pair = make_pair(curator)
    client.force_login(curator)
    post(client, f"/api/v1/pairs/{pair.pk}/submit/", {"version": 1})
    client.force_login(clinician)
    post(client, f"/api/v1/pairs/{pair.pk}/review/", {"decision": "request_changes", "comment": "补充", "version": 2})
    body = client.get(f"/api/v1/pairs/{pair.pk}/").json()
    assert body["status"] == "changes_requested"
    assert [(r["reviewer"], r["decision"], r["round"]) for r in body["reviews"]] == [("clinician", "request_changes", 1)]


def test_a_missing_pair_is_404_in_the_common_shape(client, clinician):
    client.force_login(clinician)
    response = client.get("/api/v1/pairs/999999/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_patch_needs_the_version(client, make_pair, curator):
    pair = make_pair(curator)
    client.force_login(curator)
    response = patch(client, f"/api/v1/pairs/{pair.pk}/", {"difficulty": "hard"})
    assert response.status_code == 400
    assert "version" in response.json()["error"]["details"]


def test_patch_with_a_stale_version_is_409_and_changes_nothing(client, make_pair, curator, curator2):
    pair = make_pair(curator)
    client.force_login(curator2)
    assert patch(client, f"/api/v1/pairs/{pair.pk}/", {"difficulty": "hard", "version": 1}).status_code == 200
    client.force_login(curator)
    response = patch(client, f"/api/v1/pairs/{pair.pk}/", {"output": "我的版本", "version": 1})
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "conflict"
    assert error["details"]["changed_by"] == "curator2"
    assert "reload" in error["message"]
    pair.refresh_from_db()
    assert pair.output != "我的版本" and pair.version == 2


def test_patch_of_a_changes_requested_pair_goes_back_to_review(client, make_pair, curator):
    pair = make_pair(curator, status=S.CHANGES_REQUESTED, review_round=1)
    client.force_login(curator)
    body = patch(client, f"/api/v1/pairs/{pair.pk}/", {"output": "修订后的回答。", "tags": ["修订"], "version": 1}).json()
    assert (body["status"], body["review_round"], body["version"], body["tags"]) == ("in_review", 2, 2, ["修订"])


def test_patch_of_an_approved_pair_is_refused(client, make_pair, curator):
    pair = make_pair(curator, status=S.APPROVED)
    client.force_login(curator)
    response = patch(client, f"/api/v1/pairs/{pair.pk}/", {"output": "x", "version": 1})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "invalid_transition"


def test_put_and_delete_are_not_offered(client, make_pair, curator):
    pair = make_pair(curator)
    client.force_login(curator)
    assert client.put(f"/api/v1/pairs/{pair.pk}/", "{}", content_type="application/json").status_code == 405
    assert client.delete(f"/api/v1/pairs/{pair.pk}/").status_code == 405


@override_settings(MEDPORTAL_REVIEW_QUORUM=2)
def test_review_through_the_api_follows_the_quorum(client, make_pair, curator, clinician, clinician2):
    pair = make_pair(curator, status=S.IN_REVIEW, review_round=1)
    client.force_login(clinician)
    first = post(client, f"/api/v1/pairs/{pair.pk}/review/", {"decision": "approve", "version": 1})
    assert first.status_code == 201
    assert first.json()["pair"]["status"] == "in_review"
    assert first.json()["review"]["reviewer"] == "clinician"
    again = post(client, f"/api/v1/pairs/{pair.pk}/review/", {"decision": "approve", "version": 2})
    assert again.status_code == 409
    client.force_login(clinician2)
    second = post(client, f"/api/v1/pairs/{pair.pk}/review/", {"decision": "approve", "version": 2})
    assert second.json()["pair"]["status"] == "approved"


def test_review_rejection_needs_a_comment_through_the_api(client, make_pair, curator, clinician):
    pair = make_pair(curator, status=S.IN_REVIEW, review_round=1)
    client.force_login(clinician)
    response = post(client, f"/api/v1/pairs/{pair.pk}/review/", {"decision": "reject", "version": 1})
    assert response.status_code == 400
    assert "comment" in response.json()["error"]["details"]
    assert not Review.objects.exists()


def test_self_review_through_the_api_is_403(client, make_pair, admin_user):
    pair = make_pair(admin_user, status=S.IN_REVIEW, review_round=1)
    client.force_login(admin_user)
    response = post(client, f"/api/v1/pairs/{pair.pk}/review/", {"decision": "approve", "version": 1})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"


def test_mask_through_the_api(client, make_pair, curator):
    pair = make_pair(curator, instruction="邮箱 zhang.san@example.com，皮疹怎么办？")
    assert pair.has_identifiers
    client.force_login(curator)
    body = post(client, f"/api/v1/pairs/{pair.pk}/mask-identifiers/", {"version": 1}).json()
    assert "zhang.san@example.com" not in body["instruction"]
    assert body["has_identifiers"] is False and body["identifiers"] == []


def test_comments_through_the_api(client, make_pair, curator, clinician):
    pair = make_pair(curator)
    client.force_login(clinician)
    created = post(client, f"/api/v1/pairs/{pair.pk}/comments/", {"body": "请引用指南"})
    assert created.status_code == 201 and created.json()["author"] == "clinician"
    assert post(client, f"/api/v1/pairs/{pair.pk}/comments/", {"body": ""}).status_code == 400
    listed = client.get(f"/api/v1/pairs/{pair.pk}/comments/").json()
    assert [c["body"] for c in listed] == ["请引用指南"]
    assert AuditEvent.objects.filter(action="qa_pair.comment").count() == 1


def test_the_schema_documents_every_pair_endpoint(client, curator):
    client.force_login(curator)
    response = client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = json.loads(response.content)
    paths = schema["paths"]
    for p in (
        "/api/v1/pairs/",
        "/api/v1/pairs/{id}/",
        "/api/v1/pairs/{id}/submit/",
        "/api/v1/pairs/{id}/review/",
        "/api/v1/pairs/{id}/mask-identifiers/",
        "/api/v1/pairs/{id}/reopen/",
        "/api/v1/pairs/{id}/comments/",
        "/api/v1/review-queue/",
    ):
        key = p.replace("{id}", "{pk}") if p.replace("{id}", "{pk}") in paths else p
        assert key in paths, (p, sorted(paths))
    params = {q["name"] for q in paths["/api/v1/pairs/"]["get"]["parameters"]}
    assert {"q", "status", "department", "tag", "reviewer", "page_size", "sort"} <= params
    assert "version" in schema["components"]["schemas"]["QAPairUpdateRequest"]["required"]
