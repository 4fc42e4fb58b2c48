"""The role matrix of every QA-pair page and API endpoint: curator, clinician, admin, a user
without a role and an anonymous visitor, each against the status code they must get.

Every case runs against a fresh pair written by ``curator2`` (so that nobody in the matrix is
its author) in the state the action needs.
"""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from curation.models import QAPair

S = QAPair.Status
ROLES = ("curator", "clinician", "admin", "outsider", "anonymous")



@pytest.fixture
def login(client, curator, clinician, admin_user, outsider):
    users = {"curator": curator, "clinician": clinician, "admin": admin_user, "outsider": outsider, "anonymous": None}

    def as_(role):
        if users[role] is not None:
            client.force_login(users[role])
        return client

    return as_


def _pair(make_pair, author, state):
    if state == "phone":
        return make_pair(author, instruction="患者电话13800138000，头晕怎么办？")
    return make_pair(author, status=state, review_round=1 if state != S.DRAFT else 0)


# (name, method, url builder, state of the pair, body, expected codes for ROLES)
PAGES = [
    ("list", "get", lambda p: reverse("curation:pair-list"), S.DRAFT, None, (200, 200, 200, 403, 302)),
    ("create-form", "get", lambda p: reverse("curation:pair-create"), S.DRAFT, None, (200, 403, 200, 403, 302)),
    ("detail", "get", lambda p: reverse("curation:pair-detail", args=[p.pk]), S.DRAFT, None, (200, 200, 200, 403, 302)),
    ("edit-form", "get", lambda p: reverse("curation:pair-edit", args=[p.pk]), S.DRAFT, None, (200, 403, 200, 403, 302)),
    ("queue", "get", lambda p: reverse("curation:review-queue"), S.IN_REVIEW, None, (403, 200, 200, 403, 302)),
    ("agreement", "get", lambda p: reverse("curation:agreement"), S.DRAFT, None, (200, 200, 200, 403, 302)),
    (
        "create",
        "post",
        lambda p: reverse("curation:pair-create"),
        S.DRAFT,
        lambda p: {"instruction": "新问题？", "output": "新回答。"},
        (302, 403, 302, 403, 302),
    ),
    (
        "edit",
        "post",
        lambda p: reverse("curation:pair-edit", args=[p.pk]),
        S.DRAFT,
        lambda p: {"instruction": p.instruction, "output": "改过的回答。", "version": p.version},
        (302, 403, 302, 403, 302),
    ),
    (
        "submit",
        "post",
        lambda p: reverse("curation:pair-submit", args=[p.pk]),
        S.DRAFT,
        lambda p: {"version": p.version},
        (302, 403, 302, 403, 302),
    ),
    (
        "review",
        "post",
        lambda p: reverse("curation:pair-review", args=[p.pk]),
        S.IN_REVIEW,
        lambda p: {"decision": "approve", "version": p.version},
        (403, 302, 302, 403, 302),
    ),
    (
        "mask",
        "post",
        lambda p: reverse("curation:pair-mask", args=[p.pk]),
        "phone",
        lambda p: {"version": p.version},
        (302, 403, 302, 403, 302),
    ),
    (
        "reopen",
        "post",
        lambda p: reverse("curation:pair-reopen", args=[p.pk]),
        S.APPROVED,
        lambda p: {"reason": "复核", "version": p.version},
        (403, 403, 302, 403, 302),
    ),
    (
        "comment",
        "post",
        lambda p: reverse("curation:pair-comment", args=[p.pk]),
        S.DRAFT,
        lambda p: {"body": "好"},
        (302, 302, 302, 403, 302),
    ),
    (
        "bulk",
        "post",
        lambda p: reverse("curation:pair-bulk"),
        S.DRAFT,
        lambda p: {"action": "difficulty", "value": "easy", "ids": [p.pk], f"v{p.pk}": p.version},
        (302, 403, 302, 403, 302),
    ),
]

