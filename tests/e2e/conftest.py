"""Real-browser fixtures: Debian's Chromium driven by Playwright (never `playwright install`)."""

from __future__ import annotations

import os
import shutil
import threading
import time
from types import SimpleNamespace

import pytest

CHROMIUM = os.environ.get("MEDPORTAL_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture(scope="module")
def browser():
    """One Chromium per test module: Playwright's sync API keeps an event loop running in this
    thread while it is open, and the socket tests that run later in the same xdist worker call
    ``async_to_sync``, which refuses to run inside a running loop."""
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        pytest.skip("Debian's chromium is not installed (make test installs it when run as root)")
    sync_api = pytest.importorskip("playwright.sync_api")
    # Playwright's sync API runs an event loop in this thread; Django's async-unsafe guard
    # would then refuse ORM calls made by the test itself.
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(locale="zh-CN", viewport={"width": 1400, "height": 900})
    context.set_default_timeout(15_000)
    pg = context.new_page()
    yield pg
    context.close()


def login(page, live_server, username: str, password: str) -> None:
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")


@pytest.fixture(scope="session")
def asgi_server():
    """Daphne on 127.0.0.1:<free port> in a daemon thread (Twisted's reactor runs once per process)."""
    from daphne.server import Server  # installs the asyncio Twisted reactor
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
    from django.db import connections

    from medportal.asgi import application

    # Daphne's request and consumer threads open their own connections: close them after
    # each request / call (as SQLite does anyway), or PostgreSQL cannot drop the test database.
    db = connections.settings["default"]
    conn_max_age = db.get("CONN_MAX_AGE", 0)
    db["CONN_MAX_AGE"] = 0
    ready = threading.Event()
    server = Server(
        ASGIStaticFilesHandler(application),
        endpoints=["tcp:port=0:interface=127.0.0.1"],
        signal_handlers=False,
        verbosity=0,
        ready_callable=ready.set,
    )
    thread = threading.Thread(target=server.run, name="daphne-e2e", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.listening_addresses and time.monotonic() < deadline:
        time.sleep(0.05)
    if not server.listening_addresses:
        pytest.fail("Daphne did not start listening")
    host, port = server.listening_addresses[0]
    yield SimpleNamespace(url=f"http://{host}:{port}")
    from twisted.internet import reactor

    reactor.callFromThread(server.stop)
    thread.join(timeout=10)
    db["CONN_MAX_AGE"] = conn_max_age
