"""/api/v1/diagnose/ on the demo model: plain and streamed, validation, roles, throttling, schema."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.django_db
URL = "/api/v1/diagnose/"
BODY = {"patient_info": "男，45岁", "symptoms": "反复咳嗽三个月，近一周痰中带血", "test_results": "胸片示右上肺阴影", "max_new_tokens": 10, "temperature": 0}


@pytest.fixture(autouse=True)
def _own_throttle_cache(settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "diagnose-tests"}}
    from django.core.cache import cache

    cache.clear()


def test_a_plain_request_returns_a_suggestion_with_the_template_and_timings(client, clinician, base_model):
    client.force_login(clinician)
    r = client.post(URL, BODY, content_type="application/json")
    assert r.status_code == 200, r.content
    data = r.json()
    assert data["model"] == "demo" and data["template"] == "medical_inquiry" and "医生" in data["disclaimer"]
    assert isinstance(data["diagnosis"], str) and 1 <= data["stats"]["completion_tokens"] <= 10 and data["stats"]["prompt_tokens"] > 10


def test_streaming_sends_tokens_then_a_done_event(client, curator, base_model):
    client.force_login(curator)  # every MedPortal role may ask
    r = client.post(URL, {**BODY, "stream": True}, content_type="application/json")
    assert r.status_code == 200 and r["Content-Type"].startswith("text/event-stream")
    events = [json.loads(line[5:]) for line in b"".join(r.streaming_content).decode().split("\n") if line.startswith("data:")]
    tokens = [e["token"] for e in events if "token" in e]
    assert events[-1]["done"] is True and events[-1]["diagnosis"] == "".join(tokens) and len(tokens) >= 1


def test_an_adapter_is_named_base_colon_job(client, clinician, base_model, adapter_job):
    client.force_login(clinician)
    r = client.post(URL, {**BODY, "model": f"demo:{adapter_job.pk}"}, content_type="application/json")
    assert r.status_code == 200 and r.json()["model"] == f"demo:{adapter_job.pk}"


def test_bad_input_gets_a_specific_message(client, clinician, base_model):
    client.force_login(clinician)
    r = client.post(URL, {"patient_info": "x"}, content_type="application/json")
    assert r.status_code == 400 and "symptoms" in json.dumps(r.json())
    r = client.post(URL, {**BODY, "model": "nope"}, content_type="application/json")
    assert r.status_code == 400 and "No active base model named 'nope'" in r.json()["error"]["message"]
    r = client.post(URL, {**BODY, "temperature": 50}, content_type="application/json")
    assert r.status_code == 400 and "temperature" in json.dumps(r.json())


def test_anonymous_and_role_less_users_are_refused(client, outsider, base_model):
    assert client.post(URL, BODY, content_type="application/json").status_code in (401, 403)
    client.force_login(outsider)
    assert client.post(URL, BODY, content_type="application/json").status_code == 403


def test_requests_beyond_the_rate_are_throttled(client, clinician, base_model, settings):
    from rest_framework.settings import api_settings
    from rest_framework.throttling import ScopedRateThrottle

    rates = {**api_settings.DEFAULT_THROTTLE_RATES, "diagnose": "2/min"}
    ScopedRateThrottle.THROTTLE_RATES = rates
    try:
        client.force_login(clinician)
        codes = [client.post(URL, {**BODY, "max_new_tokens": 2}, content_type="application/json").status_code for _ in range(3)]
    finally:
        ScopedRateThrottle.THROTTLE_RATES = api_settings.DEFAULT_THROTTLE_RATES
    assert codes == [200, 200, 429]


def test_the_endpoint_is_in_the_openapi_schema(client, clinician):
    client.force_login(clinician)
    schema = client.get("/api/v1/schema/", HTTP_ACCEPT="application/json").content.decode()
    assert "/api/v1/diagnose/" in schema and "medical_inquiry" in schema
