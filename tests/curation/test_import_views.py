"""Import pages and API: upload flow with the mapping step, detail, progress, role matrix."""

from __future__ import annotations

import json
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from curation.models import ImportBatch, QAPair
from curation.services.imports import import_batch_create
from curation.workers.imports import import_batch_run
from medportal.models import AuditEvent


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.LANGUAGE_CODE = "en"  # messages are asserted in English; the UI default is zh-hans


def alpaca_bytes(n: int = 3, prefix: str = "问") -> bytes:
    rows = [{"instruction": f"{prefix}{i}：孕妇可以接种流感疫苗吗？", "input": "", "output": f"答{i}：可以，建议在流感季前接种。"} for i in range(n)]
    return json.dumps(rows, ensure_ascii=False).encode("utf-8")


CSV = "department,title,ask,answer\n心血管科,高血压能吃党参吗,我有高血压，可以喝党参水吗？,可以适量，注意监测血压。\n消化科,胃胀,饭后胃胀怎么办？,少食多餐，避免产气食物。\n".encode("gb18030")


def upload(name: str, data: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data)


def batch_for(user, tmp_path, name="b.json", n=2) -> ImportBatch:
    path = tmp_path / name
    path.write_bytes(alpaca_bytes(n, prefix=name))
    batch = import_batch_create(user=user, path_or_upload=path)
    return import_batch_run(batch_id=batch.pk)


# --------------------------------------------------------------------------- role matrix


PAGES = ["curation:import-list", "curation:import-create"]
OBJECT_PAGES = ["curation:import-detail", "curation:import-progress"]


@pytest.mark.parametrize("name", PAGES)
def test_pages_are_for_curators_and_admins_only(client, curator, admin_user, clinician, outsider, name):
    url = reverse(name)
    assert client.get(url).status_code == 302  # anonymous → login
    for user, expected in ((curator, 200), (admin_user, 200), (clinician, 403), (outsider, 403)):
        client.force_login(user)
        assert client.get(url).status_code == expected, user


@pytest.mark.parametrize("name", OBJECT_PAGES)
def test_a_curator_sees_only_their_own_batches(client, curator, curator2, admin_user, clinician, outsider, tmp_path, name):
    batch = batch_for(curator, tmp_path)
    url = reverse(name, args=[batch.pk])
    for user, expected in ((curator, 200), (admin_user, 200), (curator2, 404), (clinician, 403), (outsider, 403)):
        client.force_login(user)
        assert client.get(url).status_code == expected, user
    client.force_login(curator)
    assert client.get(reverse(name, args=[batch.pk + 1000])).status_code == 404


def test_the_list_shows_own_batches_to_curators_and_all_to_admins(client, curator, curator2, admin_user, tmp_path):
    mine = batch_for(curator, tmp_path, "mine.json")
    theirs = batch_for(curator2, tmp_path, "theirs.json")
    client.force_login(curator)
    html = client.get(reverse("curation:import-list")).content.decode()
    assert f'data-batch="{mine.pk}"' in html and f'data-batch="{theirs.pk}"' not in html
    client.force_login(admin_user)
    html = client.get(reverse("curation:import-list")).content.decode()
    assert f'data-batch="{mine.pk}"' in html and f'data-batch="{theirs.pk}"' in html


def test_the_list_query_count_does_not_grow_with_the_page(client, admin_user, curator, tmp_path, django_assert_max_num_queries):
    for i in range(3):
        ImportBatch.objects.create(created_by=curator, filename=f"f{i}.json", status="succeeded")
    client.force_login(admin_user)
    with django_assert_max_num_queries(12) as small:
        client.get(reverse("curation:import-list"))
    for i in range(22):
        ImportBatch.objects.create(created_by=admin_user if i % 2 else curator, filename=f"g{i}.json", status="succeeded")
    with django_assert_max_num_queries(len(small.captured_queries)):
        response = client.get(reverse("curation:import-list"))
    assert response.content.decode().count("data-batch=") == 25


# --------------------------------------------------------------------------- upload flow


def test_uploading_a_json_file_imports_it_at_once_and_shows_the_report(client, curator):
    client.force_login(curator)
    response = client.post(reverse("curation:import-create"), {"file": upload("flu.json", alpaca_bytes(3)), "format": "", "encoding": "", "department": "妇产科", "status": "draft"})
    batch = ImportBatch.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("curation:import-detail", args=[batch.pk])
    assert batch.status == "succeeded" and batch.created_count == 3 and batch.file
    assert set(QAPair.objects.values_list("department__name", flat=True)) == {"妇产科"}
    page = client.get(response["Location"]).content.decode()
    assert "flu.json" in page and 'data-count="created">3<' in page
    assert f"?import_batch={batch.pk}" in page


