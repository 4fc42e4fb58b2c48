"""curation/services/editing.py: label validation, edits, masking and bulk labelling."""

from __future__ import annotations

import pytest

from curation.models import QAPair
from curation.services import editing
from medportal.errors import Conflict, InvalidInput, NotAllowed
from medportal.models import AuditEvent

S = QAPair.Status



@pytest.mark.parametrize(
    "raw, clean",
    [
        ("ICD10:E11.9", ["ICD10:E11.9"]),
        ("icd10: e11.9", ["ICD10:E11.9"]),
        ("ORPHA:558, OMIM:154700", ["ORPHA:558", "OMIM:154700"]),
        ("HPO:HP:0001166；HP:0000098", ["HPO:HP:0001166", "HPO:HP:0000098"]),
        ("马凡综合征、ICD11:LD28.01", ["马凡综合征", "ICD11:LD28.01"]),
        (["Note: from chart", "ORPHA:558", "ORPHA:558"], ["Note: from chart", "ORPHA:558"]),
        ("", []),
    ],
)
def test_disease_codes_are_checked_loosely(raw, clean):
    assert editing.disease_codes_clean(raw) == clean


@pytest.mark.parametrize("raw", ["ICD10:11.9", "ORPHA:five", "OMIM:12345", "HPO:0001166", "HPO:HP:12"])
def test_malformed_codes_of_a_known_system_are_refused(raw):
    with pytest.raises(InvalidInput) as exc:
        editing.disease_codes_clean(raw)
    assert raw in exc.value.details["disease_codes"][0]


def test_tags_accept_chinese_separators():
    assert editing.split_list("发热，儿童、 急诊;发热") == ["发热", "儿童", "急诊"]


def test_an_edit_that_changes_nothing_writes_nothing(make_pair, curator):
    pair = make_pair(curator, tags=["a", "b"], department="儿科")
    editing.qa_pair_update(pair=pair, editor=curator, version=1, output=pair.output, tags="b, a", department="儿科")
    pair.refresh_from_db()
    assert pair.version == 1
    assert not AuditEvent.objects.exists()


def test_an_edit_updates_derived_fields_and_records_a_revision(make_pair, curator):
    pair = make_pair(curator)
    editing.qa_pair_update(pair=pair, editor=curator, version=1, instruction="患者邮箱 li@example.com，失眠怎么办？")
    pair.refresh_from_db()
    assert pair.has_identifiers and pair.identifiers[0]["kind"] == "email"
    assert "失眠" in pair.search_text
    assert pair.revisions.count() == 2
    event = AuditEvent.objects.get(action="qa_pair.edit")
    assert event.changes["fields"] == ["instruction"]


def test_an_edit_into_an_existing_pairs_content_is_refused(make_pair, curator):
    a = make_pair(curator, instruction="甲问题？", output="甲回答。")
    b = make_pair(curator)
    with pytest.raises(InvalidInput) as exc:
        editing.qa_pair_update(pair=b, editor=curator, version=1, instruction="甲问题？", output="甲回答。")
    assert exc.value.details["duplicate_of"] == a.pk
    b.refresh_from_db()
    assert b.version == 1


def test_an_edit_empties_no_required_field(make_pair, curator):
    pair = make_pair(curator)
    with pytest.raises(InvalidInput) as exc:
        editing.qa_pair_update(pair=pair, editor=curator, version=1, output="   ")
    assert "output" in exc.value.details


def test_unknown_fields_are_refused(make_pair, curator):
    pair = make_pair(curator)
    with pytest.raises(InvalidInput):
        editing.qa_pair_update(pair=pair, editor=curator, version=1, status="approved")


def test_only_curators_create(clinician):
    with pytest.raises(NotAllowed):
        editing.qa_pair_create(author=clinician, instruction="问", output="答")


def test_masking_covers_every_text_field_and_the_history(make_pair, curator):
    pair = make_pair(
        curator,
        instruction="身份证 110101199003074514 的患者咳嗽？",
        output="请联系 13800138000。",
        history=[["邮箱 a.b@example.com", "收到"]],
    )
    editing.qa_pair_mask_identifiers(pair=pair, editor=curator, version=1)
    pair.refresh_from_db()
    text = pair.instruction + pair.output + str(pair.history)
    for secret in ("110101199003074514", "13800138000", "a.b@example.com"):
        assert secret not in text
    assert "[身份证号]" in pair.instruction and "[邮箱]" in pair.history[0][0]
    assert pair.has_identifiers is False


def test_bulk_label_skips_locked_pairs_and_reports_them(make_pair, curator):
    a = make_pair(curator)
    locked = make_pair(curator, status=S.IN_REVIEW, review_round=1)
    result = editing.qa_pair_bulk_label(actor=curator, versions={a.pk: 1, locked.pk: 1}, add_tag="复核")
    assert result.done == [a.pk]
    assert list(result.skipped) == [locked.pk]
    assert [t.name for t in QAPair.objects.get(pk=a.pk).tags.all()] == ["复核"]


def test_bulk_label_needs_something_to_apply(make_pair, curator):
    a = make_pair(curator)
    with pytest.raises(InvalidInput):
        editing.qa_pair_bulk_label(actor=curator, versions={a.pk: 1})


def test_bulk_label_with_a_stale_version_writes_nothing(make_pair, curator):
    a, b = make_pair(curator), make_pair(curator)
    with pytest.raises(Conflict):
        editing.qa_pair_bulk_label(actor=curator, versions={a.pk: 1, b.pk: 7}, department="急诊科")
    assert not QAPair.objects.filter(department__isnull=False).exists()
    assert not AuditEvent.objects.exists()
