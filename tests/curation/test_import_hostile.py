"""Hostile import files and options: ZIP bombs, non-text codecs, and who may fetch an uploaded file.

Every channel is covered: the upload form, POST /api/v1/imports/, ``import_qa`` and the worker.
"""

from __future__ import annotations

import importlib
import io
import json
import re
import struct
import time
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.urls import clear_url_caches, reverse
from django.utils import translation

from curation.importers import ImportFileError, open_source
from curation.models import ImportBatch, QAPair
from curation.services.imports import import_batch_create, import_batch_dispatch
from curation.workers.imports import import_batch_run

MB = 1024 * 1024


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.LANGUAGE_CODE = "en"
    settings.MEDPORTAL_IMPORT_MAX_INFLATED_BYTES = 1 * MB


def _workbook_bytes(rows) -> bytes:
    from openpyxl import Workbook

    book = Workbook()
    for row in rows:
        book.active.append(row)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def xlsx_bomb(inflated_mb: int = 8) -> bytes:
    """A real XLSX whose sheet XML holds a cell of ``inflated_mb`` MB of zeros: a few kB on disk."""
    plain = _workbook_bytes([["question", "answer", "note"], ["孩子发烧怎么办？", "多喝水，观察体温。", 1]])
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(plain)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "xl/worksheets/sheet1.xml":
                # the number cell C2 becomes "000…0001"
                data = re.sub(rb"(<c r=\"C2\"[^>]*><v>)", lambda m: m.group(1) + b"0" * (inflated_mb * MB), data)
                assert b"0" * 1000 in data
            dst.writestr(info.filename, data)
    return out.getvalue()


def lying_xlsx() -> bytes:
    """A workbook whose sheet entry declares 200 bytes but inflates to 8 MB (local and central headers lie)."""
    plain = xlsx_bomb(8)
    with zipfile.ZipFile(io.BytesIO(plain)) as z:
        info = z.getinfo("xl/worksheets/sheet1.xml")
    real = struct.pack("<I", info.file_size)
    data = bytearray(plain)
    # local header: uncompressed size at offset 22; central directory entry: at offset 24
    local = info.header_offset
    assert data[local + 22 : local + 26] == real
    data[local + 22 : local + 26] = struct.pack("<I", 200)
    name = info.filename.encode()
    pos = 0
    while True:
        pos = data.find(b"PK\x01\x02", pos)
        assert pos >= 0
        name_len = struct.unpack("<H", data[pos + 28 : pos + 30])[0]
        if bytes(data[pos + 46 : pos + 46 + name_len]) == name:
            break
        pos += 4
    assert data[pos + 24 : pos + 28] == real
    data[pos + 24 : pos + 28] = struct.pack("<I", 200)
    return bytes(data)


def upload(name: str, data: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data)


REFUSED = "unpacks to more than 1 MB"


# --------------------------------------------------------------------------- 1. archive bounds


def test_a_zip_bomb_is_small_on_disk_and_refused_by_the_reader_before_parsing(tmp_path):
    path = tmp_path / "bomb.xlsx"
    path.write_bytes(xlsx_bomb(64))
    assert path.stat().st_size < 200_000
    started = time.perf_counter()
    with pytest.raises(ImportFileError, match="unpacks to more than 1 MB"):
        open_source(path, max_inflated_bytes=MB)
    assert time.perf_counter() - started < 2


def test_a_workbook_under_the_bound_still_imports(tmp_path):
    path = tmp_path / "ok.xlsx"
    path.write_bytes(_workbook_bytes([["question", "answer"], ["头痛怎么办？", "多休息。"]]))
    source = open_source(path, max_inflated_bytes=MB)
    assert [r.output for r in source.records()] == ["多休息。"]


def test_the_upload_form_refuses_a_bomb_with_the_reason_and_imports_nothing(client, curator):
    client.force_login(curator)
    response = client.post(reverse("curation:import-create"), {"file": upload("bomb.xlsx", xlsx_bomb())}, follow=True)
    batch = ImportBatch.objects.get()
    assert batch.status == "failed" and REFUSED in batch.error
    assert REFUSED in response.content.decode()
    assert QAPair.objects.count() == 0


def test_the_api_refuses_a_bomb_with_400(client, curator):
    client.force_login(curator)
    response = client.post("/api/v1/imports/", {"file": upload("bomb.xlsx", xlsx_bomb())})
    assert response.status_code == 400
    assert REFUSED in response.json()["error"]["message"]
    assert QAPair.objects.count() == 0


def test_import_qa_refuses_a_bomb_with_a_one_line_error(curator, tmp_path):
    path = tmp_path / "bomb.xlsx"
    path.write_bytes(xlsx_bomb())
    with pytest.raises(CommandError, match=REFUSED):
        call_command("import_qa", str(path), "--as-user", "curator", stdout=io.StringIO(), stderr=io.StringIO())
    assert QAPair.objects.count() == 0


