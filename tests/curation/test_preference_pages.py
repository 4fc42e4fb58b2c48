"""Preference pages: list, import with its report, review by POST, freeze and downloads, roles."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from curation.models_pref import PreferencePair, PreferenceVersion
from curation.services import preferences as prefs

pytestmark = pytest.mark.django_db


def upload(client, rows, name="prefs.jsonl", **extra):
    body = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows).encode("utf-8")
    return client.post(reverse("curation:preference-import"), {"file": SimpleUploadedFile(name, body), **extra})


ROWS = [{"prompt": f"问题{n}：头晕乏力怎么办？", "chosen": f"测量血压血糖，必要时就医。{n}", "rejected": f"多喝咖啡。{n}"} for n in range(10)]


def test_import_page_report_and_roles(client, curator, clinician):
    client.force_login(clinician)
    assert upload(client, ROWS).status_code == 403
    client.force_login(curator)
    response = upload(client, [*ROWS, {"prompt": "x", "chosen": "same", "rejected": "same"}], submit="1")
    assert response.status_code == 302
    report = client.get(response["Location"])
    assert report.status_code == 200
    html = report.content.decode()
    assert 'data-count="created">10<' in html and 'data-count="skipped">1<' in html and 'data-kind="skipped"' in html
    assert PreferencePair.objects.filter(status="in_review").count() == 10
    bad = client.post(reverse("curation:preference-import"), {"file": SimpleUploadedFile("x.json", b'[{"instruction": "q", "output": "a"}]')})
    assert bad.status_code == 400 and "not a preference file" in bad.content.decode()


def test_review_by_post_and_the_list(client, curator, clinician):
    pair = prefs.preference_pair_create(author=curator, prompt="胸闷？", chosen="就医。", rejected="忍着。", source_kind="import", submit=True)
    client.force_login(clinician)
    page = client.get(reverse("curation:preference-detail", args=[pair.pk]))
    assert page.status_code == 200 and "preference-review-form" in page.content.decode()
    client.post(reverse("curation:preference-detail", args=[pair.pk]), {"action": "approve", "version": pair.version})
    pair.refresh_from_db()
    assert pair.status == "approved"
    listing = client.get(reverse("curation:preference-list"), {"status": "approved"})
    assert f'data-pair="{pair.pk}"' in listing.content.decode()
    stale = client.post(reverse("curation:preference-detail", args=[pair.pk]), {"action": "reject", "comment": "x", "version": 1}, follow=True)
    assert "changed after you opened it" in stale.content.decode()


def test_freeze_and_download_by_page(client, curator, clinician):
    for n in range(10):
        p = prefs.preference_pair_create(author=curator, prompt=f"问题{n}？", chosen=f"好答案{n}", rejected=f"坏答案{n}", source_kind="import", submit=True)
        prefs.preference_pair_review(pair=p, reviewer=clinician, decision="approve", version=p.version)
    client.force_login(clinician)
    assert client.post(reverse("curation:preference-version-list"), {"name": "v"}).status_code == 403
    client.force_login(curator)
    response = client.post(reverse("curation:preference-version-list"), {"name": "偏好 v1", "split": "0.8,0.1,0.1", "seed": "1"})
    version = PreferenceVersion.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("curation:preference-version-detail", args=[version.pk])
    client.force_login(clinician)
    zipped = client.get(reverse("curation:preference-version-export", args=[version.pk, "llamafactory"]))
    archive = zipfile.ZipFile(io.BytesIO(b"".join(zipped.streaming_content)))
    info = json.loads(archive.read("dataset_info.json"))
    assert all(v["ranking"] for v in info.values())
    assert client.get(reverse("curation:preference-version-export", args=[version.pk, "nope"])).status_code == 404
