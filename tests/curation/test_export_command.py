"""manage.py export_dataset."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from curation.models import QAPair
from curation.services.versions import dataset_version_freeze
from medportal.models import AuditEvent


@pytest.fixture
def version(make_pair, curator):
    texts = [
        "发烧三天怎么办",
        "咳嗽有痰要吃抗生素吗",
        "湿疹反复发作如何护理",
        "夜间磨牙是缺钙吗",
        "腹泻脱水的表现有哪些",
    ]
    for i, text in enumerate(texts):
        make_pair(
            curator,
            status=QAPair.Status.APPROVED,
            department="儿科",
            instruction=f"孩子{text}？",
            output=f"建议{i}：及时就医。",
        )
    return dataset_version_freeze(user=curator, name="v1", split=(0.6, 0.2, 0.2))


def run(*args) -> list[str]:
    out = io.StringIO()
    call_command("export_dataset", *args, stdout=out)
    return out.getvalue().strip().splitlines()


def test_it_writes_the_format_and_prints_each_file(version, tmp_path):
    out = tmp_path / "nested" / "llama"
    lines = run(str(version.pk), "--format", "llamafactory", "--out", str(out))
    assert sorted(Path(line).name for line in lines) == [
        "dataset_info.json",
        "v1_test.json",
        "v1_train.json",
        "v1_validation.json",
    ]
    assert all(Path(line).is_file() for line in lines)
    info = json.loads((out / "dataset_info.json").read_text(encoding="utf-8"))
    assert len(json.loads((out / info["v1_train"]["file_name"]).read_text(encoding="utf-8"))) == 3
    event = AuditEvent.objects.get(action="dataset_version.export")
    assert event.actor is None and event.changes["format"] == "llamafactory"


def test_it_writes_hf_parquet(version, tmp_path):
    lines = run(str(version.pk), "--format", "hf", "--out", str(tmp_path))
    assert sorted(Path(line).relative_to(tmp_path).as_posix() for line in lines) == [
        "README.md",
        "data/test-00000-of-00001.parquet",
        "data/train-00000-of-00001.parquet",
        "data/validation-00000-of-00001.parquet",
    ]


def test_an_unknown_version_is_a_command_error(db, tmp_path):
    with pytest.raises(CommandError, match="Dataset version 999 does not exist"):
        run("999", "--format", "xlsx", "--out", str(tmp_path))


def test_an_unknown_format_is_refused(version, tmp_path):
    with pytest.raises(CommandError, match="invalid choice"):
        run(str(version.pk), "--format", "csv", "--out", str(tmp_path))


def test_an_out_path_that_is_a_file_is_a_command_error(version, tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    with pytest.raises(CommandError, match="not a folder"):
        run(str(version.pk), "--format", "xlsx", "--out", str(target))
