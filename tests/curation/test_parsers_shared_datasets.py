"""Every QA set in ../shared/datasets parses to the counts its PROVENANCE.md implies.

The data is read in place (never copied into the repository); the module is skipped when
the folder is absent.
"""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from curation.importers import (
    ImportFileError,
    ParsedRecord,
    RowIssue,
    detect_format,
    open_source,
)
from curation.lib.fingerprint import (
    NearDuplicateIndex,
    near_duplicate_distance,
    near_duplicate_text,
    record_fingerprints,
)
from curation.lib.identifiers import find_identifiers

pytestmark = pytest.mark.shared_data

DATASETS = Path(__file__).resolve().parents[3] / "shared" / "datasets"
if not DATASETS.is_dir():
    pytest.skip(f"shared datasets not found at {DATASETS}", allow_module_level=True)

TOYHOM = DATASETS / "toyhom_chinese_medical_dialogue" / "样例_内科5000-6000.csv"
HUATUO = DATASETS / "huatuo_llama_med_chinese" / "llama_data.first3000.jsonl"
MEDICALGPT = DATASETS / "medicalgpt_medical_sft_1k" / "medical_sft_1K_format.jsonl"
CHATDOCTOR = DATASETS / "chatdoctor_genmedgpt5k" / "chatdoctor5k.json"
CMMLU = DATASETS / "cmmlu_medical"
MEDQUAD = DATASETS / "medquad"
PUBMEDQA = DATASETS / "pubmedqa_pqal" / "ori_pqal.json"
GROUND_TRUTH = DATASETS / "pubmedqa_pqal" / "test_ground_truth.json"


def parse(path: Path, **kwargs):
    source = open_source(path, **kwargs)
    got = list(source.records())
    recs = [i for i in got if isinstance(i, ParsedRecord)]
    issues = [i for i in got if isinstance(i, RowIssue)]
    return source, recs, issues


def near_duplicate_pairs(recs: list[ParsedRecord]) -> list[tuple[tuple[str, int], tuple[str, int], int]]:
    """Pairs the import would flag: exact duplicates removed, then per-text SimHash threshold."""
    index = NearDuplicateIndex(max_distance=4)
    seen: set[str] = set()
    pairs = []
    for i, r in enumerate(recs):
        digest, fingerprint = record_fingerprints(r.instruction, r.input, r.output)
        if digest in seen or fingerprint is None:
            continue
        seen.add(digest)
        found = index.query_with_distance(
            fingerprint, near_duplicate_distance(near_duplicate_text(r.instruction, r.input, r.output))
        )
        if found:
            j, distance = found
            pairs.append(((recs[j].file, recs[j].row), (r.file, r.row), distance))
        index.add(i, fingerprint)
    return pairs


def exact_duplicates(recs: list[ParsedRecord]) -> int:
    counts = collections.Counter(record_fingerprints(r.instruction, r.input, r.output)[0] for r in recs)
    return sum(n - 1 for n in counts.values())


def identifier_kinds(recs: list[ParsedRecord]) -> collections.Counter:
    return collections.Counter(
        f.kind for r in recs for text in (r.instruction, r.input, r.output) for f in find_identifiers(text)
    )


# --------------------------------------------------------------------------- Chinese sets


def test_toyhom_gb18030_csv():
    raw = TOYHOM.read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    # 7,644 rows + header, but 46 extra LFs inside quoted fields: splitting lines would break rows.
    assert raw.decode("gb18030").count("\n") == 7645 + 46

    assert detect_format(TOYHOM) == "csv"
    source, recs, issues = parse(TOYHOM)
    assert (source.format, source.encoding, source.total) == ("csv", "gb18030", 7644)
    assert source.columns == ["department", "title", "ask", "answer"]
    assert source.mapping == {"instruction": "ask", "output": "answer", "department": "department"}
    assert (len(recs), issues) == (7644, [])
    assert [r.row for r in recs] == list(range(1, 7645))
    assert collections.Counter(r.department for r in recs) == {
        "肝病科": 3121, "消化科": 1414, "神经科": 1104, "心血管科": 1080, "内分泌科": 558, "呼吸科": 152,
        "肾内科": 80, "感染科": 45, "血液科": 40, "普通内科": 32, "风湿免疫科": 18,
    }
    first = recs[0]
    assert first.extra == {"title": "高血压患者能吃党参吗？"}
    assert first.instruction.startswith("我有高血压这两天女婿来的时候给我拿了些党参泡水喝")
    assert first.output.startswith("高血压病人可以口服党参的。")
    # Newlines inside fields survive (those at a field's edge are stripped).
    assert sum(1 for r in recs if "\n" in r.instruction or "\n" in r.output or "\n" in r.extra["title"]) == 3

    assert exact_duplicates(recs) == 398
    # Two true near duplicates (one answer lacks its "您好，" greeting; 3-gram Jaccard 0.98 and 0.95).
    assert near_duplicate_pairs(recs) == [(("", 1834), ("", 1852), 4), (("", 563), ("", 5914), 4)]
    assert identifier_kinds(recs) == {}


