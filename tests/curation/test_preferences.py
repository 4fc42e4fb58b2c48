"""Preference pairs: creation with flags, review, imports with the row report, versions, exports."""

from __future__ import annotations

import json

import pytest

from curation.importers.preference import read_preference_file
from curation.models import DatasetItem
from curation.models_pref import PreferenceImport, PreferenceItem, PreferencePair
from curation.services import preferences as prefs
from medportal.errors import InvalidInput, InvalidTransition, NotAllowed

S = PreferencePair.Status


def make(author, n: int, **kw) -> PreferencePair:
    fields = {
        "prompt": f"第{n}号问题：高血压患者第{n}次复诊时血压150/95，需要调整用药吗？",
        "chosen": f"回答{n}：需要在医生指导下评估并调整降压方案，同时监测血压。编号{n}",
        "rejected": f"回答{n}：不用管，血压高一点没关系，停药也可以。编号{n}",
        "source_kind": "import",
        **kw,
    }
    return prefs.preference_pair_create(author=author, **fields)


def approve(pair, reviewer, **kw):
    if pair.status == S.DRAFT:
        prefs.preference_pair_submit(pair=pair, actor=pair.author, version=pair.version)
    prefs.preference_pair_review(pair=pair, reviewer=reviewer, decision="approve", version=pair.version, **kw)
    return pair


# --------------------------------------------------------------------------- create


def test_a_pair_is_flagged_for_identifiers_and_near_duplicates(curator):
    long = "回答：需要在医生指导下评估并调整降压方案，同时监测血压。建议低盐饮食，规律运动，戒烟限酒，保持充足睡眠，每天早晚各测一次血压并记录，下次复诊时带上记录供医生参考。如出现头痛、胸闷、视物模糊等症状，应立即就医。"
    first = make(curator, 1, chosen=long)
    assert not first.has_identifiers and first.near_duplicate_of is None
    near = make(curator, 1, chosen=long.replace("低盐", "低钠"))  # one word apart
    assert near.near_duplicate_of_id == first.pk
    flagged = make(curator, 2, prompt="患者张三，手机13812345678，问：头痛怎么办？")
    assert flagged.has_identifiers and flagged.identifiers[0]["kind"] == "mobile" and flagged.identifiers[0]["field"] == "prompt"


def test_duplicates_and_pairs_without_a_preference_are_refused(curator):
    first = make(curator, 3)
    with pytest.raises(prefs.DuplicatePreference) as err:
        make(curator, 3, chosen="  " + first.chosen)
    assert err.value.details["duplicate_of"] == first.pk
    with pytest.raises(InvalidInput, match="same text"):
        make(curator, 4, rejected="回答4：需要在医生指导下评估并调整降压方案，同时监测血压。编号4")
    with pytest.raises(InvalidInput, match="empty"):
        make(curator, 5, chosen="   ")
    assert PreferencePair.objects.count() == 1


# --------------------------------------------------------------------------- review


def test_review_flow_and_permissions(curator, clinician, clinician2, admin_user):
    pair = make(curator, 6)
    with pytest.raises(NotAllowed):
        prefs.preference_pair_submit(pair=pair, actor=clinician, version=pair.version)  # not the author, not a curator
    prefs.preference_pair_submit(pair=pair, actor=curator, version=pair.version)
    assert pair.status == S.IN_REVIEW and pair.review_round == 1
    with pytest.raises(NotAllowed):
        prefs.preference_pair_review(pair=pair, reviewer=curator, decision="approve", version=pair.version)  # curators do not review
    with pytest.raises(InvalidInput, match="comment"):
        prefs.preference_pair_review(pair=pair, reviewer=clinician, decision="reject", version=pair.version)
    from medportal.errors import Conflict

    with pytest.raises(Conflict):
        prefs.preference_pair_review(pair=pair, reviewer=clinician, decision="approve", version=pair.version - 1)
    prefs.preference_pair_review(pair=pair, reviewer=clinician, decision="approve", version=pair.version)
    pair.refresh_from_db()
    assert pair.status == S.APPROVED
    with pytest.raises(InvalidTransition):
        prefs.preference_pair_review(pair=pair, reviewer=clinician2, decision="reject", comment="no", version=pair.version)
    with pytest.raises(NotAllowed):
        prefs.preference_pair_reopen(pair=pair, actor=clinician, reason="x", version=pair.version)
    prefs.preference_pair_reopen(pair=pair, actor=admin_user, reason="re-check", version=pair.version)
    assert pair.status == S.DRAFT