def test_a_csv_upload_shows_columns_and_a_preview_then_imports_with_the_chosen_mapping(client, curator):
    client.force_login(curator)
    response = client.post(reverse("curation:import-create"), {"file": upload("dialogue.csv", CSV)})
    assert response.status_code == 200
    html = response.content.decode()
    assert QAPair.objects.count() == 0 and ImportBatch.objects.count() == 0
    token = re.search(r'name="token" value="([0-9a-f]{32})"', html).group(1)
    # detected columns, guessed mapping (ask → question) and the first rows
    for column in ("department", "title", "ask", "answer"):
        assert f'<option value="{column}"' in html
    assert re.search(r'name="map_instruction"[^>]*>(?:(?!</select>).)*<option value="ask" selected', html, re.S)
    assert "我有高血压，可以喝党参水吗？" in html and "GB18030" in html.upper()

    form = {"token": token, "format": "csv", "encoding": "gb18030", "department": "", "status": "draft"}
    mapping = {"map_instruction": "title", "map_output": "answer", "map_department": "department"}
    preview = client.post(reverse("curation:import-create"), {**form, **mapping, "preview": "1"})
    assert preview.status_code == 200 and "高血压能吃党参吗" in preview.content.decode()
    assert ImportBatch.objects.count() == 0

    done = client.post(reverse("curation:import-create"), {**form, **mapping, "confirm": "1"})
    batch = ImportBatch.objects.get()
    assert done.status_code == 302 and batch.status == "succeeded" and batch.created_count == 2
    assert batch.options["mapping"]["instruction"] == "title"
    assert sorted(QAPair.objects.values_list("instruction", flat=True)) == ["胃胀", "高血压能吃党参吗"]
    assert QAPair.objects.get(instruction="胃胀").extra["ask"] == "饭后胃胀怎么办？"
    # the staged copy is gone; the token cannot be replayed
    again = client.post(reverse("curation:import-create"), {**form, **mapping, "confirm": "1"})
    assert again.status_code == 302 and again["Location"] == reverse("curation:import-create")
    assert ImportBatch.objects.count() == 1


def test_an_xlsx_upload_gets_the_mapping_step_too(client, curator):
    import io

    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.append(["问题", "回答", "科室"])
    sheet.append(["孩子夜里磨牙是缺钙吗？", "多数与缺钙无关，可观察。", "儿科"])
    buffer = io.BytesIO()
    book.save(buffer)
    client.force_login(curator)
    html = client.post(reverse("curation:import-create"), {"file": upload("sheet.xlsx", buffer.getvalue())}).content.decode()
    token = re.search(r'name="token" value="([0-9a-f]{32})"', html).group(1)
    assert '<option value="问题"' in html and "孩子夜里磨牙是缺钙吗？" in html
    done = client.post(
        reverse("curation:import-create"),
        {"token": token, "format": "xlsx", "status": "draft", "map_instruction": "问题", "map_output": "回答", "map_department": "科室", "confirm": "1"},
    )
    assert done.status_code == 302
    pair = QAPair.objects.get()
    assert pair.department.name == "儿科" and pair.import_batch.format == "xlsx"


def test_a_mapping_without_an_answer_column_is_explained_and_imports_nothing(client, curator):
    client.force_login(curator)
    html = client.post(reverse("curation:import-create"), {"file": upload("d.csv", CSV)}).content.decode()
    token = re.search(r'name="token" value="([0-9a-f]{32})"', html).group(1)
    response = client.post(
        reverse("curation:import-create"),
        {"token": token, "format": "csv", "encoding": "gb18030", "status": "draft", "map_instruction": "ask", "map_output": "", "confirm": "1"},
    )
    assert response.status_code == 200
    assert "map &#x27;output&#x27; to the answer column" in response.content.decode()
    assert ImportBatch.objects.count() == 0 and QAPair.objects.count() == 0


def test_another_users_staged_upload_cannot_be_imported(client, curator, curator2):
    client.force_login(curator)
    html = client.post(reverse("curation:import-create"), {"file": upload("d.csv", CSV)}).content.decode()
    token = re.search(r'name="token" value="([0-9a-f]{32})"', html).group(1)
    client.force_login(curator2)
    response = client.post(reverse("curation:import-create"), {"token": token, "map_instruction": "ask", "map_output": "answer", "confirm": "1"})
    assert response.status_code == 302 and ImportBatch.objects.count() == 0