def test_huatuo_jsonl_named_json_upstream():
    source, recs, issues = parse(HUATUO)
    assert (source.format, source.encoding, source.total, len(recs), issues) == ("alpaca", "utf-8", 3000, 3000, [])
    assert all(r.input == "" for r in recs)
    assert exact_duplicates(recs) == 0
    # Generated from a knowledge graph: the same case with the age changed from 20 to 30.
    assert near_duplicate_pairs(recs) == [(("", 2908), ("", 2961), 3)]


def test_medicalgpt_sharegpt():
    source, recs, issues = parse(MEDICALGPT)
    assert (source.format, source.total, len(recs), issues) == ("sharegpt", 1000, 1000, [])
    assert all(r.history == [] and r.system == "" for r in recs)
    assert recs[0].instruction.startswith("治疗阳痿吃什么药呢？")
    # Upstream answers that start with a stray "，" are kept as they are.
    assert sum(r.output.startswith("，") for r in recs) == 3
    assert near_duplicate_pairs(recs) == []


def test_cmmlu_medical_folder_is_multiple_choice():
    source, recs, issues = parse(CMMLU)
    assert (source.format, source.encoding, source.total, len(recs), issues) == ("mcq", "utf-8", 1860, 1860, [])
    by_split = collections.Counter(r.extra["split"] for r in recs)
    assert by_split == {"test": 1815, "dev": 45}
    assert {r.file.split("/")[0] for r in recs} == {"dev", "test"}
    subjects = collections.Counter(r.tags[0] for r in recs if r.extra["split"] == "test")
    assert subjects == {
        "cmmlu:professional_medicine": 376, "cmmlu:college_medicine": 273, "cmmlu:clinical_knowledge": 237,
        "cmmlu:traditional_chinese_medicine": 185, "cmmlu:genetics": 176, "cmmlu:virology": 169,
        "cmmlu:anatomy": 148, "cmmlu:nutrition": 145, "cmmlu:college_medical_statistics": 106,
    }
    sample = next(r for r in recs if r.source_ref == "test/anatomy#0")
    assert sample.instruction == "女性生殖腺是\nA. 卵巢\nB. 前庭大腺\nC. 前庭球\nD. 乳腺"
    assert sample.output == "A. 卵巢"
    for split, count in (("test", 1815), ("dev", 45)):
        assert open_source(CMMLU / split).total == count
    # The same anatomy question appears twice with options C and D swapped.
    assert near_duplicate_pairs(recs) == [(("test/anatomy.csv", 5), ("test/anatomy.csv", 147), 0)]


# --------------------------------------------------------------------------- English sets


def test_chatdoctor_crlf_json_array():
    assert b"\r\n" in CHATDOCTOR.read_bytes()[:200]
    source, recs, issues = parse(CHATDOCTOR)
    assert (source.format, source.total, len(recs), issues) == ("alpaca", 5452, 5452, [])
    assert {r.instruction for r in recs} == {
        "If you are a doctor, please answer the medical questions based on the patient's description."
    }
    assert recs[0].input.startswith("Doctor, I have been experiencing sudden and frequent panic attacks")
    # Templated answers come within 4 bits, so English text uses the 3-bit threshold: no flags.
    assert near_duplicate_pairs(recs) == []


