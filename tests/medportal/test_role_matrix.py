"""Every URL of the project refuses anonymous users and users without a MedPortal role.

The URL list is read from the resolver, so a page or API added later is covered without
editing this file. Positive cases (which role may do what) live in each area's tests.
"""

from __future__ import annotations

import re

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

PUBLIC = {"login", "logout", "set_language", "healthz", "favicon"}
# A signed-in user's own account: login required (the anonymous test covers them), but no role,
# so an account an admin has not yet put in a group can still set its own password.
OWN_ACCOUNT = {"/accounts/password/", "/accounts/password/done/"}
SAMPLE_KWARGS = {"pk": "1", "int": "1", "str": "x", "slug": "x", "path": "x", "uuid": "00000000-0000-0000-0000-000000000000"}


def _walk(patterns, prefix="", namespace=""):
    for p in patterns:
        if isinstance(p, URLResolver):
            ns = f"{namespace}{p.namespace}:" if p.namespace else namespace
            yield from _walk(p.url_patterns, prefix + str(p.pattern), ns)
        elif isinstance(p, URLPattern):
            yield prefix + str(p.pattern), (namespace + p.name) if p.name else None


def _concrete(route: str) -> str | None:
    if "(?P<format>" in route:
        return None  # DRF format-suffix twins of routes that are covered anyway
    if "(?P<" in route or "^" in route:  # regex routes (DRF routers): fill every group with 1
        route = re.sub(r"\(\?P<\w+>[^)]*\)", "1", route).replace("^", "").replace("$", "")
    def fill(m):
        conv, _, _name = m.group(1).rpartition(":")
        return SAMPLE_KWARGS.get(conv or "str", "1")
    return "/" + re.sub(r"<([^>]+)>", fill, route)


def project_urls():
    seen = []
    for route, name in _walk(get_resolver().url_patterns):
        if route.startswith("admin/") or (name and name.split(":")[-1] in PUBLIC):
            continue
        url = _concrete(route)
        if url:
            seen.append(pytest.param(url, id=url))
    return seen


URLS = project_urls()


def test_the_matrix_covers_the_curation_pages_and_api():
    ids = {p.id for p in URLS}
    assert "/curation/pairs/" in ids
    assert any(i.startswith("/api/v1/") for i in ids)


@pytest.mark.django_db
@pytest.mark.parametrize("url", URLS)
def test_anonymous_users_are_sent_to_login_or_refused(client, url):
    response = client.get(url)
    if url.startswith("/api/"):
        assert response.status_code in (401, 403), (url, response.status_code)
    else:
        assert response.status_code == 302, (url, response.status_code)
        assert response["Location"].startswith("/accounts/login/")


@pytest.mark.django_db
@pytest.mark.parametrize("url", [p for p in URLS if p.id not in OWN_ACCOUNT])
@pytest.mark.parametrize("method", ["get", "post"])
def test_users_without_a_role_are_refused(client, outsider, url, method):
    client.force_login(outsider)
    response = getattr(client, method)(url)
    assert response.status_code == 403, (url, method, response.status_code)


@pytest.mark.django_db
def test_the_admin_site_is_for_staff_only(client, outsider, curator):
    for user in (outsider, curator):
        client.force_login(user)
        response = client.get("/admin/")
        assert response.status_code == 302 and "/admin/login/" in response["Location"]
