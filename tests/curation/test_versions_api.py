"""/api/v1/versions/: list, retrieve, create (freeze) and export, with the role matrix."""

from __future__ import annotations

import io
import zipfile

import pytest
from rest_framework.test import APIClient

from curation.models import DatasetVersion, QAPair
from curation.services.versions import dataset_version_freeze
from medportal.models import AuditEvent

APPROVED = QAPair.Status.APPROVED
LIST = "/api/v1/versions/"



@pytest.fixture
def pairs(make_pair, curator):
    texts = [
        "发烧三天怎么办",
        "咳嗽有痰要吃抗生素吗",
        "湿疹反复发作如何护理",
        "胸闷气短需要做心电图吗",
        "血压忽高忽低是什么原因",
        "房颤可以运动吗",
    ]
    for i, text in enumerate(texts):
        make_pair(
            curator,
            status=APPROVED,
            department="儿科" if i < 3 else "心内科",
            instruction=f"{text}？",
            output=f"建议{i}：请及时就医。",
            synthetic=i == 0,
        )


@pytest.fixture
def version(pairs, curator):
    return dataset_version_freeze(user=curator, name="v1", split=(0.6, 0.4, 0.0))


def api(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


@pytest.mark.parametrize(
    "who, status", [("curator", 200), ("clinician", 200), ("admin_user", 200), ("outsider", 403), (None, 401)]
)
def test_reading_needs_a_role(request, version, who, status):
    client = api(request.getfixturevalue(who) if who else None)
    assert client.get(LIST).status_code == status
    assert client.get(f"{LIST}{version.pk}/").status_code == status
    assert client.get(f"{LIST}{version.pk}/export/", {"format": "sharegpt"}).status_code == status


def test_the_list_and_detail_describe_the_version(clinician, version):
    body = api(clinician).get(LIST).json()
    assert body["count"] == 1
    row = body["results"][0]
    assert row["id"] == version.pk
    assert row["content_hash"] == version.content_hash
    assert row["counts"] == version.counts
    assert row["total"] == 6
    assert row["synthetic_count"] == 1
    assert row["synthetic_share"] == pytest.approx(1 / 6, abs=1e-4)
    assert row["created_by"] == "curator"
    assert api(clinician).get(f"{LIST}{version.pk}/").json() == row


def test_the_list_query_count_does_not_grow(curator, pairs, django_assert_max_num_queries):
    dataset_version_freeze(user=curator, name="a", split=(0.6, 0.4, 0.0))
    client = api(curator)
    with django_assert_max_num_queries(10) as few:
        client.get(LIST)
    for i in range(6):
        dataset_version_freeze(user=curator, name=f"b{i}", seed=i, split=(0.6, 0.4, 0.0))
    with django_assert_max_num_queries(len(few.captured_queries)):
        assert client.get(LIST).json()["count"] == 7


def test_unknown_ids_are_404(curator, version):
    assert api(curator).get(f"{LIST}{version.pk + 50}/").status_code == 404
    assert api(curator).get(f"{LIST}{version.pk + 50}/export/", {"format": "hf"}).status_code == 404


@pytest.mark.parametrize("who", ["curator", "admin_user"])
def test_curators_and_admins_freeze_through_the_api(request, pairs, who):
    user = request.getfixturevalue(who)
    response = api(user).post(
        LIST,
        {"name": "api-v1", "departments": ["心内科"], "split": [0.6, 0.4, 0.0], "seed": 3, "synthetic": False},
        format="json",
    )
    assert response.status_code == 201, response.content
    version = DatasetVersion.objects.get(pk=response.json()["id"])
    assert version.created_by == user
    assert version.total == 3
    assert response.json()["counts"] == {"train": 2, "validation": 1, "test": 0}
    assert AuditEvent.objects.filter(action="dataset_version.freeze", target_id=str(version.pk)).exists()


@pytest.mark.parametrize("who, status", [("clinician", 403), ("outsider", 403), (None, 401)])
def test_others_cannot_freeze(request, pairs, who, status):
    response = api(request.getfixturevalue(who) if who else None).post(LIST, {"name": "x"}, format="json")
    assert response.status_code == status
    assert not DatasetVersion.objects.exists()


@pytest.mark.parametrize(
    "payload, message",
    [
        ({"name": "v1"}, "already exists"),
        ({"name": "x", "split": [0.5, 0.5]}, "three split ratios"),
        ({"name": "x", "departments": ["外星科"]}, "Unknown department"),
        ({"name": "x", "sources": ["nowhere"]}, "No approved QA pairs"),
    ],
)
def test_bad_freezes_get_one_clear_error(curator, version, payload, message):
    response = api(curator).post(LIST, payload, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert message in error["message"]
    assert DatasetVersion.objects.count() == 1


def test_versions_cannot_be_changed_or_deleted(curator, version):
    client = api(curator)
    assert client.patch(f"{LIST}{version.pk}/", {"name": "renamed"}, format="json").status_code == 405
    assert client.delete(f"{LIST}{version.pk}/").status_code == 405
    version.refresh_from_db()
    assert version.name == "v1"


def test_export_returns_a_zip_of_the_format(clinician, version):
    response = api(clinician).get(f"{LIST}{version.pk}/export/", {"format": "hf"})
    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))) as zf:
        assert "README.md" in zf.namelist()
        assert "data/train-00000-of-00001.parquet" in zf.namelist()
    assert AuditEvent.objects.filter(action="dataset_version.export", actor=clinician).count() == 1


def test_export_with_an_unknown_or_missing_format_is_a_400(curator, version):
    for params in ({"format": "csv"}, {}):
        response = api(curator).get(f"{LIST}{version.pk}/export/", params)
        assert response.status_code == 400
        assert "Unknown export format" in response.json()["error"]["message"]
