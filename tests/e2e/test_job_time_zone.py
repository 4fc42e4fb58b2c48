"""In Chromium: the live job page shows its times in the site's time zone (TIME_ZONE, as the
server renders them), not in the browser's — the page once mixed UTC and Asia/Shanghai.

The browser runs in America/New_York, the site in Asia/Shanghai: a time formatted by the
script in the browser's zone would be 13 hours off."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from .conftest import login

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_the_live_job_page_shows_times_in_the_sites_time_zone(browser, asgi_server, admin_user, curator, make_pair, settings):
    from tests.training.ui_factories import job_update, make_base_model, make_job, make_version

    settings.TIME_ZONE = "Asia/Shanghai"
    job = make_job(admin_user, make_version(curator, make_pair), make_base_model(admin_user))
    started = dt.datetime(2026, 3, 1, 2, 3, 4, tzinfo=dt.UTC)
    finished = started + dt.timedelta(minutes=5, seconds=6)
    job_update(job, status="running", progress=0.1, started_at=started, heartbeat_at=finished)
    expected = {
        name: timezone.localtime(value, dt.timezone(dt.timedelta(hours=8))).strftime("%Y-%m-%d %H:%M:%S")
        for name, value in (("started_at", started), ("heartbeat_at", finished))
    }
    assert expected["started_at"] == "2026-03-01 10:03:04"

    ctx = browser.new_context(locale="en-US", timezone_id="America/New_York", viewport={"width": 1400, "height": 1000})
    ctx.set_default_timeout(15_000)
    page = ctx.new_page()
    login(page, asgi_server, "boss", "pw-boss")
    assert page.evaluate("() => Intl.DateTimeFormat().resolvedOptions().timeZone") == "America/New_York"
    page.goto(f"{asgi_server.url}/training/jobs/{job.pk}/")
    assert page.locator("[data-live=started_at]").inner_text() == expected["started_at"]  # as the server rendered it
    page.wait_for_selector("#live-state[data-state=live]")
    # Blank them, then let the job move on: the script writes each time again from the snapshot.
    page.evaluate("() => document.querySelectorAll('[data-live=started_at], [data-live=heartbeat_at]').forEach(e => e.textContent = '')")
    job_update(job, progress=0.2)
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-live=started_at], [data-live=heartbeat_at]')].every(e => e.textContent !== '')", timeout=30_000
    )
    assert {name: page.locator(f"[data-live={name}]").first.inner_text() for name in expected} == expected
    ctx.close()
