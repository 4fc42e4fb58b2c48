"""In Chromium: the top bar of a user holding every role stays on one line at 1400 px, in both languages."""

from __future__ import annotations

import pytest

from .conftest import login

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def everyone(db, django_user_model):
    from django.contrib.auth.models import Group

    user = django_user_model.objects.create_user(username="head-of-department", password="pw-head")
    for role in ("admin", "curator", "clinician"):
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    return user


@pytest.mark.parametrize("language", ["zh-hans", "en"])
def test_the_top_bar_fits_on_one_line_at_1400_px(browser, live_server, everyone, language):
    ctx = browser.new_context(locale="zh-CN", viewport={"width": 1400, "height": 900})
    ctx.set_default_timeout(15_000)
    page = ctx.new_page()
    login(page, live_server, "head-of-department", "pw-head")
    if language == "en":
        with page.expect_navigation():
            page.select_option("select[name=language]", "en")
    assert page.locator("html").get_attribute("lang") == language
    nav = page.locator("nav.navbar").bounding_box()
    brand = page.locator(".navbar-brand").bounding_box()
    # One row: the bar is no taller than its tallest single-line item plus Bootstrap's padding.
    assert nav["height"] <= brand["height"] + 24, nav
    tops = page.eval_on_selector_all(
        "#nav .navbar-nav > .nav-item, #user-menu, select[name=language]",
        "els => els.map(e => Math.round(e.getBoundingClientRect().top))",
    )
    assert max(tops) - min(tops) <= 12, tops
    # ...and inside the window: nothing pushed past its right edge (the page would scroll sideways).
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], widths
    right = page.eval_on_selector_all(
        "#nav .navbar-nav > .nav-item, #user-menu", "els => Math.max(...els.map(e => e.getBoundingClientRect().right))"
    )
    assert right <= 1400, right
    # Every entry stays reachable: the user menu holds log-out.
    page.click("#user-menu button")
    assert page.locator("#user-menu form[action$='/logout/'] button").is_visible()
    ctx.close()
