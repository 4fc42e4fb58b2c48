"""The evaluation pages: list, create form, report, exports, cancel, per role.

Every role reads runs, reports and exports; only admins create and cancel (hidden controls
for the others, and 403 on the server). Finished runs come from tests/training/eval_factories.py
(rows written directly, scores from the real metrics module); one test runs a real evaluation
on the demo model through the service and reads its report.
"""

from __future__ import annotations

import html
import io
import json
import re

import pytest
from django.urls import reverse

from training.engine.metrics import MODE_LABELS
from training.models import EvalRun, EvalSample
from training.views.evaluations import ENGINE_MODE_LABELS, GENERATION_PRESETS, diff_html

from .eval_factories import BASE, TUNED, make_eval_pair, make_eval_version, make_finished_run, make_succeeded_job
from .ui_factories import job_update, make_base_model

pytestmark = pytest.mark.django_db


@pytest.fixture
def pair(admin_user, curator, make_pair):
    return make_eval_pair(admin_user, curator, make_pair)


def form_data(version, *, job=None, model=None, preset: str = "greedy", **changes) -> dict:
    data = {
        "dataset_version": version.pk,
        "split": "test",
        "base_model": model.pk if model else "",
        "job": job.pk if job else "",
        "mode": "llamafactory",
        "max_samples": "",
        "generation": preset,
    }
    for key, value in GENERATION_PRESETS[preset].items():
        data[key] = "" if value is None else str(value)
    for key, value in changes.items():
        if value is False:
            data.pop(key, None)
        else:
            data[key] = "on" if value is True else str(value)
    return data


def text(response) -> str:
    return response.content.decode()


# ---- the difference highlighter ------------------------------------------------------------


def test_diff_html_marks_what_the_answer_adds_and_what_it_misses_character_by_character():
    prediction, reference = diff_html("多休息，按时吃药。", "多休息，多喝水。")
    assert str(prediction) == "多休息，<del>按时吃药</del>。"
    assert str(reference) == "多休息，<ins>多喝水</ins>。"


def test_diff_html_leaves_identical_texts_unmarked_and_marks_an_empty_answer_as_missing_everything():
    assert diff_html("相同", "相同") == ("相同", "相同")
    prediction, reference = diff_html("", "请就医")
    assert (str(prediction), str(reference)) == ("", "<ins>请就医</ins>")


def test_diff_html_escapes_markup_so_a_script_in_an_answer_stays_text():
    answer, reference = "<script>alert('x')</script>咳嗽", "咳嗽 & <b>痰</b>"
    prediction_html, reference_html = diff_html(answer, reference)
    # Only our own tags are markup; without them, the escaped texts read back unchanged.
    assert set(re.findall(r"<(/?\w+)", prediction_html + reference_html)) <= {"ins", "/ins", "del", "/del"}
    assert html.unescape(re.sub(r"</?(ins|del)>", "", prediction_html)) == answer
    assert html.unescape(re.sub(r"</?(ins|del)>", "", reference_html)) == reference


def test_diff_html_shows_very_long_texts_escaped_without_marks():
    long = "<i>" + "甲" * 25_000
    prediction, reference = diff_html(long, "乙")
    assert prediction.startswith("&lt;i&gt;") and "<del>" not in prediction and str(reference) == "乙"


def test_the_marked_copies_of_the_engines_mode_labels_match_the_engine():
    assert ENGINE_MODE_LABELS == MODE_LABELS


# ---- the list ------------------------------------------------------------------------------


def test_every_role_sees_the_list_with_scores_and_only_admins_the_new_button(client, curator, clinician, admin_user, pair):
    base, tuned, _job = pair
    for user in (curator, clinician, admin_user):
        client.force_login(user)
        page = text(client.get(reverse("training:evaluation-list")))
        assert f'data-run="{base.pk}"' in page and f'data-run="{tuned.pk}"' in page
        assert f"{tuned.summary['rouge-l']:.4f}" in page and "LLaMA-Factory-comparable" in page
        assert ('id="new-evaluation"' in page) == (user == admin_user)


