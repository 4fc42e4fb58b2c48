"""Exporters: LLaMA-Factory alpaca, ShareGPT, Hugging Face Parquet and XLSX; round trips."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import openpyxl
import pytest

from curation.exports import EXPORTERS
from curation.importers import ParsedRecord, open_source
from curation.models import DatasetItem, QAPair
from curation.services.versions import (
    dataset_version_export,
    dataset_version_export_zip,
    dataset_version_freeze,
)
from medportal.errors import InvalidInput, NotAllowed
from medportal.models import AuditEvent

APPROVED = QAPair.Status.APPROVED
QA_KEYS = ("instruction", "input", "output", "system", "history")



@pytest.fixture
def version(make_pair, curator):
    """A version of 12 varied pairs: system prompts, history, input, tricky text, labels."""
    specs = [
        dict(
            instruction="高血压患者可以吃党参吗？",
            output="一般可以，但请在医生指导下使用。",
            department="心内科",
            tags=["高血压", "中药"],
            disease_codes=["ICD10:I10"],
            difficulty="easy",
        ),
        dict(
            instruction="What is the first-line drug for type 2 diabetes?",
            output="Metformin, unless contraindicated.",
            department="内分泌科",
            system="You are a careful physician.",
            reasoning="Guidelines (ADA 2024).",
            difficulty="medium",
        ),
        dict(
            instruction="请解释这个化验结果",
            input="空腹血糖 7.8 mmol/L",
            output="提示糖尿病可能，需复查。",
            department="内分泌科",
        ),
        dict(
            instruction="孩子发烧三天了怎么办？",
            output="=先测体温，超过38.5℃可用退热药，并尽快就医。",
            department="儿科",
            history=[["孩子咳嗽要紧吗？", "需要看咳嗽的性质和持续时间。"], ["有痰呢？", "可以多喝水，必要时就医。"]],
        ),
        dict(instruction='引号"和\\反斜杠\n以及换行', output="答案里有\t制表符和 emoji 😀", department="儿科"),
    ]
    for i in range(7):
        specs.append(
            dict(
                instruction=f"第{i}个普通问题：头痛伴恶心需要做什么检查{'！' * i}呢{i}",
                output=f"建议先做头颅CT检查，编号{i}。",
                department=["心内科", "儿科"][i % 2],
            )
        )
    for spec in specs:
        make_pair(curator, status=APPROVED, **spec)
    return dataset_version_freeze(user=curator, name="心内科 v1", split=(0.5, 0.25, 0.25), seed=3)


def frozen(version) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {"train": [], "validation": [], "test": []}
    for split, content in (
        DatasetItem.objects.filter(version=version).order_by("split", "position").values_list("split", "content")
    ):
        out[split].append(content)
    return out


def qa(content: dict) -> dict:
    return {k: content.get(k) or ([] if k == "history" else "") for k in QA_KEYS}


def parsed(source) -> list[dict]:
    items = list(source.records())
    assert all(isinstance(r, ParsedRecord) for r in items), [r for r in items if not isinstance(r, ParsedRecord)]
    return [
        {"instruction": r.instruction, "input": r.input, "output": r.output, "system": r.system, "history": r.history}
        for r in items
    ]


def test_the_registry_lists_the_four_formats():
    assert set(EXPORTERS) == {"llamafactory", "sharegpt", "hf", "xlsx"}


# --------------------------------------------------------------------------- LLaMA-Factory


def test_llamafactory_writes_one_alpaca_array_per_split_and_a_matching_dataset_info(version, tmp_path):
    paths = EXPORTERS["llamafactory"](version, tmp_path)
    names = sorted(p.name for p in paths)
    assert names == ["dataset_info.json", "心内科_v1_test.json", "心内科_v1_train.json", "心内科_v1_validation.json"]
    info = json.loads((tmp_path / "dataset_info.json").read_text(encoding="utf-8"))
    expected_frozen = frozen(version)
    for split in ("train", "validation", "test"):
        entry = info[f"心内科_v1_{split}"]
        assert entry == {
            "file_name": f"心内科_v1_{split}.json",
            "formatting": "alpaca",
            "columns": {
                "prompt": "instruction",
                "query": "input",
                "response": "output",
                "system": "system",
                "history": "history",
            },
        }
        text = (tmp_path / entry["file_name"]).read_text(encoding="utf-8")
        assert "\\u" not in text  # ensure_ascii=False: Chinese stays readable
        records = json.loads(text)
        assert len(records) == version.counts[split]
        for record in records:
            assert set(record) == set(entry["columns"].values())
        assert records == [qa(c) for c in expected_frozen[split]]


def test_llamafactory_export_round_trips_through_the_alpaca_importer(version, tmp_path):
    EXPORTERS["llamafactory"](version, tmp_path)
    expected = frozen(version)
    for split in ("train", "validation", "test"):
        source = open_source(tmp_path / f"心内科_v1_{split}.json")
        assert source.format == "alpaca"
        assert parsed(source) == [qa(c) for c in expected[split]]


def test_empty_splits_get_no_file(make_pair, curator, tmp_path):
    for _ in range(3):
        make_pair(curator, status=APPROVED)
    only_train = dataset_version_freeze(user=curator, name="all-train", split=(1, 0, 0))
    paths = EXPORTERS["llamafactory"](only_train, tmp_path)
    assert sorted(p.name for p in paths) == ["all-train_train.json", "dataset_info.json"]
    assert list(json.loads((tmp_path / "dataset_info.json").read_text())) == ["all-train_train"]


# --------------------------------------------------------------------------- ShareGPT


def test_sharegpt_writes_conversations_per_split_with_a_dataset_info_entry(version, tmp_path):
    EXPORTERS["sharegpt"](version, tmp_path)
    info = json.loads((tmp_path / "dataset_info.json").read_text(encoding="utf-8"))
    expected = frozen(version)
    seen_system = seen_history = False
    for split in ("train", "validation", "test"):
        entry = info[f"心内科_v1_{split}"]
        assert entry["formatting"] == "sharegpt"
        assert entry["columns"] == {"messages": "conversations"}
        assert entry["tags"]["role_tag"] == "from" and entry["tags"]["system_tag"] == "system"
        lines = (tmp_path / entry["file_name"]).read_text(encoding="utf-8").splitlines()
        assert len(lines) == version.counts[split]
        for line, content in zip(lines, expected[split], strict=True):
            turns = json.loads(line)["conversations"]
            if content["system"]:
                seen_system = True
                assert turns[0] == {"from": "system", "value": content["system"]}
                turns = turns[1:]
            roles = [t["from"] for t in turns]
            assert roles == ["human", "gpt"] * (len(content["history"]) + 1)
            if content["history"]:
                seen_history = True
                assert [[turns[i]["value"], turns[i + 1]["value"]] for i in range(0, len(turns) - 2, 2)] == content[
                    "history"
                ]
            prompt = content["instruction"] + (f"\n{content['input']}" if content["input"] else "")
            assert turns[-2]["value"] == prompt
            assert turns[-1]["value"] == content["output"]
    assert seen_system and seen_history


def test_sharegpt_export_reads_back_through_the_sharegpt_importer(version, tmp_path):
    EXPORTERS["sharegpt"](version, tmp_path)
    expected = frozen(version)
    for split in ("train", "validation", "test"):
        records = parsed(open_source(tmp_path / f"心内科_v1_{split}.jsonl"))
        want = [
            {**qa(c), "instruction": c["instruction"] + (f"\n{c['input']}" if c["input"] else ""), "input": ""}
            for c in expected[split]
        ]
        assert records == want


# --------------------------------------------------------------------------- Hugging Face


def test_hf_parquet_loads_with_datasets_both_ways(version, tmp_path):
    from datasets import load_dataset

    out = tmp_path / "hf"
    out.mkdir()
    paths = EXPORTERS["hf"](version, out)
    assert sorted(p.relative_to(out).as_posix() for p in paths) == [
        "README.md",
        "data/test-00000-of-00001.parquet",
        "data/train-00000-of-00001.parquet",
        "data/validation-00000-of-00001.parquet",
    ]
    files = {s: str(out / f"data/{s}-00000-of-00001.parquet") for s in ("train", "validation", "test")}
    by_files = load_dataset("parquet", data_files=files, cache_dir=str(tmp_path / "cache"))
    by_folder = load_dataset(str(out), cache_dir=str(tmp_path / "cache2"))
    expected = frozen(version)
    for ds in (by_files, by_folder):
        assert set(ds) == {"train", "validation", "test"}
        for split in ds:
            assert ds[split].num_rows == version.counts[split]
            assert ds[split].column_names == [
                "instruction",
                "input",
                "output",
                "system",
                "history",
                "reasoning",
                "department",
                "tags",
                "disease_codes",
                "difficulty",
                "qa_pair_id",
            ]
            rows = ds[split].to_list()
            for row, content in zip(rows, expected[split], strict=True):
                for key in (
                    "instruction",
                    "input",
                    "output",
                    "system",
                    "history",
                    "reasoning",
                    "department",
                    "tags",
                    "disease_codes",
                    "difficulty",
                ):
                    assert row[key] == content[key], key
    feature = by_folder["train"].features["history"]
    assert feature.feature.feature.dtype == "string"  # list of list of string
    assert "configs:" in (out / "README.md").read_text(encoding="utf-8")


# --------------------------------------------------------------------------- XLSX


def test_xlsx_has_a_summary_sheet_and_one_sheet_per_split(version, tmp_path):
    (path,) = EXPORTERS["xlsx"](version, tmp_path)
    wb = openpyxl.load_workbook(path, read_only=True)
    assert wb.sheetnames == ["summary", "train", "validation", "test"]
    summary = dict(wb["summary"].iter_rows(min_row=2, values_only=True))
    assert summary["name"] == "心内科 v1"
    assert summary["content_hash"] == version.content_hash
    assert summary["train"] == version.counts["train"]
    assert summary["seed"] == 3
    assert summary["synthetic_share"] == "0.0%"
    assert json.loads(summary["filters"]) == version.filters
    header = next(wb["train"].iter_rows(max_row=1, values_only=True))
    assert header == (
        "instruction",
        "input",
        "output",
        "system",
        "history",
        "reasoning",
        "department",
        "tags",
        "disease_codes",
        "difficulty",
        "qa_pair_id",
    )
    for split in ("train", "validation", "test"):
        assert sum(1 for _ in wb[split].iter_rows(values_only=True)) == version.counts[split] + 1
    wb.close()


def test_xlsx_never_turns_text_into_a_formula(version, tmp_path):
    (path,) = EXPORTERS["xlsx"](version, tmp_path)
    wb = openpyxl.load_workbook(path)  # not data_only: a formula would come back as one
    cells = [c for split in ("train", "validation", "test") for row in wb[split].iter_rows(min_row=2) for c in row]
    starting = [c for c in cells if isinstance(c.value, str) and c.value.startswith("=")]
    assert starting and all(c.data_type == "s" for c in starting)


def _single_sheet_copy(path: Path, sheet: str, out: Path) -> Path:
    src = openpyxl.load_workbook(path, read_only=True)
    dst = openpyxl.Workbook()
    ws = dst.active
    ws.title = sheet
    for r, row in enumerate(src[sheet].iter_rows(values_only=True), 1):
        for c, value in enumerate(row, 1):
            cell = ws.cell(row=r, column=c, value=value)
            if isinstance(value, str):
                cell.data_type = "s"  # keep "=..." answers as text in the copy too
    src.close()
    dst.save(out)
    return out


def test_the_whole_xlsx_export_round_trips_through_the_xlsx_importer(version, tmp_path):
    """The importer skips the summary sheet and reads the split sheets in order."""
    (path,) = EXPORTERS["xlsx"](version, tmp_path)
    expected = frozen(version)
    records = list(open_source(path).records())
    assert all(isinstance(r, ParsedRecord) for r in records), [r for r in records if not isinstance(r, ParsedRecord)]
    in_order = [c for split in ("train", "validation", "test") for c in expected[split]]
    got = [
        {"instruction": r.instruction, "input": r.input, "output": r.output, "system": r.system, "history": r.history}
        for r in records
    ]
    assert got == [qa(c) for c in in_order]
    assert any(c["history"] for c in in_order), "the fixture must exercise history"
    assert [r.department for r in records] == [c["department"] for c in in_order]
    assert [sorted(r.tags) for r in records] == [c["tags"] for c in in_order]
    assert [r.disease_codes for r in records] == [c["disease_codes"] for c in in_order]
    assert [r.reasoning for r in records] == [c["reasoning"] for c in in_order]


# --------------------------------------------------------------------------- service wrappers


def test_an_export_is_audited(version, curator, tmp_path):
    paths = dataset_version_export(version=version, format="llamafactory", out_dir=tmp_path / "out", user=curator)
    assert all(p.is_file() for p in paths)
    event = AuditEvent.objects.get(action="dataset_version.export")
    assert event.actor == curator
    assert event.target_id == str(version.pk)
    assert event.changes["format"] == "llamafactory"
    assert "dataset_info.json" in event.changes["files"]


def test_an_unknown_format_is_refused(version, curator, tmp_path):
    with pytest.raises(InvalidInput, match="Unknown export format “csv”"):
        dataset_version_export(version=version, format="csv", out_dir=tmp_path, user=curator)
    assert not AuditEvent.objects.filter(action="dataset_version.export").exists()


def test_users_without_a_role_cannot_export(version, outsider, tmp_path):
    with pytest.raises(NotAllowed):
        dataset_version_export_zip(version=version, format="xlsx", user=outsider)


@pytest.mark.parametrize("fmt", ["llamafactory", "sharegpt", "hf", "xlsx"])
def test_the_zip_holds_every_exported_file(version, clinician, fmt):
    archive, filename = dataset_version_export_zip(version=version, format=fmt, user=clinician)
    with archive, zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
        assert zf.testzip() is None
    assert filename == f"心内科_v1-{fmt}.zip"
    expected = {
        "llamafactory": {
            "dataset_info.json",
            "心内科_v1_train.json",
            "心内科_v1_validation.json",
            "心内科_v1_test.json",
        },
        "sharegpt": {
            "dataset_info.json",
            "心内科_v1_train.jsonl",
            "心内科_v1_validation.jsonl",
            "心内科_v1_test.jsonl",
        },
        "hf": {"README.md", *(f"data/{s}-00000-of-00001.parquet" for s in ("train", "validation", "test"))},
        "xlsx": {"心内科_v1.xlsx"},
    }[fmt]
    assert set(names) == expected
