"""In Chromium: a curator imports a file and submits its pairs; a clinician approves them.

Runs against pytest-django's live server (127.0.0.1, stopped at the end of the test) with
Debian's Chromium driven by Playwright.
"""

from __future__ import annotations

import json

import pytest

from .conftest import login

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ROWS = [
    {"instruction": "慢性胃炎患者能喝咖啡吗？", "input": "", "output": "建议少喝，尤其不要空腹喝，症状加重时请就医。", "department": "消化科"},
    {"instruction": "患者王某，电话13912345678，反复上腹痛两周，需要做胃镜吗？", "input": "", "output": "反复上腹痛两周建议到消化科就诊，医生会根据情况决定是否做胃镜。", "department": "消化科"},
    {"instruction": "How long should I wait to exercise after a meal?", "input": "", "output": "Light walking is fine soon after eating; wait one to two hours before vigorous exercise.", "department": "消化科"},
]


def test_a_curator_imports_and_submits_and_a_clinician_approves(browser, live_server, curator, clinician, tmp_path, settings):
    from curation.models import ImportBatch, QAPair

    settings.MEDPORTAL_REVIEW_QUORUM = 1
    upload = tmp_path / "胃病问答.jsonl"
    upload.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in ROWS) + "\n", encoding="utf-8")

    # --- the curator, in Chinese (the browser asks for zh-CN) ---
    ctx = browser.new_context(locale="zh-CN", viewport={"width": 1400, "height": 900})
    ctx.set_default_timeout(15_000)
    page = ctx.new_page()
    login(page, live_server, "curator", "pw-curator")
    assert page.locator("html").get_attribute("lang") == "zh-hans"
    page.goto(f"{live_server.url}/curation/imports/new/")
    page.set_input_files("#import-upload input[name=file]", str(upload))
    page.click("#import-upload button[type=submit]")
    page.wait_for_url("**/curation/imports/*/")
    assert page.locator("[data-count=created]").inner_text().strip() == "3"
    assert page.locator("[data-count=identifiers]").inner_text().strip() == "1"
    batch = ImportBatch.objects.get()
    assert batch.status == ImportBatch.Status.SUCCEEDED

    page.click(f"a[href='/curation/pairs/?import_batch={batch.pk}'] >> nth=-1")
    page.wait_for_selector("#pair-list tbody tr[data-pair]")
    assert page.locator("#pair-list tbody tr[data-pair]").count() == 3
    # The row with a phone number carries the identifier flag; its detail page highlights it.
    flagged = QAPair.objects.get(has_identifiers=True)
    page.goto(f"{live_server.url}/curation/pairs/{flagged.pk}/")
    assert page.locator("mark.pii[data-kind=mobile]").first.inner_text() == "13912345678"
    page.go_back()
    page.wait_for_selector("#pair-list tbody tr[data-pair]")

    page.check("#pair-list thead input[type=checkbox]")
    page.select_option("#bulk-action", "submit")
    page.click("#bulk-form button[type=submit]")
    page.wait_for_load_state("networkidle")
    assert set(QAPair.objects.values_list("status", flat=True)) == {"in_review"}
    ctx.close()

    # --- the clinician, in English ---
    ctx = browser.new_context(locale="en-US", viewport={"width": 1400, "height": 900})
    ctx.set_default_timeout(15_000)
    page = ctx.new_page()
    login(page, live_server, "clinician", "pw-clinician")
    for _ in range(3):
        page.goto(f"{live_server.url}/curation/review/")
        page.locator("#review-queue tbody tr[data-pair] td a").first.click()
        page.wait_for_selector("#review-form")
        page.check("#review-form input[name=decision][value=approve]")
        page.fill("#review-form textarea[name=comment]", "Checked against the guideline.")
        if page.locator("#identifier-confirm").count():
            # the pair with a phone number: approving it needs the confirmation
            page.click("#review-form button[type=submit]")
            page.wait_for_load_state("networkidle")
            assert "Tick the confirmation" in page.locator("#identifier-confirm").inner_text()
            page.check("#review-form input[name=decision][value=approve]")
            page.check("#review-form input[name=confirm_identifiers]")
        page.click("#review-form button[type=submit]")
        page.wait_for_load_state("networkidle")
    page.goto(f"{live_server.url}/curation/review/")
    assert page.locator("#review-queue tbody tr[data-pair]").count() == 0
    assert set(QAPair.objects.values_list("status", flat=True)) == {"approved"}
    assert QAPair.objects.filter(reviews__reviewer=clinician, reviews__decision="approve").count() == 3
    ctx.close()