def test_the_list_filters_by_dataset_version_and_by_job(client, clinician, admin_user, curator, make_pair, pair):
    base, tuned, job = pair
    other_version = make_eval_version(curator, make_pair)
    other = make_finished_run(admin_user, other_version, base.base_model, predictions=[""] * 4)
    client.force_login(clinician)
    page = text(client.get(reverse("training:evaluation-list"), {"dataset_version": base.dataset_version_id}))
    assert f'data-run="{base.pk}"' in page and f'data-run="{tuned.pk}"' in page and f'data-run="{other.pk}"' not in page
    page = text(client.get(reverse("training:evaluation-list"), {"job": job.pk}))
    assert f'data-run="{tuned.pk}"' in page and f'data-run="{base.pk}"' not in page and f'data-run="{other.pk}"' not in page


def test_an_active_run_shows_its_progress_in_the_list_and_the_table_refreshes_itself(client, clinician, pair):
    _base, tuned, _job = pair
    EvalRun.objects.filter(pk=tuned.pk).update(status=EvalRun.Status.RUNNING, progress=0.5, done_samples=2, summary={})
    client.force_login(clinician)
    page = text(client.get(reverse("training:evaluation-list")))
    assert 'hx-trigger="every 3s"' in page and 'aria-valuenow="50"' in page


# ---- the form ------------------------------------------------------------------------------


def test_only_admins_get_the_form_and_others_are_refused_on_create_and_cancel(client, curator, clinician, admin_user, pair):
    _base, tuned, _job = pair
    EvalRun.objects.filter(pk=tuned.pk).update(status=EvalRun.Status.QUEUED)
    client.force_login(admin_user)
    assert client.get(reverse("training:evaluation-create")).status_code == 200
    for user in (curator, clinician):
        client.force_login(user)
        assert client.get(reverse("training:evaluation-create")).status_code == 403
        assert (
            client.post(reverse("training:evaluation-create"), form_data(tuned.dataset_version, model=tuned.base_model)).status_code == 403
        )
        assert client.post(reverse("training:evaluation-cancel", args=[tuned.pk])).status_code == 403
        assert 'id="cancel-form"' not in text(client.get(reverse("training:evaluation-detail", args=[tuned.pk])))
    assert EvalRun.objects.count() == 2 and EvalRun.objects.get(pk=tuned.pk).status == EvalRun.Status.QUEUED


def test_the_form_offers_both_metric_modes_and_the_vllm_infer_preset_and_prefills_a_job(client, admin_user, pair):
    _base, _tuned, job = pair
    client.force_login(admin_user)
    page = text(client.get(reverse("training:evaluation-create"), {"job": job.pk}))
    assert "LLaMA-Factory-comparable" in page and "standard rouge-score" in page
    assert 'value="vllm_infer"' in page and '"temperature": 0.95' in page
    assert re.search(rf'<option value="{job.pk}" selected>', page)
    assert re.search(rf'<option value="{job.dataset_version_id}" selected>', page)


def test_an_admin_queues_one_run_of_a_base_model_with_the_chosen_settings(client, admin_user, curator, make_pair):
    version = make_eval_version(curator, make_pair)
    model = make_base_model(admin_user, name="solo")
    client.force_login(admin_user)
    response = client.post(
        reverse("training:evaluation-create"), form_data(version, model=model, preset="vllm_infer", mode="standard", max_samples=2, seed=7)
    )
    run = EvalRun.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("training:evaluation-detail", args=[run.pk])
    assert (run.base_model, run.job, run.mode, run.status, run.total_samples) == (model, None, "standard", "queued", 2)
    assert (run.params["temperature"], run.params["top_k"], run.params["max_new_tokens"], run.params["seed"]) == (0.95, 50, 1024, 7)
    page = text(client.get(response["Location"]))
    assert f"Evaluation run #{run.pk} was queued." in page and 'id="eval-progress"' in page and 'hx-trigger="every 2s"' in page


def test_an_admin_queues_the_base_and_tuned_pair_of_a_job(client, admin_user, curator, make_pair):
    version = make_eval_version(curator, make_pair)
    model = make_base_model(admin_user, name="pairbase")
    job = make_succeeded_job(admin_user, version, model)
    client.force_login(admin_user)
    response = client.post(reverse("training:evaluation-create"), form_data(version, job=job, also_base=True))
    base, tuned = EvalRun.objects.order_by("pk")
    assert response["Location"] == reverse("training:evaluation-detail", args=[tuned.pk])
    assert (base.job, tuned.job, base.base_model, tuned.base_model) == (None, job, model, model)
    assert base.group and base.group == tuned.group and base.params == tuned.params


