"""A freeze whose split would leave test or validation empty is refused, naming the minimum
number of approved pairs the chosen ratios need: service, form, API and command."""

from __future__ import annotations

import hashlib
import io

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from rest_framework.test import APIClient

from curation.models import DatasetVersion, QAPair
from curation.services.versions import dataset_version_freeze, largest_remainder, minimum_pairs_for_split
from medportal.errors import InvalidInput

pytestmark = pytest.mark.django_db

MESSAGE = r"The test split would be empty\. With split ratios 0\.8/0\.1/0\.1 .* at least 7 approved pairs"


def words(*key, n: int = 30) -> str:
    digest = hashlib.sha256(repr(key).encode()).digest() * 2
    return "".join(chr(0x4E00 + (b * 131 + i * 977) % 20000) for i, b in enumerate(digest[:n]))


@pytest.fixture
def six(make_pair, curator):
    """Six approved pairs of one department: 0.8/0.1/0.1 would give 5/1/0."""
    return [
        make_pair(curator, status=QAPair.Status.APPROVED, instruction=f"问：{words('q', i)}", output=f"答：{words('a', i)}", department="内科")
        for i in range(6)
    ]


@pytest.mark.parametrize(
    "ratios, expected", [((0.8, 0.1, 0.1), 7), ((0.9, 0.05, 0.05), 14), ((0.8, 0.2, 0.0), 3), ((1.0, 0.0, 0.0), 1), ((0.5, 0.25, 0.25), 3)]
)
def test_the_minimum_is_the_first_size_that_gives_every_split_a_pair(ratios, expected):
    n = minimum_pairs_for_split(ratios)
    assert n == expected
    active = [i for i, r in enumerate(ratios) if r > 0]
    assert all(c >= 1 for i, c in enumerate(largest_remainder(n, ratios)) if i in active)
    assert not all(c >= 1 for i, c in enumerate(largest_remainder(n - 1, ratios)) if i in active) or n == 1


def test_the_service_refuses_and_writes_nothing(six, curator):
    with pytest.raises(InvalidInput, match=MESSAGE) as info:
        dataset_version_freeze(user=curator, name="v1")
    assert info.value.details == {"empty_splits": ["test"], "minimum_pairs": 7, "selected": 6}
    assert not DatasetVersion.objects.exists()


def test_a_split_with_ratio_zero_may_stay_empty_and_one_more_pair_fills_test(six, curator, make_pair):
    assert dataset_version_freeze(user=curator, name="no-test", split=(0.8, 0.2, 0.0)).counts == {"train": 5, "validation": 1, "test": 0}
    make_pair(curator, status=QAPair.Status.APPROVED, instruction=f"问：{words('q', 7)}", output=f"答：{words('a', 7)}", department="内科")
    counts = dataset_version_freeze(user=curator, name="seven").counts
    assert counts["validation"] >= 1 and counts["test"] >= 1


def test_the_departments_are_named_when_they_are_too_small(make_pair, curator):
    for i in range(8):
        make_pair(curator, status=QAPair.Status.APPROVED, instruction=f"问：{words('d', i)}", output=f"答：{words('e', i)}", department=f"科{i % 4}")
    with pytest.raises(InvalidInput, match=r"this selection has 8 approved pairs, 2 in its largest department"):
        dataset_version_freeze(user=curator, name="v1")


def test_the_form_shows_the_refusal(client, six, curator):
    client.force_login(curator)
    data = {"name": "v1", "train": "0.8", "validation": "0.1", "test": "0.1", "seed": "42", "synthetic": "", "source": ""}
    response = client.post(reverse("curation:version-create"), data)
    assert response.status_code == 200
    assert "at least 7 approved pairs" in response.content.decode()
    assert not DatasetVersion.objects.exists()


def test_the_api_refuses_with_the_minimum(six, curator):
    api = APIClient()
    api.force_authenticate(curator)
    response = api.post("/api/v1/versions/", {"name": "v1", "split": [0.8, 0.1, 0.1]}, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert "at least 7 approved pairs" in error["message"] and error["details"]["minimum_pairs"] == 7


def test_the_command_refuses_with_the_minimum(six, admin_user):
    with pytest.raises(CommandError, match=MESSAGE):
        call_command("freeze_dataset", "--name", "v1", stdout=io.StringIO())
    assert not DatasetVersion.objects.exists()
