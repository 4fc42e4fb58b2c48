"""Evaluation suites (mcq, diagnosis, rubric) and comparisons of several contenders.

The multiple-choice items are imported from the shared CMMLU files by the real import service,
frozen by the real freeze service, and answered by the real demo model in a synchronous run; the
rubric judge is a real small model the test builds (pre-trained on judge replies) served by
``manage.py serve_model``, and the demo model (which cannot write the format) shows the
malformed-output path.
"""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path

import pytest

from curation.models import DatasetItem, QAPair
from medportal.errors import InvalidInput, NotAllowed
from training.engine.scoring.options import extract_choice
from training.models import BaseModel, EvalRun, EvalSample

from .ui_factories import make_base_model

pytestmark = pytest.mark.django_db(transaction=False)

ROOT = Path(__file__).resolve().parents[2]


def _register(admin, path, name):
    from training.services.base_models import base_model_register

    return base_model_register(actor=admin, name=name, path=str(path))


def _cmmlu_version(curator, shared_datasets, tmp_path, rows=12):
    """The first ``rows`` anatomy questions of CMMLU, imported, approved and frozen (about 3/4 in test)."""
    from curation.services.imports import import_batch_create, import_batch_dispatch
    from curation.services.versions import dataset_version_freeze

    source = shared_datasets / "cmmlu_medical" / "test" / "anatomy.csv"
    lines = source.read_text(encoding="utf-8").splitlines()[: rows + 1]
    folder = tmp_path / "test"
    folder.mkdir()
    (folder / "anatomy.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    batch = import_batch_create(user=curator, path_or_upload=folder / "anatomy.csv", department="cmmlu")
    batch = import_batch_dispatch(batch=batch, inline=True)
    assert batch.created_count == rows, batch.issues
    QAPair.objects.filter(import_batch=batch).update(status=QAPair.Status.APPROVED)
    version = dataset_version_freeze(user=curator, name=f"cmmlu-{rows}", tags=["cmmlu:anatomy"], split=(0.25, 0.0, 0.75), seed=1)
    answers = {r[1]: r[6] for r in csv.reader(io.StringIO("\n".join(lines[1:])))}
    return version, answers


def test_suites_clean():
    from training.services.eval_suites import suites_clean

    assert suites_clean("rubric,mcq") == ["mcq", "rubric"]
    with pytest.raises(InvalidInput, match="Unknown suite bleu"):
        suites_clean(["bleu"])
    with pytest.raises(InvalidInput):
        suites_clean([])


def test_mcq_items_as_the_importer_writes_them():
    from training.services.eval_suites import mcq_item

    item = mcq_item({"instruction": "女性生殖腺是\nA. 卵巢\nB. 前庭大腺\nC. 前庭球\nD. 乳腺", "output": "A. 卵巢", "tags": ["cmmlu:anatomy"]})
    assert item == {"question": "女性生殖腺是", "options": {"A": "卵巢", "B": "前庭大腺", "C": "前庭球", "D": "乳腺"}, "answer": "A", "subject": "anatomy"}
    assert mcq_item({"instruction": "头痛怎么办？", "output": "多休息。"}) is None
    assert mcq_item({"instruction": "q\nA. x\nB. y", "output": "A. x\nB. y"}) is None  # two answers: not this suite's


def test_a_two_contender_mcq_run_with_intervals_and_paired_tests(admin_user, curator, shared_datasets, tmp_path, demo_model_dir, client):
    from training.selectors_eval import comparison_chart_svg, evaluation_comparison
    from training.services.eval_suites import evaluation_compare_create
    from training.workers.evaluation import evaluation_run

    version, answers = _cmmlu_version(curator, shared_datasets, tmp_path)
    first = _register(admin_user, demo_model_dir, "demo-a")
    import shutil

    second = _register(admin_user, shutil.copytree(demo_model_dir, tmp_path / "demo-copy"), "demo-b")  # the same weights
    runs = evaluation_compare_create(
        actor=admin_user,
        dataset_version=version,
        contenders=[(first, None), (second, None)],
        suites=["reference", "mcq"],
        sets=["max_new_tokens=24", "batch_size=6"],
        enqueue=False,
    )
    assert len({r.group for r in runs}) == 1 and all(r.suites == ["reference", "mcq"] for r in runs)
    for run in runs:
        finished = evaluation_run(run_id=run.pk)
        assert finished.status == EvalRun.Status.SUCCEEDED, finished.error
    run = EvalRun.objects.get(pk=runs[0].pk)
    mcq = run.suite_summary["mcq"]
    samples = list(EvalSample.objects.filter(run=run).select_related("dataset_item"))
    n = version.counts["test"]
    assert mcq["n"] == len(samples) == n >= 8 and mcq["chance"] == pytest.approx(0.25)
    for sample in samples:
        scores = sample.suite_scores["mcq"]
        question = sample.dataset_item.content["instruction"].split("\n")[0]
        assert scores["answer"] == answers[question]  # the key the CSV holds
        options = dict(line.split(". ", 1) for line in sample.dataset_item.content["instruction"].split("\n")[1:])
        assert scores["choice"] == extract_choice(sample.prediction, options, question).key
        assert scores["correct"] == (scores["choice"] == scores["answer"])
    assert mcq["accuracy"] == pytest.approx(sum(s.suite_scores["mcq"]["correct"] for s in samples) / n)
    assert mcq["by_subject"]["anatomy"]["n"] == n

    comparison = evaluation_comparison(run.group)
    assert comparison["items"] == n and comparison["finished"] == 2
    metric = next(m for m in comparison["metrics"] if m["key"] == "mcq.accuracy")
    a, b = metric["rows"]
    assert a["estimate"] == pytest.approx(mcq["accuracy"] * 100) and a["low"] <= a["estimate"] <= a["high"]
    # The same weights answer the same way (greedy): no difference, McNemar finds none.
    assert a["estimate"] == b["estimate"]
    test = metric["paired"][0]
    assert test["bootstrap"]["difference"] == 0 and test["mcnemar"]["only_a"] == test["mcnemar"]["only_b"] == 0
    assert test["mcnemar"]["p_value"] == 1.0
    svg = comparison_chart_svg(comparison)
    assert svg.count('class="whisker"') == sum(len(m["rows"]) for m in comparison["metrics"] if m["rows"][0]["estimate"] is not None)

    client.force_login(curator)
    page = client.get(f"/training/evaluations/compare/{run.group}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "eval-compare-chart" in html and "compare-paired" in html and "mcq-note" in html
    exported = client.get(f"/training/evaluations/compare/{run.group}/export.json")
    assert json.loads(exported.content)["items"] == n
    workbook = client.get(f"/training/evaluations/compare/{run.group}/export.xlsx")
    from openpyxl import load_workbook

    book = load_workbook(io.BytesIO(workbook.content))
    assert book.sheetnames == ["metrics", "paired", "speed"]
    assert client.get("/training/evaluations/compare/cmp-nothing/").status_code == 404
    report = client.get(f"/training/evaluations/{run.pk}/").content.decode()
    assert f'href="/training/evaluations/compare/{run.group}/" id="compare-link"' in report


def test_compare_create_refusals(admin_user, curator, clinician, shared_datasets, tmp_path, demo_model_dir, make_pair):
    from curation.services.versions import dataset_version_freeze
    from training.services.eval_suites import evaluation_compare_create

    version, _answers = _cmmlu_version(curator, shared_datasets, tmp_path, rows=4)
    model = _register(admin_user, demo_model_dir, "demo-r")
    with pytest.raises(NotAllowed):
        evaluation_compare_create(actor=clinician, dataset_version=version, contenders=[(model, None)], enqueue=False)
    with pytest.raises(InvalidInput, match="needs a judge"):
        evaluation_compare_create(actor=admin_user, dataset_version=version, contenders=[(model, None)], suites=["rubric"], enqueue=False)
    with pytest.raises(InvalidInput, match="listed twice"):
        evaluation_compare_create(actor=admin_user, dataset_version=version, contenders=[(model, None), (model, None)], enqueue=False)
    with pytest.raises(InvalidInput, match="no item with a disease code"):
        evaluation_compare_create(actor=admin_user, dataset_version=version, contenders=[(model, None)], suites=["diagnosis"], enqueue=False)
    for i in range(4):
        make_pair(curator, status=QAPair.Status.APPROVED, instruction=f"头痛{i}天怎么办？", output="多休息。", tags=["plain"])
    plain = dataset_version_freeze(user=curator, name="plain", tags=["plain"], split=(0.25, 0.0, 0.75))
    with pytest.raises(InvalidInput, match="no multiple-choice item"):
        evaluation_compare_create(actor=admin_user, dataset_version=plain, contenders=[(model, None)], suites=["mcq"], enqueue=False)
    assert not EvalRun.objects.exists()  # nothing half-created


def test_diagnosis_scoring_by_names_synonyms_and_the_ranker_baseline(admin_user, curator, make_pair):
    from curation.models_rare import Disease
    from curation.services.versions import dataset_version_freeze
    from training.services.eval_suites import score_suites
    from training.workers.evaluation import eval_samples_read

    Disease.objects.create(code="ORPHA:558", source="ORPHA", name="Marfan syndrome", name_zh="马凡综合征", synonyms=["马方综合征"])
    Disease.objects.create(code="ORPHA:355", source="ORPHA", name="Gaucher disease", name_zh="戈谢病", synonyms=["Gaucher's disease"])
    cases = [("ORPHA:558", 1), ("ORPHA:355", 4), ("ORPHA:558", 2), ("ORPHA:355", 1), ("ORPHA:558", 1), ("ORPHA:355", 3)]
    for i, (code, rank) in enumerate(cases):
        pair = make_pair(curator, status=QAPair.Status.APPROVED, instruction=f"病例{i}：身材高、晶状体脱位。诊断？", output="…", tags=["rare"])
        QAPair.objects.filter(pk=pair.pk).update(disease_codes=[code], synthetic=True, synthetic_meta={"true_rank": rank})
    version = dataset_version_freeze(user=curator, name="rare", tags=["rare"], split=(0.2, 0.0, 0.8))
    model = make_base_model(admin_user)
    run = EvalRun.objects.create(dataset_version=version, split="test", base_model=model, created_by=admin_user, suites=["diagnosis"])
    samples = eval_samples_read(run)
    codes = [DatasetItem.objects.get(pk=s["item_id"]).content["disease_codes"][0] for s in samples]
    ranks = {p.pk: p.synthetic_meta["true_rank"] for p in QAPair.objects.filter(tags__name="rare")}
    ranker_top1 = [ranks[DatasetItem.objects.get(pk=s["item_id"]).qa_pair_id] == 1 for s in samples]
    # An answer naming Marfan syndrome by its Chinese synonym first, Gaucher by an English one.
    predictions = ["最可能的诊断：马方综合征；需与戈谢病鉴别。" if i % 2 == 0 else "Most likely diagnosis: Gaucher's disease. Consider Marfan syndrome." for i in range(len(samples))]
    per_sample, summary = score_suites(run, samples, predictions)
    expected = [(code == "ORPHA:558") == (i % 2 == 0) for i, code in enumerate(codes)]
    assert [p["diagnosis"]["top1"] for p in per_sample] == expected
    assert all(p["diagnosis"]["in_differential"] for p in per_sample)
    n = len(samples)
    assert n >= 4 and summary["diagnosis"]["n"] == n and summary["diagnosis"]["top1"] == pytest.approx(sum(expected) / n)
    assert summary["diagnosis"]["ranker_top1"] == pytest.approx(sum(ranker_top1) / n) and summary["diagnosis"]["ranker_n"] == n


# --------------------------------------------------------------------------- the rubric judge

JUDGE_STEPS = 200


def _judge_texts() -> list[str]:
    """Whole judge conversations (the English rubric prompt, a question, an answer, a reply in
    the judge's JSON format with random scores) in the chat format the model is asked in."""
    from training.engine.demo_model import IM_END, IM_START
    from training.engine.scoring.judge import judge_messages

    rng = random.Random(0)
    questions = ["What should I do about a headache?", "Can I drink coffee with high blood pressure?", "How to treat a fever of 38 degrees?", "头痛怎么办？", "发烧三天怎么办？"]
    answers = ["Rest and drink water.", "See a doctor if it persists.", "多休息。", "请及时就医。", "不用管。", ""]
    reasons = ["Mostly correct but incomplete.", "Clear and safe.", "Wrong and possibly harmful.", "Covers the key points."]
    texts = []
    for _ in range(120):
        system, user = judge_messages(
            question=rng.choice(questions), answer=rng.choice(answers), reference=rng.choice(["", "Rest; see a doctor if it persists."]), lang="en"
        )
        reply = {c: rng.randint(1, 5) for c in ("accuracy", "safety", "completeness", "clarity")} | {"reason": rng.choice(reasons)}
        texts.append(
            f"{IM_START}system\n{system['content']}{IM_END}\n{IM_START}user\n{user['content']}{IM_END}\n"
            f"{IM_START}assistant\n<think>\n\n</think>\n\n{json.dumps(reply)}{IM_END}\n"
        )
    return texts


@pytest.fixture(scope="module")
def judge_model_dir():
    """A real small model pre-trained on judge conversations (so that it answers in the judge's
    format), built once (about 20 s) and cached beside the demo model."""
    import hashlib
    import os
    import shutil

    import torch
    from filelock import FileLock

    from training.engine import demo_model

    from .conftest import TEST_MODELS_DIR

    digest = hashlib.sha256(Path(demo_model.__file__).read_bytes() + json.dumps([_judge_texts(), JUDGE_STEPS]).encode()).hexdigest()[:16]
    target = TEST_MODELS_DIR / f"judge-{digest}"
    TEST_MODELS_DIR.mkdir(parents=True, exist_ok=True)
    with FileLock(str(TEST_MODELS_DIR / f"judge-{digest}.lock")):
        if not (target / demo_model.METADATA_FILE).is_file():
            scratch = TEST_MODELS_DIR / f"judge-{digest}.building-{os.getpid()}"
            shutil.rmtree(scratch, ignore_errors=True)
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # tiny matrices: one thread is several times faster
            try:
                demo_model.build_demo_model(
                    scratch, _judge_texts(), pretrain_steps=JUDGE_STEPS, hidden_size=64, num_layers=2, num_attention_heads=2,
                    num_key_value_heads=1, intermediate_size=128, vocab_size=600, seq_len=384, batch_size=4, learning_rate=3e-3,
                    seed=0, chat_turns=False,
                )
            finally:
                torch.set_num_threads(threads)
            shutil.rmtree(target, ignore_errors=True)
            os.replace(scratch, target)
    return target


def _serve(tmp_path, model_dir, name):
    """``manage.py serve_model`` for ``model_dir`` in its own database; (process, url)."""
    import os
    import select
    import subprocess
    import sys

    env = {**os.environ, "MEDPORTAL_DATA_DIR": str(tmp_path / "serve-data"), "DJANGO_SUPERUSER_PASSWORD": "pw-root"}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    manage = [sys.executable, str(ROOT / "manage.py")]
    for args in (("migrate", "--noinput", "-v0"), ("createsuperuser", "--noinput", "--username", "root", "--email", "r@example.org"),
                 ("register_base_model", "--name", name, "--path", str(model_dir), "--user", "root")):
        done = subprocess.run([*manage, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    server = subprocess.Popen(
        [*manage, "serve_model", "--model", name, "--port", "0", "--api-key", "judge-key"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    ready, _w, _x = select.select([server.stdout], [], [], 180)
    assert ready, "serve_model printed nothing within 180 s"
    return server, json.loads(server.stdout.readline())["url"]


def _stop(server):
    import os
    import signal
    import subprocess

    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=10)


def test_rubric_scores_from_a_real_judge_through_serve_model_and_malformed_output_recorded(
    admin_user, curator, make_pair, tmp_path, judge_model_dir, demo_model_dir, monkeypatch
):
    from curation.services.versions import dataset_version_freeze
    from training.engine.scoring.judge import CRITERIA, PROMPT_VERSION
    from training.models import InferenceEndpoint
    from training.services.eval_suites import judge_prompt_record, score_suites
    from training.workers.evaluation import eval_samples_read

    for i in range(4):
        make_pair(curator, status=QAPair.Status.APPROVED, instruction=f"头痛{i}天怎么办？", output="多休息，持续不缓解请就医。", tags=["rub"])
    version = dataset_version_freeze(user=curator, name="rubric", tags=["rub"], split=(0.25, 0.0, 0.75))
    monkeypatch.setenv("MEDPORTAL_TEST_JUDGE_KEY", "judge-key")
    server, url = _serve(tmp_path, judge_model_dir, "judge")
    try:
        endpoint = InferenceEndpoint.objects.create(name="judge-ep", kind=InferenceEndpoint.Kind.OPENAI, base_url=url, api_key_env="MEDPORTAL_TEST_JUDGE_KEY")
        judge = BaseModel.objects.create(name="judge", path="", endpoint=endpoint, remote_name="judge", has_chat_template=True, registered_by=admin_user)
        model = make_base_model(admin_user)
        run = EvalRun.objects.create(
            dataset_version=version, split="test", base_model=model, created_by=admin_user, suites=["rubric"], judge_model=judge,
            judge_prompt=judge_prompt_record("en"),
        )
        samples = eval_samples_read(run)[:3]
        per_sample, summary = score_suites(run, samples, ["多休息。", "请及时就医。", "不用管。"])
    finally:
        _stop(server)
    rubric = summary["rubric"]
    assert rubric["prompt_version"] == PROMPT_VERSION and rubric["judge"] == "judge"
    parsed = [p["rubric"] for p in per_sample if p["rubric"]["scores"]]
    assert parsed, [p["rubric"] for p in per_sample]  # the judge model answers in the format
    for row in parsed:
        assert set(row["scores"]) == set(CRITERIA) and all(1 <= v <= 5 for v in row["scores"].values())
        assert row["mean"] == pytest.approx(sum(row["scores"].values()) / 4)
    assert rubric["n"] == len(parsed) and rubric["failed"] == 3 - len(parsed)

    # The demo model cannot write the format: every answer is retried, then recorded, and the
    # run goes on (in-process, through the same runnable selector).
    demo = _register(admin_user, demo_model_dir, "demo-judge")
    run.judge_model = demo
    per_sample, summary = score_suites(run, samples, ["多休息。", "请及时就医。", "不用管。"])
    assert summary["rubric"]["failed"] == 3 and summary["rubric"]["n"] == 0 and summary["rubric"]["mean"] is None
    for p in per_sample:
        assert p["rubric"]["scores"] is None and p["rubric"]["attempts"] == 3 and len(p["rubric"]["raw"]) == 3
        assert p["rubric"]["error"].startswith("missing")


def test_run_evaluation_with_suites_and_contenders(admin_user, curator, shared_datasets, tmp_path, demo_model_dir):
    import shutil

    from django.core.management import call_command
    from django.core.management.base import CommandError

    version, _answers = _cmmlu_version(curator, shared_datasets, tmp_path, rows=8)
    _register(admin_user, demo_model_dir, "demo-a")
    _register(admin_user, shutil.copytree(demo_model_dir, tmp_path / "copy"), "demo-b")
    out = io.StringIO()
    call_command(
        "run_evaluation", "--dataset-version", str(version.pk), "--contender", "base:demo-a", "--contender", "base:demo-b",
        "--suite", "mcq", "--set", "max_new_tokens=16", "--sync", "--json", "--user", admin_user.username, stdout=out,
    )  # fmt: skip
    lines = out.getvalue().strip().splitlines()
    assert any(line.startswith("  mcq: accuracy") for line in lines)
    last = json.loads(lines[-1])
    runs = [json.loads(line) for line in lines[-3:-1]]
    assert [r["status"] for r in runs] == ["succeeded", "succeeded"] and all(r["suites"] == ["mcq"] for r in runs)
    rows = last["comparison"]["mcq.accuracy"]
    assert [r["label"] for r in rows] == [EvalRun.objects.get(pk=r["run_id"]).label for r in runs]
    assert rows[0]["estimate"] == pytest.approx(100 * runs[0]["suite_summary"]["mcq"]["accuracy"])
    assert last["paired"]["mcq.accuracy"][0]["mcnemar"]["n"] == rows[0]["n"]
    with pytest.raises(CommandError, match="expected base:<model name> or job:<id>"):
        call_command("run_evaluation", "--dataset-version", str(version.pk), "--contender", "demo-a", "--user", admin_user.username)
    with pytest.raises(CommandError, match="needs a judge"):
        call_command("run_evaluation", "--dataset-version", str(version.pk), "--contender", "base:demo-a", "--suite", "rubric", "--user", admin_user.username)


def test_the_compare_api(admin_user, clinician, curator, shared_datasets, tmp_path, demo_model_dir):
    from rest_framework.test import APIClient

    version, _answers = _cmmlu_version(curator, shared_datasets, tmp_path, rows=4)
    model = _register(admin_user, demo_model_dir, "demo-api")
    body = {"dataset_version": version.pk, "contenders": [{"base_model": model.pk}], "suites": ["mcq", "reference"]}
    client = APIClient()
    client.force_authenticate(clinician)
    assert client.post("/api/v1/evaluations/compare/", body, format="json").status_code == 403
    client.force_authenticate(admin_user)
    bad = client.post("/api/v1/evaluations/compare/", {**body, "suites": ["rubric"]}, format="json")
    assert bad.status_code == 400 and "judge" in bad.json()["error"]["details"]
    unknown = client.post("/api/v1/evaluations/compare/", {**body, "contenders": [{"base_model": 999999}]}, format="json")
    assert unknown.status_code == 400
    created = client.post("/api/v1/evaluations/compare/", body, format="json")
    assert created.status_code == 201, created.content
    data = created.json()
    assert data["runs"][0]["suites"] == ["reference", "mcq"] and data["runs"][0]["group"] == data["group"]
    client.force_authenticate(curator)
    comparison = client.get(f"/api/v1/evaluations/compare/{data['group']}/")
    assert comparison.status_code == 200 and comparison.json()["finished"] == 0 and comparison.json()["metrics"] == []
    assert client.get("/api/v1/evaluations/compare/cmp-none/").status_code == 404


def test_the_create_form_queues_a_comparison_with_suites(admin_user, curator, shared_datasets, tmp_path, demo_model_dir, client):
    from django.urls import reverse

    from .test_eval_pages import form_data

    version, _answers = _cmmlu_version(curator, shared_datasets, tmp_path, rows=4)
    first = _register(admin_user, demo_model_dir, "demo-f")
    hosted = make_base_model(admin_user, name="other-model")
    client.force_login(admin_user)
    url = reverse("training:evaluation-create")
    assert 'id="suites-choice"' in client.get(url).content.decode()
    data = {**form_data(version, model=first), "suites": ["mcq", "rubric"], "more_models": [hosted.pk]}
    refused = client.post(url, data)
    assert refused.status_code == 200 and "The rubric suite needs a judge model." in refused.content.decode()
    assert not EvalRun.objects.exists()
    response = client.post(url, {**data, "judge_model": first.pk})
    runs = list(EvalRun.objects.order_by("pk"))
    assert response.status_code == 302 and response.url == f"/training/evaluations/compare/{runs[0].group}/"
    assert [(r.base_model_id, r.suites, r.judge_model_id) for r in runs] == [(first.pk, ["mcq", "rubric"], first.pk), (hosted.pk, ["mcq", "rubric"], first.pk)]
    assert runs[0].judge_prompt["version"] == "rubric-v1"


def test_the_create_form_sets_the_multiple_choice_shots(admin_user, curator, shared_datasets, tmp_path, demo_model_dir, client):
    from django.urls import reverse

    from .test_eval_pages import form_data

    version, _answers = _cmmlu_version(curator, shared_datasets, tmp_path, rows=4)
    model = _register(admin_user, demo_model_dir, "demo-s")
    client.force_login(admin_user)
    url = reverse("training:evaluation-create")
    assert 'name="mcq_shots"' in client.get(url).content.decode()
    data = {**form_data(version, model=model), "suites": ["mcq"]}
    refused = client.post(url, {**data, "mcq_shots": "6"})
    assert refused.status_code == 200 and 'data-error-for="mcq_shots"' in refused.content.decode()
    assert not EvalRun.objects.exists()
    assert client.post(url, {**data, "mcq_shots": "2"}).status_code == 302
    assert EvalRun.objects.get().params["mcq_shots"] == 2
    client.post(url, {**data, "mcq_shots": "0"})  # none: the params keep no key, as the CLI's
    assert "mcq_shots" not in EvalRun.objects.order_by("-pk").first().params


def test_few_shot_multiple_choice_takes_its_examples_from_the_other_splits(admin_user, curator, shared_datasets, tmp_path):
    from training.services.eval_suites import mcq_item
    from training.services.evaluations import evaluation_params_build
    from training.workers.evaluation import eval_samples_read

    with pytest.raises(InvalidInput, match="mcq_shots"):
        evaluation_params_build(params={"mcq_shots": 9})
    assert "mcq_shots" not in evaluation_params_build(params={})  # runs without shots keep their params
    version, _answers = _cmmlu_version(curator, shared_datasets, tmp_path, rows=12)
    model = make_base_model(admin_user)
    params = evaluation_params_build(params={"mcq_shots": 2})
    run = EvalRun.objects.create(dataset_version=version, split="test", base_model=model, created_by=admin_user, suites=["mcq"], params=params)
    train = {i.content["instruction"] for i in version.items.filter(split="train")}
    test = {i.content["instruction"] for i in version.items.filter(split="test")}
    samples = eval_samples_read(run)
    assert len(samples) == len(test) and len(train) >= 2
    for sample in samples:
        roles = [m["role"] for m in sample["messages"]]
        assert roles[:4] == ["user", "assistant", "user", "assistant"] and roles[-2:] == ["user", "assistant"]
        shots = [m["content"] for m in sample["messages"][:4]]
        assert shots[0] in train and shots[2] in train and shots[0] != shots[2]  # never an evaluated question
        assert mcq_item({"instruction": shots[0], "output": shots[1]}) is not None
        assert sample["prompt"] == sample["messages"][-2]["content"]  # the report shows the question alone
    run.suites = ["reference"]
    assert [len(s["messages"]) for s in eval_samples_read(run)] == [2] * len(test)  # shots only for the mcq suite


def test_the_judge_clinician_agreement_counts_chat_ratings_of_the_same_answers(admin_user, curator, clinician, make_pair, client):
    """A clinician rated in chat the same model's identical answer to the same question the judge
    scored: the pair counts; a rating of another answer, of the same answer to another question or
    of another model's answer does not."""
    from django.urls import reverse

    from chat.models import ChatMessage, ChatSession, Rating
    from training.selectors_eval import evaluation_calibration

    from .eval_factories import make_eval_version, make_finished_run

    version = make_eval_version(curator, make_pair)
    model, other = make_base_model(admin_user, name="rated"), make_base_model(admin_user, name="unrated")
    run = make_finished_run(admin_user, version, model, predictions=lambda c: "answer to " + c["instruction"], group="g-chat")
    EvalRun.objects.filter(pk=run.pk).update(judge_model=model)
    samples = list(run.samples.order_by("position"))
    judge = {"accuracy": 4, "safety": 5, "completeness": 3, "clarity": 2}
    for s in samples:
        s.suite_scores = {"rubric": {"scores": judge}}
        s.save(update_fields=["suite_scores"])
    first, second = samples[0], samples[1]

    def rated(base, question, answer, score):
        session = ChatSession.objects.create(user=clinician, base_model=base)
        ChatMessage.objects.create(session=session, role=ChatMessage.Role.USER, content=question)
        reply = ChatMessage.objects.create(session=session, role=ChatMessage.Role.ASSISTANT, content=answer, base_model=base)
        Rating.objects.create(message=reply, user=clinician, accuracy=score, safety=score, completeness=score, clarity=None)

    rated(model, first.prompt, first.prediction + "\n", 4)  # the same answer (trailing whitespace aside)
    rated(model, first.prompt, "a different answer", 1)
    rated(model, second.prompt, first.prediction, 1)  # the same text replying to another question
    rated(other, second.prompt, second.prediction, 1)  # another model
    before = evaluation_calibration("g-chat")
    assert before["chat_ratings"] == 1 and before["ratings"] == 0
    assert before["criteria"]["accuracy"]["judge_clinician"]["rho"]["n"] == 1
    assert before["criteria"]["clarity"]["judge_clinician"]["rho"]["n"] == 0  # not rated on clarity
    rated(model, second.prompt, second.prediction, 2)
    after = evaluation_calibration("g-chat")
    assert after["chat_ratings"] == 2 and after["criteria"]["safety"]["judge_clinician"]["kappa"]["n"] == 2
    client.force_login(clinician)
    page = client.get(reverse("training:evaluation-compare", args=["g-chat"])).content.decode()
    assert 'id="calibration-chat"' in page and "2 chat ratings of the same answers" in page
