"""Hostile query parameters never answer 500 on any page, API or export.

The URLs come from the resolver and the parameters from what each view actually reads: a first,
plain request records every query-string key the view (its forms, filter sets and DRF's
``query_params``) looks up, so a filter added later is fuzzed without editing this file. Each
key then gets values that used to break id parsing (beyond 64 bits, ``1e309``, ``NaN``,
full-width and superscript digits, SQL, 60,000 digits), for each role that can open the page.
"""

from __future__ import annotations

import re

import pytest
from django.http import QueryDict
from django.urls import URLPattern, URLResolver, get_resolver

HOSTILE = [
    str(2**64),
    str(-(2**64)),
    "1e309",
    "NaN",
    "０",  # a full-width zero: int() takes it
    "²",  # str.isdigit() says yes, int() says no
    "1;DROP TABLE curation_qapair",
    "9" * 60_000,  # past int()'s 4300 digits and SQLite's 50,000-byte LIKE pattern
]
FORM_KEYS = 16
# Keys read by every page (the language switcher, the login redirect): nothing to fuzz.
SKIP_KEYS = {"next", "csrfmiddlewaretoken"}
SKIP_ROUTES = ("admin/", "api/v1/schema/", "api/v1/docs/", "api/v1/redoc/", "i18n/", "accounts/", "healthz", "favicon")


def _walk(patterns, prefix=""):
    for p in patterns:
        if isinstance(p, URLResolver):
            yield from _walk(p.url_patterns, prefix + str(p.pattern))
        elif isinstance(p, URLPattern):
            yield prefix + str(p.pattern)


_PARAM = re.compile(r"<(?:(\w+):)?(\w+)>")


def _routes():
    out = []
    for route in _walk(get_resolver().url_patterns):
        if route.startswith(SKIP_ROUTES) or "(?P<" in route or "^" in route:
            continue
        out.append(route)
    return out


@pytest.fixture
def world(db, curator, curator2, clinician, admin_user, make_pair, tmp_path, settings):
    """One of everything the list, detail and export pages show, made through the real services."""
    from chat.models import ArenaBattle, ChatMessage, ChatSession, Rating
    from curation.services.imports import import_batch_create, import_batch_dispatch
    from tests.training.eval_factories import make_eval_pair

    settings.MEDIA_ROOT = str(tmp_path / "media")
    csv = tmp_path / "pairs.csv"
    csv.write_text("question,answer\n咳嗽怎么办？,多喝水。\n", encoding="utf-8")
    batch = import_batch_dispatch(batch=import_batch_create(user=curator, path_or_upload=str(csv)))
    pair = make_pair(curator, department="内科", tags=["t"])
    base, tuned, job = make_eval_pair(admin_user, curator, make_pair)
    session = ChatSession.objects.create(user=clinician, base_model=base.base_model, job=job, department=pair.department)
    ChatMessage.objects.create(session=session, role="user", content="问")
    answer = ChatMessage.objects.create(session=session, role="assistant", content="答", base_model=base.base_model, job=job)
    Rating.objects.create(message=answer, user=clinician, thumb="up", accuracy=4)
    ArenaBattle.objects.create(
        user=clinician, prompt="问", model_a=base.base_model, model_b=base.base_model, job_b=job, department=pair.department
    )
    return {"batch": batch, "pair": pair, "run": tuned, "job": job, "session": session}


def _record_keys(monkeypatch):
    """Record every key looked up on a QueryDict (request.GET, a bound form's data...)."""
    seen: list[str] = []
    for name in ("__getitem__", "get", "getlist", "__contains__"):
        original = getattr(QueryDict, name)

        def spy(self, key, *args, _original=original, **kwargs):
            if isinstance(key, str):
                seen.append(key)
            return _original(self, key, *args, **kwargs)

        monkeypatch.setattr(QueryDict, name, spy)
    return seen


