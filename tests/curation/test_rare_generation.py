"""Synthetic rare-disease cases through the service, the command, the background job and freeze."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from curation.models import GenerationJob, QAPair
from curation.services import rare as rare_service
from curation.services.rare import (
    GENERATOR,
    rare_cases_generate,
    rare_cases_start,
    rare_knowledge_base,
)
from curation.workers.rare import rare_cases_run
from curation.services.review import qa_pair_approve
from curation.services.versions import dataset_version_freeze
from medportal.errors import InvalidInput, NotAllowed
from medportal.models import AuditEvent
from tests.curation.rare_data import import_tiny

pytestmark = pytest.mark.django_db


@pytest.fixture
def kb(tmp_path):
    import_tiny(tmp_path)
    return rare_knowledge_base()


def test_the_knowledge_base_is_built_from_the_tables(kb):
    assert kb.version == "2099-01-01"
    d = kb.disease("ORPHA:1")
    assert d.name_zh == "测试综合征"
    present = {a.hpo_id for a in d.phenotypes}
    assert "HP:0002240" in present and "HP:0000998" not in present  # remapped obsolete id
    assert any(a.negated and a.hpo_id == "HP:0000365" for a in d.annotations)
    assert d.inheritance == ("HP:0000007",) and d.onset == ("HP:0003577",)
    assert kb.ontology.label("HP:0001250", "zh") == "癫痫发作"
    assert rare_knowledge_base() is kb  # cached per process and release


def test_generated_cases_become_synthetic_pairs_in_review_with_provenance(kb, curator):
    result = rare_cases_generate(user=curator, disease_ids=["ORPHA:1"], count=3, lang="zh", task="diagnosis", seed=7)
    assert result.created == 3 and len(result.qa_pair_ids) == 3 and not result.errors
    pairs = list(QAPair.objects.filter(pk__in=result.qa_pair_ids))
    for pair in pairs:
        assert pair.status == QAPair.Status.IN_REVIEW and pair.review_round == 1 and pair.submitted_at is not None
        assert pair.synthetic is True and pair.source == "rare-case-generator" and pair.author == curator
        assert pair.disease_codes == ["ORPHA:1"] and pair.department.name == "罕见病"
        assert pair.difficulty in ("easy", "medium", "hard")
        meta = pair.synthetic_meta
        assert meta["generator"] == GENERATOR and meta["seed"] == 7 and meta["hpo_version"] == "2099-01-01"
        assert meta["disease_id"] == "ORPHA:1" and meta["true_rank"] >= 1 and meta["difficulty"] == pair.difficulty
        assert meta["params"]["task"] == "diagnosis" and meta["params"]["lang"] == "zh"
        assert "HP:0001250" in meta["present"]  # obligate
        assert "HP:0000365" not in meta["present"]  # NOT annotation never presented as present
        assert pair.content_hash and pair.search_text
        assert pair.instruction and "测试综合征" in pair.output
    event = AuditEvent.objects.get(action="rare_cases.generate")
    assert event.actor == curator and event.changes["created"] == 3


def test_chinese_cases_use_the_official_chinese_labels(kb, curator):
    result = rare_cases_generate(user=curator, disease_ids=["ORPHA:1"], count=2, lang="zh", seed=1)
    for pair in QAPair.objects.filter(pk__in=result.qa_pair_ids):
        assert "癫痫发作" in pair.instruction and "Seizure" not in pair.instruction


def test_the_same_seed_gives_the_same_cases(kb, curator, curator2):
    first = rare_cases_generate(user=curator, disease_ids=["ORPHA:1"], count=3, seed=11)
    texts = list(QAPair.objects.filter(pk__in=first.qa_pair_ids).order_by("pk").values_list("instruction", "output"))
    QAPair.objects.filter(pk__in=first.qa_pair_ids).delete()
    second = rare_cases_generate(user=curator2, disease_ids=["ORPHA:1"], count=3, seed=11)
    again = list(QAPair.objects.filter(pk__in=second.qa_pair_ids).order_by("pk").values_list("instruction", "output"))
    assert texts == again and second.created == 3


def test_duplicates_are_skipped_and_counted(kb, curator):
    rare_cases_generate(user=curator, disease_ids=["ORPHA:1"], count=2, seed=3)
    again = rare_cases_generate(user=curator, disease_ids=["ORPHA:1"], count=2, seed=3)
    assert again.created == 0 and again.duplicates == 2


def test_clinicians_cannot_generate(kb, clinician):
    with pytest.raises(NotAllowed):
        rare_cases_generate(user=clinician, disease_ids=["ORPHA:1"], count=1)
    assert not QAPair.objects.exists()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"disease_ids": ["ORPHA:404"]}, "Unknown disease"),
        ({"disease_ids": []}, "at least one"),
        ({"disease_ids": ["ORPHA:1"], "count": 0}, "between 1 and"),
        ({"disease_ids": ["ORPHA:1"], "lang": "fr"}, "Unknown language"),
        ({"disease_ids": ["ORPHA:1"], "task": "cure"}, "Unknown task"),
    ],
)
def test_bad_requests_are_refused_with_a_clear_message(kb, curator, kwargs, message):
    with pytest.raises(InvalidInput, match=message):
        rare_cases_generate(user=curator, **{"count": 1, **kwargs})
    assert not QAPair.objects.exists()


def test_generation_without_an_import_says_so(curator, db):
    from curation.models import Disease

    Disease.objects.create(code="ORPHA:1", source="ORPHA", name="x")
    with pytest.raises(InvalidInput, match="import_hpo"):
        rare_cases_generate(user=curator, disease_ids=["ORPHA:1"], count=1)


def test_unapproved_synthetic_pairs_never_enter_a_dataset_version(kb, curator, clinician, make_pair):
    make_pair(curator, status=QAPair.Status.APPROVED)
    result = rare_cases_generate(user=curator, disease_ids=["ORPHA:1", "OMIM:100100"], count=2, seed=5)
    assert result.created == 4
    version = dataset_version_freeze(user=curator, name="v1", split=(1, 0, 0))  # one approved pair: train only
    frozen = set(version.items.values_list("qa_pair_id", flat=True))
    assert frozen.isdisjoint(result.qa_pair_ids) and version.synthetic_count == 0

    pair = QAPair.objects.get(pk=result.qa_pair_ids[0])
    qa_pair_approve(pair=pair, reviewer=clinician, version=pair.version)
    version2 = dataset_version_freeze(user=curator, name="v2", split=(1, 0, 0))
    frozen2 = set(version2.items.values_list("qa_pair_id", flat=True))
    assert frozen2 & set(result.qa_pair_ids) == {pair.pk} and version2.synthetic_count == 1


def test_every_request_runs_as_a_background_job_claimed_once(kb, curator, django_capture_on_commit_callbacks, monkeypatch):
    queued = []
    monkeypatch.setattr("django_q.tasks.async_task", lambda *a, **k: queued.append((a, k["task_name"])))
    with django_capture_on_commit_callbacks(execute=True):
        job = rare_cases_start(user=curator, disease_ids=["ORPHA:1", "ORPHA:2"], count=2, seed=1)
    assert job.status == GenerationJob.Status.QUEUED and job.total == 4
    assert queued == [(("curation.tasks.rare_cases_task", job.pk), f"rare_cases-{job.pk}")]
    assert not QAPair.objects.exists()  # nothing is generated in the request
    done = rare_cases_run(job_id=job.pk)
    assert done.status == GenerationJob.Status.SUCCEEDED and done.created_count == 4 and done.done == 4
    assert done.progress == 1.0 and done.progress_percent == 100
    assert QAPair.objects.filter(pk__in=done.qa_pair_ids, synthetic=True, status="in_review").count() == 4
    again = rare_cases_run(job_id=job.pk)  # a redelivered task does nothing
    assert again.created_count == 4 and QAPair.objects.count() == 4


def test_the_task_runs_the_job(kb, curator):
    from curation.tasks import rare_cases_task

    job = rare_cases_start(user=curator, disease_ids=["ORPHA:2"], count=1)
    out = rare_cases_task(job.pk)
    assert out["status"] == "succeeded" and out["created"] == 1


def test_a_failing_job_keeps_its_error(kb, curator, monkeypatch):
    job = rare_cases_start(user=curator, disease_ids=["ORPHA:1"], count=1)

    def boom(*a, **k):
        raise RuntimeError("engine exploded")

    monkeypatch.setattr(rare_service, "_engine", boom)
    failed = rare_cases_run(job_id=job.pk)
    assert failed.status == GenerationJob.Status.FAILED and "engine exploded" in failed.error
    assert not QAPair.objects.exists()


def test_the_command_prints_created_ids_as_json(kb, curator):
    out = io.StringIO()
    call_command("generate_rare_cases", "--disease", "ORPHA:1", "--count", "2", "--lang", "en", "--seed", "4", "--as-user", "curator", "--json", stdout=out)
    report = json.loads(out.getvalue().strip().splitlines()[-1])
    assert report["created"] == 2 and len(report["qa_pair_ids"]) == 2
    pair = QAPair.objects.get(pk=report["qa_pair_ids"][0])
    assert pair.synthetic_meta["params"]["lang"] == "en" and "Seizure".lower() in pair.instruction.lower()


def test_the_command_refuses_a_clinician(kb, clinician):
    with pytest.raises(CommandError, match="Only curators"):
        call_command("generate_rare_cases", "--disease", "ORPHA:1", "--as-user", "clinician", stdout=io.StringIO())


def test_the_generate_page_creates_pairs_and_shows_the_job(kb, client, curator):
    client.force_login(curator)
    response = client.post(
        reverse("curation:rare-generate"), {"diseases": "ORPHA:1, CCRD:1", "count": 1, "lang": "zh", "task": "differential", "seed": 2}
    )
    job = GenerationJob.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("curation:rare-job", args=[job.pk])
    assert job.status == "queued" and not QAPair.objects.exists()  # the page queues; the worker generates
    queued = client.get(response["Location"]).content.decode()
    assert "medportal/import.js" in queued and 'data-running="1"' in queued
    assert not client.get(reverse("curation:rare-job-progress", args=[job.pk])).json()["finished"]
    job = rare_cases_run(job_id=job.pk)
    assert job.status == "succeeded" and job.created_count == 2
    page = client.get(response["Location"])
    assert page.status_code == 200 and "2099-01-01" in page.content.decode()
    progress = client.get(reverse("curation:rare-job-progress", args=[job.pk])).json()
    assert progress["finished"] and progress["created"] == 2 and progress["percent"] == 100
    assert progress["phase"] == "finished" and progress["duplicates"] == 0 and progress["errors"] == 0 and progress["error"] == ""


def test_the_generate_page_shows_a_bad_disease_id(kb, client, curator):
    client.force_login(curator)
    response = client.post(reverse("curation:rare-generate"), {"diseases": "ORPHA:404", "count": 1, "lang": "zh", "task": "diagnosis", "seed": 0})
    assert response.status_code == 200 and "Unknown disease ids: ORPHA:404" in response.content.decode()
    assert not GenerationJob.objects.exists()


def test_the_generate_page_prefills_picked_diseases(kb, client, curator):
    client.force_login(curator)
    response = client.get(reverse("curation:rare-generate") + "?disease=ORPHA:1&disease=CCRD:1")
    assert "ORPHA:1 CCRD:1" in response.content.decode()


def test_clinicians_cannot_open_the_generate_page_or_others_jobs(kb, client, clinician, curator, curator2):
    client.force_login(clinician)
    assert client.get(reverse("curation:rare-generate")).status_code == 403
    job = rare_cases_start(user=curator, disease_ids=["ORPHA:1"], count=1)
    assert client.get(reverse("curation:rare-job", args=[job.pk])).status_code == 403
    client.force_login(curator2)
    assert client.get(reverse("curation:rare-job", args=[job.pk])).status_code == 404


def test_a_job_cancelled_while_it_runs_stores_no_case(kb, curator, monkeypatch):
    from curation.workers import rare as worker
    from medportal import jobs

    job = rare_cases_start(user=curator, disease_ids=["ORPHA:1"], count=3)
    real = worker.rewrite_cases

    def cancel_after_generating(*args, **kwargs):
        jobs.request_cancel("rare_cases", job.pk)  # cancelled after the cases were generated, before they are stored
        return real(*args, **kwargs)

    monkeypatch.setattr(worker, "rewrite_cases", cancel_after_generating)
    ended = rare_cases_run(job_id=job.pk)
    assert ended.status == GenerationJob.Status.CANCELLED and ended.created_count == 0
    assert not QAPair.objects.exists()  # stored, then rolled back at the conditional succeed