def test_nobody_confirms_their_own_judgement(clinician):
    pair = make(clinician, 7, source_kind="arena_vote", submit=True, judged_by=clinician)
    assert pair.status == S.IN_REVIEW
    with pytest.raises(NotAllowed, match="own"):
        prefs.preference_pair_review(pair=pair, reviewer=clinician, decision="approve", version=pair.version)


def test_identifiers_need_a_confirmation_and_masking_clears_them(curator, clinician):
    pair = make(curator, 8, chosen="请拨打13812345678联系主治医生，调整降压药。编号8", submit=True)
    with pytest.raises(InvalidInput, match="identifier"):
        prefs.preference_pair_review(pair=pair, reviewer=clinician, decision="approve", version=pair.version)
    prefs.preference_pair_mask_identifiers(pair=pair, actor=curator, version=pair.version)
    pair.refresh_from_db()
    assert not pair.has_identifiers and "[手机号]" in pair.chosen and pair.status == S.IN_REVIEW
    prefs.preference_pair_review(pair=pair, reviewer=clinician, decision="approve", version=pair.version)
    assert pair.status == S.APPROVED


# --------------------------------------------------------------------------- import


def test_llamafactory_pairwise_import_with_row_report(curator, tmp_path):
    rows = [
        {"instruction": "高血压能吃党参吗？", "input": "", "chosen": "一般可以，遵医嘱。", "rejected": "绝对不能。", "system": "你是医生", "history": [["你好", "您好"]]},
        {"instruction": "感冒发烧怎么办？", "chosen": "多休息，必要时就医。", "rejected": "多休息，必要时就医。"},  # no preference
        {"instruction": "", "chosen": "a", "rejected": "b"},  # no prompt
        {"instruction": "糖尿病饮食？", "chosen": ["x"], "rejected": "少糖"},  # bad shape
        {"instruction": "高血压能吃党参吗？", "input": "", "chosen": "一般可以，遵医嘱。", "rejected": "绝对不能。", "system": "你是医生", "history": [["你好", "您好"]]},
        {"conversations": [{"from": "human", "value": "胃痛吃什么药？"}], "chosen": {"from": "gpt", "value": "先就医明确病因。"}, "rejected": {"from": "gpt", "value": "随便吃止痛药。"}},
    ]
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    batch = prefs.preference_import(user=curator, path=path)
    assert batch.format == "llamafactory"
    assert (batch.created_count, batch.skipped_count, batch.error_count, batch.duplicate_count) == (2, 2, 1, 1)
    by_row = {i["row"]: i for i in batch.issues}
    assert by_row[2]["kind"] == "skipped" and "same text" in by_row[2]["message"]
    assert by_row[3]["kind"] == "skipped" and "prompt" in by_row[3]["message"]
    assert by_row[4]["kind"] == "error" and "chosen" in by_row[4]["message"]
    assert by_row[5] == {**by_row[5], "kind": "duplicate", "duplicate_of_row": 1}
    first = PreferencePair.objects.get(source_row=1)
    assert (first.system, first.history, first.prompt, first.source_kind, first.status) == ("你是医生", [["你好", "您好"]], "高血压能吃党参吗？", "import", S.DRAFT)
    assert PreferencePair.objects.get(source_row=6).prompt == "胃痛吃什么药？"