def _concrete_urls(ids):
    """(route, url) for each route, int parameters filled with each of the world's ids in turn."""
    for route in _routes():
        if not _PARAM.search(route):
            yield route, "/" + route
            continue
        for pk in ids:
            def fill(m, pk=pk):
                if m.group(1) == "int":
                    return str(pk)
                return "json" if m.group(2) == "fmt" else "x"

            yield route, "/" + _PARAM.sub(fill, route)


def _targets(client, world, users, monkeypatch):
    """(url, [keys]) for every GET page, API and export that reads query parameters, discovered with
    the first user (an admin reaches every page); the other users get the URLs they can open."""
    ids = sorted({o.pk for o in world.values()} | {1, 2})
    first, *others = users
    client.force_login(first)
    found: dict[str, tuple[str, list[str]]] = {}  # route → (url, keys)
    for route, url in _concrete_urls(ids):
        if route in found:
            continue
        seen = _record_keys(monkeypatch)
        try:
            response = client.get(url)
        finally:
            monkeypatch.undo()
        keys = sorted(set(seen) - SKIP_KEYS - ({"format"} if url.startswith("/api/") else set()))
        if response.status_code == 200 and keys:
            found[route] = (url, keys)
    reach = {first.username: list(found.values())}
    for user in others:
        client.force_login(user)
        reach[user.username] = [(url, keys) for url, keys in found.values() if client.get(url).status_code == 200]
    return reach


def _fuzz(client, user, url, params, failures):
    try:
        response = client.get(url, params)
    except Exception as exc:  # noqa: BLE001 - every failure is listed at the end
        failures.append(f"{user.username} {url} {_short(params)}: {type(exc).__name__}: {str(exc)[:120]}")
        return
    if response.status_code >= 500:
        failures.append(f"{user.username} {url} {_short(params)}: {response.status_code}")


def _short(params):
    return "&".join(f"{k}={v[:24]}" for k, v in params.items())


@pytest.mark.django_db
def test_no_filter_or_id_parameter_answers_500(client, world, admin_user, curator, clinician, monkeypatch):
    """Every key each page reads, one at a time, as an admin (who reaches every page); as a curator
    and a clinician, every key of a page at once (their role changes what the page shows, not how
    it parses)."""
    reach = _targets(client, world, [admin_user, curator, clinician], monkeypatch)
    urls = {url for url, _ in reach["boss"]}
    # the filters named in the report are among those found
    assert {"/curation/pairs/", "/api/v1/pairs/", "/training/evaluations/", "/api/v1/evaluations/", "/chat/arena/leaderboard/"} <= urls
    assert "/chat/ratings/export.json" in urls
    failures: list[str] = []
    client.force_login(admin_user)
    for url, keys in reach["boss"]:
        # a form read as a whole (the fine-tune estimate reads ~35 fields): every field at once,
        # each is validated on its own
        groups = [keys] if len(keys) > FORM_KEYS else [[key] for key in keys]
        for group in groups:
            for value in HOSTILE:
                _fuzz(client, admin_user, url, dict.fromkeys(group, value), failures)
    for user in (curator, clinician):
        client.force_login(user)
        assert reach[user.username], user
        for url, keys in reach[user.username]:
            for value in HOSTILE:
                _fuzz(client, user, url, dict.fromkeys(keys, value), failures)
    assert not failures, "\n".join(failures)


# --------------------------------------------------------------------------- what a bad id does


BIG = str(2**64)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("/api/v1/pairs/", "import_batch"),
        ("/api/v1/pairs/", "department"),
        ("/api/v1/evaluations/", "job"),
        ("/api/v1/evaluations/", "dataset_version"),
        ("/api/v1/finetune-presets/", "base_model"),
    ],
)
def test_the_api_answers_400_naming_the_parameter(client, curator, url, name):
    client.force_login(curator)
    for value in (BIG, "1e309", "０", "²", "-1"):
        response = client.get(url, {name: value})
        assert response.status_code == 400, (value, response.status_code)
        assert name in response.json()["error"]["details"], value