def test_the_worker_checks_the_bound_again(curator, tmp_path, settings):
    path = tmp_path / "bomb.xlsx"
    path.write_bytes(xlsx_bomb(2))
    settings.MEDPORTAL_IMPORT_MAX_INFLATED_BYTES = 64 * MB
    batch = import_batch_create(user=curator, path_or_upload=str(path))
    assert batch.status == "queued"
    settings.MEDPORTAL_IMPORT_MAX_INFLATED_BYTES = 1 * MB
    batch = import_batch_run(batch_id=batch.pk)
    assert batch.status == "failed" and REFUSED in batch.error
    assert QAPair.objects.count() == 0


def test_the_refusal_is_translated(curator, tmp_path):
    path = tmp_path / "bomb.xlsx"
    path.write_bytes(xlsx_bomb())
    with translation.override("zh-hans"):
        batch = import_batch_create(user=curator, path_or_upload=str(path))
    assert batch.status == "failed" and "解压后超过 1 MB" in batch.error


def test_a_workbook_cell_openpyxl_cannot_read_is_a_file_error_not_a_500(client, curator):
    """A number cell of 5000 digits (under the bound) made openpyxl raise ValueError mid-read."""
    plain = _workbook_bytes([["question", "answer", "note"], ["孩子发烧怎么办？", "多喝水，观察体温。", 1]])
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(plain)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "xl/worksheets/sheet1.xml":
                data = re.sub(rb"(<c r=\"C2\"[^>]*><v>)", lambda m: m.group(1) + b"9" * 5000, data)
            dst.writestr(info.filename, data)
    client.force_login(curator)
    response = client.post(reverse("curation:import-create"), {"file": upload("digits.xlsx", out.getvalue())}, follow=True)
    assert response.status_code == 200
    batch = ImportBatch.objects.get()
    assert batch.status == "failed" and "Cannot read the XLSX workbook" in batch.error
    assert QAPair.objects.count() == 0
    response = client.post("/api/v1/imports/", {"file": upload("digits.xlsx", out.getvalue())})
    assert response.status_code == 400 and "Cannot read the XLSX workbook" in response.json()["error"]["message"]


def test_a_zip_that_lies_about_its_sizes_is_refused_cleanly(client, curator):
    client.force_login(curator)
    started = time.perf_counter()
    response = client.post("/api/v1/imports/", {"file": upload("liar.xlsx", lying_xlsx())})
    assert response.status_code == 400, response.content[:300]
    assert "XLSX" in response.json()["error"]["message"]
    assert QAPair.objects.count() == 0
    assert time.perf_counter() - started < 5


# --------------------------------------------------------------------------- 2. uploaded files


def _uploaded_batch(client, user, name="flu.json"):
    rows = [{"instruction": "孕妇可以接种流感疫苗吗？", "output": "可以，建议在流感季前接种。"}]
    client.force_login(user)
    client.post(reverse("curation:import-create"), {"file": upload(name, json.dumps(rows, ensure_ascii=False).encode())})
    client.logout()
    return ImportBatch.objects.get(filename=name)


def test_uploaded_files_are_not_served_as_media_even_in_debug(client, curator, settings):
    import medportal.urls

    batch = _uploaded_batch(client, curator)
    assert batch.file.name.startswith("imports/")
    media_url = "/media/" + batch.file.name
    settings.DEBUG = True
    try:
        importlib.reload(medportal.urls)
        clear_url_caches()
        for user in (None, curator):
            if user:
                client.force_login(user)
            assert client.get(media_url).status_code == 404
    finally:
        settings.DEBUG = False
        importlib.reload(medportal.urls)
        clear_url_caches()


def test_only_the_owner_and_admins_can_download_an_uploaded_file(client, curator, curator2, admin_user, clinician):
    batch = _uploaded_batch(client, curator)
    url = reverse("curation:import-file", args=[batch.pk])
    assert client.get(url).status_code == 302  # anonymous → login
    for user, expected in ((curator2, 404), (clinician, 403)):
        client.force_login(user)
        response = client.get(url)
        assert response.status_code == expected, user
        assert "孕妇" not in b"".join(getattr(response, "streaming_content", [response.content])).decode(errors="replace")
    for user in (curator, admin_user):
        client.force_login(user)
        response = client.get(url)
        assert response.status_code == 200, user
        assert "attachment" in response["Content-Disposition"] and "flu.json" in response["Content-Disposition"]
        assert "孕妇可以接种流感疫苗吗" in b"".join(response.streaming_content).decode()
    # a missing batch answers the same as another user's
    client.force_login(curator2)
    assert client.get(reverse("curation:import-file", args=[batch.pk + 100])).status_code == 404


