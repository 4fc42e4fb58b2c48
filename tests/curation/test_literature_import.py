"""Literature documents: each format, dedupe, bad files (nothing half-imported), search, pages, roles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.urls import reverse

from curation.literature.parsers import DocIssue, ParsedDocument, read_documents
from curation.models import Document, LiteratureImport
from curation.services.literature import documents_import
from curation.selectors_literature import document_list
from medportal.errors import NotAllowed

DATA = Path(__file__).parent / "literature_data"


def _read(name: str) -> bytes:
    return (DATA / name).read_bytes()


# --------------------------------------------------------------------------- parsers (no database)


def test_pubmed_xml_keeps_sections_mesh_doi_year_and_reports_an_empty_abstract():
    fmt, items = read_documents("efetch.xml", _read("efetch_pubmed.xml"))
    items = list(items)
    assert fmt == "pubmed_xml"
    first, second, third = items
    assert isinstance(first, ParsedDocument) and first.pmid == "31000001"
    assert first.doi == "10.1016/j.ajem.2019.02.011" and first.year == 2019
    assert first.title == "Low-dose aspirin and recurrent stroke in older adults with atrial fibrillation: a cohort study."
    assert [s["label"] for s in first.sections] == ["BACKGROUND", "METHODS", "RESULTS", "CONCLUSIONS"]
    assert first.mesh_terms == ["Aged", "Aspirin", "Atrial Fibrillation"]
    assert first.journal == "The American journal of emergency medicine"
    assert "Copyright" not in first.abstract
    # MedlineDate "1998 Dec-1999 Jan", unlabelled abstract, no DOI
    assert second.year == 1998 and second.doi == "" and second.sections[0]["label"] == ""
    assert isinstance(third, DocIssue) and third.kind == "skipped" and "abstract is empty" in third.message and third.ref == "PMID 31000003"


def test_medline_text_joins_continuation_lines_and_splits_structured_abstracts():
    fmt, items = read_documents("export.txt", _read("medline.txt"))
    doc, empty = list(items)
    assert fmt == "medline"
    assert doc.pmid == "31000010" and doc.doi == "10.1186/s12889-019-7777-1" and doc.year == 2019
    assert doc.title == "Statins after myocardial infarction in patients over eighty: a registry study."
    assert [s["label"] for s in doc.sections] == ["BACKGROUND", "METHODS", "RESULTS", "CONCLUSIONS"]
    assert doc.sections[2]["text"] == "Atorvastatin 40 mg was associated with lower one-year mortality (12.4% vs 17.9%)."
    assert doc.mesh_terms == ["Aged, 80 and over", "Atorvastatin", "Myocardial Infarction"]
    assert doc.journal == "BMC public health"
    assert isinstance(empty, DocIssue) and empty.kind == "skipped"


def test_markdown_document_with_header_and_headings():
    fmt, items = read_documents("note_zh.md", _read("note_zh.md"))
    (doc,) = list(items)
    assert fmt == "text" and doc.pmid == "31000020" and doc.year == 2021 and doc.journal == "中华内科杂志"
    assert doc.title == "老年高血压患者的降压目标"
    assert [s["label"] for s in doc.sections] == ["背景", "方法", "结果"]
    assert doc.mesh_terms == ["高血压", "老年人"]


def test_plain_text_without_header_uses_its_first_line_as_title():
    _fmt, items = read_documents("a.txt", "Vitamin D in winter\n\nBACKGROUND: Deficiency is common. RESULTS: 800 IU helped.\n".encode())
    (doc,) = list(items)
    assert doc.title == "Vitamin D in winter" and [s["label"] for s in doc.sections] == ["BACKGROUND", "RESULTS"]


@pytest.mark.shared_data
def test_pubmedqa_json_read_in_place(shared_datasets):
    data = (shared_datasets / "pubmedqa_pqal" / "ori_pqal.json").read_bytes()
    fmt, items = read_documents("ori_pqal.json", data)
    docs = [i for i in items if isinstance(i, ParsedDocument)]
    assert fmt == "pubmedqa" and len(docs) == 1000
    lace = next(d for d in docs if d.pmid == "21645374")
    assert lace.title.startswith("Do mitochondria play a role in remodelling lace plant leaves")
    assert [s["label"] for s in lace.sections][-1] == "CONCLUSIONS" and lace.year == 2011
    assert "Apoptosis" in lace.mesh_terms and lace.extra == {"final_decision": "yes"}


@pytest.mark.parametrize(
    "name,data,message",
    [
        ("bad.xml", b"<PubmedArticleSet><PubmedArticle><MedlineCitation>", "Malformed XML at line 1"),
        ("x.xml", b"<html><body>not pubmed</body></html>", "not a PubMed PubmedArticleSet"),
        ("x.bin", b"\x00\x01\x02garbage", "Unknown format"),
        ("x.csv", b"a,b\n1,2\n", "Unknown format"),
        ("empty.xml", b"   \n", "The file is empty"),
        ("q.json", b'{"1": {"CONTEXTS": ["a"]', "Invalid JSON"),
        ("q.json", b"[1, 2]", "object keyed by PMID"),
    ],
)
def test_bad_files_are_refused_with_a_specific_message(name, data, message):
    from curation.importers.base import ImportFileError

    with pytest.raises(ImportFileError, match=message):
        fmt, items = read_documents(name, data)
        list(items)


def test_entity_expansion_is_refused():
    from curation.importers.base import ImportFileError

    bomb = b"""<?xml version="1.0"?><!DOCTYPE PubmedArticleSet [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>
<PubmedArticleSet><PubmedArticle><MedlineCitation><PMID>1</PMID><Article><ArticleTitle>&b;</ArticleTitle></Article></MedlineCitation></PubmedArticle></PubmedArticleSet>"""
    with pytest.raises(ImportFileError, match="refused for security"):
        read_documents("bomb.xml", bomb)


# --------------------------------------------------------------------------- service


@pytest.mark.django_db
def test_import_stores_documents_with_sentences_and_a_row_report(curator):
    batch = documents_import(user=curator, name="efetch.xml", data=_read("efetch_pubmed.xml"))
    assert not batch.error and batch.format == "pubmed_xml"
    assert (batch.rows_total, batch.created_count, batch.skipped_count) == (3, 2, 1)
    assert batch.issues == [{"row": 3, "kind": "skipped", "ref": "PMID 31000003", "message": "The abstract is empty: there is nothing to draft questions from."}]
    doc = Document.objects.get(pmid="31000001")
    assert doc.import_batch == batch and doc.source_row == 1 and doc.format == "pubmed_xml"
    assert [s["n"] for s in doc.sentences] == list(range(1, len(doc.sentences) + 1))
    assert doc.sentences[1]["text"] == "We followed 1,240 patients aged 75 years or older for 24 months." and doc.sentences[1]["section"] == 1
    assert doc.abstract.startswith("BACKGROUND: Secondary prevention")


@pytest.mark.django_db
def test_dedupe_by_pmid_and_by_doi_across_files_and_within_a_file(curator):
    documents_import(user=curator, name="efetch.xml", data=_read("efetch_pubmed.xml"))
    again = documents_import(user=curator, name="again.xml", data=_read("efetch_pubmed.xml"))
    assert again.created_count == 0 and again.duplicate_count == 2
    assert {i["ref"] for i in again.issues if i["kind"] == "duplicate"} == {"PMID 31000001", "PMID 31000002"}
    # The same DOI under another PMID (a text export of the same paper) is a duplicate too.
    text = b"PMID: 99\nDOI: https://doi.org/10.1016/J.AJEM.2019.02.011\n\n# Same paper\n\nAspirin reduced stroke.\n"
    by_doi = documents_import(user=curator, name="same.md", data=text)
    assert by_doi.created_count == 0 and by_doi.issues[0]["ref"] == "DOI 10.1016/j.ajem.2019.02.011"
    twice = _read("medline.txt") + b"\n" + _read("medline.txt")
    within = documents_import(user=curator, name="twice.txt", data=twice)
    assert within.created_count == 1 and within.duplicate_count == 1
    assert Document.objects.count() == 3


@pytest.mark.django_db
def test_a_bad_file_imports_nothing_and_says_why(curator):
    broken = _read("efetch_pubmed.xml").replace(b"</PubmedArticleSet>", b"")
    batch = documents_import(user=curator, name="cut.xml", data=broken)
    assert batch.error.startswith("Malformed XML") and batch.created_count == 0
    assert not Document.objects.exists()


@pytest.mark.django_db
def test_clinicians_cannot_import(clinician):
    with pytest.raises(NotAllowed):
        documents_import(user=clinician, name="efetch.xml", data=_read("efetch_pubmed.xml"))
    assert not LiteratureImport.objects.exists()


@pytest.mark.django_db
def test_search_in_english_and_chinese(curator):
    documents_import(user=curator, name="efetch.xml", data=_read("efetch_pubmed.xml"))
    documents_import(user=curator, name="note_zh.md", data=_read("note_zh.md"))
    assert [d.pmid for d in document_list(user=curator, q="aspirin fibrillation")] == ["31000001"]
    assert [d.pmid for d in document_list(user=curator, q="metform")] == ["31000002"]  # word prefix
    assert [d.pmid for d in document_list(user=curator, q="降压")] == ["31000020"]
    assert [d.pmid for d in document_list(user=curator, q="老年人")] == ["31000020"]  # MeSH term
    assert list(document_list(user=curator, q="糖尿病")) == []


# --------------------------------------------------------------------------- pages


@pytest.mark.django_db
def test_curator_uploads_a_file_and_reads_the_report(client, curator):
    from django.core.files.uploadedfile import SimpleUploadedFile

    client.force_login(curator)
    response = client.post(reverse("curation:literature-import-create"), {"file": SimpleUploadedFile("efetch.xml", _read("efetch_pubmed.xml"))})
    batch = LiteratureImport.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("curation:literature-import", args=[batch.pk])
    page = client.get(response["Location"]).content.decode()
    assert 'data-count="created">2<' in page and "The abstract is empty" in page
    broken = client.post(reverse("curation:literature-import-create"), {"file": SimpleUploadedFile("bad.xml", b"<PubmedArticleSet><x>")}, follow=True)
    assert "Nothing was imported." in broken.content.decode() and "Malformed XML" in broken.content.decode()


@pytest.mark.django_db
def test_clinicians_read_documents_but_cannot_import(client, curator, clinician):
    documents_import(user=curator, name="efetch.xml", data=_read("efetch_pubmed.xml"))
    doc = Document.objects.get(pmid="31000001")
    client.force_login(clinician)
    listing = client.get(reverse("curation:literature-documents"), {"q": "aspirin"}).content.decode()
    assert "PMID 31000001" in listing and "PMID 31000002" not in listing
    page = client.get(reverse("curation:literature-document", args=[doc.pk])).content.decode()
    assert "Atrial Fibrillation" in page and 'id="s1"' in page and "RESULTS" in page
    assert client.get(reverse("curation:literature-import-create")).status_code == 403
    assert client.get(reverse("curation:literature-import", args=[doc.import_batch_id])).status_code == 403
    assert client.get(reverse("curation:literature-document", args=[doc.pk + 999])).status_code == 404


# --------------------------------------------------------------------------- command


@pytest.mark.django_db
def test_import_documents_command(curator, clinician, capsys, tmp_path):
    from django.core.management import CommandError, call_command

    call_command("import_documents", str(DATA / "medline.txt"), "--as-user", "curator", "--json")
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["format"] == "medline" and result["created"] == 1 and result["skipped"] == 1
    assert result["issues"][0]["kind"] == "skipped"
    bad = tmp_path / "bad.xml"
    bad.write_bytes(b"<PubmedArticleSet><PubmedArticle>")
    with pytest.raises(CommandError, match="Nothing was imported: Malformed XML"):
        call_command("import_documents", str(bad), "--as-user", "curator")
    with pytest.raises(CommandError, match="Only curators and admins import documents"):
        call_command("import_documents", str(DATA / "medline.txt"), "--as-user", "clinician")
    with pytest.raises(CommandError, match="is not a file"):
        call_command("import_documents", str(tmp_path / "missing.xml"), "--as-user", "curator")
    assert Document.objects.count() == 1


@pytest.mark.django_db
def test_the_admin_lists_literature_rows_read_only(client, curator, django_user_model):
    from curation.models import DraftRun

    boss = django_user_model.objects.create_superuser("root", "root@example.org", "pw")
    batch = documents_import(user=curator, name="efetch.xml", data=_read("efetch_pubmed.xml"))
    run = DraftRun.objects.create(created_by=curator, model_key="1", model_label="m", document_ids=[1], prompt_version="v1")
    client.force_login(boss)
    for model, obj in ((Document, Document.objects.first()), (LiteratureImport, batch), (DraftRun, run)):
        base = f"/admin/curation/{model._meta.model_name}/"
        assert client.get(base).status_code == 200
        assert client.get(base, {"q": "aspirin"}).status_code == 200
        page = client.get(f"{base}{obj.pk}/change/")
        assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
        assert client.get(f"{base}add/").status_code == 403


@pytest.mark.django_db
def test_nul_characters_in_a_document_are_dropped_not_fatal(curator):
    """A JSON escape "\\u0000" in an abstract reached PostgreSQL, which refuses NUL: the import
    failed as a whole. NUL has no visible form; it is dropped and the document kept."""
    data = json.dumps(
        {"12345678": {"QUESTION": "Q\u0000?", "CONTEXTS": ["Aspirin\u0000 lowered the risk.", "It was safe."], "LABELS": ["RESULTS", "CONCLUSIONS"], "MESHES": ["Aspirin\u0000"], "YEAR": "2020", "final_decision": "yes", "LONG_ANSWER": "Yes."}}
    ).encode()
    batch = documents_import(user=curator, name="pqa.json", data=data)
    assert not batch.error and batch.created_count == 1, (batch.error, batch.issues)
    doc = Document.objects.get(pmid="12345678")
    assert "\x00" not in doc.title + doc.abstract and doc.mesh_terms == ["Aspirin"]
    assert "Aspirin lowered the risk." in doc.abstract
