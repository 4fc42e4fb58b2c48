"""Security hardening: Content-Security-Policy, API docs, brute-force lockout, the development
key, HSTS and `check --deploy`, password change, WebSocket origins, API 401, favicon, language
on the login page."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.urls import reverse

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.django_db


# --- Content-Security-Policy ------------------------------------------------------------------


def _policy(response) -> dict[str, list[str]]:
    header = response.headers.get("Content-Security-Policy", "")
    directives = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            directives[words[0]] = words[1:]
    return directives


class _Scripts(HTMLParser):
    """Collects inline scripts (with their nonce) and every inline event-handler attribute."""

    def __init__(self):
        super().__init__()
        self.inline_nonces: list[str | None] = []
        self.handlers: list[str] = []
        self.outside: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.handlers += [f"<{tag} {name}>" for name in attrs if name.startswith("on")]
        for name in ("src", "href"):
            value = attrs.get(name) or ""
            if tag in ("script", "link", "img", "iframe") and re.match(r"^(https?:)?//", value):
                self.outside.append(value)
        if tag == "script" and not attrs.get("src") and attrs.get("type", "text/javascript") in ("text/javascript", "module"):
            self.inline_nonces.append(attrs.get("nonce"))


def _parse(response) -> _Scripts:
    parser = _Scripts()
    parser.feed(response.content.decode())
    return parser


def _pages(make_pair, curator):
    pair = make_pair(curator)
    return [
        reverse("home"),
        reverse("curation:pair-list"),
        reverse("curation:pair-detail", args=[pair.pk]),
        reverse("curation:review-queue"),
        reverse("curation:import-list"),
        reverse("curation:version-list"),
        reverse("training:job-list"),
        reverse("training:model-list"),
        reverse("training:evaluation-list"),
        reverse("training:evaluation-create"),
        reverse("chat:index"),
        reverse("chat:arena"),
        reverse("chat:leaderboard"),
        reverse("audit-log"),
        reverse("password_change"),
        reverse("admin:index"),
        reverse("admin:auth_user_changelist"),
        reverse("api-docs"),
        reverse("api-redoc"),
    ]


def test_every_page_sends_a_strict_content_security_policy(client, admin_user, curator, make_pair):
    anonymous = client.get(reverse("login"))
    admin_user.is_staff = admin_user.is_superuser = True  # the Django admin
    admin_user.save()
    client.force_login(admin_user)
    for url in [reverse("login"), *_pages(make_pair, curator)]:
        response = anonymous if url == reverse("login") else client.get(url)
        assert response.status_code == 200, url
        policy = _policy(response)
        assert policy.get("default-src") == ["'self'"], url
        assert "'unsafe-inline'" not in policy["script-src"] and "'unsafe-eval'" not in policy["script-src"], url
        assert policy["img-src"] == ["'self'", "data:"], url
        assert policy["frame-ancestors"] == ["'none'"] and policy["object-src"] == ["'none'"], url
        assert policy["base-uri"] == ["'none'"] and policy["form-action"] == ["'self'"], url
        assert policy["connect-src"] == ["'self'", "ws://testserver"], url


def test_inline_scripts_carry_the_request_nonce_and_no_page_has_inline_handlers(client, admin_user, curator, make_pair):
    admin_user.is_staff = admin_user.is_superuser = True
    admin_user.save()
    client.force_login(admin_user)
    for url in _pages(make_pair, curator):
        response = client.get(url)
        page = _parse(response)
        assert page.handlers == [], url  # onclick=… is blocked by the policy: static files bind events
        nonce = re.search(r"'nonce-([^']+)'", response.headers["Content-Security-Policy"])
        for found in page.inline_nonces:
            assert nonce and found == nonce.group(1), url


def test_the_api_docs_load_nothing_from_outside_and_link_back_to_the_app(client, clinician):
    client.force_login(clinician)
    for name in ("api-docs", "api-redoc"):
        response = client.get(reverse(name))
        assert response.status_code == 200
        assert _parse(response).outside == [], name
        assert b"fonts.googleapis" not in response.content
        assert f'href="{reverse("home")}"'.encode() in response.content, name


# --- brute force ------------------------------------------------------------------------------


def _login(client, username, password, **extra):
    return client.post(reverse("login"), {"username": username, "password": password}, **extra)


def test_wrong_passwords_lock_the_account_even_for_the_right_password(client, clinician, settings):
    from medportal.models import AuditEvent

    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert _login(client, "clinician", "wrong").status_code == 200
    assert _login(client, "clinician", "wrong").status_code == 429  # the last one allowed
    response = _login(client, "clinician", "pw-clinician")
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session
    assert "Too many failed sign-in attempts" in response.content.decode()
    event = AuditEvent.objects.get(action="auth.locked_out")
    assert (event.target_type, event.target_id) == ("auth.user", str(clinician.pk))
    assert event.changes["ip_address"] == "127.0.0.1"
    # The lockout message is translated.
    response = _login(client, "clinician", "pw-clinician", HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert response.status_code == 429 and "登录失败次数过多" in response.content.decode()


def test_one_address_is_locked_across_accounts_and_a_success_clears_the_count(client, clinician, curator, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        _login(client, "clinician", "wrong")
    assert _login(client, "clinician", "pw-clinician").status_code == 302  # resets the count
    client.logout()
    for n in range(settings.AXES_FAILURE_LIMIT):
        _login(client, f"nobody{n}", "wrong")  # one address trying many names
    assert _login(client, "curator", "pw-curator").status_code == 429
    other = _login(client, "curator", "pw-curator", REMOTE_ADDR="10.0.0.9")
    assert other.status_code == 302  # another address, an account with no failures


def test_wrong_api_tokens_lock_the_address_for_tokens_too(client, clinician, settings):
    from rest_framework.authtoken.models import Token

    token = Token.objects.create(user=clinician)
    url = "/api/v1/pairs/"
    assert client.get(url, HTTP_AUTHORIZATION=f"Token {token.key}").status_code == 200
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert client.get(url, HTTP_AUTHORIZATION="Token " + "0" * 40).status_code == 401
    locked = client.get(url, HTTP_AUTHORIZATION="Token " + "0" * 40)
    assert locked.status_code == 429 and locked.json()["error"]["code"] == "throttled"
    assert int(locked["Retry-After"]) == settings.AXES_COOLOFF_TIME.total_seconds()
    refused = client.get(url, HTTP_AUTHORIZATION=f"Token {token.key}")
    assert refused.status_code == 429
    assert "Too many failed sign-in attempts" in refused.json()["error"]["message"]
    assert int(refused["Retry-After"]) > 0
    assert client.get(url, HTTP_AUTHORIZATION=f"Token {token.key}", REMOTE_ADDR="10.0.0.8").status_code == 200
    # The lockout is audited, once per address and cool-off, naming the address and the path.
    from medportal.models import AuditEvent

    (event,) = AuditEvent.objects.filter(action="auth.locked_out")
    assert (event.changes["ip_address"], event.changes["path"], event.changes["username"]) == ("127.0.0.1", url, "")


# --- API: anonymous is 401 --------------------------------------------------------------------


def test_an_anonymous_api_call_gets_401_with_www_authenticate(client, clinician):
    response = client.get("/api/v1/pairs/")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Token"
    client.force_login(clinician)  # the browser's session still works
    assert client.get("/api/v1/pairs/").status_code == 200


# --- password change --------------------------------------------------------------------------


def test_a_user_changes_their_own_password_and_it_is_audited(client, clinician):
    from medportal.models import AuditEvent

    client.force_login(clinician)
    home = client.get(reverse("home")).content.decode()
    assert f'href="{reverse("password_change")}"' in home  # in the top-bar user menu
    bad = client.post(reverse("password_change"), {"old_password": "nope", "new_password1": "x", "new_password2": "x"})
    assert bad.status_code == 200 and not AuditEvent.objects.filter(action="auth.password_changed").exists()
    response = client.post(
        reverse("password_change"),
        {"old_password": "pw-clinician", "new_password1": "Kidney-stone-2026!", "new_password2": "Kidney-stone-2026!"},
    )
    assert response.status_code == 302 and response.url == reverse("password_change_done")
    clinician.refresh_from_db()
    assert clinician.check_password("Kidney-stone-2026!")
    event = AuditEvent.objects.get(action="auth.password_changed")
    assert event.actor == clinician and event.target_id == str(clinician.pk)
    assert client.get(reverse("home")).status_code == 200  # still signed in


def test_the_password_change_page_needs_a_login_and_speaks_chinese(client, clinician):
    assert client.get(reverse("password_change")).status_code == 302
    client.force_login(clinician)
    page = client.get(reverse("password_change"), HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert "修改密码" in page and "旧密码" in page


# --- login page: language switch, favicon -----------------------------------------------------


def test_the_login_page_offers_the_language_switch_and_an_icon(client):
    page = client.get(reverse("login")).content.decode()
    assert f'action="{reverse("set_language")}"' in page
    assert 'rel="icon"' in page
    response = client.post(reverse("set_language"), {"language": "zh-hans", "next": reverse("login")})
    assert response.status_code == 302
    assert "登录" in client.get(reverse("login")).content.decode()


def test_favicon_is_served(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/vnd.microsoft.icon"
    assert b"".join(response.streaming_content)[:4] == b"\x00\x00\x01\x00"  # ICO header


# --- WebSocket origins ------------------------------------------------------------------------


def _socket_scope(origin: str, host: str = "127.0.0.1:8000", scheme: str = "ws", **headers) -> dict:
    items = [(b"host", host.encode()), (b"origin", origin.encode())]
    items += [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    return {"type": "websocket", "scheme": scheme, "headers": items, "path": "/ws/x/"}


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("http://127.0.0.1:8000", True),
        ("http://127.0.0.1:9999", False),  # another program on the same machine
        ("https://127.0.0.1:8000", False),  # another scheme
        ("http://localhost:8000", False),  # another host, though allowed in ALLOWED_HOSTS
        ("http://evil.example:8000", False),
        ("null", False),
        ("", False),
    ],
)
def test_a_socket_origin_must_match_scheme_host_and_port(origin, allowed):
    from medportal.websocket import socket_origin_allowed

    assert socket_origin_allowed(_socket_scope(origin)) is allowed


def test_behind_a_proxy_the_forwarded_scheme_and_trusted_origins_count(settings):
    from medportal.websocket import socket_origin_allowed

    settings.ALLOWED_HOSTS = ["medportal.example.org"]
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    scope = _socket_scope("https://medportal.example.org", host="medportal.example.org", x_forwarded_proto="https")
    assert socket_origin_allowed(scope)
    assert not socket_origin_allowed(_socket_scope("http://medportal.example.org", host="medportal.example.org", x_forwarded_proto="https"))
    settings.CSRF_TRUSTED_ORIGINS = ["https://portal.example.org:8443"]
    assert socket_origin_allowed(_socket_scope("https://portal.example.org:8443", host="medportal.example.org", x_forwarded_proto="https"))


def test_the_asgi_application_refuses_a_foreign_origin_before_the_consumer():
    from asgiref.sync import async_to_sync
    from channels.testing import WebsocketCommunicator

    from medportal.asgi import application

    async def connect(origin):
        communicator = WebsocketCommunicator(application, "/ws/chat/1/", headers=[(b"host", b"127.0.0.1:8000"), (b"origin", origin)])
        connected, code = await communicator.connect()
        await communicator.disconnect()
        return connected, code

    # Denied before routing: channels' denier closes with code 1000 before any consumer runs.
    assert async_to_sync(connect)(b"http://127.0.0.1:9999") == (False, 1000)


# --- the development key, HSTS, check --deploy ------------------------------------------------


def _manage(tmp_path, *args, **env):
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DEBUG", "SECRET_KEY")}
    base.update({"DJANGO_SETTINGS_MODULE": "medportal.settings", "MEDPORTAL_DATA_DIR": str(tmp_path)}, **env)
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=base, capture_output=True, text=True, timeout=120)


def test_the_development_key_refuses_to_serve_with_debug_off(tmp_path):
    # runserver, rundemo, qcluster and migrate run the same checks; DEBUG on: test_checks.py.
    check = _manage(tmp_path, "manage.py", "check", "--tag", "security", DEBUG="0")
    assert check.returncode != 0 and "medportal.E001" in check.stderr
    assert _manage(tmp_path, "manage.py", "check", "--tag", "security", DEBUG="0", SECRET_KEY="k" * 50).returncode == 0
    asgi = _manage(tmp_path, "-c", "import medportal.asgi", DEBUG="0")  # daphne runs no checks
    assert asgi.returncode != 0 and "ImproperlyConfigured" in asgi.stderr and "SECRET_KEY" in asgi.stderr


PRODUCTION_ENV = {
    # docs/production.md, "Security headers": keep the two in step.
    "DEBUG": "0",
    "SECRET_KEY": "a-long-random-production-key-3c9e1f0b7d2a48e6b5c1f9d0a7e3b2c4",
    "ALLOWED_HOSTS": "medportal.example.org",
    "CSRF_TRUSTED_ORIGINS": "https://medportal.example.org",
    "DATABASE_URL": "postgres://medportal@127.0.0.1:5432/medportal",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "MEDPORTAL_BEHIND_PROXY": "1",
    "MEDPORTAL_SECURE_COOKIES": "1",
    "MEDPORTAL_SSL_REDIRECT": "1",
    "MEDPORTAL_HSTS_SECONDS": "31536000",
    "MEDPORTAL_HSTS_INCLUDE_SUBDOMAINS": "1",
    "MEDPORTAL_HSTS_PRELOAD": "1",
}


def test_check_deploy_is_clean_under_the_documented_production_settings(tmp_path):
    docs = (ROOT / "docs" / "production.md").read_text()
    for name, value in PRODUCTION_ENV.items():
        if name != "SECRET_KEY":
            assert f"{name}={value}" in docs, name
    result = _manage(tmp_path, "manage.py", "check", "--deploy", "--fail-level", "WARNING", **PRODUCTION_ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNINGS" not in result.stdout + result.stderr


def test_hsts_comes_from_the_environment(tmp_path):
    from django.conf import settings

    if "MEDPORTAL_HSTS_SECONDS" not in os.environ:
        assert (settings.SECURE_HSTS_SECONDS, settings.SECURE_HSTS_INCLUDE_SUBDOMAINS, settings.SECURE_HSTS_PRELOAD) == (0, False, False)
    code = "from django.conf import settings as s; print(s.SECURE_HSTS_SECONDS, s.SECURE_HSTS_INCLUDE_SUBDOMAINS, s.SECURE_HSTS_PRELOAD)"
    got = _manage(tmp_path, "-c", code, MEDPORTAL_HSTS_SECONDS="3600", MEDPORTAL_HSTS_INCLUDE_SUBDOMAINS="1", MEDPORTAL_HSTS_PRELOAD="0")
    assert got.stdout.split() == ["3600", "True", "False"]
    assert _manage(tmp_path, "-c", code, MEDPORTAL_HSTS_SECONDS="a year").returncode != 0


def test_hsts_header_is_sent_over_https(client, settings):
    settings.SECURE_HSTS_SECONDS = 3600
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    response = client.get(reverse("login"), secure=True)
    assert response.headers["Strict-Transport-Security"] == "max-age=3600; includeSubDomains"
