"""The reviewer queue (page and GET /api/v1/review-queue/): what is in it, in which order,
departments, and a query count that does not grow with the page."""

from __future__ import annotations

from datetime import timedelta

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from curation import selectors
from curation.models import Department, QAPair
from curation.services import review

S = QAPair.Status
QUEUE = "/curation/review/"
API = "/api/v1/review-queue/"



def waiting(make_pair, author, *, minutes_ago=0, department="", round_=1):
    return make_pair(
        author,
        status=S.IN_REVIEW,
        review_round=round_,
        submitted_at=timezone.now() - timedelta(minutes=minutes_ago),
        department=department,
    )


def queue_ids(user, **kw):
    return [p.pk for p in selectors.review_queue(user=user, **kw)]


def test_the_queue_lists_pairs_in_review_oldest_submission_first(make_pair, curator, clinician):
    new = waiting(make_pair, curator, minutes_ago=1)
    old = waiting(make_pair, curator, minutes_ago=60)
    middle = waiting(make_pair, curator, minutes_ago=30)
    make_pair(curator)  # a draft
    make_pair(curator, status=S.APPROVED)
    assert queue_ids(clinician) == [old.pk, middle.pk, new.pk]


def test_the_queue_leaves_out_my_own_pairs(make_pair, curator, admin_user):
    mine = waiting(make_pair, admin_user)
    theirs = waiting(make_pair, curator)
    assert queue_ids(admin_user) == [theirs.pk]
    assert mine.pk not in queue_ids(admin_user)


def test_a_pair_leaves_my_queue_once_i_reviewed_it_this_round(make_pair, curator, clinician, clinician2, settings):
    settings.MEDPORTAL_REVIEW_QUORUM = 2
    pair = waiting(make_pair, curator)
    review.qa_pair_approve(pair=pair, reviewer=clinician, version=pair.version)
    assert queue_ids(clinician) == []
    assert queue_ids(clinician2) == [pair.pk]


def test_a_pair_comes_back_in_its_next_round(make_pair, curator, clinician):
    pair = waiting(make_pair, curator)
    review.qa_pair_request_changes(pair=pair, reviewer=clinician, comment="补充", version=pair.version)
    assert queue_ids(clinician) == []
    pair.refresh_from_db()
    review.qa_pair_submit(pair=pair, actor=curator, version=pair.version)
    assert queue_ids(clinician) == [pair.pk]


def test_a_reviewer_with_departments_sees_those_and_unassigned_pairs(make_pair, curator, clinician, clinician2, admin_user):
    cardio = waiting(make_pair, curator, department="心内科", minutes_ago=3)
    peds = waiting(make_pair, curator, department="儿科", minutes_ago=2)
    unassigned = waiting(make_pair, curator, minutes_ago=1)
    Department.objects.get(name="心内科").reviewers.add(clinician)
    Department.objects.get(name="儿科").reviewers.add(admin_user)
    assert queue_ids(clinician) == [cardio.pk, unassigned.pk]
    assert queue_ids(clinician, all_departments=True) == [cardio.pk, peds.pk, unassigned.pk]
    assert queue_ids(clinician2) == [cardio.pk, peds.pk, unassigned.pk]  # no departments: everything


def test_the_queue_page_has_a_toggle_for_all_departments(client, make_pair, curator, clinician, clinician2):
    cardio = waiting(make_pair, curator, department="心内科")
    peds = waiting(make_pair, curator, department="儿科")
    Department.objects.get(name="心内科").reviewers.add(clinician)
    Department.objects.get(name="儿科").reviewers.add(clinician2)
    client.force_login(clinician)
    mine = client.get(QUEUE)
    assert [p.pk for p in mine.context["page"]] == [cardio.pk]
    assert "?all=1" in mine.content.decode()
    everything = client.get(QUEUE, {"all": "1"})
    assert {p.pk for p in everything.context["page"]} == {cardio.pk, peds.pk}
    api = client.get(API, {"all_departments": "true"}).json()
    assert {r["id"] for r in api["results"]} == {cardio.pk, peds.pk}
    assert [r["id"] for r in client.get(API).json()["results"]] == [cardio.pk]


def test_queue_rows_link_to_the_pair_and_back(client, make_pair, curator, clinician):
    pair = waiting(make_pair, curator)
    client.force_login(clinician)
    html = client.get(QUEUE).content.decode()
    assert reverse("curation:pair-detail", args=[pair.pk]) + "?next=" + QUEUE + "&amp;pos=0" in html


def test_the_queue_page_query_count_does_not_grow_with_page_size(client, make_pair, curator, clinician):
    for i in range(3):
        waiting(make_pair, curator, department="儿科", minutes_ago=i)
    Department.objects.get(name="儿科").reviewers.add(clinician)
    client.force_login(clinician)
    client.get(QUEUE)
    with CaptureQueriesContext(connection) as small:
        client.get(QUEUE, {"page_size": 25})
    for i in range(80):
        waiting(make_pair, curator, department="儿科" if i % 2 else "", minutes_ago=i)
    with CaptureQueriesContext(connection) as big:
        response = client.get(QUEUE, {"page_size": 100})
    assert len(response.context["page"].object_list) == 83
    assert len(big) == len(small)


def test_the_api_queue_query_count_does_not_grow_with_page_size(client, make_pair, curator, clinician):
    for i in range(2):
        waiting(make_pair, curator, minutes_ago=i)
    client.force_login(clinician)
    with CaptureQueriesContext(connection) as small:
        client.get(API)
    for i in range(60):
        waiting(make_pair, curator, minutes_ago=i)
    with CaptureQueriesContext(connection) as big:
        data = client.get(API, {"page_size": 100}).json()
    assert data["count"] == 62
    assert len(big) == len(small)
