"""Dataset-version pages: role matrix, freeze form, detail, zip downloads, list query count."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from django.urls import reverse

from curation.models import DatasetVersion, QAPair
from curation.services.versions import dataset_version_freeze
from medportal.models import AuditEvent

APPROVED = QAPair.Status.APPROVED
TEXTS = [
    "发烧三天怎么办",
    "咳嗽有痰要吃抗生素吗",
    "湿疹反复发作如何护理",
    "夜间磨牙是缺钙吗",
    "腹泻脱水的表现有哪些",
    "胸闷气短需要做心电图吗",
    "血压忽高忽低是什么原因",
    "早搏需要治疗吗",
    "心悸伴头晕怎么办",
    "房颤可以运动吗",
]



@pytest.fixture
def pairs(make_pair, curator):
    made = []
    for i, text in enumerate(TEXTS):
        made.append(
            make_pair(
                curator,
                status=APPROVED,
                department="儿科" if i < 5 else "心内科",
                instruction=f"{text}？",
                output=f"建议{i}：请及时就医并遵医嘱。",
                tags=["常见病"] if i % 2 else [],
                synthetic=i == 9,
            )
        )
    make_pair(curator, status=QAPair.Status.DRAFT, department="儿科", instruction="草稿问题？", output="草稿回答。")
    return made


@pytest.fixture
def version(pairs, curator):
    return dataset_version_freeze(user=curator, name="v1", description="第一版", split=(0.6, 0.2, 0.2), seed=5)


def client_for(client, user):
    if user is not None:
        client.force_login(user)
    return client


# --------------------------------------------------------------------------- role matrix

READERS = ["curator", "clinician", "admin_user"]


@pytest.mark.parametrize("who, status", [("curator", 200), ("clinician", 200), ("admin_user", 200), ("outsider", 403)])
def test_every_role_reads_the_list_and_detail_and_outsiders_get_403(request, client, version, who, status):
    client_for(client, request.getfixturevalue(who))
    assert client.get(reverse("curation:version-list")).status_code == status
    assert client.get(reverse("curation:version-detail", args=[version.pk])).status_code == status
    assert client.get(reverse("curation:version-export", args=[version.pk, "xlsx"])).status_code == status


@pytest.mark.parametrize("who, status", [("curator", 200), ("admin_user", 200), ("clinician", 403), ("outsider", 403)])
def test_only_curators_and_admins_open_the_freeze_form(request, client, pairs, who, status):
    client_for(client, request.getfixturevalue(who))
    assert client.get(reverse("curation:version-create")).status_code == status
    assert client.get(reverse("curation:version-count")).status_code == status


def test_clinicians_cannot_post_a_freeze(client, clinician, pairs):
    client_for(client, clinician)
    response = client.post(
        reverse("curation:version-create"), {"name": "x", "train": 0.8, "validation": 0.1, "test": 0.1, "seed": 1}
    )
    assert response.status_code == 403
    assert not DatasetVersion.objects.exists()


@pytest.mark.parametrize("name", ["curation:version-list", "curation:version-create"])
def test_anonymous_users_are_sent_to_log_in(client, db, name):
    response = client.get(reverse(name))
    assert response.status_code == 302
    assert reverse("login") in response["Location"]


def test_anonymous_users_cannot_download(client, version):
    response = client.get(reverse("curation:version-export", args=[version.pk, "hf"]))
    assert response.status_code == 302
    assert not AuditEvent.objects.filter(action="dataset_version.export").exists()


def test_unknown_ids_and_formats_are_404(client, curator, version):
    client_for(client, curator)
    assert client.get(reverse("curation:version-detail", args=[version.pk + 100])).status_code == 404
    assert client.get(reverse("curation:version-export", args=[version.pk + 100, "hf"])).status_code == 404
    assert client.get(reverse("curation:version-export", args=[version.pk, "csv"])).status_code == 404


# --------------------------------------------------------------------------- list


def test_the_list_shows_counts_synthetic_share_and_hash_prefix(client, clinician, version):
    client_for(client, clinician)
    response = client.get(reverse("curation:version-list"))
    html = response.content.decode()
    assert "v1" in html
    assert version.content_hash[:12] in html
    assert "10%" in html  # 1 synthetic of 10
    assert f'href="{reverse("curation:version-detail", args=[version.pk])}"' in html


def test_the_list_query_count_does_not_grow_with_the_number_of_versions(
    client, curator, pairs, django_assert_max_num_queries
):
    client_for(client, curator)
    dataset_version_freeze(user=curator, name="first", split=(0.6, 0.2, 0.2))
    with django_assert_max_num_queries(20) as few:
        client.get(reverse("curation:version-list"))
    for i in range(8):
        dataset_version_freeze(user=curator, name=f"more-{i}", seed=i, split=(0.6, 0.2, 0.2))
    with django_assert_max_num_queries(len(few.captured_queries)):
        response = client.get(reverse("curation:version-list"))
    assert len(response.context["versions"]) == 9


# --------------------------------------------------------------------------- create


def test_the_form_freezes_and_redirects_to_the_detail(client, curator, pairs):
    client_for(client, curator)
    response = client.post(
        reverse("curation:version-create"),
        {
            "name": "儿科 v1",
            "description": "只要儿科",
            "departments": ["儿科"],
            "train": "0.6",
            "validation": "0.2",
            "test": "0.2",
            "seed": "7",
            "synthetic": "",
        },
    )
    version = DatasetVersion.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("curation:version-detail", args=[version.pk])
    assert version.total == 5
    assert version.counts == {"train": 3, "validation": 1, "test": 1}
    assert version.filters["departments"] == ["儿科"]
    assert version.seed == 7
    assert version.created_by == curator


@pytest.mark.parametrize(
    "data, message",
    [
        ({"train": "0.8", "validation": "0.3", "test": "0.1"}, "add up to 1.2"),
        ({"synthetic": "yes", "departments": ["儿科"]}, "No approved QA pairs match"),
    ],
)
def test_the_form_shows_service_errors_and_keeps_the_input(client, curator, pairs, data, message):
    client_for(client, curator)
    form = {"name": "v-bad", "train": "0.8", "validation": "0.1", "test": "0.1", "seed": "42", **data}
    response = client.post(reverse("curation:version-create"), form)
    assert response.status_code == 200
    html = response.content.decode()
    assert message in html
    assert 'value="v-bad"' in html
    assert not DatasetVersion.objects.exists()


def test_the_form_refuses_a_taken_name(client, curator, version):
    client_for(client, curator)
    response = client.post(
        reverse("curation:version-create"),
        {"name": "v1", "train": "0.8", "validation": "0.1", "test": "0.1", "seed": "1"},
    )
    assert "already exists" in response.content.decode()
    assert DatasetVersion.objects.count() == 1


def test_the_live_count_follows_the_filters(client, curator, pairs):
    client_for(client, curator)
    url = reverse("curation:version-count")
    assert 'data-count="10"' in client.get(url).content.decode()
    assert 'data-count="5"' in client.get(url, {"departments": ["心内科"]}).content.decode()
    assert 'data-count="1"' in client.get(url, {"synthetic": "yes"}).content.decode()
    assert 'data-count="5"' in client.get(url, {"tags": ["常见病"]}).content.decode()
    assert 'data-count="10"' in client.get(reverse("curation:version-create")).content.decode()


# --------------------------------------------------------------------------- detail and download


def test_the_detail_shows_hash_seed_filters_per_department_counts_and_a_preview(client, clinician, version, pairs):
    client_for(client, clinician)
    response = client.get(reverse("curation:version-detail", args=[version.pk]))
    html = response.content.decode()
    assert version.content_hash in html
    assert "第一版" in html
    rows = {r["department"]: r for r in response.context["departments"]}
    assert rows["儿科"]["train"] == 3 and rows["儿科"]["validation"] == 1 and rows["儿科"]["test"] == 1
    assert rows["心内科"]["total"] == 5
    preview = {split: items for split, _count, items in response.context["splits"]}
    assert {split: len(items) for split, items in preview.items()} == {"train": 5, "validation": 2, "test": 2}
    for items in preview.values():
        for item in items:
            assert item.content["instruction"] in html
    for fmt in ("llamafactory", "sharegpt", "hf", "xlsx"):
        assert reverse("curation:version-export", args=[version.pk, fmt]) in html


def test_a_download_is_a_zip_of_the_export_and_is_audited(client, clinician, version):
    client_for(client, clinician)
    response = client.get(reverse("curation:version-export", args=[version.pk, "llamafactory"]))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    assert "v1-llamafactory.zip" in response["Content-Disposition"]
    body = b"".join(response.streaming_content)
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        info = json.loads(zf.read("dataset_info.json"))
        train = json.loads(zf.read(info["v1_train"]["file_name"]))
    assert len(train) == version.counts["train"]
    event = AuditEvent.objects.get(action="dataset_version.export")
    assert event.actor == clinician


def test_the_django_admin_shows_versions_read_only(client, django_user_model, version):
    root = django_user_model.objects.create_superuser("root", "root@example.org", "pw")
    client.force_login(root)
    change = f"/admin/curation/datasetversion/{version.pk}/change/"
    assert client.get(change).status_code == 200
    assert client.post(change, {"name": "renamed"}).status_code == 403
    assert client.post(f"/admin/curation/datasetversion/{version.pk}/delete/", {"post": "yes"}).status_code == 403
    version.refresh_from_db()
    assert version.name == "v1"