def test_trl_jsonl_import_both_shapes(curator, tmp_path):
    lines = [
        {"prompt": "头晕怎么办？", "chosen": "测量血压并就医。", "rejected": "喝酒就好。"},
        {"prompt": [{"role": "system", "content": "你是医生"}, {"role": "user", "content": "咳嗽两周？"}], "chosen": [{"role": "assistant", "content": "建议拍胸片。"}], "rejected": [{"role": "assistant", "content": "不用管。"}]},
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n{broken\n", encoding="utf-8")
    batch = prefs.preference_import(user=curator, path=path, submit=True)
    assert batch.format == "trl" and batch.created_count == 2 and batch.error_count == 1
    pair = PreferencePair.objects.get(prompt="咳嗽两周？")
    assert pair.system == "你是医生" and pair.status == S.IN_REVIEW


def test_a_nul_character_is_a_row_error_and_the_other_rows_import(curator, tmp_path):
    """PostgreSQL refuses NUL in text and jsonb: a NUL in the prompt or an extra column failed
    the whole import there."""
    lines = [
        {"prompt": "头晕\u0000怎么办？", "chosen": "测量血压并就医。", "rejected": "喝酒就好。"},
        {"prompt": "咳嗽两周怎么办？", "chosen": "建议拍胸片。", "rejected": "不用管。", "note": "x\u0000"},
        {"prompt": "发热三天怎么办？", "chosen": "查血常规。", "rejected": "忍着。"},
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n", encoding="utf-8")
    batch = prefs.preference_import(user=curator, path=path)
    assert batch.created_count == 1 and batch.error_count == 2
    assert list(PreferencePair.objects.values_list("prompt", flat=True)) == ["发热三天怎么办？"]


def test_a_file_that_is_not_a_preference_file_imports_nothing(curator, clinician, tmp_path):
    path = tmp_path / "alpaca.json"
    path.write_text(json.dumps([{"instruction": "q", "output": "a"}]), encoding="utf-8")
    with pytest.raises(InvalidInput, match="not a preference file"):
        prefs.preference_import(user=curator, path=path)
    with pytest.raises(NotAllowed):
        prefs.preference_import(user=clinician, path=path)
    assert not PreferenceImport.objects.exists() and not PreferencePair.objects.exists()


# --------------------------------------------------------------------------- versions and exports


@pytest.fixture
def approved(curator, clinician):
    return [approve(make(curator, 100 + n, department="心内科"), clinician) for n in range(12)]


def test_freeze_is_content_hashed_and_seeded(curator, approved):
    v1 = prefs.preference_version_freeze(user=curator, name="p1", split=(0.7, 0.15, 0.15), seed=3)
    v2 = prefs.preference_version_freeze(user=curator, name="p2", split=(0.7, 0.15, 0.15), seed=3)
    v3 = prefs.preference_version_freeze(user=curator, name="p3", split=(0.7, 0.15, 0.15), seed=4)
    assert v1.content_hash == v2.content_hash != v3.content_hash
    assert sum(v1.counts.values()) == 12 and all(v1.counts[s] > 0 for s in ("train", "validation", "test"))
    with pytest.raises(InvalidInput, match="already exists"):
        prefs.preference_version_freeze(user=curator, name="p1")


def test_no_prompt_of_an_evaluation_test_split_enters_training(curator, clinician, approved, make_pair):
    from curation.services.versions import dataset_version_freeze

    # An SFT version whose test split holds the question of approved[0] (same words, other answer).
    qa = [make_pair(curator, status="approved", department="心内科") for _ in range(9)]
    qa.append(make_pair(curator, instruction=approved[0].prompt, status="approved", department="心内科"))
    sft = dataset_version_freeze(user=curator, name="sft", split=(0.5, 0, 0.5), seed=1)
    tested = {prefs.dataset_item_prompt_key(i.content) for i in DatasetItem.objects.filter(version=sft, split="test")}
    leaked_pair = approved[0] if approved[0].prompt_key in tested else None
    if leaked_pair is None:  # the seed put it in train: use a test question instead
        item = DatasetItem.objects.filter(version=sft, split="test").first()
        leaked_pair = approve(make(curator, 999, prompt=item.content["instruction"], department="心内科"), clinician)
    # a second pair with the same prompt follows it into test
    twin = approve(make(curator, 998, prompt=leaked_pair.prompt, department="心内科"), clinician)
    version = prefs.preference_version_freeze(user=curator, name="pv", split=(0.8, 0.1, 0.1), seed=0)
    items = {i.pair_id: i.split for i in PreferenceItem.objects.filter(version=version)}
    assert items[leaked_pair.pk] == "test" and items[twin.pk] == "test"
    assert {h["pair"] for h in version.held_out} >= {leaked_pair.pk}
    assert all("dataset version sft" == h["tested_in"] for h in version.held_out)
    assert not [x for x in prefs.training_leaks() if x["kind"] == "preference"]


def test_freeze_refuses_identifiers(curator, clinician, approved):
    pair = make(curator, 50, prompt="病历号：MR12345678，患者胸痛怎么办？", submit=True)
    prefs.preference_pair_review(pair=pair, reviewer=clinician, decision="approve", version=pair.version, confirm_identifiers=True)
    with pytest.raises(InvalidInput, match="identifiers"):
        prefs.preference_version_freeze(user=curator, name="with-ids")


@pytest.mark.parametrize("fmt", ["llamafactory", "trl", "hf"])
def test_exports_load_with_datasets_and_reimport_to_the_same_pairs(fmt, curator, clinician, approved, tmp_path):
    import datasets

    first = approved[0]
    first.system, first.history = "你是心内科医生", [["你好", "您好，请讲"]]
    prefs.pair_apply_derived(first)
    first.save()
    version = prefs.preference_version_freeze(user=curator, name="exp", split=(0.7, 0.15, 0.15), seed=3)
    paths = prefs.preference_version_export(version=version, format=fmt, out_dir=tmp_path, user=clinician)
    data_files = [p for p in paths if p.suffix in (".json", ".jsonl", ".parquet") and p.name != "dataset_info.json"]
    assert len(data_files) == 3
    from medportal.models import AuditEvent

    event = AuditEvent.objects.get(action="preference_version.export")
    assert event.actor == clinician and event.changes == {"format": fmt, "files": [p.relative_to(tmp_path).as_posix() for p in paths]}
    if fmt == "llamafactory":
        info = json.loads((tmp_path / "dataset_info.json").read_text())
        assert all(entry["ranking"] is True for entry in info.values())
        assert {entry["columns"]["chosen"] for entry in info.values()} == {"chosen"}
    builder = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}[data_files[0].suffix]
    # one dataset per file, as LLaMA-Factory's dataset_info entries load them
    loaded = [datasets.load_dataset(builder, data_files=str(p), split="train") for p in data_files]
    assert sum(len(d) for d in loaded) == 12
    assert {"chosen", "rejected"} <= set(loaded[0].column_names)
    hashes = set()
    for path in data_files:
        _fmt, records, _n = read_preference_file(path)
        for rec in records:
            hashes.add(prefs.preference_derive(prompt=rec.prompt, chosen=rec.chosen, rejected=rec.rejected, system=rec.system, history=rec.history)["content_hash"])
    assert hashes == {p.content_hash for p in PreferencePair.objects.filter(pk__in=[a.pk for a in approved])}
    batch = prefs.preference_import(user=curator, path=data_files[0])  # the same pairs: every row a duplicate
    assert batch.created_count == 0 and batch.duplicate_count == version.counts[data_files[0].stem.rsplit("_", 1)[-1].split("-")[0]]
