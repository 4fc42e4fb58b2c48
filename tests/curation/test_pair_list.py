"""The pair list (page and GET /api/v1/pairs/): search in Chinese and English, every filter,
sorting, page sizes, a query count that does not grow with the page, and bulk actions."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from curation import selectors
from curation.models import QAPair, Review, Tag
from curation.services import review
from medportal.errors import InvalidInput
from medportal.models import AuditEvent

S = QAPair.Status
LIST = "/curation/pairs/"
API = "/api/v1/pairs/"



@pytest.fixture
def corpus(make_pair, curator, curator2):
    """Three pairs in two languages with distinct labels."""
    zh = make_pair(
        curator,
        instruction="高血压患者可以吃党参吗？",
        output="党参有轻度升压作用，高血压患者应在医生指导下使用。",
        department="心内科",
        tags=["中药"],
        source="cmedqa",
    )
    en = make_pair(
        curator2,
        instruction="Can patients with Hypertension take ginseng?",
        output="Ginseng may raise blood pressure; ask your doctor first.",
        department="Cardiology",
        tags=["herbal"],
        source="medquad",
        synthetic=True,
    )
    pii = make_pair(
        curator,
        instruction="患者电话13800138000，糖尿病饮食要注意什么？",
        output="控制总热量，少吃精制糖。",
        department="内分泌科",
        status=S.IN_REVIEW,
        review_round=1,
    )
    return {"zh": zh, "en": en, "pii": pii}


def ids(user, **filters):
    return {p.pk for p in selectors.qa_pair_list(user=user, filters=filters)}


# --- search -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "q, expected",
    [
        ("血压", {"zh"}),  # a bigram inside 高血压
        ("高血压 党参", {"zh"}),  # every token must match
        ("党参 糖尿病", set()),
        ("糖尿病", {"pii"}),
        ("hypertension", {"en"}),  # case-insensitive
        ("GINSENG doctor", {"en"}),
        ("hyperten", {"en"}),  # a word prefix
        ("血", {"zh"}),  # one CJK character: bigrams that start with it
        ("insulin", set()),
        ("   ", {"zh", "en", "pii"}),  # no tokens: no search
    ],
)
def test_search_finds_pairs_by_chinese_and_english_text(corpus, curator, q, expected):
    assert ids(curator, q=q) == {corpus[k].pk for k in expected}


def test_search_also_matches_the_answer(corpus, curator):
    assert ids(curator, q="精制糖") == {corpus["pii"].pk}


def test_the_list_page_searches_in_chinese(client, corpus, clinician):
    client.force_login(clinician)
    response = client.get(LIST, {"q": "党参"})
    assert response.status_code == 200
    shown = [p.pk for p in response.context["page"]]
    assert shown == [corpus["zh"].pk]
    assert "高血压患者可以吃<mark class=\"search-hit\">党参</mark>吗" in response.content.decode()


def test_the_api_searches_in_chinese_and_english(client, corpus, clinician):
    client.force_login(clinician)
    zh = client.get(API, {"q": "高血压"}).json()
    en = client.get(API, {"q": "Ginseng"}).json()
    assert [r["id"] for r in zh["results"]] == [corpus["zh"].pk]
    assert [r["id"] for r in en["results"]] == [corpus["en"].pk]
    assert zh["count"] == 1


# --- filters ----------------------------------------------------------------------------------


def test_it_filters_by_status(corpus, curator):
    assert ids(curator, status="in_review") == {corpus["pii"].pk}


def test_it_filters_by_department_and_tag(corpus, curator):
    dept = corpus["en"].department
    assert ids(curator, department=str(dept.pk)) == {corpus["en"].pk}
    tag = Tag.objects.get(name="中药")
    assert ids(curator, tag=str(tag.pk)) == {corpus["zh"].pk}


def test_it_filters_by_source_synthetic_and_identifier_flag(corpus, curator):
    assert ids(curator, source="medquad") == {corpus["en"].pk}
    assert ids(curator, synthetic="true") == {corpus["en"].pk}
    assert ids(curator, synthetic="false") == {corpus["zh"].pk, corpus["pii"].pk}
    assert ids(curator, has_identifiers="true") == {corpus["pii"].pk}


def test_it_filters_by_import_batch(corpus, curator):
    from curation.models import ImportBatch

    batch = ImportBatch.objects.create(created_by=curator, filename="x.jsonl", status=ImportBatch.Status.SUCCEEDED)
    QAPair.objects.filter(pk=corpus["zh"].pk).update(import_batch=batch)
    assert ids(curator, import_batch=str(batch.pk)) == {corpus["zh"].pk}


def test_it_filters_by_author(corpus, curator, curator2):
    assert ids(curator, author=str(curator2.pk)) == {corpus["en"].pk}


def test_it_filters_by_the_reviewer_who_reviewed(corpus, curator, clinician, clinician2):
    pair = corpus["pii"]
    review.qa_pair_request_changes(pair=pair, reviewer=clinician, comment="请删除电话", version=pair.version)
    assert ids(curator, reviewer=str(clinician.pk)) == {pair.pk}
    assert ids(curator, reviewer=str(clinician2.pk)) == set()


def test_it_combines_search_and_filters(corpus, curator):
    assert ids(curator, q="高血压", status="draft", department=str(corpus["zh"].department_id)) == {corpus["zh"].pk}
    assert ids(curator, q="高血压", status="approved") == set()


def test_it_sorts_newest_first_by_default_and_on_request(corpus, curator):
    default = [p.pk for p in selectors.qa_pair_list(user=curator, filters={})]
    assert default == sorted(default, reverse=True)
    oldest = [p.pk for p in selectors.qa_pair_list(user=curator, filters={"sort": "id"})]
    assert oldest == sorted(oldest)


def test_a_malformed_filter_is_a_clear_error(corpus, curator, client):
    with pytest.raises(InvalidInput) as exc:
        selectors.qa_pair_list(user=curator, filters={"status": "lost", "department": "abc"})
    assert {"status", "department"} <= set(exc.value.details)
    client.force_login(curator)
    page = client.get(LIST, {"status": "lost"})
    assert page.status_code == 200
    assert list(page.context["page"]) == []
    assert page.context["filter_errors"]
    api = client.get(API, {"status": "lost"})
    assert api.status_code == 400
    assert api.json()["error"]["code"] == "invalid"
    assert "status" in api.json()["error"]["details"]


def test_the_page_shows_an_identifier_badge(client, corpus, curator):
    client.force_login(curator)
    html = client.get(LIST).content.decode()
    row = html.split(f'data-pair="{corpus["pii"].pk}"')[1].split("</tr>")[0]
    assert 'data-flag="identifiers"' in row
    other = html.split(f'data-pair="{corpus["zh"].pk}"')[1].split("</tr>")[0]
    assert 'data-flag="identifiers"' not in other


# --- pagination and query counts --------------------------------------------------------------


def _many(make_pair, author, n):
    for i in range(n):
        make_pair(author, department="儿科" if i % 2 else "心内科", tags=["t1", "t2"] if i % 3 else ["t3"])


@pytest.mark.parametrize("size, shown", [("25", 25), ("50", 50), ("100", 70), ("bogus", 50), ("7", 50)])
def test_page_size_is_one_of_the_allowed_values(client, make_pair, curator, size, shown):
    _many(make_pair, curator, 70)
    client.force_login(curator)
    response = client.get(LIST, {"page_size": size})
    assert len(response.context["page"].object_list) == shown


def test_the_list_page_query_count_does_not_grow_with_page_size(client, make_pair, curator):
    _many(make_pair, curator, 5)
    client.force_login(curator)
    client.get(LIST)  # warm caches (content types, sessions)
    with CaptureQueriesContext(connection) as small:
        assert client.get(LIST, {"page_size": 25}).status_code == 200
    _many(make_pair, curator, 120)
    with CaptureQueriesContext(connection) as big:
        response = client.get(LIST, {"page_size": 200})
    assert len(response.context["page"].object_list) == 125
    assert len(big) == len(small)


def test_the_api_list_query_count_does_not_grow_with_page_size(client, make_pair, curator):
    _many(make_pair, curator, 5)
    client.force_login(curator)
    with CaptureQueriesContext(connection) as small:
        assert client.get(API, {"page_size": 5}).status_code == 200
    _many(make_pair, curator, 100)
    with CaptureQueriesContext(connection) as big:
        data = client.get(API, {"page_size": 200}).json()
    assert len(data["results"]) == 105
    assert len(big) == len(small)


def test_the_api_caps_the_page_size_at_two_hundred(client, make_pair, curator):
    _many(make_pair, curator, 3)
    client.force_login(curator)
    data = client.get(API, {"page_size": 1}).json()
    assert data["count"] == 3 and len(data["results"]) == 1 and data["next"]


# --- bulk actions -----------------------------------------------------------------------------


def _bulk(client, pairs, action, value="", versions=None):
    data = {"action": action, "value": value, "ids": [p.pk for p in pairs], "next": LIST + "?status=draft"}
    for p in pairs:
        data[f"v{p.pk}"] = (versions or {}).get(p.pk, p.version)
    return client.post(reverse("curation:pair-bulk"), data)


def test_bulk_set_department_labels_every_selected_editable_pair(client, make_pair, curator):
    a, b = make_pair(curator), make_pair(curator, status=S.CHANGES_REQUESTED)
    locked = make_pair(curator, status=S.APPROVED)
    client.force_login(curator)
    response = _bulk(client, [a, b, locked], "department", "神经内科")
    assert response.status_code == 302
    assert response["Location"] == LIST + "?status=draft"
    a.refresh_from_db(), b.refresh_from_db(), locked.refresh_from_db()
    assert a.department.name == b.department.name == "神经内科"
    assert locked.department is None
    assert (a.version, b.version, locked.version) == (2, 2, 1)
    assert b.status == S.CHANGES_REQUESTED
    assert AuditEvent.objects.filter(action="qa_pair.bulk_label").count() == 2
    assert a.revisions.count() == 2


def test_bulk_add_tag_and_set_difficulty(client, make_pair, curator):
    a = make_pair(curator, tags=["旧"])
    client.force_login(curator)
    _bulk(client, [a], "tag", "罕见病")
    a = QAPair.objects.get(pk=a.pk)
    assert sorted(t.name for t in a.tags.all()) == ["旧", "罕见病"]
    _bulk(client, [a], "difficulty", "hard")
    a.refresh_from_db()
    assert a.difficulty == "hard" and a.version == 3


def test_bulk_rejects_an_unknown_difficulty_without_writing(client, make_pair, curator):
    a = make_pair(curator)
    client.force_login(curator)
    response = _bulk(client, [a], "difficulty", "extreme")
    assert response.status_code == 400
    a.refresh_from_db()
    assert (a.difficulty, a.version) == ("", 1)


def test_bulk_submit_sends_drafts_to_review(client, make_pair, curator):
    a, b = make_pair(curator), make_pair(curator, status=S.IN_REVIEW, review_round=1)
    client.force_login(curator)
    _bulk(client, [a, b], "submit")
    a.refresh_from_db(), b.refresh_from_db()
    assert (a.status, a.review_round) == (S.IN_REVIEW, 1)
    assert (b.review_round, b.version) == (1, 1)


def test_bulk_with_a_stale_row_writes_nothing(client, make_pair, curator):
    a, b = make_pair(curator), make_pair(curator)
    client.force_login(curator)
    response = _bulk(client, [a, b], "department", "急诊科", versions={b.pk: 0})
    assert response.status_code == 409
    assert not QAPair.objects.filter(department__isnull=False).exists()
    messages = [str(m) for m in response.wsgi_request._messages]
    assert any("changed by" in m for m in messages)


def test_bulk_is_for_curators_only(client, make_pair, curator, clinician):
    a = make_pair(curator)
    client.force_login(clinician)
    assert _bulk(client, [a], "department", "x").status_code == 403
    a.refresh_from_db()
    assert a.department is None


def test_bulk_needs_a_selection(client, curator):
    client.force_login(curator)
    response = client.post(reverse("curation:pair-bulk"), {"action": "department", "value": "x"})
    assert response.status_code == 400
    assert "Select at least one pair." in response.content.decode()
    assert not AuditEvent.objects.exists()


def test_reviews_do_not_multiply_rows_when_filtering_by_reviewer(corpus, curator, clinician, clinician2, settings):
    settings.MEDPORTAL_REVIEW_QUORUM = 3
    pair = corpus["pii"]  # holds a phone number: approving it needs the confirmation
    review.qa_pair_approve(pair=pair, reviewer=clinician, version=pair.version, confirm_identifiers=True)
    pair.refresh_from_db()
    review.qa_pair_approve(pair=pair, reviewer=clinician2, version=pair.version, confirm_identifiers=True)
    assert Review.objects.count() == 2
    assert [p.pk for p in selectors.qa_pair_list(user=curator, filters={"reviewer": str(clinician.pk)})] == [pair.pk]
