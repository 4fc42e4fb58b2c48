"""Drafting QA candidates from documents through a real local model (the demo model the tests
build), the grounding check on hand-labelled cases, cancel, review, permissions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone

from curation.literature import grounding
from curation.literature.drafting import PROMPT_VERSION, PROMPTS, cited_sentences, clean_answer
from curation.models import Document, DraftRun, QAPair
from curation.services.literature import documents_import
from curation.services.literature_drafting import draft_run_cancel, draft_run_start
from curation.workers.literature import draft_run_work
from medportal import jobs
from medportal.errors import InvalidInput, NotAllowed
from tests.training.conftest import demo_model_dir  # noqa: F401  (session fixture)

DATA = Path(__file__).parent / "literature_data"
LABELLED = DATA / "grounding_labelled.jsonl"


def labelled_cases() -> list[dict]:
    return [json.loads(line) for line in LABELLED.read_text(encoding="utf-8").splitlines() if line.strip()]


# --------------------------------------------------------------------------- the grounding check (no database)


def test_the_labelled_set_has_at_least_100_cases_of_both_kinds():
    cases = labelled_cases()
    assert len(cases) >= 100 and len({c["id"] for c in cases}) == len(cases)
    assert {c["label"] for c in cases} == {"supported", "unsupported"}
    assert sum(c["label"] == "unsupported" for c in cases) >= 40


@pytest.mark.parametrize(
    "case_id,kinds",
    [
        (2, {"number"}),  # 120 patients for 100
        (16, {"drug"}),  # warfarin / rivaroxaban for heparin
        (17, {"dose"}),  # 5000 units not in the sentence
        (63, {"dose"}),  # aspirin 300 mg for 100 mg
        (64, {"dose", "drug"}),  # clopidogrel 75 mg
        (72, {"dose", "drug"}),  # rosuvastatin 20 mg
        (99, {"dose", "drug"}),  # 氨氯地平 5 毫克 (Chinese)
        (100, {"number"}),  # 36% for 26% (Chinese)
        (105, {"dose", "drug"}),  # 瑞舒伐他汀 20 毫克 for 阿托伐他汀 40 毫克
        (107, {"number"}),  # Chinese answer to an English sentence
        (80, {"overlap"}),  # an invented finding with other words
        (111, {"overlap"}),  # a true paraphrase in other words: flagged all the same (a known false alarm)
    ],
)
def test_flags_on_labelled_cases(case_id, kinds):
    case = next(c for c in labelled_cases() if c["id"] == case_id)
    result = grounding.check(case["answer"], case["support"])
    assert not result.ok and kinds <= {f["kind"] for f in result.flags}


@pytest.mark.parametrize("case_id", [1, 3, 9, 22, 62, 65, 69, 71, 77, 96, 98, 101, 104, 106, 108])
def test_supported_labelled_cases_pass(case_id):
    case = next(c for c in labelled_cases() if c["id"] == case_id)
    result = grounding.check(case["answer"], case["support"])
    assert result.ok, result.flags


def test_precision_and_recall_on_the_labelled_set_stay_above_the_measured_floor():
    """bench/literature.py reports the figures (docs/BENCHMARKS.md); a change of the check that
    loses much of either fails here."""
    tp = fp = fn = 0
    for case in labelled_cases():
        flagged = not grounding.check(case["answer"], case["support"]).ok
        bad = case["label"] == "unsupported"
        tp += flagged and bad
        fp += flagged and not bad
        fn += bad and not flagged
    assert tp / (tp + fp) >= 0.85 and tp / (tp + fn) >= 0.75


def test_no_supporting_sentence_is_a_flag_and_cross_language_overlap_is_not_measured():
    assert grounding.check("Aspirin helps.", []).flags == [{"kind": "no_support", "text": ""}]
    result = grounding.check("阿司匹林使复发率降至 8.2%。", ["Recurrent stroke occurred in 8.2% of patients taking aspirin."])
    assert result.ok and result.overlap is None


def test_citations_are_read_and_stripped_from_the_answer():
    reply = "Answer: Aspirin lowered stroke [S3]. Bleeding rose [S4][S5], see [S2, S7] and [S99]."
    assert cited_sentences(reply, 8) == [2, 3, 4, 5, 7]
    assert clean_answer(reply) == "Aspirin lowered stroke. Bleeding rose, see and."


def test_a_reasoning_block_is_not_part_of_the_question_or_answer():
    from curation.literature.drafting import clean_question, without_thinking

    assert clean_question("<think>\nThe abstract says [S9]…\n</think>\n\nQuestion: Does aspirin help?") == "Does aspirin help?"
    assert clean_answer("<think>maybe [S1]</think>Yes [S2].") == "Yes."
    assert cited_sentences(without_thinking("<think>maybe [S1]</think>Yes [S2]."), 3) == [2]
    assert clean_answer("<think>never closed") == ""


# --------------------------------------------------------------------------- drafting through the demo model


@pytest.fixture
def documents(curator):
    documents_import(user=curator, name="efetch.xml", data=(DATA / "efetch_pubmed.xml").read_bytes())
    documents_import(user=curator, name="note_zh.md", data=(DATA / "note_zh.md").read_bytes())
    return list(Document.objects.order_by("pk"))


@pytest.fixture
def demo_model(settings, demo_model_dir, admin_user):  # noqa: F811
    from training.models import BaseModel
    from training.runnables import reset_backends

    base = BaseModel.objects.create(name="demo-drafter", path=str(demo_model_dir), registered_by=admin_user, has_chat_template=True)
    settings.MEDPORTAL_INFERENCE_URL = ""
    reset_backends()
    yield base
    reset_backends()


def _start(curator, documents, demo_model, monkeypatch, django_capture_on_commit_callbacks, **kw):
    queued = []
    monkeypatch.setattr("django_q.tasks.async_task", lambda *a, **k: queued.append(a) or "task-id")
    with django_capture_on_commit_callbacks(execute=True):
        run = draft_run_start(user=curator, document_ids=[d.pk for d in documents], model_key=str(demo_model.pk), **kw)
    assert queued and queued[0][0] == "curation.tasks_literature.literature_draft_task" and queued[0][1] == run.pk
    return run


@pytest.mark.django_db
def test_a_run_drafts_candidates_into_review_with_their_source_and_check(
    curator, clinician, documents, demo_model, monkeypatch, django_capture_on_commit_callbacks, client
):
    run = _start(curator, documents[:2], demo_model, monkeypatch, django_capture_on_commit_callbacks, per_document=2, lang="en", seed=3, max_new_tokens=48)
    assert run.status == DraftRun.Status.QUEUED and run.total == 4
    assert run.prompt_version == PROMPT_VERSION and run.prompt == json.loads(json.dumps(PROMPTS)) and run.model_label == "demo-drafter"

    run = draft_run_work(run_id=run.pk)
    assert run.status == DraftRun.Status.SUCCEEDED, run.error
    assert run.done == 4 and run.created_count + run.duplicate_count + len(run.errors) == 4 and run.created_count >= 1
    pairs = list(QAPair.objects.filter(pk__in=run.qa_pair_ids))
    assert len(pairs) == run.created_count and run.flagged_count == sum(not p.synthetic_meta["grounding"]["ok"] for p in pairs)
    by_pk = {d.pk: d for d in documents}
    for pair in pairs:
        meta = pair.synthetic_meta
        document = by_pk[meta["document_id"]]
        assert pair.status == QAPair.Status.IN_REVIEW and pair.synthetic and pair.source == "literature"
        assert pair.source_ref == document.reference and pair.author == curator
        assert meta["model"] == "demo-drafter" and meta["prompt_version"] == PROMPT_VERSION and meta["run_id"] == run.pk
        assert meta["question_type"] in ("fact", "mechanism", "treatment", "scenario") and meta["lang"] == "en"
        assert meta["support_by"] in ("model", "aligner")
        assert all(1 <= n <= len(document.sentences) for n in meta["support"])
        # the stored check is the check of the stored answer against the named sentences
        support = [document.sentences[n - 1]["text"] for n in meta["support"]]
        assert meta["grounding"] == grounding.check(pair.output, support).as_dict()
        assert pair.instruction.strip() and pair.output.strip()

    # The review page shows the abstract with the supporting sentences marked and the check.
    pair = pairs[0]
    client.force_login(clinician)
    page = client.get(reverse("curation:pair-detail", args=[pair.pk])).content.decode()
    assert 'id="literature-evidence"' in page and f'data-ok="{int(pair.synthetic_meta["grounding"]["ok"])}"' in page
    for n in pair.synthetic_meta["support"]:
        assert f'supporting" data-n="{n}"' in page
    assert page.count('supporting" data-n=') == len(pair.synthetic_meta["support"])
    # The document page lists the candidates drafted from it.
    doc_page = client.get(reverse("curation:literature-document", args=[pair.synthetic_meta["document_id"]])).content.decode()
    assert f'data-pair="{pair.pk}"' in doc_page
    other = next(d for d in documents if d.pk != pair.synthetic_meta["document_id"])
    assert all(f'data-pair="{p.pk}"' not in client.get(reverse("curation:literature-document", args=[other.pk])).content.decode() for p in pairs if p.synthetic_meta["document_id"] != other.pk)

    # The same seed and parameters draft the same candidates (in-process sampling is seeded).
    QAPair.objects.filter(pk__in=run.qa_pair_ids).delete()
    again = draft_run_work(run_id=_start(curator, documents[:2], demo_model, monkeypatch, django_capture_on_commit_callbacks, per_document=2, lang="en", seed=3, max_new_tokens=48).pk)
    assert sorted(QAPair.objects.filter(pk__in=again.qa_pair_ids).values_list("instruction", flat=True)) == sorted(p.instruction for p in pairs)


@pytest.mark.django_db
def test_unreviewed_candidates_never_enter_a_dataset_version(curator, clinician, documents, demo_model, monkeypatch, django_capture_on_commit_callbacks, make_pair):
    from curation.services.review import qa_pair_approve
    from curation.services.versions import dataset_version_freeze

    run = draft_run_work(run_id=_start(curator, documents[:1], demo_model, monkeypatch, django_capture_on_commit_callbacks, per_document=2, max_new_tokens=32).pk)
    assert run.created_count >= 1
    make_pair(curator, status=QAPair.Status.APPROVED)
    version = dataset_version_freeze(user=curator, name="v1", split=(1, 0, 0))
    assert set(version.items.values_list("qa_pair_id", flat=True)).isdisjoint(run.qa_pair_ids) and version.synthetic_count == 0
    pair = QAPair.objects.get(pk=run.qa_pair_ids[0])
    qa_pair_approve(pair=pair, reviewer=clinician, version=pair.version, confirm_identifiers=True)
    version2 = dataset_version_freeze(user=curator, name="v2", split=(1, 0, 0))
    assert set(version2.items.values_list("qa_pair_id", flat=True)) & set(run.qa_pair_ids) == {pair.pk}


@pytest.mark.django_db
def test_cancel_keeps_finished_documents_and_stops(curator, documents, demo_model, monkeypatch, django_capture_on_commit_callbacks):
    run = _start(curator, documents[:3], demo_model, monkeypatch, django_capture_on_commit_callbacks, per_document=1, max_new_tokens=24)
    import curation.workers.literature as worker

    real = worker.draft_model_resolve
    calls = []

    def resolve(key, **kw):
        label, generate = real(key, **kw)

        def counting(messages, **params):
            calls.append(1)
            if len(calls) == 2:  # the first document's answer: cancel while it is being drafted
                draft_run_cancel(user=curator, run=DraftRun.objects.get(pk=run.pk))
            return generate(messages, **params)

        return label, counting

    monkeypatch.setattr(worker, "draft_model_resolve", resolve)
    ended = draft_run_work(run_id=run.pk)
    assert ended.status == DraftRun.Status.CANCELLED and len(calls) == 2
    assert ended.done == 1 and ended.created_count + ended.duplicate_count + len(ended.errors) == 1
    assert all(p.synthetic_meta["document_id"] == documents[0].pk for p in QAPair.objects.filter(pk__in=ended.qa_pair_ids))


@pytest.mark.django_db
def test_a_queued_run_cancelled_never_runs_and_a_model_that_cannot_run_fails_the_run(curator, documents, demo_model, monkeypatch, django_capture_on_commit_callbacks):
    run = _start(curator, documents[:1], demo_model, monkeypatch, django_capture_on_commit_callbacks)
    assert draft_run_cancel(user=curator, run=run)
    assert draft_run_work(run_id=run.pk).status == DraftRun.Status.CANCELLED and not QAPair.objects.exists()

    run = _start(curator, documents[:1], demo_model, monkeypatch, django_capture_on_commit_callbacks)
    demo_model.is_active = False
    demo_model.save()
    failed = draft_run_work(run_id=run.pk)
    assert failed.status == DraftRun.Status.FAILED and "not a registered, active base model" in failed.error
    assert not QAPair.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"document_ids": []}, "at least one document"),
        ({"document_ids": [999999]}, "No such document: 999999"),
        ({"document_ids": [2**64]}, "No such document: 18446744073709551616"),
        ({"per_document": 0}, "between 1 and 10"),
        ({"types": ["gossip"]}, "Choose question types"),
        ({"lang": "fr"}, "zh or en"),
        ({"model_key": "999"}, "not a registered, active base model"),
        ({"model_key": "x:y"}, "names no model"),
    ],
)
def test_bad_requests_are_refused_with_a_clear_message(curator, documents, demo_model, kwargs, message):
    args = {"document_ids": [documents[0].pk], "model_key": str(demo_model.pk), **kwargs}
    with pytest.raises(InvalidInput, match=message):
        draft_run_start(user=curator, **args)
    assert not DraftRun.objects.exists()


@pytest.mark.django_db
def test_clinicians_cannot_draft_and_curators_see_only_their_runs(client, curator, curator2, clinician, documents, demo_model, monkeypatch, django_capture_on_commit_callbacks):
    with pytest.raises(NotAllowed):
        draft_run_start(user=clinician, document_ids=[documents[0].pk], model_key=str(demo_model.pk))
    run = _start(curator, documents[:1], demo_model, monkeypatch, django_capture_on_commit_callbacks)
    client.force_login(clinician)
    assert client.get(reverse("curation:literature-draft")).status_code == 403
    assert client.get(reverse("curation:literature-run", args=[run.pk])).status_code == 403
    assert client.post(reverse("curation:literature-run-cancel", args=[run.pk])).status_code == 403
    client.force_login(curator2)
    assert client.get(reverse("curation:literature-run", args=[run.pk])).status_code == 404
    assert client.post(reverse("curation:literature-run-cancel", args=[run.pk])).status_code == 404
    assert DraftRun.objects.get(pk=run.pk).status == DraftRun.Status.QUEUED


@pytest.mark.django_db
def test_the_draft_page_starts_a_run_and_the_run_page_shows_progress(client, curator, documents, demo_model, monkeypatch):
    monkeypatch.setattr("django_q.tasks.async_task", lambda *a, **k: "task-id")
    client.force_login(curator)
    form = client.get(reverse("curation:literature-draft"), {"document": [documents[0].pk, documents[1].pk]}).content.decode()
    assert documents[0].reference in form and "demo-drafter" in form
    response = client.post(
        reverse("curation:literature-draft"),
        {"documents": f"{documents[0].pk},{documents[1].pk}", "model": str(demo_model.pk), "per_document": 3, "types": ["fact", "treatment"], "lang": "zh", "seed": 1},
    )
    run = DraftRun.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("curation:literature-run", args=[run.pk])
    assert run.document_ids == [documents[0].pk, documents[1].pk] and run.params["types"] == ["fact", "treatment"] and run.total == 6
    page = client.get(response["Location"]).content.decode()
    assert PROMPT_VERSION in page and 'data-running="1"' in page
    progress = client.get(reverse("curation:literature-run-progress", args=[run.pk])).json()
    assert progress["rows_total"] == 6 and progress["finished"] is False
    assert progress["phase"] == "queued" and set(progress) == {
        "id", "status", "status_display", "phase", "finished", "rows_done", "rows_total", "percent",
        "created", "flagged", "errors", "error",
    }
    client.post(reverse("curation:literature-run-cancel", args=[run.pk]))
    assert DraftRun.objects.get(pk=run.pk).status == DraftRun.Status.CANCELLED
    bad = client.post(reverse("curation:literature-draft"), {"documents": "", "model": str(demo_model.pk), "per_document": 1, "types": ["fact"], "lang": "zh", "seed": 0})
    assert bad.status_code == 200 and "Choose at least one document." in bad.content.decode()


def test_the_job_kind_is_registered_on_the_shared_lifecycle():
    kind = jobs.kind_of("literature_draft")
    assert kind.model == "curation.DraftRun" and kind.task == "curation.tasks_literature.literature_draft_task"


@pytest.mark.django_db
def test_a_cancel_stops_a_generation_while_it_streams(curator, documents, demo_model, monkeypatch, django_capture_on_commit_callbacks):
    """With the heartbeat due at every piece, a cancel requested while the first generation
    streams stops it there: nothing is stored, the run ends cancelled."""
    import curation.workers.literature as worker

    run = _start(curator, documents[:1], demo_model, monkeypatch, django_capture_on_commit_callbacks, per_document=2, max_new_tokens=64)
    monkeypatch.setattr(worker, "BEAT_EVERY_S", 0.0)
    real = worker.draft_model_resolve
    pieces = []

    def resolve(key, **kw):
        label, generate = real(key, **kw)

        def watched(messages, *, on_piece=None, **params):
            def spy():
                pieces.append(1)
                if len(pieces) == 3:
                    DraftRun.objects.filter(pk=run.pk).update(cancel_requested_at=timezone.now())
                return on_piece()

            return generate(messages, on_piece=spy, **params)

        return label, watched

    monkeypatch.setattr(worker, "draft_model_resolve", resolve)
    ended = draft_run_work(run_id=run.pk)
    assert ended.status == DraftRun.Status.CANCELLED and ended.done == 0
    assert len(pieces) == 3  # the generation stopped at the piece after the cancel
    assert not QAPair.objects.exists()


@pytest.mark.django_db
def test_chinese_answers_are_asked_for_in_chinese_with_the_numbered_abstract(curator, documents, demo_model, monkeypatch, django_capture_on_commit_callbacks):
    import curation.workers.literature as worker

    zh_doc = next(d for d in documents if d.pmid == "31000020")
    run = _start(curator, [zh_doc], demo_model, monkeypatch, django_capture_on_commit_callbacks, per_document=1, types=["treatment"], lang="zh", max_new_tokens=24)
    real = worker.draft_model_resolve
    asked = []

    def resolve(key, **kw):
        label, generate = real(key, **kw)

        def spy(messages, **params):
            asked.append(messages)
            return generate(messages, **params)

        return label, spy

    monkeypatch.setattr(worker, "draft_model_resolve", resolve)
    ended = draft_run_work(run_id=run.pk)
    assert ended.status == DraftRun.Status.SUCCEEDED and ended.done == 1
    question, answer = asked
    assert question[0]["content"] == PROMPTS["system"]["zh"]
    assert "关于治疗、药物或处理决策的问题" in question[1]["content"] and "[S1] 老年高血压患者的最佳降压目标仍有争议。" in question[1]["content"]
    assert "请只依据摘要，用中文回答这个问题" in answer[1]["content"]
    for pair in QAPair.objects.filter(pk__in=ended.qa_pair_ids):
        assert pair.synthetic_meta["lang"] == "zh" and pair.synthetic_meta["question_type"] == "treatment"
