"""The import service: create → run, duplicates, near-duplicates, labels, atomicity, dispatch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from curation.models import Department, ImportBatch, QAPair, QAPairRevision, Tag
from curation.services import core
from curation.services import imports as svc
from curation.services.editing import qa_pair_update
from curation.services.imports import (
    derive_many,
    import_batch_create,
    import_batch_dispatch,
)
from curation.workers import imports as worker
from medportal import jobs
from curation.workers.imports import import_batch_run
from medportal.errors import InvalidInput, NotAllowed
from medportal.models import AuditEvent


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.LANGUAGE_CODE = "en"  # messages are asserted in English; the UI default is zh-hans


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", encoding="utf-8")
    return path


def alpaca(n: int, prefix: str = "问题") -> list[dict]:
    return [
        {"instruction": f"{prefix}{i}：慢性胃炎患者第{i}天能不能喝咖啡？", "input": "", "output": f"回答{i}：建议少喝，尤其空腹时，编号{i * 7919}。"}
        for i in range(n)
    ]


def run_file(user, path, **options) -> ImportBatch:
    batch = import_batch_create(user=user, path_or_upload=path, **options)
    assert batch.status == ImportBatch.Status.QUEUED, batch.error
    return import_batch_run(batch_id=batch.pk)


# --------------------------------------------------------------------------- derive


DERIVE_CASES = [
    {"instruction": "高血压患者能吃党参吗？", "input": "", "output": "可以，但需遵医嘱。"},
    {"instruction": "ＡＢＣ全角字母，和兼容字符ﬁ、①", "input": "补充：  多个   空格\t制表", "output": "答：电话13812345678，邮箱 a.b@example.org"},
    {"instruction": "短", "input": "", "output": "是"},
    {"instruction": "Hypertension — what's the first-line drug?", "input": "Patient ID 110105199003071234", "output": "Thiazides; ACE inhibitors."},
    {
        "instruction": "接上文",
        "input": "",
        "output": "继续观察。",
        "system": "你是医生，病历号 MRN: 12345678",
        "reasoning": "先排除急症。",
        "history": [["第一次问：头痛", "第一次答：休息，电话 010-62345678"]],
    },
]


@pytest.mark.parametrize("case", DERIVE_CASES)
def test_the_bulk_derive_path_gives_exactly_what_core_derive_gives(case):
    row = {"input": "", "system": "", "history": [], "reasoning": "", **case}
    derive_many([row])
    expected = core.derive(**case)
    assert row["content_hash"] == expected.content_hash
    assert row["simhash"] == expected.simhash
    assert row["identifiers"] == expected.identifiers
    assert row["has_identifiers"] == expected.has_identifiers
    assert row["search_text"] == expected.search_text


def test_imported_pairs_carry_the_derived_fields_of_core_derive(curator, tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{k: v for k, v in c.items()} for c in DERIVE_CASES[:4]])
    batch = run_file(curator, path)
    assert batch.created_count == 4
    for pair in QAPair.objects.filter(import_batch=batch):
        d = core.derive(instruction=pair.instruction, input=pair.input, output=pair.output, system=pair.system, history=pair.history, reasoning=pair.reasoning)
        assert (pair.content_hash, pair.simhash, pair.identifiers, pair.has_identifiers, pair.search_text) == (
            d.content_hash,
            d.simhash,
            d.identifiers,
            d.has_identifiers,
            d.search_text,
        )
    assert batch.identifier_count == 2


# --------------------------------------------------------------------------- create / run


def test_it_imports_an_alpaca_file_with_provenance_revision_and_audit(curator, tmp_path):
    path = write_jsonl(tmp_path / "gastro.jsonl", alpaca(5))
    batch = run_file(curator, path)
    assert batch.status == ImportBatch.Status.SUCCEEDED and batch.finished_at
    assert (batch.rows_total, batch.rows_done, batch.created_count, batch.duplicate_count) == (5, 5, 5, 0)
    assert batch.format == "alpaca" and batch.encoding
    assert batch.source_path == str(path.resolve()) and not batch.file
    pairs = list(QAPair.objects.filter(import_batch=batch).order_by("source_row"))
    assert [p.source_row for p in pairs] == [1, 2, 3, 4, 5]
    first = pairs[0]
    assert first.author == curator and first.status == QAPair.Status.DRAFT and first.decided_at is None
    assert first.source == "gastro.jsonl (alpaca)"
    # An import stores each text once: revision 1 ("as imported") is written at the first edit.
    assert not QAPairRevision.objects.filter(qa_pair__import_batch=batch).exists()
    as_imported = core.pair_content(first)
    qa_pair_update(pair=first, editor=curator, version=first.version, output=first.output + " 已补充。")
    revs = list(QAPairRevision.objects.filter(qa_pair=first).order_by("number"))
    assert [r.number for r in revs] == [1, 2]
    assert revs[0].content == as_imported and revs[0].editor == curator and revs[0].created_at == first.created_at
    assert revs[1].content["output"].endswith("已补充。")
    run_event = AuditEvent.objects.get(action="import.run", target_id=str(batch.pk))
    assert run_event.actor == curator and run_event.changes["created"] == 5
    assert AuditEvent.objects.filter(action="import.create", target_id=str(batch.pk)).exists()


def test_an_uploaded_file_is_stored_under_media(curator, settings):
    upload = SimpleUploadedFile("up.jsonl", "\n".join(json.dumps(r, ensure_ascii=False) for r in alpaca(2)).encode())
    batch = import_batch_create(user=curator, path_or_upload=upload, filename="up.jsonl")
    assert batch.file.name.startswith("imports/") and not batch.source_path
    assert Path(batch.file.path).is_relative_to(Path(settings.MEDIA_ROOT))
    assert import_batch_run(batch_id=batch.pk).created_count == 2


def test_duplicates_in_the_file_and_in_the_database_are_skipped_and_named(curator, make_pair, tmp_path):
    stored = make_pair(curator, instruction="咳嗽两周需要拍胸片吗？", output="建议就诊，必要时拍胸片。")
    records = alpaca(3)
    records.append(dict(records[0]))  # row 4 repeats row 1
    records.append({"instruction": "咳嗽两周需要拍胸片吗", "input": "", "output": "建议就诊 必要时拍胸片"})  # row 5 = stored, punctuation aside
    batch = run_file(curator, write_jsonl(tmp_path / "d.jsonl", records))
    assert (batch.created_count, batch.duplicate_count) == (3, 2)
    assert batch.created_count + batch.duplicate_count + batch.skipped_count + batch.error_count == batch.rows_total == 5
    by_row = {i["row"]: i for i in batch.issues}
    first = QAPair.objects.get(import_batch=batch, source_row=1)
    assert by_row[4]["kind"] == "duplicate" and by_row[4]["duplicate_of"] == first.pk
    assert "row 1" in by_row[4]["message"]
    assert by_row[5]["duplicate_of"] == stored.pk and f"#{stored.pk}" in by_row[5]["message"]


def test_reimporting_the_same_file_creates_nothing_and_reports_every_row_as_duplicate(curator, tmp_path):
    path = write_jsonl(tmp_path / "again.jsonl", alpaca(6))
    first = run_file(curator, path)
    before = QAPair.objects.count()
    second = run_file(curator, path)
    assert second.created_count == 0 and second.duplicate_count == 6
    assert QAPair.objects.count() == before
    ids = set(QAPair.objects.filter(import_batch=first).values_list("pk", flat=True))
    assert {i["duplicate_of"] for i in second.issues} == ids


def test_near_duplicates_are_flagged_against_stored_pairs_and_earlier_rows(curator, make_pair, tmp_path):
    from curation.lib.fingerprint import hamming

    q1 = "糖尿病患者早餐可以吃燕麦片吗？燕麦富含膳食纤维，升糖指数较低，适量食用有助于控制血糖。"
    a1 = "可以适量吃。建议选择没有额外添加糖的纯燕麦片，搭配鸡蛋或牛奶等优质蛋白，每次控制在五十克左右，并在餐后两小时监测血糖，观察个人反应后再调整用量。"
    q2 = "儿童发烧三十九度应该如何物理降温，什么时候需要去医院？"
    a2 = "可以先用温水擦拭额头、腋窝和腹股沟，多喝水，减少衣物；如果持续高热超过三天、精神差、抽搐或呼吸急促，应立即去医院就诊，不要用酒精擦浴。"
    stored = make_pair(curator, instruction=q1, output=a1)
    records = [
        {"instruction": q1, "input": "", "output": a1 + "谢谢"},  # row 1: near the stored pair
        {"instruction": q2, "input": "", "output": a2},  # row 2: new
        {"instruction": q2, "input": "", "output": a2 + "谢谢"},  # row 3: near row 2
    ]
    sims = [core.derive(instruction=r["instruction"], output=r["output"]).simhash for r in records]
    assert hamming(sims[0], stored.simhash) <= 3 and hamming(sims[2], sims[1]) <= 3  # the premise
    assert hamming(sims[1], stored.simhash) > 3
    batch = run_file(curator, write_jsonl(tmp_path / "near.jsonl", records))
    assert batch.created_count == 3 and batch.near_duplicate_count == 2
    rows = {p.source_row: p for p in QAPair.objects.filter(import_batch=batch)}
    assert rows[1].near_duplicate_of_id == stored.pk
    assert rows[2].near_duplicate_of_id is None
    assert rows[3].near_duplicate_of_id == rows[2].pk


def test_departments_come_from_the_record_or_else_the_option_and_tags_are_linked(curator, tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text(
        "question,answer,department,tags\n"
        "胃痛吃什么药好？,先明确病因，再对症用药。,消化科,胃痛;用药\n"
        "头晕是不是低血压？,不一定，需要测量血压。,,头晕\n",
        encoding="utf-8",
    )
    batch = run_file(curator, path, department="全科")
    assert batch.created_count == 2
    one = QAPair.objects.get(import_batch=batch, source_row=1)
    two = QAPair.objects.get(import_batch=batch, source_row=2)
    assert one.department.name == "消化科" and two.department.name == "全科"
    assert sorted(t.name for t in one.tags.all()) == ["用药", "胃痛"]
    assert [t.name for t in two.tags.all()] == ["头晕"]
    assert set(Department.objects.values_list("name", flat=True)) >= {"消化科", "全科"}
    assert Tag.objects.filter(name="胃痛").count() == 1
    assert core.pair_content(one)["department"] == "消化科" and core.pair_content(one)["tags"] == ["用药", "胃痛"]


def test_a_gb18030_csv_with_an_explicit_mapping_keeps_unmapped_columns_in_extra(curator, tmp_path):
    path = tmp_path / "gbk.csv"
    path.write_bytes("科室,标题,提问,医生回答\n内科,头痛,经常头痛怎么办？,注意休息，必要时就医。\n".encode("gb18030"))
    batch = run_file(curator, path, mapping={"instruction": "标题", "output": "医生回答"})
    assert batch.encoding.lower() == "gb18030" and batch.options["mapping"]["instruction"] == "标题"
    pair = QAPair.objects.get(import_batch=batch)
    assert pair.instruction == "头痛" and pair.output == "注意休息，必要时就医。"
    assert pair.extra.get("提问") == "经常头痛怎么办？"


def test_rows_skipped_or_malformed_are_reported_with_reasons(curator, tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text(
        json.dumps({"instruction": "有效的问题：感冒要吃抗生素吗？", "output": "病毒性感冒不需要。"}, ensure_ascii=False)
        + "\n"
        + json.dumps({"instruction": "没有答案的问题", "output": ""}, ensure_ascii=False)
        + "\n"
        + json.dumps({"instruction": ["不是", "文本"], "output": "x"}, ensure_ascii=False)
        + "\n",
        encoding="utf-8",
    )
    batch = run_file(curator, path)
    assert batch.created_count == 1
    kinds = {i["row"]: i["kind"] for i in batch.issues}
    assert kinds == {2: "skipped", 3: "error"}
    assert batch.skipped_count == 1 and batch.error_count == 1
    assert all(i["message"] for i in batch.issues)


# --------------------------------------------------------------------------- failures


def test_a_truncated_json_file_creates_nothing_and_keeps_the_error(curator, tmp_path):
    path = tmp_path / "cut.json"
    path.write_text(json.dumps(alpaca(3), ensure_ascii=False)[:-40], encoding="utf-8")
    before = (QAPair.objects.count(), QAPairRevision.objects.count())
    batch = import_batch_create(user=curator, path_or_upload=path)
    assert batch.status == ImportBatch.Status.FAILED and batch.error
    assert "JSON" in batch.error or "json" in batch.error
    assert (QAPair.objects.count(), QAPairRevision.objects.count()) == before
    assert import_batch_run(batch_id=batch.pk).status == ImportBatch.Status.FAILED  # not re-run


def test_a_failure_in_the_write_phase_rolls_back_every_pair(curator, tmp_path, monkeypatch):
    rows = alpaca(30)
    for r in rows:
        r["tags"] = ["胃痛"]
    path = write_jsonl(tmp_path / "boom.jsonl", rows)
    real = svc.fast_insert

    def failing(model, rows, *, now):
        if model is QAPair.tags.through:  # the last insert: the pairs are already written
            raise RuntimeError("disk full")
        return real(model, rows, now=now)

    monkeypatch.setattr(svc, "fast_insert", failing)
    before = (QAPair.objects.count(), Tag.objects.count(), QAPairRevision.objects.count())
    batch = run_file(curator, path)
    assert batch.status == ImportBatch.Status.FAILED
    assert "disk full" in batch.error
    assert (QAPair.objects.count(), Tag.objects.count(), QAPairRevision.objects.count()) == before
    assert batch.created_count == 0
    event = AuditEvent.objects.get(action="import.run", target_id=str(batch.pk))
    assert event.changes["status"] == "failed"


def test_a_file_level_error_found_while_reading_creates_nothing(curator, tmp_path, monkeypatch):
    from curation.importers import ImportFileError, ParsedRecord

    path = write_jsonl(tmp_path / "late.jsonl", alpaca(3))
    batch = import_batch_create(user=curator, path_or_upload=path)
    real_open = svc.open_source

    def opened(*args, **kwargs):
        source = real_open(*args, **kwargs)
        records = list(source.records())

        def produce():
            yield from records[:2]
            raise ImportFileError("The file ends in the middle of a record (line 3).")

        source._produce = produce
        assert all(isinstance(r, ParsedRecord) for r in records)
        return source

    monkeypatch.setattr(svc, "open_source", opened)
    before = QAPair.objects.count()
    batch = import_batch_run(batch_id=batch.pk)
    assert batch.status == ImportBatch.Status.FAILED
    assert batch.error == "The file ends in the middle of a record (line 3)."
    assert QAPair.objects.count() == before


def test_a_pair_stored_between_the_two_phases_becomes_a_duplicate(curator, make_pair, tmp_path, monkeypatch):
    records = alpaca(3)
    path = write_jsonl(tmp_path / "race.jsonl", records)
    real_read = svc.import_plan_read
    sneaked = {}

    def read_then_someone_else_writes(batch, options):
        plan = real_read(batch, options)
        sneaked["pair"] = make_pair(curator, instruction=records[1]["instruction"], output=records[1]["output"])
        return plan

    monkeypatch.setattr(worker, "import_plan_read", read_then_someone_else_writes)
    batch = run_file(curator, path)
    assert (batch.created_count, batch.duplicate_count) == (2, 1)
    assert batch.issues[0]["row"] == 2 and batch.issues[0]["duplicate_of"] == sneaked["pair"].pk


def test_an_unexpected_error_is_stored_on_the_batch(curator, tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "x.jsonl", alpaca(2))
    batch = import_batch_create(user=curator, path_or_upload=path)
    monkeypatch.setattr(svc, "derive_many", lambda rows: 1 / 0)
    batch = import_batch_run(batch_id=batch.pk)
    assert batch.status == ImportBatch.Status.FAILED
    assert "ZeroDivisionError" in batch.error


def test_a_missing_path_is_a_failed_batch_with_nothing_else(curator, tmp_path):
    batch = import_batch_create(user=curator, path_or_upload=tmp_path / "nope.json")
    assert batch.status == ImportBatch.Status.FAILED and "does not exist" in batch.error
    assert QAPair.objects.count() == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"format": "yaml"}, "Unknown format 'yaml'"),
        ({"encoding": "klingon-8"}, "Unknown encoding 'klingon-8'"),
        ({"mapping": {"question": "ask"}}, "Unknown field 'question'"),
        ({"status": "in_review"}, "Unknown status 'in_review'"),
    ],
)
def test_bad_options_are_refused_before_anything_is_saved(curator, tmp_path, options, message):
    path = write_jsonl(tmp_path / "o.jsonl", alpaca(1))
    with pytest.raises(InvalidInput, match=message):
        import_batch_create(user=curator, path_or_upload=path, **options)
    assert ImportBatch.objects.count() == 0


def test_clinicians_cannot_import(clinician, tmp_path):
    with pytest.raises(NotAllowed):
        import_batch_create(user=clinician, path_or_upload=write_jsonl(tmp_path / "c.jsonl", alpaca(1)))


# --------------------------------------------------------------------------- approved status


def test_approved_status_is_refused_for_curators(curator, tmp_path):
    with pytest.raises(NotAllowed, match="Only admins"):
        import_batch_create(user=curator, path_or_upload=write_jsonl(tmp_path / "a.jsonl", alpaca(1)), status="approved")
    assert ImportBatch.objects.count() == 0


def test_admins_can_import_approved_pairs_and_it_is_audited(admin_user, tmp_path):
    batch = run_file(admin_user, write_jsonl(tmp_path / "ok.jsonl", alpaca(4)), status="approved")
    pairs = QAPair.objects.filter(import_batch=batch)
    assert pairs.count() == 4
    assert set(pairs.values_list("status", flat=True)) == {QAPair.Status.APPROVED}
    assert all(p.decided_at is not None for p in pairs)
    event = AuditEvent.objects.get(action="import.approved_status")
    assert event.actor == admin_user and event.target_id == str(batch.pk)
    assert event.changes == {"batch": batch.pk, "count": 4}


# --------------------------------------------------------------------------- claiming and dispatch


def test_a_batch_runs_only_once_even_if_the_task_is_delivered_twice(curator, tmp_path):
    batch = import_batch_create(user=curator, path_or_upload=write_jsonl(tmp_path / "t.jsonl", alpaca(3)))
    assert import_batch_run(batch_id=batch.pk).created_count == 3
    again = import_batch_run(batch_id=batch.pk)
    assert again.status == ImportBatch.Status.SUCCEEDED and again.created_count == 3
    assert QAPair.objects.count() == 3
    assert AuditEvent.objects.filter(action="import.run").count() == 1


def test_a_running_batch_is_not_claimed_by_a_second_worker(curator, tmp_path):
    batch = import_batch_create(user=curator, path_or_upload=write_jsonl(tmp_path / "r.jsonl", alpaca(3)))
    ImportBatch.objects.filter(pk=batch.pk).update(status=ImportBatch.Status.RUNNING)
    assert import_batch_run(batch_id=batch.pk).status == ImportBatch.Status.RUNNING
    assert QAPair.objects.count() == 0


def test_small_files_run_inline(curator, tmp_path, settings):
    settings.MEDPORTAL_IMPORT_INLINE_MAX_BYTES = 1024 * 1024
    batch = import_batch_create(user=curator, path_or_upload=write_jsonl(tmp_path / "s.jsonl", alpaca(3)))
    assert import_batch_dispatch(batch=batch).status == ImportBatch.Status.SUCCEEDED


def test_large_files_are_enqueued_with_the_id_only_after_commit(curator, tmp_path, settings, monkeypatch, django_capture_on_commit_callbacks):
    settings.MEDPORTAL_IMPORT_INLINE_MAX_BYTES = 10
    calls = []
    monkeypatch.setattr("django_q.tasks.async_task", lambda *args, **kwargs: calls.append((args, kwargs)))
    batch = import_batch_create(user=curator, path_or_upload=write_jsonl(tmp_path / "big.jsonl", alpaca(3)))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        result = import_batch_dispatch(batch=batch)
        assert result.status == ImportBatch.Status.QUEUED and calls == []
    assert len(callbacks) == 1
    callbacks[0]()
    assert calls == [(("curation.tasks.import_batch_task", batch.pk), {"hook": "medportal.jobs.task_hook", "task_name": f"import-{batch.pk}"})]


def test_the_task_runs_the_batch_and_returns_its_counts(curator, tmp_path):
    from curation.tasks import import_batch_task

    batch = import_batch_create(user=curator, path_or_upload=write_jsonl(tmp_path / "task.jsonl", alpaca(3)))
    result = import_batch_task(batch.pk)
    assert result["status"] == "succeeded" and result["created"] == 3 and result["batch"] == batch.pk


def test_a_task_that_died_leaves_its_error_on_the_batch(curator, tmp_path):
    from types import SimpleNamespace

    from medportal.jobs import task_hook

    batch = import_batch_create(user=curator, path_or_upload=write_jsonl(tmp_path / "dead.jsonl", alpaca(3)))
    ImportBatch.objects.filter(pk=batch.pk).update(status=ImportBatch.Status.RUNNING)
    task_hook(SimpleNamespace(success=False, func="curation.tasks.import_batch_task", args=(batch.pk,), id="t1", result="MemoryError"))
    batch.refresh_from_db()
    assert batch.status == ImportBatch.Status.FAILED and "MemoryError" in batch.error


def test_a_broker_failure_when_enqueueing_is_stored_on_the_batch(curator, tmp_path, monkeypatch):
    def down(*args, **kwargs):
        raise ConnectionError("redis is down")

    monkeypatch.setattr("django_q.tasks.async_task", down)
    batch = import_batch_create(user=curator, path_or_upload=write_jsonl(tmp_path / "q.jsonl", alpaca(1)))
    jobs.enqueue("import", batch.pk)
    batch.refresh_from_db()
    assert batch.status == ImportBatch.Status.FAILED and "redis is down" in batch.error


def test_progress_is_written_while_reading(curator, tmp_path, monkeypatch):
    monkeypatch.setattr(svc, "CHUNK", 10)
    seen = []
    real = svc._progress
    monkeypatch.setattr(svc, "_progress", lambda batch, done, total: (seen.append((done, total)), real(batch, done, total)))
    batch = run_file(curator, write_jsonl(tmp_path / "p.jsonl", alpaca(25)))
    assert batch.created_count == 25
    assert [d for d, _ in seen] == [0, 10, 20, 25, 25]
    assert all(total == 25 for _, total in seen)


def test_the_counts_shown_everywhere_come_from_one_function(curator, tmp_path):
    batch = run_file(curator, write_jsonl(tmp_path / "r.jsonl", alpaca(2)))
    counts = svc.import_batch_counts(batch)
    assert counts == {"created": 2, "duplicates": 0, "near_duplicates": 0, "skipped": 0, "errors": 0, "identifiers": 0, "rows": 2}


def test_fast_insert_stores_exactly_what_the_orm_stores(curator):
    from django.utils import timezone

    from curation.models import Department

    dept = Department.objects.create(name="神经内科")
    now = timezone.now()
    fields = {
        "instruction": "头痛\n伴呕吐",
        "input": "",
        "output": "尽快就医。",
        "system": "你是医生",
        "history": [["上一次问", "上一次答"]],
        "reasoning": "排除颅内压增高",
        "disease_codes": ["ICD10:R51"],
        "status": "approved",
        "decided_at": now,
        "author_id": curator.pk,
        "department_id": dept.pk,
        "source": "x.json (alpaca)",
        "source_ref": "ref-1",
        "source_row": 7,
        "extra": {"file": "a/b.json", "备注": None, "n": 1.5},
        "simhash": -(2**63) + 5,
        "identifiers": [{"field": "output", "kind": "mobile", "start": 0, "end": 11, "text": "13812345678"}],
        "has_identifiers": True,
        "search_text": "头痛 伴呕 呕吐",
    }
    svc.fast_insert(QAPair, [{**fields, "content_hash": "a" * 64}], now=now)
    QAPair.objects.create(**{**fields, "content_hash": "b" * 64})
    fast, orm = (QAPair.objects.filter(content_hash=h).values().get() for h in ("a" * 64, "b" * 64))
    for key in ("id", "content_hash", "created_at", "updated_at"):
        fast.pop(key), orm.pop(key)
    assert fast == orm
    stored = QAPair.objects.get(content_hash="a" * 64)
    assert stored.created_at == stored.updated_at == now


def test_a_batch_cancelled_while_it_runs_stores_nothing(curator, tmp_path, monkeypatch):
    monkeypatch.setattr(svc, "CHUNK", 10)
    real = svc.derive_many
    batch = import_batch_create(user=curator, path_or_upload=write_jsonl(tmp_path / "c.jsonl", alpaca(35)))

    def cancel_during_the_read(rows):
        jobs.request_cancel("import", batch.pk)  # someone cancels while the worker reads
        return real(rows)

    monkeypatch.setattr(svc, "derive_many", cancel_during_the_read)
    ended = import_batch_run(batch_id=batch.pk)
    assert ended.status == ImportBatch.Status.CANCELLED and ended.error == "" and ended.finished_at
    assert not QAPair.objects.exists()


def test_a_batch_cancelled_before_its_write_phase_commits_stores_nothing(curator, tmp_path, monkeypatch):
    real = worker.import_plan_write
    batch = import_batch_create(user=curator, path_or_upload=write_jsonl(tmp_path / "w.jsonl", alpaca(5)))
    written = []

    def cancel_then_write(batch_row, options, plan):
        jobs.request_cancel("import", batch.pk)  # the cancel lands between the read and the write phase
        try:
            real(batch_row, options, plan)
        finally:
            written.append(True)

    monkeypatch.setattr(worker, "import_plan_write", cancel_then_write)
    ended = import_batch_run(batch_id=batch.pk)
    assert written  # the write phase ran, inserted, and rolled back at its conditional succeed
    assert ended.status == ImportBatch.Status.CANCELLED and ended.created_count == 0
    assert not QAPair.objects.exists()


@pytest.mark.django_db
def test_an_import_with_a_nul_character_stores_the_other_rows_and_reports_the_row(curator, tmp_path):
    """On PostgreSQL a NUL reached the INSERT and failed the whole batch (DataError)."""
    path = tmp_path / "nul.jsonl"
    path.write_text(
        json.dumps({"instruction": "坏\u0000问题", "output": "答"}, ensure_ascii=False) + "\n"
        + json.dumps({"instruction": "好问题：咳嗽怎么办", "output": "多喝水", "meta": "x\u0000"}, ensure_ascii=False) + "\n"
        + json.dumps({"instruction": "第二个好问题：发热怎么办", "output": "休息"}, ensure_ascii=False) + "\n",
        encoding="utf-8",
    )
    batch = run_file(curator, path)
    assert batch.status == ImportBatch.Status.SUCCEEDED, batch.error
    assert list(QAPair.objects.filter(import_batch=batch).values_list("instruction", flat=True)) == ["第二个好问题：发热怎么办"]
    assert batch.error_count == 2
