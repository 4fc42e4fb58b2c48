"""Login, logout, the dashboard, language switching, the audit log and the API docs."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_login_then_dashboard_shows_counts_by_status(client, curator, make_pair):
    make_pair(curator)
    make_pair(curator, status="approved")
    response = client.post(reverse("login"), {"username": "curator", "password": "pw-curator"})
    assert response.status_code == 302 and response["Location"] == reverse("home")
    page = client.get(reverse("home")).content.decode()
    assert re.search(r'data-status="draft">\s*1<', page)
    assert re.search(r'data-status="approved">\s*1<', page)


def test_a_wrong_password_is_refused_with_a_message(client, curator):
    response = client.post(reverse("login"), {"username": "curator", "password": "nope"})
    assert response.status_code == 200
    assert "password" in response.content.decode().lower() or "密码" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_logout_is_a_post_and_ends_the_session(client, curator):
    client.force_login(curator)
    assert client.get(reverse("logout")).status_code == 405
    assert client.post(reverse("logout")).status_code == 302
    assert "_auth_user_id" not in client.session


def test_the_ui_speaks_chinese_by_default_and_switches_to_english(client, curator, settings):
    settings.LANGUAGE_CODE = "zh-hans"  # the project default (tests run in English otherwise)
    client.force_login(curator)
    page = client.get(reverse("home")).content.decode()
    assert '<html lang="zh-hans">' in page
    assert "退出" in page or "登出" in page
    client.post(reverse("set_language"), {"language": "en", "next": "/"})
    page = client.get(reverse("home")).content.decode()
    assert '<html lang="en">' in page
    assert "Log out" in page


def test_static_assets_are_vendored_not_from_a_cdn(client, curator):
    client.force_login(curator)
    page = client.get(reverse("home")).content.decode()
    for src in re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', page):
        assert src.startswith("/static/"), src


def test_the_audit_log_is_for_admins(client, curator, clinician, admin_user, make_pair):
    pair = make_pair(curator)
    from medportal.audit import audit_record

    audit_record(actor=curator, action="qa_pair.edit", target=pair, summary="edited")
    for user in (curator, clinician):
        client.force_login(user)
        assert client.get(reverse("audit-log")).status_code == 403
    client.force_login(admin_user)
    page = client.get(reverse("audit-log"), {"target": f"curation.qapair:{pair.pk}"}).content.decode()
    assert "qa_pair.edit" in page and "curator" in page


def test_the_openapi_schema_documents_the_curation_api(client, clinician):
    client.force_login(clinician)
    response = client.get(reverse("api-schema"), {"format": "json"})
    assert response.status_code == 200
    paths = response.json()["paths"]
    for prefix in ("/api/v1/pairs/", "/api/v1/imports/", "/api/v1/versions/"):
        assert any(p.startswith(prefix) for p in paths), prefix


def test_the_api_docs_page_uses_the_vendored_swagger_ui(client, clinician):
    client.force_login(clinician)
    page = client.get(reverse("api-docs")).content.decode()
    assert "swagger-ui" in page
    assert "cdn" not in page.lower()


def test_healthz_answers_without_login(client):
    assert client.get(reverse("healthz")).json() == {"status": "ok"}
