"""Every QA set in ../shared/datasets imports with the counts its PROVENANCE.md implies.

For each set the test counts the rows and the exact duplicates on its own (standard-library
readers and a plain ``set`` of normalised texts), then checks that the import agrees:
created + duplicates + skipped + errors = rows, and the numbers match what was measured.
"""

from __future__ import annotations

import csv
import json
import re
import unicodedata
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from django.db.models import Q

from curation.models import ImportBatch, QAPair
from curation.services.imports import import_batch_create
from curation.workers.imports import import_batch_run

pytestmark = [pytest.mark.shared_data, pytest.mark.django_db]


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.LANGUAGE_CODE = "en"  # messages are asserted in English; the UI default is zh-hans


def norm(text: str | None) -> str:
    """NFKC, casefold, drop everything that is not a letter or digit (punctuation, spaces)."""
    return re.sub(r"[\W_]+", "", unicodedata.normalize("NFKC", text or "").casefold())


def duplicates(keys: list[tuple]) -> int:
    seen: set[tuple] = set()
    count = 0
    for key in keys:
        if key in seen:
            count += 1
        seen.add(key)
    return count


def run(user, path: Path, **options) -> ImportBatch:
    before = QAPair.objects.count()
    batch = import_batch_create(user=user, path_or_upload=path, **options)
    assert batch.status == ImportBatch.Status.QUEUED, batch.error
    batch = import_batch_run(batch_id=batch.pk)
    assert batch.status == ImportBatch.Status.SUCCEEDED, batch.error
    assert batch.created_count + batch.duplicate_count + batch.skipped_count + batch.error_count == batch.rows_total
    assert QAPair.objects.count() - before == batch.created_count
    assert sum(1 for i in batch.issues if i["kind"] == "duplicate") == batch.duplicate_count
    assert all(i["duplicate_of"] for i in batch.issues if i["kind"] == "duplicate")
    return batch


