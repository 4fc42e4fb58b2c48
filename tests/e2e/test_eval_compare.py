"""In Chromium: three contenders side by side — the comparison page with interval whiskers, paired
tests, the judge–clinician calibration with its warning, a clinician's blind rating, the exports.

The runs are written by tests/training/eval_factories.py (real BLEU / ROUGE of fixed answers);
the rubric scores stand for a judge's and are stored as the worker stores them.
"""

from __future__ import annotations

import pytest

from .conftest import login

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _three_contenders(admin, curator, make_pair):
    from tests.training.eval_factories import BASE, TUNED, answers, make_eval_version, make_finished_run, make_succeeded_job
    from tests.training.ui_factories import make_base_model
    from training.models import EvalRun, EvalSample

    version = make_eval_version(curator, make_pair)
    model = make_base_model(admin, name="cmp-model")
    hosted = make_base_model(admin, name="hosted-model", path="/nonexistent/hosted")
    job = make_succeeded_job(admin, version, model)
    group = "cmp-e2e"
    runs = [
        make_finished_run(admin, version, model, predictions=answers(BASE), group=group),
        make_finished_run(admin, version, model, job=job, predictions=answers(TUNED), group=group),
        make_finished_run(admin, version, hosted, predictions=answers(TUNED[::-1]), group=group),
    ]
    for k, run in enumerate(runs):
        EvalRun.objects.filter(pk=run.pk).update(suites=["reference", "rubric"], judge_model=model, judge_prompt={"version": "rubric-v1", "lang": "zh"})
        for sample in EvalSample.objects.filter(run=run):
            score = min(5, 2 + k + sample.position % 2)
            scores = {"accuracy": score, "safety": 5, "completeness": score, "clarity": 4}
            sample.suite_scores = {"rubric": {"scores": scores, "mean": sum(scores.values()) / 4, "reason": "ok", "attempts": 1, "error": ""}}
            sample.save(update_fields=["suite_scores"])
    return group, runs


def test_a_clinician_compares_three_contenders_and_rates_answers_blind(browser, live_server, admin_user, clinician, curator, make_pair):
    from training.models import EvalRating

    group, runs = _three_contenders(admin_user, curator, make_pair)
    ctx = browser.new_context(locale="en-US", viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    ctx.set_default_timeout(15_000)
    page = ctx.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    try:
        login(page, live_server, clinician.username, "pw-clinician")
        page.goto(f"{live_server.url}/training/evaluations/compare/{group}/")
        assert page.locator("#contenders tbody tr").count() == 3
        # One whisker per contender and metric in the chart, drawn inside the page.
        metrics = page.locator("#compare-metrics tbody tr").evaluate_all("rows => [...new Set(rows.map(r => r.dataset.metric))]")
        assert set(metrics) >= {"bleu-4", "rouge-l", "rubric.mean", "rubric.accuracy"}
        assert page.locator("svg.eval-compare-chart line.whisker").count() == 3 * len(metrics)
        box = page.locator("svg.eval-compare-chart").bounding_box()
        assert box and box["width"] > 300 and box["height"] > 100
        # Paired tests of the two others against the first, per metric.
        assert page.locator("#compare-paired tbody tr").count() == 2 * len(metrics)
        # No clinician rated yet: the judge is flagged uncalibrated on every criterion.
        assert page.locator(".calibration-warning[data-code=uncalibrated]").count() == 4

        page.click("#rate-link")
        page.wait_for_selector("#rate-form")
        assert "cmp-model" not in page.content() and "hosted-model" not in page.content()  # blind
        before = page.locator("#rate-progress").inner_text()
        for criterion, value in (("accuracy", 4), ("safety", 5), ("completeness", 3), ("clarity", 4)):
            page.check(f"#{criterion}-{value}")
        page.click("#rate-submit")
        page.wait_for_selector("#rate-progress")
        assert page.locator("#rate-progress").inner_text() != before
        rating = EvalRating.objects.get()
        assert (rating.accuracy, rating.safety, rating.completeness, rating.clarity, rating.rater_id) == (4, 5, 3, 4, clinician.pk)

        page.goto(f"{live_server.url}/training/evaluations/compare/{group}/")
        assert "1 blind ratings" in page.locator("#calibration-summary").inner_text()
        with page.expect_download() as download:
            page.click("#compare-xlsx")
        assert download.value.suggested_filename.endswith(".xlsx")
    finally:
        ctx.close()
    assert problems == []