def test_an_unreadable_file_becomes_a_failed_batch_with_the_message(client, curator):
    client.force_login(curator)
    response = client.post(reverse("curation:import-create"), {"file": upload("cut.json", alpaca_bytes(3)[:-25])}, follow=True)
    batch = ImportBatch.objects.get()
    assert batch.status == "failed" and batch.error
    html = response.content.decode()
    assert 'id="import-error"' in html and batch.error.split("(")[0].strip()[:30].replace("'", "&#x27;") in html
    assert QAPair.objects.count() == 0


def test_curators_cannot_choose_approved_status(client, curator):
    client.force_login(curator)
    page = client.get(reverse("curation:import-create")).content.decode()
    assert 'value="approved"' not in page
    response = client.post(reverse("curation:import-create"), {"file": upload("a.json", alpaca_bytes(2)), "status": "approved"})
    assert response.status_code == 200 and ImportBatch.objects.count() == 0 and QAPair.objects.count() == 0


def test_admins_can_import_as_approved_from_the_form(client, admin_user):
    client.force_login(admin_user)
    assert 'value="approved"' in client.get(reverse("curation:import-create")).content.decode()
    client.post(reverse("curation:import-create"), {"file": upload("a.json", alpaca_bytes(2)), "status": "approved"})
    assert set(QAPair.objects.values_list("status", flat=True)) == {"approved"}
    assert AuditEvent.objects.filter(action="import.approved_status").count() == 1


def test_large_uploads_are_queued_and_the_detail_page_polls_progress(client, curator, settings, monkeypatch, django_capture_on_commit_callbacks):
    settings.MEDPORTAL_IMPORT_INLINE_MAX_BYTES = 10
    calls = []
    monkeypatch.setattr("django_q.tasks.async_task", lambda *a, **k: calls.append(a))
    client.force_login(curator)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("curation:import-create"), {"file": upload("big.json", alpaca_bytes(5))})
    batch = ImportBatch.objects.get()
    assert batch.status == "queued" and calls == [("curation.tasks.import_batch_task", batch.pk)]
    html = client.get(response["Location"]).content.decode()
    assert "medportal/import.js" in html and 'data-running="1"' in html
    assert reverse("curation:import-progress", args=[batch.pk]) in html
    progress = client.get(reverse("curation:import-progress", args=[batch.pk])).json()
    assert progress["status"] == "queued" and progress["finished"] is False and progress["phase"] == "queued"
    import_batch_run(batch_id=batch.pk)
    progress = client.get(reverse("curation:import-progress", args=[batch.pk])).json()
    assert progress == {**progress, "status": "succeeded", "finished": True, "percent": 100, "created": 5, "rows_done": 5, "rows_total": 5}
    assert "medportal/import.js" not in client.get(response["Location"]).content.decode()


def test_the_detail_page_lists_issues_and_filters_them_by_kind(client, curator, tmp_path):
    path = tmp_path / "issues.jsonl"
    ok = {"instruction": "反酸烧心是胃食管反流吗？", "output": "有可能，建议做胃镜。"}
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in [ok, ok, {"instruction": "空答案", "output": ""}]), encoding="utf-8")
    batch = import_batch_run(batch_id=import_batch_create(user=curator, path_or_upload=path).pk)
    client.force_login(curator)
    url = reverse("curation:import-detail", args=[batch.pk])
    html = client.get(url).content.decode()
    assert html.count('<tr data-kind="') == 2
    assert 'data-kind="duplicate"' in html and 'data-kind="skipped"' in html
    first = QAPair.objects.get(import_batch=batch)
    assert "Same question and answer as row 1 of this file." in html
    assert reverse("curation:pair-detail", args=[first.pk]) in html
    only = client.get(url, {"kind": "skipped"}).content.decode()
    assert only.count('<tr data-kind="') == 1 and 'data-kind="skipped"' in only


# --------------------------------------------------------------------------- API


def test_api_upload_imports_small_files_at_once(client, curator):
    client.force_login(curator)
    response = client.post("/api/v1/imports/", {"file": upload("api.json", alpaca_bytes(3)), "department": "儿科"})
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "succeeded" and body["counts"]["created"] == 3 and body["issues"] == []
    assert body["created_by"] == "curator"
    detail = client.get(f"/api/v1/imports/{body['id']}/").json()
    assert detail["counts"] == body["counts"]


def test_api_upload_with_a_mapping_for_a_csv(client, curator):
    client.force_login(curator)
    response = client.post("/api/v1/imports/", {"file": upload("d.csv", CSV), "mapping": json.dumps({"instruction": "title", "output": "answer"})})
    assert response.status_code == 201, response.content
    assert sorted(QAPair.objects.values_list("instruction", flat=True)) == ["胃胀", "高血压能吃党参吗"]


