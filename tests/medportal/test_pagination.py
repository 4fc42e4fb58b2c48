"""Counts stop at the cap on large lists: the page says "more than N", the API count_capped."""

import pytest

from curation.models import QAPair
from medportal import pagination

pytestmark = pytest.mark.django_db


@pytest.fixture
def five_pairs(make_pair, curator):
    return [make_pair(curator) for _ in range(5)]


def test_counts_are_exact_below_the_cap(five_pairs, monkeypatch):
    monkeypatch.setattr(pagination.CappedPaginator, "cap", 10)
    paginator = pagination.CappedPaginator(QAPair.objects.order_by("-id"), 2)
    assert (paginator.count, paginator.capped, paginator.num_pages) == (5, False, 3)


def test_counts_stop_at_the_cap(five_pairs, monkeypatch):
    monkeypatch.setattr(pagination.CappedPaginator, "cap", 3)
    paginator = pagination.CappedPaginator(QAPair.objects.order_by("-id"), 2)
    assert (paginator.count, paginator.capped, paginator.num_pages) == (3, True, 2)
    assert [p.pk for p in paginator.page(1)] == [five_pairs[4].pk, five_pairs[3].pk]


def test_the_list_page_and_the_api_say_when_the_count_is_capped(client, clinician, five_pairs, monkeypatch):
    monkeypatch.setattr(pagination.CappedPaginator, "cap", 3)
    client.force_login(clinician)
    page = client.get("/curation/pairs/?page_size=25").content.decode()
    assert "more than 3 pairs" in page
    body = client.get("/api/v1/pairs/").json()
    assert body["count"] == 3 and body["count_capped"] is True
    monkeypatch.setattr(pagination.CappedPaginator, "cap", 100)
    body = client.get("/api/v1/pairs/").json()
    assert body["count"] == 5 and body["count_capped"] is False
