"""In Chromium: an admin reads the report of a finished base-vs-tuned pair and downloads its XLSX.

The pair is written by tests/training/eval_factories.py (real scores of fixed answers). The
report needs no WebSocket, so pytest-django's live server (WSGI, static files served) is
enough. The checks are what only a browser shows: the page following a running run and
reloading itself when it ends (htmx polling), the cards' deltas as rendered, the Chart.js
bar chart holding both runs' values, the difference marks, markup in a model's answer staying
inert, the print stylesheet hiding the navigation, and the download itself.
"""

from __future__ import annotations

import pytest

from .conftest import login

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _chart(page, canvas: str) -> dict:
    return page.evaluate(
        """(id) => {
            const chart = window.Chart.getChart(document.getElementById(id));
            return {labels: chart.data.labels, datasets: chart.data.datasets.map(d => ({label: d.label, data: d.data}))};
        }""",
        canvas,
    )


def test_an_admin_reads_a_base_vs_tuned_report_and_downloads_the_xlsx(browser, live_server, admin_user, curator, make_pair, tmp_path):
    from openpyxl import load_workbook

    from tests.training.eval_factories import TEST_ANSWERS, make_eval_pair
    from training.models import EvalRun

    base, tuned, _job = make_eval_pair(admin_user, curator, make_pair)
    ctx = browser.new_context(locale="en-US", viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    ctx.set_default_timeout(15_000)
    page = ctx.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        login(page, live_server, "boss", "pw-boss")

        # While the run is running the page follows its progress, and reloads when it ends.
        scores = {"summary": tuned.summary}
        EvalRun.objects.filter(pk=tuned.pk).update(status=EvalRun.Status.RUNNING, progress=0.5, done_samples=2, summary={})
        page.goto(f"{live_server.url}/training/evaluations/{tuned.pk}/")
        assert page.locator("#eval-progress-bar").inner_text() == "50%" and page.locator(".metric-card").count() == 0
        EvalRun.objects.filter(pk=tuned.pk).update(progress=0.75, done_samples=3)
        page.wait_for_function("() => document.getElementById('eval-progress-bar').textContent === '75%'")
        EvalRun.objects.filter(pk=tuned.pk).update(status=EvalRun.Status.SUCCEEDED, progress=1.0, done_samples=4, **scores)
        page.wait_for_selector(".metric-card")
        assert page.locator("#eval-progress").count() == 0

        # Cards: this run, the base run, and a green upward delta on every metric.
        assert page.locator("#eval-mode").inner_text() == "LLaMA-Factory-comparable"
        for key in ("bleu-4", "rouge-1", "rouge-2", "rouge-l"):
            card = page.locator(f".metric-card[data-metric='{key}']")
            assert card.locator("[data-value]").inner_text() == f"{tuned.summary[key]:.4f}"
            assert card.locator("[data-baseline]").inner_text() == f"{base.summary[key]:.4f}"
            delta = card.locator("[data-delta]")
            assert delta.inner_text().strip() == f"+{round(tuned.summary[key] - base.summary[key], 4):.4f}"
            assert "text-success" in delta.get_attribute("class") and delta.locator("i.bi-arrow-up").count() == 1

        # The bar chart is drawn with both runs' values.
        page.wait_for_function("() => window.Chart && window.Chart.getChart(document.getElementById('metrics-chart'))")
        chart = _chart(page, "metrics-chart")
        assert chart["labels"] == ["BLEU-4", "ROUGE-1", "ROUGE-2", "ROUGE-L"]
        keys = ("bleu-4", "rouge-1", "rouge-2", "rouge-l")
        assert [d["data"] for d in chart["datasets"]] == [[base.summary[k] for k in keys], [tuned.summary[k] for k in keys]]
        assert page.evaluate("() => document.getElementById('metrics-chart').width") > 0
        assert len(_chart(page, "loss-chart")["datasets"][0]["data"]) == 3

        # Differences are marked in the examples; the base model's answers with <script> stay text.
        worst = page.locator("#worst .example")
        assert worst.count() == TEST_ANSWERS // 2 and page.locator("#best .example").count() == TEST_ANSWERS // 2
        assert page.locator("#worst [data-diff=prediction] del").count() + page.locator("#worst [data-diff=reference] ins").count() > 0
        page.locator("#worst details summary").first.click()
        assert page.locator("[data-diff=baseline]").first.is_visible()
        assert page.locator("#eval-report script").count() == 0 and not dialogs
        baseline_answers = "".join(page.locator("[data-diff=baseline]").all_text_contents())
        assert "<script>alert('x')</script>" in baseline_answers

        # On paper: no navigation, no buttons.
        page.emulate_media(media="print")
        assert not page.locator("nav.navbar").is_visible() and not page.locator("#report-actions").is_visible()
        assert page.locator("#metric-cards").is_visible()
        page.emulate_media(media="screen")

        # The XLSX download: a summary sheet and one row per answer.
        with page.expect_download() as info:
            page.click("#export-xlsx")
        target = tmp_path / "report.xlsx"
        info.value.save_as(target)
        wb = load_workbook(target)
        assert wb.sheetnames == ["summary", "samples"]
        assert wb["samples"].max_row == 1 + TEST_ANSWERS
        assert not errors, errors
    finally:
        ctx.close()