@pytest.mark.django_db
def test_the_report_api_refuses_a_compare_to_that_is_not_an_id(client, world, curator):
    client.force_login(curator)
    response = client.get(f"/api/v1/evaluations/{world['run'].pk}/report/", {"compare_to": BIG})
    assert response.status_code == 400 and "compare_to" in response.json()["error"]["details"]


@pytest.mark.django_db
def test_pages_list_nothing_and_say_which_filter_is_wrong(client, world, curator, clinician):
    client.force_login(curator)
    html = client.get("/training/evaluations/", {"job": BIG}).content.decode()
    assert "The filter job is not a valid id, so nothing is listed." in html
    assert f"/training/evaluations/{world['run'].pk}/" not in html
    assert f"/training/evaluations/{world['run'].pk}/" in client.get("/training/evaluations/").content.decode()
    html = client.get("/chat/arena/leaderboard/", {"department": "１"}).content.decode()
    assert "The filter department is not a valid id" in html
    html = client.get("/curation/pairs/", {"import_batch": BIG}).content.decode()
    assert "Not a valid id" in html and world["pair"].instruction[:10] not in html
    client.force_login(clinician)
    html = client.get("/curation/review/", {"department": "1e309"}).content.decode()
    assert "The filter department is not a valid id" in html


@pytest.mark.django_db
def test_a_file_export_answers_400_naming_the_parameter(client, world, clinician):
    client.force_login(clinician)
    response = client.get("/chat/ratings/export.json", {"job": BIG})
    assert response.status_code == 400 and "job" in response.content.decode()
    assert client.get("/chat/ratings/export.json", {"job": world["job"].pk}).status_code == 200


@pytest.mark.django_db
def test_an_id_that_only_preselects_is_ignored_when_it_is_not_one(client, world, admin_user):
    client.force_login(admin_user)
    for url, name in (("/training/jobs/new/", "dataset_version"), ("/training/evaluations/new/", "job")):
        assert client.get(url, {name: "²"}).status_code == 200
    assert client.get(f"/training/evaluations/{world['run'].pk}/", {"compare": "9" * 5000}).status_code == 200


def test_parse_id_takes_ascii_digits_within_64_bits_only():
    from medportal.params import MAX_ID, parse_id

    assert parse_id("42") == 42 and parse_id(" 7 ") == 7 and parse_id(str(MAX_ID)) == MAX_ID
    for bad in (str(MAX_ID + 1), "0", "-3", "1e3", "NaN", "０", "²", "١٢", "1;DROP", "9" * 5000, "", None, True, 2**64):
        assert parse_id(bad) is None, bad


# --------------------------------------------------------------------------- the import batch filter


@pytest.mark.django_db
def test_the_import_batch_filter_of_the_pair_list_is_visible_and_works(client, world, curator):
    batch = world["batch"]
    from curation.models import QAPair

    imported = set(QAPair.objects.filter(import_batch=batch).values_list("pk", flat=True))
    assert imported
    client.force_login(curator)
    html = client.get("/curation/pairs/", {"import_batch": batch.pk}).content.decode()
    field = re.search(r"<input[^>]*name=\"import_batch\"[^>]*>", html).group(0)
    assert 'type="number"' in field and f'value="{batch.pk}"' in field
    assert re.search(r'<label[^>]*for="id_import_batch"', html)
    listed = {int(pk) for pk in re.findall(r'href="/curation/pairs/(\d+)/', html)}
    assert listed == imported
    # the API filters the same way
    api = client.get("/api/v1/pairs/", {"import_batch": batch.pk}).json()
    assert {p["id"] for p in api["results"]} == imported


@pytest.mark.django_db
@pytest.mark.parametrize("value", [BIG, "²", "０", "1e309", "-1"])
def test_bulk_actions_refuse_ids_that_are_not_ids(client, curator, make_pair, value):
    pair = make_pair(curator)
    client.force_login(curator)
    data = {"action": "tag", "value": "x", "ids": [value, str(pair.pk)], f"v{pair.pk}": str(pair.version)}
    response = client.post("/curation/pairs/bulk/", data)
    assert response.status_code == 400
    assert not pair.tags.exists()