def test_api_queues_large_files_with_202(client, curator, settings, monkeypatch):
    settings.MEDPORTAL_IMPORT_INLINE_MAX_BYTES = 10
    monkeypatch.setattr("django_q.tasks.async_task", lambda *a, **k: None)
    client.force_login(curator)
    response = client.post("/api/v1/imports/", {"file": upload("big.json", alpaca_bytes(3))})
    assert response.status_code == 202 and response.json()["status"] == "queued"


def test_api_file_errors_are_400_with_the_message_and_batch_id(client, curator):
    client.force_login(curator)
    response = client.post("/api/v1/imports/", {"file": upload("cut.json", alpaca_bytes(3)[:-25])})
    assert response.status_code == 400
    error = response.json()["error"]
    batch = ImportBatch.objects.get()
    assert error["code"] == "invalid" and error["message"] == batch.error and error["details"] == {"batch_id": batch.pk}
    assert QAPair.objects.count() == 0


@pytest.mark.parametrize(
    ("data", "field"),
    [({"format": "yaml"}, "format"), ({"mapping": "{not json"}, "mapping"), ({"mapping": '{"question": "ask"}'}, "mapping")],
)
def test_api_rejects_bad_options(client, curator, data, field):
    client.force_login(curator)
    response = client.post("/api/v1/imports/", {"file": upload("a.json", alpaca_bytes(1)), **data})
    assert response.status_code == 400 and field in response.json()["error"]["details"]
    assert ImportBatch.objects.count() == 0


def test_api_refuses_approved_status_for_curators(client, curator):
    client.force_login(curator)
    response = client.post("/api/v1/imports/", {"file": upload("a.json", alpaca_bytes(1)), "status": "approved"})
    assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"
    assert ImportBatch.objects.count() == 0


def test_api_role_matrix_and_object_access(client, curator, curator2, admin_user, clinician, outsider, tmp_path):
    batch = batch_for(curator, tmp_path)
    assert client.get("/api/v1/imports/").status_code in (401, 403)
    for user, list_status, detail_status in (
        (curator, 200, 200),
        (admin_user, 200, 200),
        (curator2, 200, 404),
        (clinician, 403, 403),
        (outsider, 403, 403),
    ):
        client.force_login(user)
        assert client.get("/api/v1/imports/").status_code == list_status, user
        assert client.get(f"/api/v1/imports/{batch.pk}/").status_code == detail_status, user
    client.force_login(clinician)
    assert client.post("/api/v1/imports/", {"file": upload("a.json", alpaca_bytes(1))}).status_code == 403
    client.force_login(curator2)
    assert client.get("/api/v1/imports/").json()["count"] == 0


def test_api_list_query_count_does_not_grow(client, admin_user, curator, django_assert_max_num_queries):
    client.force_login(admin_user)
    ImportBatch.objects.create(created_by=curator, filename="a.json", status="succeeded")
    with django_assert_max_num_queries(12) as small:
        client.get("/api/v1/imports/")
    for i in range(20):
        ImportBatch.objects.create(created_by=curator, filename=f"{i}.json", status="succeeded")
    with django_assert_max_num_queries(len(small.captured_queries)):
        assert client.get("/api/v1/imports/").json()["count"] == 21


def test_a_running_batch_whose_worker_went_silent_is_failed_by_the_reaper_not_by_reading_it(client, curator, settings):
    from datetime import timedelta

    from django.utils import timezone

    from curation.models import ImportBatch
    from curation.services.imports import import_batch_stale_after
    from medportal.jobs import reap_silent

    silent = timezone.now() - import_batch_stale_after() - timedelta(seconds=5)
    dead = ImportBatch.objects.create(created_by=curator, filename="big.jsonl", status="running", heartbeat_at=silent, attempt=1)
    alive = ImportBatch.objects.create(created_by=curator, filename="big2.jsonl", status="running", heartbeat_at=timezone.now(), attempt=1)
    client.force_login(curator)
    body = client.get(f"/curation/imports/{dead.pk}/progress/").json()
    assert body["status"] == "running"  # a GET never changes a job
    assert reap_silent() == {"import": [dead.pk]}
    dead.refresh_from_db()
    assert dead.status == "failed" and "stopped sending heartbeats" in dead.error and "import the file again" in dead.error
    assert dead.finished_at
    assert client.get(f"/curation/imports/{dead.pk}/progress/").json()["status"] == "failed"
    alive.refresh_from_db()
    assert alive.status == "running" and not alive.error
