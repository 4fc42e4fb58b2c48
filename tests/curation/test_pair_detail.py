"""The pair detail page (highlighted identifiers, reviews, comments, revisions with diffs,
audit events), the inline review form, masking, and the create / edit pages."""

from __future__ import annotations

from django.urls import reverse

from curation import selectors
from curation.models import QAPair, Review
from curation.services import editing, review
from medportal.models import AuditEvent

S = QAPair.Status
PHONE = "13800138000"



def detail(pk):
    return reverse("curation:pair-detail", args=[pk])


# --- highlighting -----------------------------------------------------------------------------


def test_identifier_segments_cut_text_around_each_finding():
    text = "电话13800138000请回电"
    segs = selectors.identifier_segments(text, [{"kind": "mobile", "start": 2, "end": 13, "text": PHONE}])
    assert [(s.text, s.kind) for s in segs] == [("电话", ""), (PHONE, "mobile"), ("请回电", "")]


def test_identifier_segments_ignore_stale_and_overlapping_findings():
    text = "abc 123"
    segs = selectors.identifier_segments(
        text,
        [
            {"kind": "x", "start": 0, "end": 3, "text": "abc"},
            {"kind": "y", "start": 1, "end": 2, "text": "b"},  # overlaps: dropped
            {"kind": "z", "start": 4, "end": 7, "text": "999"},  # text no longer there: dropped
            {"kind": "w", "start": 5, "end": 99, "text": "?"},  # out of range: dropped
        ],
    )
    assert [(s.text, s.kind) for s in segs] == [("abc", "x"), (" 123", "")]


def test_the_detail_page_marks_identifiers_and_escapes_the_text(client, make_pair, curator):
    pair = make_pair(curator, instruction=f"<script>alert(1)</script> 患者电话{PHONE}，咳嗽怎么办？")
    client.force_login(curator)
    html = client.get(detail(pair.pk)).content.decode()
    assert f'<mark class="pii" data-kind="mobile" title="mobile">{PHONE}</mark>' in html
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_identifiers_in_the_history_are_marked_too(client, make_pair, curator):
    pair = make_pair(curator, history=[[f"我的电话是{PHONE}", "好的"]])
    client.force_login(curator)
    html = client.get(detail(pair.pk)).content.decode()
    section = html.split('data-field="history"')[1].split("</div></div>")[0]
    assert f'data-kind="mobile" title="mobile">{PHONE}</mark>' in section


# --- the page ---------------------------------------------------------------------------------


def test_the_detail_page_shows_labels_reviews_comments_revisions_and_events(client, make_pair, curator, clinician):
    pair = make_pair(
        curator, department="儿科", tags=["发热"], disease_codes=["ICD10:R50.9"], source="cmedqa", source_ref="row-7"
    )
    editing.qa_pair_update(pair=pair, editor=curator, version=1, output="多喝水，注意体温变化。", note="补充")
    pair.refresh_from_db()
    review.qa_pair_submit(pair=pair, actor=curator, version=pair.version)
    pair.refresh_from_db()
    review.qa_pair_request_changes(pair=pair, reviewer=clinician, comment="请说明何时就医", version=pair.version)
    review.comment_create(pair=pair, author=clinician, body="参考儿科指南")
    client.force_login(clinician)
    response = client.get(detail(pair.pk))
    html = response.content.decode()
    assert response.status_code == 200
    assert "儿科" in html and "发热" in html and "ICD10:R50.9" in html and "row-7" in html
    assert "请说明何时就医" in html and "参考儿科指南" in html
    assert 'data-revision="2"' in html and 'data-revision="1"' in html
    assert "<ins>" in html and "<del>" in html
    for action in ("qa_pair.edit", "qa_pair.submit", "qa_pair.request_changes", "qa_pair.comment"):
        assert f'data-action="{action}"' in html
    assert 'data-status="changes_requested"' in html


def test_the_detail_page_links_the_near_duplicate(client, make_pair, curator):
    original = make_pair(curator)
    copy = make_pair(curator, near_duplicate_of=original)
    client.force_login(curator)
    html = client.get(detail(copy.pk)).content.decode()
    assert f'data-near-duplicate="{original.pk}"' in html


def test_the_detail_page_is_404_for_a_missing_pair(client, curator):
    client.force_login(curator)
    assert client.get(detail(424242)).status_code == 404