API = [
    ("api-list", "get", lambda p: "/api/v1/pairs/", S.DRAFT, None, (200, 200, 200, 403, 401)),
    (
        "api-create",
        "post",
        lambda p: "/api/v1/pairs/",
        S.DRAFT,
        lambda p: {"instruction": "API 新问题？", "output": "API 新回答。"},
        (201, 403, 201, 403, 401),
    ),
    ("api-detail", "get", lambda p: f"/api/v1/pairs/{p.pk}/", S.DRAFT, None, (200, 200, 200, 403, 401)),
    (
        "api-update",
        "patch",
        lambda p: f"/api/v1/pairs/{p.pk}/",
        S.DRAFT,
        lambda p: {"difficulty": "hard", "version": p.version},
        (200, 403, 200, 403, 401),
    ),
    (
        "api-submit",
        "post",
        lambda p: f"/api/v1/pairs/{p.pk}/submit/",
        S.DRAFT,
        lambda p: {"version": p.version},
        (200, 403, 200, 403, 401),
    ),
    (
        "api-review",
        "post",
        lambda p: f"/api/v1/pairs/{p.pk}/review/",
        S.IN_REVIEW,
        lambda p: {"decision": "approve", "version": p.version},
        (403, 201, 201, 403, 401),
    ),
    (
        "api-mask",
        "post",
        lambda p: f"/api/v1/pairs/{p.pk}/mask-identifiers/",
        "phone",
        lambda p: {"version": p.version},
        (200, 403, 200, 403, 401),
    ),
    (
        "api-reopen",
        "post",
        lambda p: f"/api/v1/pairs/{p.pk}/reopen/",
        S.REJECTED,
        lambda p: {"reason": "复核", "version": p.version},
        (403, 403, 200, 403, 401),
    ),
    ("api-comments", "get", lambda p: f"/api/v1/pairs/{p.pk}/comments/", S.DRAFT, None, (200, 200, 200, 403, 401)),
    (
        "api-comment",
        "post",
        lambda p: f"/api/v1/pairs/{p.pk}/comments/",
        S.DRAFT,
        lambda p: {"body": "好"},
        (201, 201, 201, 403, 401),
    ),
    ("api-queue", "get", lambda p: "/api/v1/review-queue/", S.IN_REVIEW, None, (403, 200, 200, 403, 401)),
]


def _cases(table):
    for name, method, url, state, body, codes in table:
        for role, code in zip(ROLES, codes, strict=True):
            yield pytest.param(method, url, state, body, role, code, id=f"{name}-{role}-{code}")


@pytest.mark.parametrize("method, url, state, body, role, expected", list(_cases(PAGES)))
def test_pages_answer_each_role(login, make_pair, curator2, method, url, state, body, role, expected):
    pair = _pair(make_pair, curator2, state)
    client = login(role)
    response = getattr(client, method)(url(pair), body(pair) if body else None)
    assert response.status_code == expected, response.content[:500]
    if role == "anonymous":
        assert response["Location"].startswith("/accounts/login/")


@pytest.mark.parametrize("method, url, state, body, role, expected", list(_cases(API)))
def test_api_endpoints_answer_each_role(login, make_pair, curator2, method, url, state, body, role, expected):
    pair = _pair(make_pair, curator2, state)
    client = login(role)
    kwargs = {}
    if body:
        kwargs = {"data": json.dumps(body(pair)), "content_type": "application/json"}
    response = getattr(client, method)(url(pair), **kwargs)
    assert response.status_code == expected, response.content[:500]
    if expected >= 400:
        assert set(response.json()["error"]) == {"code", "message", "details"}


def test_a_refused_write_changes_nothing(login, make_pair, curator2):
    pair = _pair(make_pair, curator2, S.DRAFT)
    login("clinician").post(reverse("curation:pair-submit", args=[pair.pk]), {"version": pair.version})
    pair.refresh_from_db()
    assert (pair.status, pair.version) == (S.DRAFT, 1)


def test_access_pair_is_the_one_door(make_pair, curator2, clinician, outsider):
    from django.core.exceptions import PermissionDenied
    from django.db import transaction
    from django.http import Http404

    from curation.selectors import access_pair

    pair = _pair(make_pair, curator2, S.DRAFT)
    assert access_pair(clinician, pair.pk) == pair
    assert access_pair(clinician, str(pair.pk)) == pair
    with transaction.atomic():
        assert access_pair(clinician, pair.pk, for_update=True) == pair
    for missing in (pair.pk + 1000, "abc", None):
        with pytest.raises(Http404):
            access_pair(clinician, missing)
    with pytest.raises(PermissionDenied):
        access_pair(outsider, pair.pk)