def test_the_detail_page_links_the_file_and_a_command_import_has_none(client, curator, tmp_path):
    batch = _uploaded_batch(client, curator)
    client.force_login(curator)
    page = client.get(reverse("curation:import-detail", args=[batch.pk])).content.decode()
    assert reverse("curation:import-file", args=[batch.pk]) in page
    path = tmp_path / "local.json"
    path.write_text(json.dumps([{"instruction": "问", "output": "答"}], ensure_ascii=False), encoding="utf-8")
    local = import_batch_dispatch(batch=import_batch_create(user=curator, path_or_upload=str(path)))
    assert client.get(reverse("curation:import-file", args=[local.pk])).status_code == 404
    page = client.get(reverse("curation:import-detail", args=[local.pk])).content.decode()
    assert reverse("curation:import-file", args=[local.pk]) not in page


# --------------------------------------------------------------------------- 3. encodings

NOT_TEXT = ["zlib_codec", "base64", "rot13", "hex", "uu", "punycode", "bz2_codec", "quopri", "idna", "undefined"]


@pytest.mark.parametrize("encoding", NOT_TEXT)
def test_the_api_refuses_non_text_codecs_as_a_field_error(client, curator, encoding):
    client.force_login(curator)
    data = "question,answer\n咳嗽怎么办？,多喝水。\n".encode()
    response = client.post("/api/v1/imports/", {"file": upload("a.csv", data), "encoding": encoding})
    assert response.status_code == 400, response.content[:300]
    details = response.json()["error"]["details"]
    assert "encoding" in details and "not a text encoding" in details["encoding"][0]
    assert ImportBatch.objects.count() == 0


@pytest.mark.parametrize("encoding", ["base64", "zlib_codec", "punycode"])
def test_import_qa_refuses_non_text_codecs(curator, tmp_path, encoding):
    path = tmp_path / "a.csv"
    path.write_text("question,answer\n咳嗽怎么办？,多喝水。\n", encoding="utf-8")
    with pytest.raises(CommandError, match=f"'{encoding}' is not a text encoding"):
        call_command("import_qa", str(path), "--encoding", encoding, "--as-user", "curator", stdout=io.StringIO())
    assert ImportBatch.objects.count() == 0


def test_the_mapping_step_refuses_a_non_text_codec(client, curator):
    client.force_login(curator)
    html = client.post(reverse("curation:import-create"), {"file": upload("d.csv", "question,answer\n问,答\n".encode())}).content.decode()
    token = re.search(r'name="token" value="([0-9a-f]{32})"', html).group(1)
    response = client.post(
        reverse("curation:import-create"),
        {"token": token, "format": "csv", "encoding": "base64", "status": "draft", "map_instruction": "question", "map_output": "answer", "confirm": "1"},
    )
    assert response.status_code in (200, 302)
    assert ImportBatch.objects.count() == 0 and QAPair.objects.count() == 0


def test_the_reader_refuses_non_text_codecs_and_keeps_real_ones(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes("question,answer\n咳嗽怎么办？,多喝水。\n".encode("gb18030"))
    for encoding in NOT_TEXT:
        with pytest.raises(ImportFileError, match="not a text encoding"):
            open_source(path, encoding=encoding)
    assert [r.output for r in open_source(path, encoding="GBK").records()] == ["多喝水。"]


def test_the_admin_links_an_upload_to_the_download_not_to_media(client, curator, django_user_model):
    batch = _uploaded_batch(client, curator)
    root = django_user_model.objects.create_superuser("root", "root@example.org", "pw")
    client.force_login(root)
    html = client.get(reverse("admin:curation_importbatch_change", args=[batch.pk])).content.decode()
    assert reverse("curation:import-file", args=[batch.pk]) in html and "/media/" not in html
    assert client.get(reverse("curation:import-file", args=[batch.pk])).status_code == 200


@pytest.mark.parametrize("declared", ["zlib_codec", "base64", "punycode"])
def test_an_xml_file_declaring_a_non_text_encoding_is_a_file_error(client, curator, declared):
    xml = (
        f'<?xml version="1.0" encoding="{declared}"?>\n<Document id="1"><QAPairs><QAPair pid="1">'
        "<Question qid='1'>q?</Question><Answer>a</Answer></QAPair></QAPairs></Document>"
    ).encode()
    client.force_login(curator)
    response = client.post("/api/v1/imports/", {"file": upload("doc.xml", xml)})
    assert response.status_code == 400, response.content[:300]
    assert QAPair.objects.count() == 0


def test_a_json_number_of_5000_digits_is_kept_as_text_not_a_500(client, curator):
    """int() refuses more than 4300 digits (ValueError): the reader keeps the digits as text."""
    digits = "9" * 5000
    data = f'[{{"instruction": "血压多少算高？", "output": {digits}}}]'.encode()
    client.force_login(curator)
    response = client.post("/api/v1/imports/", {"file": upload("n.json", data)})
    assert response.status_code == 201, response.content[:300]
    assert QAPair.objects.get().output == digits