def test_medquad_folder():
    xml_files = sorted(MEDQUAD.rglob("*.xml"))
    assert len(xml_files) == 1235
    source, recs, issues = parse(MEDQUAD)
    assert (source.format, source.encoding) == ("medquad", "utf-8")
    assert source.total == 3315
    assert (len(recs), len(issues)) == (3101, 214)
    assert {i.kind for i in issues} == {"skipped"}

    # PROVENANCE counts 3,307 pairs / 3,093 answered: it missed two NINDS files written in an
    # older lower-case schema (<doc>, <qaPairs>, <pair>), which hold 8 more answered pairs.
    legacy = [r for r in recs if r.file in ("6_NINDS_QA/0000007.xml", "6_NINDS_QA/0000018.xml")]
    assert len(legacy) == 8
    assert (len(recs) - len(legacy), len(recs) + len(issues) - len(legacy)) == (3093, 3307)
    assert legacy[0].source_ref == "NINDS 0000007#1"

    skipped_by_folder = collections.Counter(i.file.split("/")[0] for i in issues)
    assert skipped_by_folder == {
        "11_MPlusDrugs_QA": 102, "10_MPlus_ADAM_QA": 70, "12_MPlusHerbsSupplements_QA": 40, "2_GARD_QA": 2,
    }
    copyright_note = "answers for copyright reasons"
    assert all(copyright_note in i.message for i in issues if "MPlus" in i.file)
    assert sorted((i.file, i.message) for i in issues if i.file.startswith("2_GARD_QA")) == [
        ("2_GARD_QA/0002079.xml", "Pair 1 (pid 1, qid 0002079-1): the answer is empty."),
        ("2_GARD_QA/0002080.xml", "Pair 1 (pid 1, qid 0002080-1): the answer is empty."),
    ]

    abcd = next(r for r in recs if r.source_ref == "GARD 0000004#1")
    assert abcd.instruction == "What are the symptoms of ABCD syndrome ?"
    assert abcd.tags == ["qtype:symptoms"] and abcd.disease_codes == ["UMLS:C1838099"]
    assert abcd.extra["focus"] == "ABCD syndrome"
    assert abcd.extra["url"] == "https://rarediseases.info.nih.gov/gard/335/abcd-syndrome"
    ghr = next(r for r in recs if r.source_ref == "GHR 0000001#1")
    assert ghr.output.startswith("Aarskog-Scott syndrome is a genetic disorder that affects the development")

    assert exact_duplicates(recs) == 4
    # Boilerplate-dominated answers (GARD's HPO symptom table text, NCI PDQ treatment sections).
    assert len(near_duplicate_pairs(recs)) == 156
    assert identifier_kinds(recs) == {"email": 2}  # institutional addresses (nei.nih.gov, nia.nih.gov)


def test_pubmedqa():
    source, recs, issues = parse(PUBMEDQA)
    assert (source.format, source.total, len(recs), issues) == ("pubmedqa", 1000, 1000, [])
    assert collections.Counter(r.extra["final_decision"] for r in recs) == {"yes": 552, "no": 338, "maybe": 110}
    first = recs[0]
    assert first.source_ref == "21645374" and first.tags == ["pubmedqa:yes"]
    assert first.instruction == "Do mitochondria play a role in remodelling lace plant leaves during programmed cell death?"
    assert first.input.count("\n\n") == len(first.extra["LABELS"]) - 1
    assert near_duplicate_pairs(recs) == []


def test_pubmedqa_ground_truth_is_refused():
    with pytest.raises(ImportFileError, match=r"maps 500 ids to labels"):
        open_source(GROUND_TRUTH)
    with pytest.raises(ImportFileError, match=r"^test_ground_truth\.json: This JSON file maps 500 ids"):
        open_source(PUBMEDQA.parent)


# --------------------------------------------------------------------------- not QA files


@pytest.mark.parametrize(
    "relative, message",
    [
        ("hpo_rare_disease/hp-zh.babelon.tsv", "No question column found"),
        ("china_rare_disease_list_ccrd/conpendium_hpo.json", "Cannot tell the format: the JSON object's top-level keys"),
        ("china_rare_disease_list_ccrd/Public_Test_set.json", "The JSON array's first item is a list, not an object"),
    ],
)
def test_knowledge_files_are_not_qa_files(relative, message):
    with pytest.raises(ImportFileError, match=message):
        open_source(DATASETS / relative)
