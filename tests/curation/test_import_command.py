"""manage.py import_qa: the JSON line, exit codes and one-line errors."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from curation.models import ImportBatch, QAPair
from medportal.models import AuditEvent

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.LANGUAGE_CODE = "en"  # messages are asserted in English; the UI default is zh-hans


@pytest.fixture
def superuser(django_user_model):
    return django_user_model.objects.create_superuser("root", "root@example.org", "pw")


def records(n: int) -> list[dict]:
    return [{"instruction": f"第{i}个问题：胆结石需要手术吗？", "input": "", "output": f"第{i}个回答：视症状和结石大小而定。"} for i in range(n)]


@pytest.fixture
def alpaca_file(tmp_path):
    path = tmp_path / "qa.json"
    rows = records(4) + [{"instruction": "只有问题", "output": ""}, {"instruction": {"a": 1}, "output": "x"}]
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    return path


def run(*args) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("import_qa", *map(str, args), stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_json_mode_prints_the_report_as_the_last_line(superuser, alpaca_file):
    out, _ = run(alpaca_file, "--json")
    report = json.loads(out.strip().splitlines()[-1])
    assert report["created"] == 4 and report["duplicates"] == 0 and report["skipped"] == 1
    assert report["near_duplicates"] == 0 and report["identifiers"] == 0
    assert [e["row"] for e in report["errors"]] == [6] and report["errors"][0]["message"]
    assert [s["row"] for s in report["skipped_rows"]] == [5]
    batch = ImportBatch.objects.get(pk=report["batch_id"])
    assert batch.created_by == superuser and batch.source_path == str(alpaca_file.resolve())
    assert QAPair.objects.filter(import_batch=batch).count() == 4


def test_running_it_twice_reports_every_row_as_a_duplicate(superuser, alpaca_file):
    run(alpaca_file, "--json")
    out, _ = run(alpaca_file, "--json")
    report = json.loads(out.strip().splitlines()[-1])
    assert report["created"] == 0 and report["duplicates"] == 4


def test_the_text_report_lists_counts_and_issues(superuser, alpaca_file):
    out, _ = run(alpaca_file)
    assert "4 created" in out and "1 skipped" in out and "1 row errors" in out
    assert "row 5 [skipped]" in out and "row 6 [error]" in out


def test_options_map_department_and_user_are_applied(django_user_model, tmp_path, curator):
    path = tmp_path / "t.tsv"
    path.write_text("标题\t回复\t备注\n口腔溃疡反复怎么办？\t补充维生素，必要时就医。\t甲\n", encoding="utf-8")
    out, _ = run(path, "--format", "tsv", "--map", "instruction=标题", "--map", "output=回复", "--department", "口腔科", "--as-user", "curator", "--json")
    report = json.loads(out.strip().splitlines()[-1])
    pair = QAPair.objects.get(import_batch_id=report["batch_id"])
    assert pair.author == curator and pair.department.name == "口腔科"
    assert pair.extra["备注"] == "甲"


def test_status_approved_works_for_admins_and_is_audited(superuser, alpaca_file):
    out, _ = run(alpaca_file, "--status", "approved", "--json")
    report = json.loads(out.strip().splitlines()[-1])
    assert set(QAPair.objects.filter(import_batch_id=report["batch_id"]).values_list("status", flat=True)) == {"approved"}
    assert AuditEvent.objects.filter(action="import.approved_status", target_id=str(report["batch_id"])).exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{missing}"], "does not exist"),
        (["{truncated}"], "JSON"),
        (["{good}", "--map", "instruction"], "Bad mapping 'instruction'"),
        (["{good}", "--map", "question=ask"], "Unknown field 'question'"),
        (["{good}", "--as-user", "nobody"], "Unknown user 'nobody'"),
        (["{good}", "--as-user", "curator", "--status", "approved"], "Only admins can import pairs as approved."),
        (["{good}", "--encoding", "nope-9"], "Unknown encoding 'nope-9'"),
        (["{good}", "--format", "yaml"], "invalid choice: 'yaml'"),
    ],
)
def test_file_level_problems_are_one_line_command_errors_and_create_no_pairs(superuser, curator, alpaca_file, tmp_path, args, message):
    truncated = tmp_path / "cut.json"
    truncated.write_text(json.dumps(records(3), ensure_ascii=False)[:-30], encoding="utf-8")
    paths = {"missing": tmp_path / "missing.json", "truncated": truncated, "good": alpaca_file}
    args = [a.format(**paths) for a in args]
    with pytest.raises(CommandError) as info:
        run(*args)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert QAPair.objects.count() == 0


def test_without_any_user_it_says_how_to_fix_it(db, alpaca_file):
    with pytest.raises(CommandError, match="createsuperuser"):
        run(alpaca_file)


def test_the_real_command_exits_non_zero_with_one_line_and_zero_on_success(tmp_path):
    """Through manage.py in a subprocess, against a fresh data directory."""
    env = {**os.environ, "MEDPORTAL_DATA_DIR": str(tmp_path / "data"), "DJANGO_SUPERUSER_PASSWORD": "pw-root"}
    env.pop("DATABASE_URL", None)
    manage = [sys.executable, str(ROOT / "manage.py")]

    def call(*args):
        return subprocess.run([*manage, *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)

    assert call("migrate", "--noinput", "-v0").returncode == 0
    assert call("createsuperuser", "--noinput", "--username", "root", "--email", "root@example.org").returncode == 0

    bad = tmp_path / "bad.json"
    bad.write_text('[{"instruction": "a", "output": "b"},', encoding="utf-8")
    failed = call("import_qa", bad, "--json")
    assert failed.returncode != 0
    error_lines = [line for line in failed.stderr.splitlines() if line.startswith("CommandError")]
    assert len(error_lines) == 1 and "JSON" in error_lines[0]

    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records(3)), encoding="utf-8")
    ok = call("import_qa", good, "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout.strip().splitlines()[-1])["created"] == 3

    # A file over 1 MB reports progress on stderr (without --json).
    large = tmp_path / "large.jsonl"
    rows = [{"instruction": f"大文件第{i}行：" + "慢性咳嗽的常见原因有哪些？" * 8, "output": f"回答{i}：" + "鼻后滴漏、哮喘、胃食管反流。" * 8} for i in range(3000)]
    large.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    assert large.stat().st_size > 1024 * 1024
    progress = call("import_qa", large)
    assert progress.returncode == 0, progress.stderr
    assert "read 3000/3000 rows" in progress.stderr.splitlines()
    assert "3000 created" in progress.stdout
