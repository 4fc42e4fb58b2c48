"""In Chromium: an admin watches a fine-tune job's page update live, and a reload shows the same.

pytest-django's live server speaks WSGI only, so this module starts Daphne (the project's ASGI
server) in a thread of the test process serving ``medportal.asgi.application`` with static
files: HTTP pages and the job's WebSocket on one port, sharing the test database. The job's
progress is made by the worker's own code (``training.workers.finetune``: the claim and the event
application that turns engine events into row and metric writes), so the page sees exactly
what a running job produces. The socket's version poll delivers it (the in-memory channel
layer cannot hear this thread while Playwright's loop runs in it), as it does for a worker
process in the embedded default.
"""

from __future__ import annotations

import threading

import pytest

from .conftest import login

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _chart_points(page, canvas: str, dataset: int) -> int:
    return page.evaluate(f"() => window.Chart.getChart(document.getElementById('{canvas}')).data.datasets[{dataset}].data.length")


def _wait_live(page) -> None:
    page.wait_for_selector("#live-state[data-state=live]")


def test_an_admin_watches_a_job_progress_live_and_a_reload_shows_the_same(browser, asgi_server, admin_user, curator, make_pair):
    from tests.training.ui_factories import make_base_model, make_job, make_version
    from training.models import FineTuneJob
    from training.workers.finetune import _Run, finetune_job_claim

    job = make_job(admin_user, make_version(curator, make_pair), make_base_model(admin_user), preset="cpu_demo")
    job = finetune_job_claim(job_id=job.pk)
    run = _Run(job)
    run.apply(
        "event",
        {
            "type": "start",
            "total_steps": 10,
            "num_train_examples": 3,
            "num_eval_examples": 3,
            "trainable_parameters": 9000,
            "resumed_from_step": 0,
        },
    )
    run.apply(
        "event",
        {
            "type": "log",
            "step": 1,
            "epoch": 0.1,
            "loss": 3.2,
            "learning_rate": 1e-4,
            "tokens_per_second": 400.0,
            "progress": 0.1,
            "eta_seconds": 90,
        },
    )
    assert run.write()

    ctx = browser.new_context(locale="en-US", viewport={"width": 1400, "height": 1000})
    ctx.set_default_timeout(15_000)
    page = ctx.new_page()
    login(page, asgi_server, "boss", "pw-boss")
    page.goto(f"{asgi_server.url}/training/jobs/{job.pk}/")
    _wait_live(page)
    bar = page.locator("#job-progress-bar")
    assert bar.inner_text() == "10%"
    assert _chart_points(page, "loss-chart", 0) == 1
    assert page.locator("#cancel-form").is_visible() and not page.locator("#merge-form").is_visible()

    # The job moves on (as the worker writes it): the page follows without a reload.
    for step in range(2, 6):
        run.apply(
            "event",
            {
                "type": "log",
                "step": step,
                "epoch": step / 10,
                "loss": 3.2 - 0.2 * step,
                "learning_rate": 2e-4,
                "tokens_per_second": 420.0,
                "progress": step / 10,
                "eta_seconds": 60,
            },
        )
    run.apply("event", {"type": "eval", "step": 5, "epoch": 0.5, "eval_loss": 2.4})
    assert run.write()
    page.wait_for_function("() => document.getElementById('job-progress-bar').textContent === '50%'")
    assert _chart_points(page, "loss-chart", 0) == 5 and _chart_points(page, "loss-chart", 1) == 1
    assert _chart_points(page, "lr-chart", 0) == 5
    assert page.locator("[data-live=step]").inner_text() == "5"
    assert page.locator("[data-live=eval_loss]").inner_text() == "2.4000"
    assert page.locator("[data-live=tokens_per_second]").inner_text() == "420.0"
    assert page.locator("[data-live=learning_rate]").inner_text() == "2.00e-04"
    assert "eval loss 2.4000" in page.locator("#log-tail").inner_text()
    live_figures = page.locator("#job-figures").inner_text()

    # A reload renders the same state on the server, and the socket picks up from there.
    page.reload()
    assert page.locator("#job-progress-bar").inner_text() == "50%"
    assert page.locator("#loss-chart").get_attribute("data-train-points") == "5"
    _wait_live(page)
    assert _chart_points(page, "loss-chart", 0) == 5 and _chart_points(page, "loss-chart", 1) == 1
    assert page.locator("#job-figures").inner_text() == live_figures

    # The end: the status, the bar and the controls change in place.
    adapter = f"/tmp/medportal-e2e-job-{job.pk}/adapter"
    run.apply(
        "event",
        {"type": "done", "status": "succeeded", "adapter_path": adapter, "train_loss_first": 3.0, "train_loss_last": 2.2, "eval_loss": 2.3},
    )
    run.finish(FineTuneJob.Status.SUCCEEDED)
    page.wait_for_selector("[data-live=status] .badge[data-status=succeeded]")
    assert bar.inner_text() == "100%"
    assert page.locator("#merge-form").is_visible() and not page.locator("#cancel-form").is_visible()
    assert page.locator("[data-live=adapter_path]").inner_text() == adapter
    assert page.locator("#download-adapter").is_visible()
    ctx.close()


