"""In Chromium: a clinician reviews through the queue with the keyboard (record and next,
help overlay, no shortcut while typing); a curator searches with highlighted hits and
applies a bulk action to every pair matching a filter after confirming it.

Screenshots go to $MEDPORTAL_SCREENSHOTS when it is set (for a person to look at)."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from .conftest import login

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _shot(page, name):
    folder = os.environ.get("MEDPORTAL_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


@pytest.mark.parametrize("locale", ["zh-CN", "en-US"])
def test_a_clinician_reviews_the_queue_from_the_keyboard(browser, live_server, make_pair, curator, clinician, settings, locale):
    from curation.models import QAPair

    settings.MEDPORTAL_REVIEW_QUORUM = 1
    pairs = [
        make_pair(
            curator,
            status=QAPair.Status.IN_REVIEW,
            review_round=1,
            submitted_at=timezone.now() - timedelta(minutes=30 - i),
            department="罕见病" if i == 0 else "心内科",
            extra={"来源": "demo", "score": i},
        )
        for i in range(3)
    ]
    ctx = browser.new_context(locale=locale, viewport={"width": 1400, "height": 900})
    ctx.set_default_timeout(15_000)
    page = ctx.new_page()
    login(page, live_server, "clinician", "pw-clinician")
    page.goto(f"{live_server.url}/curation/review/")
    assert page.locator("#queue-departments [data-department='罕见病']").get_attribute("data-count") == "1"
    _shot(page, f"queue-{locale}")
    page.click(f"#review-queue tr[data-pair='{pairs[0].pk}'] td a >> nth=0")
    page.wait_for_selector("#review-form")
    assert page.locator("link[rel=prefetch]").get_attribute("href").startswith(f"/curation/pairs/{pairs[1].pk}/")

    help_box = page.locator("#shortcut-help")
    page.keyboard.press("?")
    assert help_box.is_visible()
    _shot(page, f"shortcuts-{locale}")
    page.keyboard.press("Escape")
    assert not help_box.is_visible()

    # j / k walk to the next and the previous pair without recording anything.
    page.keyboard.press("j")
    page.wait_for_url(f"**/curation/pairs/{pairs[1].pk}/**")
    page.wait_for_selector("#review-form")
    page.keyboard.press("k")
    page.wait_for_url(f"**/curation/pairs/{pairs[0].pk}/**")
    page.wait_for_selector("#review-form")
    assert set(QAPair.objects.values_list("status", flat=True)) == {QAPair.Status.IN_REVIEW}

    # Typing in the comment box types; it does not choose a decision.
    page.click("#review-form textarea[name=comment]")
    page.keyboard.type("ar")
    assert page.input_value("#review-form textarea[name=comment]") == "ar"
    assert not page.is_checked("#review-form input[value=approve]")
    assert not page.is_checked("#review-form input[value=reject]")
    page.fill("#review-form textarea[name=comment]", "")
    page.keyboard.press("Escape")  # leaves the box: letters are shortcuts again

    page.keyboard.press("r")  # reject, and the comment box takes the focus
    assert page.is_checked("#review-form input[value=reject]")
    page.keyboard.type("答非所问")
    page.keyboard.press("Control+Enter")
    page.wait_for_url(f"**/curation/pairs/{pairs[1].pk}/**")
    page.keyboard.press("a")
    assert page.is_checked("#review-form input[value=approve]")
    page.keyboard.press("Control+Enter")
    page.wait_for_url(f"**/curation/pairs/{pairs[2].pk}/**")
    _shot(page, f"pair-{locale}")
    page.keyboard.press("c")  # request changes, and the comment box takes the focus
    assert page.is_checked("#review-form input[value=request_changes]")
    assert page.evaluate("() => document.activeElement.name") == "comment"
    statuses = dict(QAPair.objects.values_list("pk", "status"))
    assert (statuses[pairs[0].pk], statuses[pairs[1].pk]) == ("rejected", "approved")
    # The activity of the rejected pair reads in the reader's language, with the comment.
    page.goto(f"{live_server.url}/curation/pairs/{pairs[0].pk}/")
    event = page.locator("#events li[data-action='qa_pair.reject']").inner_text()
    assert ("已驳回" if locale == "zh-CN" else "Rejected") in event and "答非所问" in event
    assert "qa_pair" not in page.locator("#events").inner_text()
    _shot(page, f"history-{locale}")
    ctx.close()


@pytest.mark.parametrize("locale", ["zh-CN", "en-US"])
def test_a_curator_searches_and_labels_every_matching_pair(browser, live_server, make_pair, curator, locale):
    from curation.models import QAPair

    for i in range(4):
        make_pair(curator, instruction=f"<b>高血压</b>患者第{i}次复诊，可以吃党参吗？")
    make_pair(curator, instruction="糖尿病饮食要注意什么？")
    ctx = browser.new_context(locale=locale, viewport={"width": 1400, "height": 900})
    ctx.set_default_timeout(15_000)
    page = ctx.new_page()
    login(page, live_server, "curator", "pw-curator")
    page.goto(f"{live_server.url}/curation/pairs/?q=党参&sort=relevance&page_size=25")
    assert page.locator("#pair-list mark.search-hit").first.inner_text() == "党参"
    assert page.locator("#pair-list b").count() == 0  # the stored <b> is text, not markup
    page.select_option("#bulk-action", "difficulty")
    page.fill("#bulk-value", "困难" if locale == "zh-CN" else "Hard")
    page.check("#bulk-all-matching")
    page.click("#bulk-form button[type=submit]")
    page.wait_for_selector("#bulk-confirm")
    assert ("困难" if locale == "zh-CN" else "Hard") in page.locator("#bulk-confirm").inner_text()
    _shot(page, f"bulk-confirm-{locale}")
    page.click("#bulk-confirm button[type=submit]")
    page.wait_for_selector(".alert-success")
    _shot(page, f"search-{locale}")
    assert QAPair.objects.filter(difficulty="hard").count() == 4
    ctx.close()