def test_buttons_follow_the_rules(client, make_pair, curator, clinician, admin_user):
    draft = make_pair(curator, instruction=f"电话{PHONE}，头痛怎么办？")
    client.force_login(curator)
    html = client.get(detail(draft.pk)).content.decode()
    assert reverse("curation:pair-edit", args=[draft.pk]) in html
    assert reverse("curation:pair-submit", args=[draft.pk]) in html
    assert 'id="mask-button"' in html
    assert 'id="review-form"' not in html
    client.force_login(clinician)
    html = client.get(detail(draft.pk)).content.decode()
    assert reverse("curation:pair-edit", args=[draft.pk]) not in html
    assert 'id="mask-button"' not in html
    approved = make_pair(curator, status=S.APPROVED)
    client.force_login(admin_user)
    html = client.get(detail(approved.pk)).content.decode()
    assert reverse("curation:pair-reopen", args=[approved.pk]) in html
    assert reverse("curation:pair-edit", args=[approved.pk]) not in html


# --- diffs ------------------------------------------------------------------------------------


def test_text_diff_is_character_level_for_chinese():
    segs = selectors.text_diff("每日一次，饭后服用。", "每日两次，饭前服用。")
    assert [(s.kind, s.text) for s in segs if s.kind != "eq"] == [("del", "一"), ("ins", "两"), ("del", "后"), ("ins", "前")]


def test_text_diff_is_word_level_for_english():
    segs = selectors.text_diff("take one tablet daily", "take two tablets daily")
    assert [(s.kind, s.text) for s in segs if s.kind != "eq"] == [
        ("del", "one"),
        ("ins", "two"),
        ("del", "tablet"),
        ("ins", "tablets"),
    ]


def test_text_diff_shortens_long_unchanged_stretches():
    old = "甲" * 500 + "乙"
    segs = selectors.text_diff(old, "甲" * 500 + "丙")
    assert any(s.kind == "skip" for s in segs)
    assert sum(len(s.text) for s in segs if s.kind == "eq") < 200


def test_revision_diffs_compare_each_revision_with_the_one_before(make_pair, curator):
    pair = make_pair(curator, tags=["a"])
    editing.qa_pair_update(pair=pair, editor=curator, version=1, tags="a, b", difficulty="easy")
    views = selectors.qa_pair_revisions(pair)
    assert [v.revision.number for v in views] == [2, 1]
    assert {d.name for d in views[0].diffs} == {"tags", "difficulty"}
    assert views[1].diffs == []


# --- inline review ----------------------------------------------------------------------------


def _in_review(make_pair, author):
    pair = make_pair(author)
    review.qa_pair_submit(pair=pair, actor=author, version=1)
    pair.refresh_from_db()
    return pair


def test_a_clinician_approves_inline(client, make_pair, curator, clinician):
    pair = _in_review(make_pair, curator)
    client.force_login(clinician)
    html = client.get(detail(pair.pk)).content.decode()
    assert 'id="review-form"' in html
    response = client.post(reverse("curation:pair-review", args=[pair.pk]), {"decision": "approve", "version": pair.version})
    assert response.status_code == 302
    pair.refresh_from_db()
    assert pair.status == S.APPROVED


def test_rejecting_without_a_comment_keeps_the_form_and_says_why(client, make_pair, curator, clinician):
    pair = _in_review(make_pair, curator)
    client.force_login(clinician)
    response = client.post(
        reverse("curation:pair-review", args=[pair.pk]), {"decision": "reject", "comment": "", "version": pair.version}
    )
    assert response.status_code == 400
    assert "comment is required" in response.content.decode()
    assert response.context["review_form"].data["decision"] == "reject"
    pair.refresh_from_db()
    assert pair.status == S.IN_REVIEW and not Review.objects.exists()


def test_a_stale_review_is_a_conflict_that_keeps_the_comment(client, make_pair, curator, clinician, clinician2, settings):
    settings.MEDPORTAL_REVIEW_QUORUM = 2
    pair = _in_review(make_pair, curator)
    stale = pair.version  # clinician opened the page now
    review.qa_pair_approve(pair=QAPair.objects.get(pk=pair.pk), reviewer=clinician2, version=stale)
    client.force_login(clinician)
    response = client.post(
        reverse("curation:pair-review", args=[pair.pk]), {"decision": "request_changes", "comment": "剂量不对", "version": stale}
    )
    assert response.status_code == 409
    html = response.content.decode()
    assert "changed by clinician2" in html
    assert "剂量不对" in html
    assert response.context["review_form"]["version"].value() == str(stale + 1)
    assert Review.objects.count() == 1


