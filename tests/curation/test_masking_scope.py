"""Masking a pair's identifiers removes every stored copy: content, revisions (history
snapshots included), discussion comments, review comments and the pair's audit events, also
as the Django admin shows them. Audit events never store a pair's or a comment's text."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from curation.models import Comment, QAPair, QAPairRevision, Review
from curation.services import editing, review
from medportal.audit import audit_record
from medportal.models import AuditEvent

S = QAPair.Status
PHONE = "13800138000"
EMAIL = "zhang.san@example.com"
RESIDENT_ID = "110101199003074514"
RECORD = "ZY20230001"
SECRETS = (PHONE, EMAIL, RESIDENT_ID, RECORD)

pytestmark = pytest.mark.django_db


@pytest.fixture
def superuser(django_user_model):
    return django_user_model.objects.create_superuser("root", "root@example.org", "pw")


def stored_text(pair: QAPair) -> str:
    """Everything the database holds about ``pair`` that could carry text."""
    pair.refresh_from_db()
    parts = [json.dumps([getattr(pair, f) for f in ("instruction", "input", "output", "system", "reasoning", "history")], ensure_ascii=False)]
    parts += [json.dumps(r.content, ensure_ascii=False) for r in QAPairRevision.objects.filter(qa_pair=pair)]
    parts += list(Comment.objects.filter(qa_pair=pair).values_list("body", flat=True))
    parts += list(Review.objects.filter(qa_pair=pair).values_list("comment", flat=True))
    for summary, changes in AuditEvent.objects.filter(target_type="curation.qapair", target_id=str(pair.pk)).values_list(
        "summary", "changes"
    ):
        parts += [summary, json.dumps(changes, ensure_ascii=False)]
    return "\n".join(parts)


def flagged_pair_with_discussion(make_pair, curator, clinician):
    pair = make_pair(
        curator,
        instruction=f"住院号：{RECORD}，患者手机 {PHONE}，头痛三天怎么办？",
        output="建议神经内科就诊。",
        history=[[f"邮箱 {EMAIL} 可以联系吗", "可以"]],
    )
    editing.qa_pair_update(pair=pair, editor=curator, version=pair.version, output=f"建议就诊，身份证 {RESIDENT_ID} 带上。")
    review.comment_create(pair=pair, author=clinician, body=f"患者说邮箱是 {EMAIL}，电话 {PHONE}")
    review.qa_pair_submit(pair=pair, actor=curator, version=pair.version)
    review.qa_pair_request_changes(pair=pair, reviewer=clinician, comment=f"去掉身份证号 {RESIDENT_ID}", version=pair.version)
    # An event recorded before audit events stopped holding text (older releases did).
    audit_record(actor=clinician, action="qa_pair.comment", target=pair, summary=f"患者电话 {PHONE}", changes={"body": EMAIL})
    return pair


def test_masking_removes_every_stored_copy_of_the_identifiers(make_pair, curator, clinician):
    pair = flagged_pair_with_discussion(make_pair, curator, clinician)
    assert all(secret in stored_text(pair) for secret in SECRETS)
    editing.qa_pair_mask_identifiers(pair=pair, editor=curator, version=pair.version)
    text = stored_text(pair)
    for secret in SECRETS:
        assert secret not in text, secret
    assert Comment.objects.get(qa_pair=pair).body == "患者说邮箱是 [邮箱]，电话 [手机号]"
    assert Review.objects.get(qa_pair=pair).comment == "去掉身份证号 [身份证号]"
    event = AuditEvent.objects.filter(action="qa_pair.mask").get()
    assert event.changes["kinds"] == {"email": 1, "mobile": 1, "record_number": 1, "resident_id": 1}
    assert event.changes["comment_kinds"] == {"email": 1, "mobile": 1, "resident_id": 1}
    assert pair.status == S.CHANGES_REQUESTED  # masking never changes the status


def test_the_django_admin_shows_no_identifier_after_masking(client, make_pair, curator, clinician, superuser):
    pair = flagged_pair_with_discussion(make_pair, curator, clinician)
    editing.qa_pair_mask_identifiers(pair=pair, editor=curator, version=pair.version)
    client.force_login(superuser)
    pages = [reverse("admin:medportal_auditevent_changelist")]
    pages += [reverse("admin:medportal_auditevent_change", args=[pk]) for pk in AuditEvent.objects.values_list("pk", flat=True)]
    pages += [reverse("admin:curation_comment_change", args=[c.pk]) for c in Comment.objects.all()]
    pages += [reverse("admin:curation_qapairrevision_change", args=[r.pk]) for r in QAPairRevision.objects.all()]
    for url in pages:
        page = client.get(url)
        assert page.status_code == 200, url
        html = page.content.decode()
        for secret in SECRETS:
            assert secret not in html, (url, secret)


def test_audit_events_keep_kinds_and_counts_never_the_text(make_pair, curator, clinician, admin_user):
    pair = editing.qa_pair_create(author=curator, instruction=f"患者手机 {PHONE}，头痛怎么办？", output="就医。")
    review.comment_create(pair=pair, author=clinician, body=f"家属电话 {PHONE}，已联系")
    review.qa_pair_submit(pair=pair, actor=curator, version=pair.version)
    review.qa_pair_reject(pair=pair, reviewer=clinician, comment=f"含有手机号 {PHONE}，退回", version=pair.version)
    review.qa_pair_reopen(pair=pair, actor=admin_user, reason=f"作者核实过 {PHONE}", version=pair.version)
    events = {e.action: e for e in AuditEvent.objects.filter(target_id=str(pair.pk))}
    for event in events.values():
        text = event.summary + json.dumps(event.changes, ensure_ascii=False)
        assert PHONE not in text, event.action
        for words in ("头痛怎么办", "已联系", "退回"):
            assert words not in text, (event.action, words)
    assert events["qa_pair.create"].changes["identifiers"] == {"mobile": 1}
    assert events["qa_pair.comment"].changes["identifiers"] == 1
    assert "[手机号]" in events["qa_pair.reopen"].summary


@pytest.mark.parametrize("status", [S.APPROVED, S.REJECTED])
def test_decided_pairs_can_be_masked_and_keep_their_status(make_pair, curator, status):
    pair = make_pair(curator, instruction=f"电话 {PHONE}，怎么办？", status=status)
    editing.qa_pair_mask_identifiers(pair=pair, editor=curator, version=1)
    pair.refresh_from_db()
    assert PHONE not in pair.instruction and pair.status == status and not pair.has_identifiers