def test_without_the_checkbox_only_the_tuned_run_is_queued(client, admin_user, curator, make_pair):
    version = make_eval_version(curator, make_pair)
    job = make_succeeded_job(admin_user, version, make_base_model(admin_user, name="tunedonly"))
    client.force_login(admin_user)
    client.post(reverse("training:evaluation-create"), form_data(version, job=job, also_base=False))
    assert list(EvalRun.objects.values_list("job", "group")) == [(job.pk, "")]


def test_the_form_shows_field_errors_from_the_form_and_from_the_service(client, admin_user, curator, make_pair, pair):
    _base, _tuned, job = pair
    client.force_login(admin_user)
    url = reverse("training:evaluation-create")
    other_model = make_base_model(admin_user, name="another")
    # Neither a model nor a job; a temperature out of range.
    page = text(client.post(url, form_data(job.dataset_version, temperature=9)))
    assert 'data-error-for="base_model"' in page and 'data-error-for="temperature"' in page
    # A job on another base model than the one chosen.
    page = text(client.post(url, form_data(job.dataset_version, job=job, model=other_model)))
    assert 'data-error-for="base_model"' in page and "was trained on" in page
    # The pair runs on the job's own version.
    other_version = make_eval_version(curator, make_pair)
    page = text(client.post(url, form_data(other_version, job=job, also_base=True)))
    assert 'data-error-for="dataset_version"' in page
    # The service refuses an empty split: its message lands on the split field.
    page = text(client.post(url, form_data(job.dataset_version, model=other_model, split="validation")))
    assert 'data-error-for="split"' in page and "has no validation split" in page
    # A job that has not succeeded is not offered.
    job_update(job, status="failed")
    page = text(client.post(url, form_data(job.dataset_version, job=job)))
    assert 'data-error-for="job"' in page
    assert EvalRun.objects.count() == 2  # only the pair of the fixture


# ---- the report ----------------------------------------------------------------------------


def test_every_role_reads_the_report_with_cards_deltas_and_the_mode(client, curator, clinician, admin_user, pair):
    base, tuned, _job = pair
    for user in (curator, clinician, admin_user):
        client.force_login(user)
        assert client.get(reverse("training:evaluation-detail", args=[tuned.pk])).status_code == 200
    page = text(client.get(reverse("training:evaluation-detail", args=[tuned.pk])))
    assert 'id="eval-mode" data-mode="llamafactory"' in page and "LLaMA-Factory-comparable" in page
    for key in ("bleu-4", "rouge-1", "rouge-2", "rouge-l"):
        value, other = tuned.summary[key], base.summary[key]
        card = re.search(rf'data-metric="{key}">(.*?)</div>\s*</div>\s*</div>', page, re.DOTALL).group(1)
        assert f"{value:.4f}" in card and f"{other:.4f}" in card
        delta = round(value - other, 4)
        assert delta > 0  # the tuned answers are much closer to the references
        assert f"+{delta:.4f}" in card and "text-success" in card and "bi-arrow-up" in card
    # Seen from the base run, the same comparison goes the other way.
    page = text(client.get(reverse("training:evaluation-detail", args=[base.pk])))
    assert "text-danger" in page and "bi-arrow-down" in page and "\u2212" in page