def test_the_author_sees_no_review_form(client, make_pair, admin_user):
    pair = _in_review(make_pair, admin_user)
    client.force_login(admin_user)
    html = client.get(detail(pair.pk)).content.decode()
    assert 'id="review-form"' not in html
    response = client.post(reverse("curation:pair-review", args=[pair.pk]), {"decision": "approve", "version": pair.version})
    assert response.status_code == 403


def test_reviewing_from_the_queue_returns_to_the_queue(client, make_pair, curator, clinician):
    pair = _in_review(make_pair, curator)
    client.force_login(clinician)
    queue = reverse("curation:review-queue")
    response = client.post(
        reverse("curation:pair-review", args=[pair.pk]), {"decision": "approve", "version": pair.version, "next": queue}
    )
    assert response["Location"] == queue
    evil = client.post(
        reverse("curation:pair-review", args=[pair.pk]), {"decision": "approve", "version": 9, "next": "https://evil.example/"}
    )
    assert "evil.example" not in evil.get("Location", "")


# --- submit, mask, reopen, comment from the page ----------------------------------------------


def test_submitting_from_the_page(client, make_pair, curator):
    pair = make_pair(curator)
    client.force_login(curator)
    response = client.post(reverse("curation:pair-submit", args=[pair.pk]), {"version": 1})
    assert response.status_code == 302
    pair.refresh_from_db()
    assert pair.status == S.IN_REVIEW


def test_submitting_twice_from_a_stale_page_is_a_conflict(client, make_pair, curator):
    pair = make_pair(curator)
    client.force_login(curator)
    client.post(reverse("curation:pair-submit", args=[pair.pk]), {"version": 1})
    response = client.post(reverse("curation:pair-submit", args=[pair.pk]), {"version": 1})
    assert response.status_code == 409
    assert "changed by curator" in response.content.decode()


def test_masking_replaces_identifiers_and_scrubs_history(client, make_pair, curator):
    pair = make_pair(curator, instruction=f"患者电话{PHONE}，头痛三天怎么办？", output="建议就医。")
    client.force_login(curator)
    response = client.post(reverse("curation:pair-mask", args=[pair.pk]), {"version": 1})
    assert response.status_code == 302
    pair.refresh_from_db()
    assert PHONE not in pair.instruction
    assert "[手机号]" in pair.instruction
    assert not pair.has_identifiers and pair.identifiers == []
    assert pair.version == 2 and pair.status == S.DRAFT
    revisions = list(pair.revisions.order_by("number"))
    assert len(revisions) == 2
    assert all(PHONE not in r.content["instruction"] for r in revisions)
    event = AuditEvent.objects.get(action="qa_pair.mask")
    assert event.changes["kinds"] == {"mobile": 1}
    assert PHONE not in str(event.changes) + event.summary


def test_masking_a_pair_without_identifiers_says_so(client, make_pair, curator):
    pair = make_pair(curator)
    client.force_login(curator)
    response = client.post(reverse("curation:pair-mask", args=[pair.pk]), {"version": 1})
    assert response.status_code == 409
    assert "no identifiers" in response.content.decode()


def test_an_admin_reopens_from_the_page_with_a_reason(client, make_pair, curator, admin_user):
    pair = make_pair(curator, status=S.REJECTED)
    client.force_login(admin_user)
    missing = client.post(reverse("curation:pair-reopen", args=[pair.pk]), {"reason": "", "version": 1})
    assert missing.status_code == 400
    ok = client.post(reverse("curation:pair-reopen", args=[pair.pk]), {"reason": "指南更新", "version": 1})
    assert ok.status_code == 302
    pair.refresh_from_db()
    assert pair.status == S.DRAFT


def test_commenting_from_the_page(client, make_pair, curator, clinician):
    pair = make_pair(curator)
    client.force_login(clinician)
    response = client.post(reverse("curation:pair-comment", args=[pair.pk]), {"body": "需要引用来源"})
    assert response.status_code == 302
    assert pair.comments.get().body == "需要引用来源"
    empty = client.post(reverse("curation:pair-comment", args=[pair.pk]), {"body": "  "})
    assert empty.status_code == 400
    assert pair.comments.count() == 1


# --- create and edit --------------------------------------------------------------------------


