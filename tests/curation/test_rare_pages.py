"""Rare-disease pages: search (Chinese and English), disease page, CCRD catalogue, roles."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from curation.models import Disease
from curation.tasks import rare_cases_task
from tests.curation.rare_data import import_tiny

pytestmark = pytest.mark.django_db

READ_URLS = [
    ("curation:rare-search", ()),
    ("curation:rare-disease", ("ORPHA:1",)),
    ("curation:rare-ccrd", ()),
]


@pytest.fixture
def tiny(tmp_path):
    import_tiny(tmp_path)


def _codes(response) -> list[str]:
    return [d.code for d in response.context["page"]]


@pytest.mark.parametrize("persona", ["curator", "clinician", "admin_user"])
@pytest.mark.parametrize("name, args", READ_URLS)
def test_every_role_reads_the_knowledge_pages_with_the_hpo_version(tiny, client, request, persona, name, args):
    client.force_login(request.getfixturevalue(persona))
    response = client.get(reverse(name, args=args))
    body = response.content.decode()
    assert response.status_code == 200
    assert "This service uses the Human Phenotype Ontology (2099-01-01)." in body
    assert "CC BY 4.0" in body


@pytest.mark.parametrize("name, args", READ_URLS + [("curation:rare-generate", ()), ("curation:rare-job", (1,))])
def test_users_without_a_role_get_403_and_anonymous_users_log_in(tiny, client, outsider, name, args):
    url = reverse(name, args=args)
    anonymous = client.get(url)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/accounts/login/")
    client.force_login(outsider)
    assert client.get(url).status_code == 403


def test_search_finds_diseases_by_chinese_name(tiny, client, clinician):
    client.force_login(clinician)
    response = client.get(reverse("curation:rare-search"), {"q": "癫痫"})
    assert _codes(response) == ["ORPHA:2"]
    assert set(_codes(client.get(reverse("curation:rare-search"), {"q": "测试"}))) == {"CCRD:1", "ORPHA:1"}


def test_search_finds_diseases_by_english_name_and_id(tiny, client, clinician):
    client.force_login(clinician)
    assert _codes(client.get(reverse("curation:rare-search"), {"q": "anaemia spleen"})) == ["OMIM:100100"]
    assert _codes(client.get(reverse("curation:rare-search"), {"q": "ORPHA:2"})) == ["ORPHA:2"]
    assert _codes(client.get(reverse("curation:rare-search"), {"q": "testing", "source": "CCRD"})) == ["CCRD:1"]
    assert _codes(client.get(reverse("curation:rare-search"), {"q": "no such disease"})) == []


def test_the_search_page_costs_the_same_queries_for_more_rows(tiny, client, clinician):
    client.force_login(clinician)
    url = reverse("curation:rare-search")
    client.get(url)
    with CaptureQueriesContext(connection) as few:
        client.get(url, {"q": "ORPHA:1"})
    for n in range(30):
        Disease.objects.create(code=f"ORPHA:{1000 + n}", source="ORPHA", name=f"Extra {n}")
    with CaptureQueriesContext(connection) as many:
        response = client.get(url)
    assert len(response.context["page"]) == 25
    assert len(many) <= len(few) + 1  # the pager's count query


def test_the_disease_page_groups_phenotypes_by_frequency(tiny, client, clinician):
    client.force_login(clinician)
    response = client.get(reverse("curation:rare-disease", args=["ORPHA:1"]))
    groups = {g.key: [a.phenotype.hpo_id for a in g.rows] for g in response.context["view"].groups}
    assert groups == {
        "obligate": ["HP:0001250"],
        "very_frequent": ["HP:0001263"],
        "frequent": ["HP:0000252"],
        "occasional": ["HP:0001508"],
        "very_rare": ["HP:0002240"],
        "excluded": ["HP:0000365"],
    }
    body = response.content.decode()
    assert "癫痫发作" in body and "Seizure" in body and "测试综合征" in body
    assert "Autosomal recessive inheritance" in body and "Congenital onset" in body
    assert "HP:0000998" in body  # the obsolete id as published is shown next to its replacement
    assert reverse("curation:rare-disease", args=["CCRD:1"]) in body


def test_the_disease_page_of_an_unknown_id_is_404(tiny, client, clinician):
    client.force_login(clinician)
    assert client.get(reverse("curation:rare-disease", args=["ORPHA:404"])).status_code == 404


def test_the_ccrd_catalogue_lists_entries_in_list_order_with_their_orpha_links(tiny, client, clinician):
    client.force_login(clinician)
    response = client.get(reverse("curation:rare-ccrd"))
    assert [d.code for d in response.context["diseases"]] == ["CCRD:1", "CCRD:2.1", "CCRD:2.2"]
    body = response.content.decode()
    assert "测试病" in body and reverse("curation:rare-disease", args=["ORPHA:1"]) in body
    assert "Generate cases for the selected" not in body  # clinicians do not generate
    filtered = client.get(reverse("curation:rare-ccrd"), {"q": "贫血"})
    assert [d.code for d in filtered.context["diseases"]] == ["CCRD:2.1", "CCRD:2.2"]


def test_curators_can_pick_diseases_for_generation_from_the_lists(tiny, client, curator):
    client.force_login(curator)
    body = client.get(reverse("curation:rare-ccrd")).content.decode()
    assert 'name="disease" value="CCRD:1"' in body and reverse("curation:rare-generate") in body


def test_the_navbar_links_to_the_rare_disease_search_for_every_role(tiny, client, clinician):
    client.force_login(clinician)
    body = client.get(reverse("curation:pair-list")).content.decode()
    assert reverse("curation:rare-search") in body


def test_pages_without_an_import_say_how_to_import(client, clinician):
    client.force_login(clinician)
    body = client.get(reverse("curation:rare-ccrd")).content.decode()
    assert "manage.py import_hpo" in body


def test_the_api_searches_and_shows_a_disease_with_its_annotations(tiny, client, clinician):
    client.force_login(clinician)
    listing = client.get("/api/v1/rare/diseases/", {"q": "癫痫"}).json()
    assert [d["id"] for d in listing["results"]] == ["ORPHA:2"]
    detail = client.get("/api/v1/rare/diseases/ORPHA:1/").json()
    assert detail["hpo_version"] == "2099-01-01" and detail["name_zh"] == "测试综合征"
    negated = [a for a in detail["annotations"] if a["negated"]]
    assert [(a["hpo_id"], a["frequency_class"]) for a in negated] == [("HP:0000365", "excluded")]
    assert client.get("/api/v1/rare/diseases/ORPHA:404/").status_code == 404


def test_the_api_generates_cases_for_curators_only(tiny, client, curator, clinician):
    client.force_login(clinician)
    body = {"disease_ids": ["ORPHA:1"], "count": 2, "lang": "en", "seed": 3}
    assert client.post("/api/v1/rare/cases/", body, content_type="application/json").status_code == 403
    client.force_login(curator)
    response = client.post("/api/v1/rare/cases/", body, content_type="application/json")
    assert response.status_code == 202
    job = response.json()
    assert job["status"] == "queued" and job["qa_pair_ids"] == []
    rare_cases_task(job["id"])  # what the worker runs
    job = client.get(f"/api/v1/rare/jobs/{job['id']}/").json()
    assert job["status"] == "succeeded" and len(job["qa_pair_ids"]) == 2
    assert client.get(f"/api/v1/rare/jobs/{job['id']}/").json()["created_count"] == 2
    bad = client.post("/api/v1/rare/cases/", {"disease_ids": ["ORPHA:404"]}, content_type="application/json")
    assert bad.status_code == 400 and "ORPHA:404" in bad.json()["error"]["message"]