def test_the_report_shows_departments_speed_loss_examples_history_and_ratings(client, clinician, pair):
    base, tuned, job = pair
    client.force_login(clinician)
    page = text(client.get(reverse("training:evaluation-detail", args=[tuned.pk])))
    # Departments, with their scores.
    for name, summary in tuned.by_department.items():
        row = re.search(rf'<tr data-department="{name}">(.*?)</tr>', page, re.DOTALL).group(1)
        assert f"{summary['rouge-l']:.4f}" in row and f'<td class="text-end">{summary["count"]}</td>' in row
    assert 'id="department-chart"' in page
    # Speed of both runs.
    speed = re.search(r'id="speed">(.*?)</table>', page, re.DOTALL).group(1)
    assert "41 ms / 88 ms" in speed and "512 ms / 930 ms" in speed and "123.4" in speed and "local" in speed
    # The fine-tune's loss and the chart data.
    data = json.loads(re.search(r'<script id="eval-chart-data" type="application/json">(.*?)</script>', page, re.DOTALL).group(1))
    assert data["metrics"] == ["BLEU-4", "ROUGE-1", "ROUGE-2", "ROUGE-L"]
    assert data["run"]["values"] == [tuned.summary[k] for k in ("bleu-4", "rouge-1", "rouge-2", "rouge-l")]
    assert data["baseline"]["values"] == [base.summary[k] for k in ("bleu-4", "rouge-1", "rouge-2", "rouge-l")]
    assert [p[0] for p in data["loss"]["train"]] == [1, 2, 3] and data["loss"]["eval"] == [[3, 2.2]]
    assert 'id="loss-chart"' in page
    # Worst first, best first, with the baseline's answer to the same question.
    samples = list(EvalSample.objects.filter(run=tuned).order_by("rougel", "position"))
    worst = re.search(r'<div id="worst">(.*?)<h3', page, re.DOTALL).group(1)
    best = re.search(r'<div id="best">(.*?)</section>', page, re.DOTALL).group(1)
    # Four answers: the two lowest are the worst, the two highest the best, each shown once.
    assert re.findall(r'class="card mb-2 example[^"]*" data-position="(\d+)"', worst) == [str(s.position) for s in samples[:2]]
    assert re.findall(r'class="card mb-2 example[^"]*" data-position="(\d+)"', best) == [str(s.position) for s in samples[:1:-1]]
    assert 'data-diff="baseline"' in worst and "<del>" in page and "<ins>" in page
    # History: both runs, this one highlighted; the other linked.
    history = re.search(r'id="history-table">(.*?)</table>', page, re.DOTALL).group(1)
    assert f'<tr data-run="{tuned.pk}" class="table-primary"' in history
    assert reverse("training:evaluation-detail", args=[base.pk]) in history
    # Chat ratings of the adapter, with the export links.
    assert "Nobody has rated this adapter" in page
    assert f"/chat/ratings/export.json?job={job.pk}" in page and f"/chat/ratings/export.xlsx?job={job.pk}" in page


def test_with_few_answers_each_is_shown_once_even_when_scores_tie(client, clinician, admin_user, curator, make_pair):
    version = make_eval_version(curator, make_pair)
    run = make_finished_run(admin_user, version, make_base_model(admin_user, name="ties"), predictions=["无关"] * 4)
    assert len(set(EvalSample.objects.filter(run=run).values_list("rougel", flat=True))) == 1
    client.force_login(clinician)
    page = text(client.get(reverse("training:evaluation-detail", args=[run.pk])))
    shown = re.findall(r'class="card mb-2 example[^"]*" data-position="(\d+)"', page)
    assert sorted(shown) == ["0", "1", "2", "3"]


def test_a_prediction_with_markup_is_shown_as_text_in_the_report(client, clinician, pair):
    base, _tuned, _job = pair
    assert any("<script>" in p for p in BASE)
    client.force_login(clinician)
    page = text(client.get(reverse("training:evaluation-detail", args=[base.pk])))
    assert "<script>alert" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page


def test_compare_picks_another_run_as_the_baseline(client, clinician, admin_user, pair):
    base, tuned, _job = pair
    third = make_finished_run(admin_user, base.dataset_version, base.base_model, predictions=list(TUNED))
    client.force_login(clinician)
    page = text(client.get(reverse("training:evaluation-detail", args=[tuned.pk]), {"compare": third.pk}))
    assert f"(run #{third.pk})" in page and f"(run #{base.pk})" not in page


def test_a_run_without_baseline_or_job_shows_its_scores_alone(client, clinician, admin_user, curator, make_pair):
    version = make_eval_version(curator, make_pair)
    run = make_finished_run(admin_user, version, make_base_model(admin_user, name="alone"), predictions=list(TUNED), mode="standard")
    client.force_login(clinician)
    page = text(client.get(reverse("training:evaluation-detail", args=[run.pk])))
    assert "standard rouge-score" in page and 'data-mode="standard"' in page
    assert "data-delta" not in page and 'id="loss"' not in page and 'id="ratings"' not in page
    assert f"{run.summary['rouge-l']:.4f}" in page


