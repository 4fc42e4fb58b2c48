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


# --------------------------------------------------------------------------- cases with a reference


@pytest.fixture
def marfan(db):
    from curation.models_rare import Disease

    return Disease.objects.create(code="ORPHA:558", source="ORPHA", name="Marfan syndrome", name_zh="马凡综合征", synonyms=["马方综合征"])


def test_an_inquiry_with_a_reference_is_kept_as_a_case_in_review(client, clinician, base_model, marfan):
    from curation.models import QAPair

    client.force_login(clinician)
    body = {**BODY, "patient_info": "男，19岁，身高 195 cm", "symptoms": "视物模糊，晶状体脱位", "reference": "orpha:558"}
    r = client.post(URL, body, content_type="application/json")
    assert r.status_code == 200, r.content
    case = r.json()["case"]
    pair = QAPair.objects.get(pk=case["id"])
    assert case == {"id": pair.pk, "status": "in_review", "url": f"/curation/pairs/{pair.pk}/", "disease": "ORPHA:558", "identifiers": []}
    assert pair.status == QAPair.Status.IN_REVIEW and pair.author == clinician and pair.source == "diagnose"
    assert pair.instruction == "患者信息：男，19岁，身高 195 cm\n症状描述：视物模糊，晶状体脱位\n检查结果：胸片示右上肺阴影\n请给出诊断建议。"
    assert pair.output == "马凡综合征（ORPHA:558）" and pair.disease_codes == ["ORPHA:558"]
    # the same case again is already kept: a 400 naming the pair, nothing new
    again = client.post(URL, body, content_type="application/json")
    assert again.status_code == 400 and f"#{pair.pk}" in again.json()["error"]["message"]
    # without a reference nothing is kept
    r = client.post(URL, BODY, content_type="application/json")
    assert r.status_code == 200 and r.json()["case"] is None and QAPair.objects.count() == 1


def test_a_case_keeps_the_reference_answer_and_flags_identifiers_streamed_too(client, curator, base_model, marfan):
    from curation.models import QAPair

    client.force_login(curator)
    body = {**BODY, "patient_info": "住院号 ZY20240001，电话 13812345678", "reference": "ORPHA:558", "reference_answer": "马凡综合征：FBN1 突变", "stream": True}
    r = client.post(URL, body, content_type="application/json")
    events = [json.loads(line[5:]) for line in b"".join(r.streaming_content).decode().split("\n") if line.startswith("data:")]
    case = events[-1]["case"]
    pair = QAPair.objects.get(pk=case["id"])
    assert pair.output == "马凡综合征：FBN1 突变" and pair.has_identifiers
    assert case["identifiers"] and all(isinstance(k, str) for k in case["identifiers"])


def test_an_unknown_reference_is_refused_and_nothing_is_kept(client, clinician, base_model, marfan):
    from curation.models import QAPair

    client.force_login(clinician)
    for reference in ("ORPHA:999999", "Marfan", "OMIM:12"):
        r = client.post(URL, {**BODY, "reference": reference}, content_type="application/json")
        assert r.status_code == 400, (reference, r.content)
        assert "reference" in json.dumps(r.json()) or "OMIM" in r.json()["error"]["message"]
    assert not QAPair.objects.exists()


def test_an_approved_frozen_case_is_scored_by_the_diagnosis_suite(client, clinician, curator, admin_user, base_model, marfan):
    from curation.models import QAPair
    from curation.services.versions import dataset_version_freeze
    from training.models import EvalRun
    from training.services.eval_suites import score_suites
    from training.workers.evaluation import eval_samples_read

    client.force_login(clinician)
    ids = []
    cases = [
        ("男，19岁", "视物模糊两年，双侧晶状体向上脱位", "眼科检查：晶状体半脱位"),
        ("女，25岁", "活动后胸闷气短，身材瘦高，手指细长", "心脏超声：主动脉根部扩张 4.8 cm"),
        ("男，8岁", "脊柱侧弯进行性加重，漏斗胸", "X 线：胸椎侧弯 35 度"),
        ("女，31岁", "妊娠中期突发剧烈胸背痛", "CT 血管造影：主动脉夹层"),
    ]
    for patient_info, symptoms, test_results in cases:
        body = {**BODY, "patient_info": patient_info, "symptoms": symptoms, "test_results": test_results, "reference": "ORPHA:558"}
        r = client.post(URL, body, content_type="application/json")
        ids.append(r.json()["case"]["id"])
    QAPair.objects.filter(pk__in=ids).update(status=QAPair.Status.APPROVED)  # the review itself is tested in curation
    version = dataset_version_freeze(user=curator, name="diagnose-cases", split=(0.25, 0.0, 0.75))
    run = EvalRun.objects.create(dataset_version=version, split="test", base_model=base_model, created_by=admin_user, suites=["diagnosis"])
    samples = eval_samples_read(run)
    assert len(samples) >= 2
    predictions = ["考虑马方综合征。" if i % 2 == 0 else "Most likely a connective tissue disorder." for i in range(len(samples))]
    per_sample, summary = score_suites(run, samples, predictions)
    assert [p["diagnosis"]["top1"] for p in per_sample] == [i % 2 == 0 for i in range(len(samples))]
    assert summary["diagnosis"]["n"] == len(samples)