def test_a_clinician_sees_the_live_page_without_controls_and_an_outsider_is_refused(
    browser, asgi_server, admin_user, clinician, curator, outsider, make_pair
):
    from tests.training.ui_factories import make_base_model, make_job, make_version

    job = make_job(admin_user, make_version(curator, make_pair), make_base_model(admin_user))
    ctx = browser.new_context(locale="zh-CN", viewport={"width": 1400, "height": 1000})
    ctx.set_default_timeout(15_000)
    page = ctx.new_page()
    login(page, asgi_server, "clinician", "pw-clinician")
    page.goto(f"{asgi_server.url}/training/jobs/{job.pk}/")
    _wait_live(page)
    assert page.locator("#cancel-form").count() == 0 and page.locator("#merge-form").count() == 0
    assert page.locator("[data-live=status] .badge").get_attribute("data-status") == "queued"
    ctx.close()

    ctx = browser.new_context(locale="en-US")
    page = ctx.new_page()
    login(page, asgi_server, "outsider", "pw-outsider")
    response = page.goto(f"{asgi_server.url}/training/jobs/{job.pk}/")
    assert response.status == 403
    ctx.close()


def test_an_admin_fills_the_job_form_from_a_preset_and_queues_the_job(browser, asgi_server, admin_user, curator, make_pair):
    from tests.training.ui_factories import make_base_model, make_version
    from training.models import FineTuneJob

    make_version(curator, make_pair)
    make_base_model(admin_user)
    ctx = browser.new_context(locale="en-US", viewport={"width": 1400, "height": 1000})
    ctx.set_default_timeout(15_000)
    page = ctx.new_page()
    login(page, asgi_server, "boss", "pw-boss")
    page.goto(f"{asgi_server.url}/training/jobs/new/")
    page.click("#advanced summary")
    # The seed's Qwen3 recipe: its values fill the settings and the estimate says it needs a GPU.
    page.check("input[name=preset][value=qwen3_medical]")
    assert page.locator("[data-config-field=cutoff_len]").input_value() == "1024"
    assert page.locator("[data-config-field=template]").input_value() == "qwen3"
    assert page.locator("[data-config-field=bf16]").is_checked()
    page.wait_for_selector("#job-estimate [data-requires-gpu='1']")
    # The CPU demo, with a bigger rank.
    page.check("input[name=preset][value=cpu_demo]")
    assert page.locator("[data-config-field=cutoff_len]").input_value() == "256"
    assert not page.locator("[data-config-field=bf16]").is_checked()
    page.wait_for_selector("#job-estimate [data-requires-gpu='0']")
    page.fill("[data-config-field=lora_rank]", "16")
    page.click("#job-form button[type=submit]")
    page.wait_for_url("**/training/jobs/*/")
    job = FineTuneJob.objects.get()
    assert job.preset == "cpu_demo" and job.config["lora_rank"] == 16 and job.config["cutoff_len"] == 256 and job.config["bf16"] is False
    _wait_live(page)
    assert page.locator("[data-live=status] .badge").get_attribute("data-status") == "queued"
    ctx.close()


def test_a_real_tiny_job_trains_while_the_page_is_open(browser, asgi_server, admin_user, curator, make_pair, settings, tmp_path):
    """The worker's whole run (engine child process on the demo model) with the page watching."""
    from tests.training.conftest import cached_demo_model_dir
    from tests.training.ui_factories import make_job, make_version
    from training.services.base_models import base_model_register
    from training.workers.finetune import finetune_job_run

    settings.MEDPORTAL_TRAINING_DIR = tmp_path
    model = base_model_register(actor=admin_user, name="medportal-demo", path=cached_demo_model_dir())
    tiny = {"max_steps": 4, "cutoff_len": 64, "max_samples": 8, "logging_steps": 1, "eval_steps": 2, "save_steps": 50}
    job = make_job(admin_user, make_version(curator, make_pair, pairs=8), model, overrides=tiny)

    ctx = browser.new_context(locale="en-US", viewport={"width": 1400, "height": 1000})
    ctx.set_default_timeout(15_000)
    page = ctx.new_page()
    login(page, asgi_server, "boss", "pw-boss")
    page.goto(f"{asgi_server.url}/training/jobs/{job.pk}/")
    _wait_live(page)
    assert page.locator("[data-live=status] .badge").get_attribute("data-status") == "queued"

    worker = threading.Thread(target=finetune_job_run, kwargs={"job_id": job.pk}, name="e2e-worker")
    worker.start()
    page.wait_for_selector("[data-live=status] .badge[data-status=succeeded]", timeout=120_000)
    worker.join(timeout=60)
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    assert page.locator("#job-progress-bar").inner_text() == "100%"
    assert _chart_points(page, "loss-chart", 0) == 4 and _chart_points(page, "loss-chart", 1) >= 1
    assert page.locator("[data-live=adapter_path]").inner_text() == job.adapter_path
    page.wait_for_selector("[data-template-match=true]:not([hidden])")
    ctx.close()