def test_a_curator_creates_a_draft(client, curator):
    client.force_login(curator)
    assert client.get(reverse("curation:pair-create")).status_code == 200
    response = client.post(
        reverse("curation:pair-create"),
        {
            "instruction": "孩子发烧39度怎么办？",
            "output": "物理降温，必要时服用退热药并就医。",
            "department": "儿科",
            "tags": "发热，儿童",
            "disease_codes": "ICD10:r50.9, hp:0001945, 发热待查",
            "difficulty": "easy",
            "history": '[["孩子几岁？", "三岁"]]',
        },
    )
    assert response.status_code == 302
    pair = QAPair.objects.get()
    assert response["Location"] == detail(pair.pk)
    assert pair.status == S.DRAFT and pair.author == curator
    assert pair.department.name == "儿科"
    assert sorted(t.name for t in pair.tags.all()) == ["儿童", "发热"]
    assert pair.disease_codes == ["ICD10:R50.9", "HPO:HP:0001945", "发热待查"]
    assert pair.history == [["孩子几岁？", "三岁"]]
    assert pair.revisions.count() == 1
    assert AuditEvent.objects.filter(action="qa_pair.create").count() == 1


def test_creating_a_duplicate_is_refused_and_keeps_the_input(client, make_pair, curator):
    existing = make_pair(curator, instruction="头痛怎么办？", output="休息。")
    client.force_login(curator)
    response = client.post(reverse("curation:pair-create"), {"instruction": "头痛怎么办？", "output": "休息。", "tags": "神经"})
    assert response.status_code == 400
    html = response.content.decode()
    assert f"#{existing.pk}" in html
    assert 'value="神经"' in html
    assert QAPair.objects.count() == 1


def test_bad_disease_codes_and_history_are_explained(client, curator):
    client.force_login(curator)
    response = client.post(
        reverse("curation:pair-create"), {"instruction": "问", "output": "答", "disease_codes": "OMIM:12", "history": "[1, 2]"}
    )
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert "history" in errors
    response = client.post(
        reverse("curation:pair-create"), {"instruction": "问", "output": "答", "disease_codes": "OMIM:12, ORPHA:abc"}
    )
    errors = response.context["form"].errors
    assert "OMIM:12" in str(errors["disease_codes"]) and "ORPHA:abc" in str(errors["disease_codes"])
    assert not QAPair.objects.exists()


def test_editing_from_the_page_saves_content_and_labels(client, make_pair, curator):
    pair = make_pair(curator, tags=["旧标签"])
    client.force_login(curator)
    page = client.get(reverse("curation:pair-edit", args=[pair.pk]))
    assert page.status_code == 200
    data = {**page.context["form"].initial, "output": "新的回答：多休息。", "tags": "新标签", "history": ""}
    response = client.post(reverse("curation:pair-edit", args=[pair.pk]), data)
    assert response.status_code == 302
    pair.refresh_from_db()
    assert pair.output == "新的回答：多休息。"
    assert [t.name for t in pair.tags.all()] == ["新标签"]
    assert pair.version == 2


def test_an_edit_conflict_keeps_what_the_user_typed(client, make_pair, curator, curator2):
    pair = make_pair(curator)
    client.force_login(curator)
    data = {**client.get(reverse("curation:pair-edit", args=[pair.pk])).context["form"].initial, "history": ""}
    editing.qa_pair_update(pair=pair, editor=curator2, version=1, difficulty="hard")
    response = client.post(reverse("curation:pair-edit", args=[pair.pk]), {**data, "output": "我的新回答"})
    assert response.status_code == 409
    html = response.content.decode()
    assert "changed by curator2" in html
    assert "我的新回答" in html
    pair.refresh_from_db()
    assert pair.output != "我的新回答" and pair.difficulty == "hard"


def test_editing_a_pair_in_review_redirects_with_a_reason(client, make_pair, curator):
    pair = make_pair(curator, status=S.IN_REVIEW, review_round=1)
    client.force_login(curator)
    response = client.get(reverse("curation:pair-edit", args=[pair.pk]))
    assert response.status_code == 302 and response["Location"] == detail(pair.pk)
    post = client.post(reverse("curation:pair-edit", args=[pair.pk]), {"instruction": "x", "output": "y", "version": 1})
    assert post.status_code == 409
    pair.refresh_from_db()
    assert pair.instruction != "x"


def test_editing_after_changes_requested_goes_back_to_review_from_the_page(client, make_pair, curator, clinician):
    pair = _in_review(make_pair, curator)
    review.qa_pair_request_changes(pair=pair, reviewer=clinician, comment="补充用量", version=pair.version)
    client.force_login(curator)
    data = {**client.get(reverse("curation:pair-edit", args=[pair.pk])).context["form"].initial, "history": ""}
    response = client.post(reverse("curation:pair-edit", args=[pair.pk]), {**data, "output": "每次5毫升，每日三次。"})
    assert response.status_code == 302
    pair.refresh_from_db()
    assert (pair.status, pair.review_round) == (S.IN_REVIEW, 2)