def test_a_failed_run_shows_its_error_and_a_running_one_polls_its_progress(client, clinician, pair):
    base, tuned, _job = pair
    EvalRun.objects.filter(pk=base.pk).update(status=EvalRun.Status.FAILED, error="CUDA out of memory <boom>")
    EvalRun.objects.filter(pk=tuned.pk).update(status=EvalRun.Status.RUNNING, progress=0.25, done_samples=1, summary={})
    client.force_login(clinician)
    page = text(client.get(reverse("training:evaluation-detail", args=[base.pk])))
    assert 'id="eval-error"' in page and "CUDA out of memory &lt;boom&gt;" in page and 'id="eval-progress"' not in page
    page = text(client.get(reverse("training:evaluation-detail", args=[tuned.pk])))
    assert f'hx-get="{reverse("training:evaluation-progress", args=[tuned.pk])}"' in page
    assert 'class="card h-100 metric-card"' not in page and "The scores appear here when the run has finished." in page
    fragment = client.get(reverse("training:evaluation-progress", args=[tuned.pk]))
    assert "HX-Refresh" not in fragment and 'aria-valuenow="25"' in text(fragment) and "1 of 4 answers" in text(fragment)
    EvalRun.objects.filter(pk=tuned.pk).update(status=EvalRun.Status.SUCCEEDED, progress=1.0)
    assert client.get(reverse("training:evaluation-progress", args=[tuned.pk]))["HX-Refresh"] == "true"


def test_an_admin_cancels_a_queued_run_and_a_finished_one_is_refused_with_a_message(client, admin_user, pair):
    base, tuned, _job = pair
    EvalRun.objects.filter(pk=tuned.pk).update(status=EvalRun.Status.QUEUED)
    client.force_login(admin_user)
    assert 'id="cancel-form"' in text(client.get(reverse("training:evaluation-detail", args=[tuned.pk])))
    response = client.post(reverse("training:evaluation-cancel", args=[tuned.pk]), follow=True)
    assert EvalRun.objects.get(pk=tuned.pk).status == EvalRun.Status.CANCELLED and "Cancellation of evaluation run" in text(response)
    response = client.post(reverse("training:evaluation-cancel", args=[base.pk]), follow=True)
    assert EvalRun.objects.get(pk=base.pk).status == EvalRun.Status.SUCCEEDED and "only queued or running runs" in text(response)


def test_the_print_view_loads_the_print_styles_for_the_screen_and_opens_the_baselines_answers(client, clinician, pair):
    _base, tuned, _job = pair
    client.force_login(clinician)
    normal = text(client.get(reverse("training:evaluation-detail", args=[tuned.pk])))
    assert re.search(r'print\.css" media="print"', normal) and 'id="print-view"' in normal and '<details class="mt-2 diff">' in normal
    printed = text(client.get(reverse("training:evaluation-detail", args=[tuned.pk]), {"print": "1"}))
    assert re.search(r'print\.css" media="all"', printed) and 'id="print-now"' in printed and '<details class="mt-2 diff" open>' in printed


def test_unknown_runs_are_404(client, clinician):
    client.force_login(clinician)
    for name in ("evaluation-detail", "evaluation-export-json", "evaluation-export-xlsx", "evaluation-progress"):
        assert client.get(reverse(f"training:{name}", args=[424242])).status_code == 404


# ---- exports -------------------------------------------------------------------------------


def test_the_xlsx_export_has_a_summary_sheet_and_a_sample_sheet_with_one_row_per_answer(client, curator, pair):
    from openpyxl import load_workbook

    _base, tuned, _job = pair
    client.force_login(curator)
    response = client.get(reverse("training:evaluation-export-xlsx", args=[tuned.pk]))
    assert response.status_code == 200 and response["Content-Disposition"].endswith('.xlsx"')
    wb = load_workbook(io.BytesIO(response.content))
    assert wb.sheetnames == ["summary", "samples"]
    summary = [dict(zip(r[0], row, strict=True)) for r in [list(wb["summary"].values)] for row in r[1:]]
    assert summary[0]["scope"] == "all" and summary[0]["rouge-l"] == tuned.summary["rouge-l"] and summary[0]["count"] == 4
    assert (summary[0]["ttft_ms_p50"], summary[0]["tokens_per_second"], summary[0]["backend"]) == (41.0, 123.4, "local")
    assert json.loads(summary[0]["params"]) == tuned.params
    assert {row["department"] for row in summary[1:]} == set(tuned.by_department)
    assert all(row["ttft_ms_p50"] is None for row in summary[1:])
    rows = list(wb["samples"].values)
    header, body = rows[0], rows[1:]
    samples = list(EvalSample.objects.filter(run=tuned).order_by("position"))
    assert len(body) == len(samples) == 4
    record = dict(zip(header, body[0], strict=True))
    assert (record["prediction"], record["reference"], record["rouge-l"]) == (
        samples[0].prediction,
        samples[0].reference,
        samples[0].rougel,
    )