def test_toyhom_gb18030_csv(shared_datasets, curator):
    path = next((shared_datasets / "toyhom_chinese_medical_dialogue").glob("*.csv"))
    with open(path, encoding="gb18030", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 7644  # PROVENANCE: 7,644 data rows plus a header
    dup = duplicates([(norm(r["ask"]), norm(r["answer"])) for r in rows])
    assert dup == 398  # 396 repeated verbatim, 2 more differ only in punctuation/spacing

    batch = run(curator, path)
    assert batch.encoding == "gb18030" and batch.format == "csv"
    assert (batch.rows_total, batch.created_count, batch.duplicate_count, batch.skipped_count, batch.error_count) == (7644, 7644 - dup, dup, 0, 0)
    departments = set(QAPair.objects.filter(import_batch=batch).values_list("department__name", flat=True))
    assert departments == {"肝病科", "消化科", "神经科", "心血管科", "内分泌科", "呼吸科", "肾内科", "感染科", "血液科", "普通内科", "风湿免疫科"}
    # Rows with quoted newlines keep them (a real CSV parser, not split("\n")).
    duplicate_rows = {i["row"] for i in batch.issues}
    multiline = {n for n, r in enumerate(rows, 1) if "\n" in r["ask"].strip() or "\n" in r["answer"].strip()} - duplicate_rows
    assert multiline
    stored = QAPair.objects.filter(import_batch=batch).filter(Q(instruction__contains="\n") | Q(output__contains="\n"))
    assert set(stored.values_list("source_row", flat=True)) == multiline
    assert QAPair.objects.filter(import_batch=batch, extra__has_key="title").count() == batch.created_count


def test_huatuo_jsonl_named_json(shared_datasets, curator):
    path = shared_datasets / "huatuo_llama_med_chinese" / "llama_data.first3000.jsonl"
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(records) == 3000
    dup = duplicates([(norm(r["instruction"]), norm(r["input"]), norm(r["output"])) for r in records])
    batch = run(curator, path)
    assert batch.format == "alpaca"
    assert (batch.rows_total, batch.created_count, batch.duplicate_count) == (3000, 3000, 0) and dup == 0


def test_medicalgpt_sharegpt_and_reimport_is_all_duplicates(shared_datasets, curator):
    path = shared_datasets / "medicalgpt_medical_sft_1k" / "medical_sft_1K_format.jsonl"
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(records) == 1000 and all(len(r["conversations"]) == 2 for r in records)
    dup = duplicates([tuple(norm(t["value"]) for t in r["conversations"]) for r in records])
    batch = run(curator, path)
    assert batch.format == "sharegpt"
    assert (batch.created_count, batch.duplicate_count) == (1000, 0) and dup == 0
    first = QAPair.objects.get(import_batch=batch, source_row=1)
    assert first.instruction.startswith("治疗阳痿吃什么药呢")

    again = run(curator, path)
    assert (again.created_count, again.duplicate_count) == (0, 1000)


def test_cmmlu_folder_of_multiple_choice_tables(shared_datasets, curator):
    root = shared_datasets / "cmmlu_medical"
    keys = []
    for path in sorted(root.rglob("*.csv")):
        with open(path, encoding="utf-8", newline="") as handle:
            keys += [tuple(norm(r[c]) for c in ("Question", "A", "B", "C", "D", "Answer")) for r in csv.DictReader(handle)]
    assert len(keys) == 1815 + 45  # PROVENANCE: 1,815 test rows and 45 dev rows
    dup = duplicates(keys)
    assert dup == 2
    batch = run(curator, root)
    assert batch.format == "mcq"
    assert (batch.rows_total, batch.created_count, batch.duplicate_count, batch.skipped_count) == (1860, 1860 - dup, dup, 0)
    files = set(QAPair.objects.filter(import_batch=batch).values_list("extra__file", flat=True))
    assert "test/anatomy.csv" in files and "dev/virology.csv" in files


def _medquad_pairs(root: Path) -> list[tuple[str, str]]:
    """(question, answer) of every pair; both <Document>/<QAPair> and <doc>/<pair> spellings."""
    pairs = []
    for path in sorted(root.rglob("*.xml")):
        tree = ET.parse(path)
        for pair in tree.iter():
            if pair.tag not in ("QAPair", "pair"):
                continue
            question = next((c.text or "" for c in pair if c.tag.lower() == "question"), "")
            answer = next((c.text or "" for c in pair if c.tag.lower() == "answer"), "")
            pairs.append((question, answer))
    return pairs


def test_medquad_folder_skips_the_pairs_without_answers(shared_datasets, curator):
    root = shared_datasets / "medquad"
    pairs = _medquad_pairs(root)
    # PROVENANCE counts 3,307 <QAPair> elements; two NINDS files use <doc>/<pair> (4 pairs each).
    assert len(pairs) == 3307 + 8
    empty = sum(1 for q, a in pairs if not a.strip() or not q.strip())
    assert empty == 212 + 2  # the three MedlinePlus folders plus two GARD pairs
    answered = [(norm(q), norm(a)) for q, a in pairs if q.strip() and a.strip()]
    dup = duplicates(answered)
    assert dup == 4

    batch = run(curator, root)
    assert batch.format == "medquad"
    assert (batch.rows_total, batch.created_count, batch.duplicate_count, batch.skipped_count, batch.error_count) == (3315, 3315 - empty - dup, dup, empty, 0)
    skipped_files = {i["file"].split("/")[0] for i in batch.issues if i["kind"] == "skipped"}
    assert {"10_MPlus_ADAM_QA", "11_MPlusDrugs_QA", "12_MPlusHerbsSupplements_QA"} <= skipped_files


def test_pubmedqa_and_its_label_file_is_refused(shared_datasets, curator):
    folder = shared_datasets / "pubmedqa_pqal"
    data = json.loads((folder / "ori_pqal.json").read_text(encoding="utf-8"))
    assert len(data) == 1000
    dup = duplicates([(norm(v["QUESTION"]), norm(" ".join(v["CONTEXTS"])), norm(v["LONG_ANSWER"])) for v in data.values()])
    batch = run(curator, folder / "ori_pqal.json")
    assert batch.format == "pubmedqa"
    assert (batch.created_count, batch.duplicate_count) == (1000, 0) and dup == 0
    assert QAPair.objects.filter(import_batch=batch, source_ref="21645374").exists()

    before = QAPair.objects.count()
    refused = import_batch_create(user=curator, path_or_upload=folder / "test_ground_truth.json")
    assert refused.status == ImportBatch.Status.FAILED
    assert "maps 500 ids to labels" in refused.error
    assert QAPair.objects.count() == before


def test_chatdoctor_json_array_with_crlf(shared_datasets, curator):
    path = shared_datasets / "chatdoctor_genmedgpt5k" / "chatdoctor5k.json"
    records = json.loads(path.read_text(encoding="utf-8"))
    assert len(records) == 5452
    dup = duplicates([(norm(r["instruction"]), norm(r["input"]), norm(r["output"])) for r in records])
    batch = run(curator, path)
    assert batch.format == "alpaca"
    assert (batch.created_count, batch.duplicate_count) == (5452, 0) and dup == 0
    assert not QAPair.objects.filter(import_batch=batch, output__contains="\r").exists()


@pytest.mark.parametrize(
    ("relative", "message"),
    [
        ("hpo_rare_disease/hp.obo", "Cannot tell the format of 'hp.obo'"),
        ("china_rare_disease_list_ccrd/ccrd_to_omim.json", "Cannot tell the format"),
    ],
)
def test_knowledge_files_that_are_not_qa_are_refused_and_create_nothing(shared_datasets, curator, relative, message):
    before = QAPair.objects.count()
    batch = import_batch_create(user=curator, path_or_upload=shared_datasets / relative)
    assert batch.status == ImportBatch.Status.FAILED and message in batch.error
    assert QAPair.objects.count() == before
