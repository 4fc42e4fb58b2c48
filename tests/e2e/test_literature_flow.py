"""In Chromium: a curator imports PubMed XML, picks documents and starts a drafting run with the
demo model; a clinician reviews a candidate on the page that shows the abstract with the
supporting sentences highlighted and the grounding check, and approves it.

The run is queued on the real broker; the test runs the worker itself (no cluster here).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.conftest import demo_model_dir  # noqa: F401  (session fixture)

from .conftest import login

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

DATA = Path(__file__).resolve().parents[1] / "curation" / "literature_data"


def test_import_draft_and_review_a_candidate(browser, live_server, curator, clinician, admin_user, demo_model_dir, settings):  # noqa: F811
    from django.db import transaction

    from curation.literature import grounding
    from curation.literature.drafting import Candidate
    from curation.models import Document, DraftRun, QAPair
    from curation.services.literature_drafting import store_candidates
    from curation.workers.literature import draft_run_work
    from training.models import BaseModel
    from training.runnables import reset_backends

    settings.MEDPORTAL_REVIEW_QUORUM = 1
    settings.MEDPORTAL_INFERENCE_URL = ""
    reset_backends()
    BaseModel.objects.create(name="demo-drafter", path=str(demo_model_dir), registered_by=admin_user, has_chat_template=True)
    errors: list[str] = []

    # --- the curator, in Chinese ---
    ctx = browser.new_context(locale="zh-CN", viewport={"width": 1400, "height": 900})
    ctx.set_default_timeout(15_000)
    page = ctx.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    login(page, live_server, "curator", "pw-curator")
    page.goto(f"{live_server.url}/curation/literature/import/")
    page.set_input_files("#document-import-form input[name=file]", str(DATA / "efetch_pubmed.xml"))
    page.click("#document-import-form button[type=submit]")
    page.wait_for_url("**/curation/literature/imports/*/")
    assert page.locator("[data-count=created]").inner_text().strip() == "2"
    assert page.locator("#import-issues tr[data-kind=skipped]").count() == 1

    page.goto(f"{live_server.url}/curation/literature/?q=aspirin")
    rows = page.locator("#document-table tbody tr[data-document]")
    assert rows.count() == 1
    rows.first.locator("input[type=checkbox]").check()
    page.click("#draft-selected")
    page.wait_for_url("**/curation/literature/draft/**")
    page.fill("#id_per_document", "2")
    page.select_option("#id_lang", "en")
    page.click("#draft-form button[type=submit]")
    page.wait_for_url("**/curation/literature/runs/*/")
    run = DraftRun.objects.get()
    assert run.status == DraftRun.Status.QUEUED and run.document_ids == [Document.objects.get(pmid="31000001").pk]

    run = draft_run_work(run_id=run.pk)  # the worker
    assert run.status == DraftRun.Status.SUCCEEDED and run.created_count >= 1, run.error
    page.reload()
    assert page.locator("[data-count=created]").inner_text().strip() == str(run.created_count)
    ctx.close()

    # A hand-written candidate for the same abstract (as in the labelled set), stored the way the
    # worker stores candidates: its supporting sentences are known, so the highlight can be checked.
    document = Document.objects.get(pmid="31000001")
    results = [s["n"] for s in document.sentences if s["text"].startswith(("Recurrent stroke occurred", "Major bleeding"))]
    answer = "Recurrent stroke occurred in 8.2% of patients on aspirin and 11.5% of untreated patients; major bleeding was more frequent with aspirin (3.1% vs. 1.9%)."
    candidate = Candidate(
        question="How did low-dose aspirin change recurrent stroke and bleeding?",
        answer=answer,
        question_type="fact",
        lang="en",
        support=results,
        support_by="model",
        grounding=grounding.check(answer, [document.sentences[n - 1]["text"] for n in results]).as_dict(),
        seed=0,
    )
    with transaction.atomic():
        [written], _flagged, _dup = store_candidates([candidate], document=document, run=run)
    drafted = QAPair.objects.get(pk=run.qa_pair_ids[0])

    # --- the clinician, in English ---
    ctx = browser.new_context(locale="en-US", viewport={"width": 1400, "height": 900})
    ctx.set_default_timeout(15_000)
    page = ctx.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    login(page, live_server, "clinician", "pw-clinician")

    # the model's candidate: the evidence card with the check's result as stored
    page.goto(f"{live_server.url}/curation/pairs/{drafted.pk}/")
    evidence = page.locator("#literature-evidence")
    assert "PMID 31000001" in evidence.locator(".card-header").inner_text()
    assert "Drafted by demo-drafter" in evidence.inner_text()
    ok = drafted.synthetic_meta["grounding"]["ok"]
    assert evidence.locator("#grounding-result").get_attribute("data-ok") == str(int(ok))
    assert evidence.locator("#grounding-flags li").count() == len(drafted.synthetic_meta["grounding"]["flags"])
    assert evidence.locator(".sentence.supporting").count() == len(drafted.synthetic_meta["support"])

    # the written candidate: the two results sentences are highlighted, the check passed
    pair = QAPair.objects.get(pk=written)
    page.goto(f"{live_server.url}/curation/pairs/{pair.pk}/")
    evidence = page.locator("#literature-evidence")
    highlighted = evidence.locator(".sentence.supporting")
    assert sorted(int(n) for n in highlighted.evaluate_all("els => els.map(e => e.dataset.n)")) == results
    assert highlighted.first.inner_text().endswith("(HR 0.71; 95% CI 0.52-0.97).")
    # the highlight is visible: a background colour none of the other sentences has
    colours = evidence.locator(".sentence").evaluate_all("els => els.map(e => [e.classList.contains('supporting'), getComputedStyle(e).backgroundColor])")
    marked = {c for s, c in colours if s}
    plain = {c for s, c in colours if not s}
    assert marked and marked.isdisjoint(plain)
    assert evidence.locator("#grounding-result").get_attribute("data-ok") == "1"

    page.check("#review-form input[name=decision][value=approve]")
    page.fill("#review-form textarea[name=comment]", "Checked against the abstract.")
    if page.locator("#identifier-confirm").count():
        page.check("#review-form input[name=confirm_identifiers]")
    page.click("#review-form button[type=submit]")
    page.wait_for_load_state("networkidle")
    pair.refresh_from_db()
    assert pair.status == QAPair.Status.APPROVED
    ctx.close()
    assert not [e for e in errors if "Content Security Policy" in e or "Refused" in e], errors