def test_an_answer_that_looks_like_a_formula_stays_text_in_the_xlsx(client, clinician, admin_user, curator, make_pair):
    from openpyxl import load_workbook

    version = make_eval_version(curator, make_pair)
    run = make_finished_run(admin_user, version, make_base_model(admin_user, name="formula"), predictions=["=1+1"] * 4)
    client.force_login(clinician)
    wb = load_workbook(io.BytesIO(client.get(reverse("training:evaluation-export-xlsx", args=[run.pk])).content))
    cells = [row for row in wb["samples"].iter_rows(min_row=2)]
    header = [c.value for c in next(wb["samples"].iter_rows(max_row=1))]
    cell = cells[0][header.index("prediction")]
    assert cell.value == "=1+1" and cell.data_type == "s"


def test_the_json_export_holds_the_same_summary_and_samples(client, clinician, pair):
    _base, tuned, _job = pair
    client.force_login(clinician)
    response = client.get(reverse("training:evaluation-export-json", args=[tuned.pk]))
    assert response["Content-Type"].startswith("application/json") and "attachment" in response["Content-Disposition"]
    body = json.loads(response.content)
    assert body["run"] == tuned.pk
    assert body["summary"][0]["bleu-4"] == tuned.summary["bleu-4"] and len(body["summary"]) == 1 + len(tuned.by_department)
    assert body["summary"][0]["latency_ms_p95"] == 930.0 and json.loads(body["summary"][0]["params"])["batch_size"] == 4
    assert [s["position"] for s in body["samples"]] == [0, 1, 2, 3]
    stored = list(EvalSample.objects.filter(run=tuned).order_by("position").values_list("prediction", flat=True))
    assert [s["prediction"] for s in body["samples"]] == stored and set(stored) <= set(TUNED)


# ---- links from elsewhere ------------------------------------------------------------------


def test_the_job_page_links_to_its_evaluations_and_admins_get_an_evaluate_button(client, clinician, admin_user, pair):
    _base, _tuned, job = pair
    client.force_login(admin_user)
    page = text(client.get(reverse("training:job-detail", args=[job.pk])))
    assert f"/training/evaluations/?job={job.pk}" in page and f'href="/training/evaluations/new/?job={job.pk}" id="evaluate-job"' in page
    client.force_login(clinician)
    page = text(client.get(reverse("training:job-detail", args=[job.pk])))
    assert f"/training/evaluations/?job={job.pk}" in page and 'id="evaluate-job"' not in page
    assert reverse("training:evaluation-list") in text(client.get("/"))  # the Training menu


# ---- a real run ----------------------------------------------------------------------------


def test_a_real_run_on_the_demo_model_ends_in_a_report_and_exports(
    client, settings, tmp_path, admin_user, curator, make_pair, demo_model_dir
):
    from training.runnables import reset_backends
    from training.models import BaseModel
    from training.services.evaluations import evaluation_create
    from training.workers.evaluation import evaluation_run

    settings.MEDPORTAL_TRAINING_DIR = tmp_path / "training"
    settings.MEDPORTAL_INFERENCE_URL = ""
    settings.MEDPORTAL_EVAL_SPEED_SAMPLES = 1
    reset_backends()
    try:
        version = make_eval_version(curator, make_pair)
        model = BaseModel.objects.create(name="demo", path=str(demo_model_dir), has_chat_template=True, registered_by=admin_user)
        run = evaluation_create(
            actor=admin_user, dataset_version=version, base_model=model, params={"max_new_tokens": 6, "batch_size": 4}, enqueue=False
        )
        assert evaluation_run(run_id=run.pk).status == EvalRun.Status.SUCCEEDED
    finally:
        reset_backends()
    run.refresh_from_db()
    client.force_login(curator)
    page = text(client.get(reverse("training:evaluation-detail", args=[run.pk])))
    assert f"{run.summary['rouge-l']:.4f}" in page and 'id="metrics-chart"' in page and 'id="eval-progress"' not in page
    assert page.count('class="card mb-2 example') == 4  # four answers: two worst, two best
    assert len(json.loads(client.get(reverse("training:evaluation-export-json", args=[run.pk])).content)["samples"]) == 4
