"""Identifiers never reach a dataset version: a flagged pair is warned about at submit, needs
an explicit confirmation at approval, blocks the freeze (form, API, command) until it is
masked, and then no export format holds the identifier. Walked end to end with each kind."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.urls import reverse
from rest_framework.test import APIClient

from curation.models import DatasetVersion, QAPair
from medportal.models import AuditEvent

pytestmark = pytest.mark.django_db

S = QAPair.Status
# kind → (text holding the identifier, the identifier, its placeholder)
KINDS = {
    "record_number": ("住院号：ZY20230001，", "ZY20230001", "[病历号]"),
    "email": ("邮箱 zhang.san@example.com，", "zhang.san@example.com", "[邮箱]"),
    "mobile": ("手机 13800138000，", "13800138000", "[手机号]"),
    "landline": ("电话 010-62751234，", "010-62751234", "[电话]"),
    "resident_id": ("身份证 110101199003074514，", "110101199003074514", "[身份证号]"),
}
FORMATS = ("llamafactory", "sharegpt", "hf", "xlsx")


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def words(*key, n: int = 30) -> str:
    """Deterministic, unrelated Chinese text per key (no accidental near-duplicates)."""
    digest = hashlib.sha256(repr(key).encode()).digest() * 2
    return "".join(chr(0x4E00 + (b * 131 + i * 977) % 20000) for i, b in enumerate(digest[:n]))


def alpaca_file(kind: str, n: int = 10) -> SimpleUploadedFile:
    text, _secret, _placeholder = KINDS[kind]
    rows = [{"instruction": f"问{i}：{words(kind, 'q', i)}？", "input": "", "output": f"答{i}：{words(kind, 'a', i)}。"} for i in range(n)]
    rows[0]["instruction"] = f"患者{text}{rows[0]['instruction']}"
    rows[1]["output"] = f"请联系：{text}{rows[1]['output']}"
    return SimpleUploadedFile(f"{kind}.json", json.dumps(rows, ensure_ascii=False).encode(), content_type="application/json")


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


def export_text(content: bytes, fmt: str) -> str:
    """Every text of an export .zip, read the way its consumer reads it."""
    parts = []
    with zipfile.ZipFile(io.BytesIO(content)) as zf:
        for name in zf.namelist():
            data = zf.read(name)
            if name.endswith(".parquet"):
                import pyarrow.parquet as pq

                parts.append(json.dumps(pq.read_table(io.BytesIO(data)).to_pylist(), ensure_ascii=False))
            elif name.endswith(".xlsx"):
                from openpyxl import load_workbook

                wb = load_workbook(io.BytesIO(data))
                parts += [str(c.value) for ws in wb.worksheets for row in ws.iter_rows() for c in row if c.value is not None]
            else:
                parts.append(data.decode("utf-8"))
    assert parts, fmt
    return "\n".join(parts)


def freeze_form(name: str, **extra) -> dict:
    return {"name": name, "description": "", "synthetic": "", "source": "", "train": "0.8", "validation": "0.1", "test": "0.1", "seed": "42", **extra}


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_whole_path_with_each_identifier_kind(client, curator, clinician, kind):
    _text, secret, placeholder = KINDS[kind]
    client.force_login(curator)
    response = client.post(reverse("curation:import-create"), {"file": alpaca_file(kind), "department": "内科", "status": "draft"})
    assert response.status_code == 302, response.content[:300]
    pairs = list(QAPair.objects.order_by("pk"))
    assert len(pairs) == 10
    flagged = [p for p in pairs if p.has_identifiers]
    assert [p.pk for p in flagged] == [pairs[0].pk, pairs[1].pk]
    assert {f["kind"] for p in flagged for f in p.identifiers} == {kind}

    # submit: warned for the flagged pairs only
    for pair in pairs:
        response = client.post(reverse("curation:pair-submit", args=[pair.pk]), {"version": pair.version}, follow=True)
        warned = [m for m in messages_of(response) if "unmasked personal identifier" in m]
        assert bool(warned) == pair.has_identifiers, (pair.pk, messages_of(response))

    # approve: a flagged pair needs the confirmation
    client.force_login(clinician)
    for pair in pairs:
        pair.refresh_from_db()
        data = {"decision": "approve", "comment": "", "version": pair.version}
        response = client.post(reverse("curation:pair-review", args=[pair.pk]), data)
        if pair.has_identifiers:
            assert response.status_code == 400
            html = response.content.decode()
            assert 'id="identifier-confirm"' in html and "Tick the confirmation" in html
            pair.refresh_from_db()
            assert pair.status == S.IN_REVIEW
            response = client.post(reverse("curation:pair-review", args=[pair.pk]), {**data, "confirm_identifiers": "on"})
        assert response.status_code == 302, response.content[:300]
        pair.refresh_from_db()
        assert pair.status == S.APPROVED
    approval = AuditEvent.objects.get(action="qa_pair.approve", target_id=str(flagged[0].pk))
    assert approval.changes["identifiers_confirmed"] >= 1

    # freeze: refused, the offending pairs listed with a mask-all button
    client.force_login(curator)
    response = client.post(reverse("curation:version-create"), freeze_form("v1"))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="identifier-pairs"' in html and 'id="mask-and-freeze"' in html
    for pair in flagged:
        assert f'name="mask_ids" value="{pair.pk}"' in html
    assert not DatasetVersion.objects.exists()

    # mask all and freeze, in one action
    form = freeze_form("v1", mask_identifiers="1")
    response = client.post(reverse("curation:version-create"), {**form, "mask_ids": [p.pk for p in flagged]})
    assert response.status_code == 302, response.content[:500]
    version = DatasetVersion.objects.get()
    assert all(version.counts[s] > 0 for s in ("train", "validation", "test"))
    masks = AuditEvent.objects.filter(action="qa_pair.mask")
    assert sorted(int(e.target_id) for e in masks) == [p.pk for p in flagged]
    assert all(e.changes["kinds"] == {kind: 1} for e in masks)
    for pair in flagged:
        pair.refresh_from_db()
        assert pair.status == S.APPROVED and not pair.has_identifiers

    # every export format: no identifier, the placeholder instead
    for fmt in FORMATS:
        response = client.get(reverse("curation:version-export", args=[version.pk, fmt]))
        assert response.status_code == 200
        text = export_text(b"".join(response.streaming_content), fmt)
        assert secret not in text, fmt
        assert placeholder in text, fmt


def test_a_pair_flagged_after_the_form_was_shown_is_not_masked_unseen(client, curator, make_pair):
    seen = make_pair(curator, status=S.APPROVED, instruction="手机 13800138000，头痛怎么办？", department="内科")
    for i in range(8):
        make_pair(curator, status=S.APPROVED, instruction=f"问{i}：{words('x', i)}？", output=f"答：{words('y', i)}", department="内科")
    unseen = make_pair(curator, status=S.APPROVED, instruction="邮箱 a.b@example.com，发热怎么办？", department="内科")
    client.force_login(curator)
    response = client.post(reverse("curation:version-create"), {**freeze_form("v1", mask_identifiers="1"), "mask_ids": [seen.pk]})
    assert response.status_code == 200
    assert f'name="mask_ids" value="{unseen.pk}"' in response.content.decode()
    assert not DatasetVersion.objects.exists()
    seen.refresh_from_db()
    assert seen.has_identifiers  # nothing half done


def test_the_api_warns_at_submit_needs_confirm_to_approve_and_refuses_to_freeze(curator, clinician, make_pair):
    pair = make_pair(curator, instruction="病历号：MRN20240001，胸痛怎么办？", output="立即就医。", department="内科")
    for i in range(8):
        make_pair(curator, status=S.APPROVED, instruction=f"问{i}：{words('api', i)}？", output=f"答：{words('b', i)}", department="内科")
    cur, clin = APIClient(), APIClient()
    cur.force_authenticate(curator)
    clin.force_authenticate(clinician)

    body = cur.post(f"/api/v1/pairs/{pair.pk}/submit/", {"version": 1}, format="json").json()
    assert body["status"] == "in_review" and "unmasked personal identifier" in body["warnings"][0]

    response = clin.post(f"/api/v1/pairs/{pair.pk}/review/", {"version": 2, "decision": "approve"}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["details"]["confirm_identifiers"]
    response = clin.post(
        f"/api/v1/pairs/{pair.pk}/review/", {"version": 2, "decision": "approve", "confirm_identifiers": True}, format="json"
    )
    assert response.status_code == 201 and response.json()["pair"]["status"] == "approved"

    response = cur.post("/api/v1/versions/", {"name": "v1"}, format="json")
    assert response.status_code == 400
    assert [row["id"] for row in response.json()["error"]["details"]["identifier_pairs"]] == [pair.pk]
    response = cur.post("/api/v1/versions/", {"name": "v1", "mask_identifiers": True}, format="json")
    assert response.status_code == 201, response.content
    pair.refresh_from_db()
    assert "MRN20240001" not in pair.instruction and "[病历号]" in pair.instruction


def test_the_command_refuses_until_asked_to_mask(curator, admin_user, make_pair):
    pair = make_pair(curator, status=S.APPROVED, instruction="电话 0755-83456789，咳嗽怎么办？", department="内科")
    for i in range(8):
        make_pair(curator, status=S.APPROVED, instruction=f"问{i}：{words('cmd', i)}？", output=f"答：{words('c', i)}", department="内科")
    with pytest.raises(CommandError, match=rf"#{pair.pk}.*--mask-identifiers") as info:
        call_command("freeze_dataset", "--name", "v1", stdout=io.StringIO())
    assert "\n" not in str(info.value)
    assert not DatasetVersion.objects.exists()
    out = io.StringIO()
    call_command("freeze_dataset", "--name", "v1", "--mask-identifiers", stdout=out)
    assert f"Masked the identifiers of 1 pairs first: #{pair.pk}" in out.getvalue()
    pair.refresh_from_db()
    assert "0755-83456789" not in pair.instruction


def test_bulk_submit_warns_about_the_flagged_pairs(client, curator, make_pair):
    flagged = make_pair(curator, instruction="手机 13800138000，头晕怎么办？")
    clean = make_pair(curator)
    client.force_login(curator)
    data = {"action": "submit", "value": "", "ids": [flagged.pk, clean.pk], f"v{flagged.pk}": 1, f"v{clean.pk}": 1}
    response = client.post(reverse("curation:pair-bulk"), data, follow=True)
    warnings = [m for m in messages_of(response) if "unmasked personal identifiers" in m]
    assert len(warnings) == 1 and f"#{flagged.pk}" in warnings[0] and f"#{clean.pk}" not in warnings[0]
    assert set(QAPair.objects.values_list("status", flat=True)) == {S.IN_REVIEW}


def test_a_version_frozen_before_the_gate_still_exports_no_identifier(curator, make_pair):
    from curation.models import DatasetItem
    from curation.services.versions import dataset_version_export_zip, dataset_version_freeze

    for i in range(8):
        make_pair(curator, status=S.APPROVED, instruction=f"问{i}：{words('old', i)}？", output=f"答：{words('o', i)}", department="内科")
    version = dataset_version_freeze(user=curator, name="legacy", split=(1, 0, 0))
    item = version.items.order_by("position").first()
    legacy = {
        **item.content,
        "instruction": "旧版本冻结的：住院号：ZY20230001，手机 13800138000，怎么办？",
        "history": [["邮箱 zhang.san@example.com 可以吗", "可以"]],
        "reasoning": "身份证 110101199003074514",
    }
    DatasetItem.objects.filter(pk=item.pk).update(content=legacy)  # as a release without the gate froze it
    for fmt in FORMATS:
        archive, _name = dataset_version_export_zip(version=version, format=fmt)
        with archive:
            text = export_text(archive.read(), fmt)
        for _text, secret, _placeholder in KINDS.values():
            assert secret not in text, (fmt, secret)
        assert "[手机号]" in text and "[病历号]" in text, fmt
