"""What the demo shows: the fine-tune form's defaults, merge errors where the merge form is,
distinct names for evaluation runs and reports, one time zone, bounded answers in the report."""

from __future__ import annotations

import re

import pytest
from django.test import override_settings
from django.urls import reverse
from django.utils import translation

from training import forms as training_forms
from training.views.evaluations import collapse_blank_lines, diff_html

from .eval_factories import make_eval_pair
from .ui_factories import job_update, make_base_model, make_job, make_version

pytestmark = pytest.mark.django_db


@pytest.fixture
def model(admin_user):
    return make_base_model(admin_user)


def _selected_version(page: str) -> int:
    select = re.search(r'<select name="dataset_version".*?</select>', page, re.S).group(0)
    return int(re.search(r'<option value="(\d+)"[^>]*selected', select).group(1))


def _evaluate_checked(page: str) -> bool:
    tag = re.search(r'<input type="checkbox" name="evaluate_after"[^>]*>', page).group(0)
    return "checked" in tag


# ---- the fine-tune form's defaults ---------------------------------------------------------


def test_with_evaluate_on_the_form_preselects_the_newest_version_that_has_a_test_split(client, admin_user, curator, make_pair, model):
    with_test = make_version(curator, make_pair, pairs=8, split=(0.5, 0.25, 0.25))
    newer_without = make_version(curator, make_pair)  # newest, no test split
    assert with_test.counts["test"] > 0 and not newer_without.counts.get("test")
    client.force_login(admin_user)

    page = client.get(reverse("training:job-create")).content.decode()

    assert _selected_version(page) == with_test.pk
    assert _evaluate_checked(page)
    assert re.search(r'id="evaluate-note"[^>]*hidden', page)
    assert f'data-test-split-versions="{with_test.pk}"' in page


def test_without_a_version_with_a_test_split_evaluate_starts_unticked_and_says_why(client, admin_user, curator, make_pair, model):
    version = make_version(curator, make_pair)
    client.force_login(admin_user)

    page = client.get(reverse("training:job-create")).content.decode()

    assert _selected_version(page) == version.pk
    assert not _evaluate_checked(page)
    note = re.search(r'<div[^>]*id="evaluate-note"[^>]*>(.*?)</div>', page, re.S)
    assert "hidden" not in note.group(0).split(">")[0] and "has no test split" in note.group(1)
    # The same when the version is chosen by the link (?dataset_version=).
    page = client.get(reverse("training:job-create") + f"?dataset_version={version.pk}").content.decode()
    assert not _evaluate_checked(page)


@pytest.fixture
def no_cached_probe():
    training_forms.cuda_available.cache_clear()
    yield
    training_forms.cuda_available.cache_clear()


def test_on_a_machine_without_a_gpu_the_form_starts_on_the_cpu_demo_preset(client, admin_user, curator, make_pair, model, no_cached_probe):
    import torch

    make_version(curator, make_pair)
    client.force_login(admin_user)
    page = client.get(reverse("training:job-create")).content.decode()

    expected = "llamafactory" if torch.cuda.is_available() else "cpu_demo"
    assert re.search(rf'<input type="radio" name="preset" value="{expected}"[^>]*checked', page)
    assert re.search(rf'name="config_preset" value="{expected}"', page)
    steps = training_forms.preset_values(expected)["max_steps"]
    max_steps = re.search(r'<input type="number" name="max_steps"[^>]*>', page).group(0)
    assert (f'value="{steps}"' in max_steps) if steps is not None else ("value=" not in max_steps)


def test_on_a_gpu_machine_the_form_starts_on_the_gpu_recipe(admin_user, curator, make_pair, model, monkeypatch, no_cached_probe):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    make_version(curator, make_pair)
    form = training_forms.FineTuneJobForm()
    assert form["preset"].value() == training_forms.DEFAULT_PRESET == "llamafactory"
    assert form["bf16"].value() is True

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    training_forms.cuda_available.cache_clear()
    form = training_forms.FineTuneJobForm()
    assert form["preset"].value() == "cpu_demo" and form["bf16"].value() is False


# ---- merge errors where the merge form is ------------------------------------------------


@pytest.fixture
def succeeded_job(admin_user, curator, make_pair, model, tmp_path):
    version = make_version(curator, make_pair)
    job = make_job(admin_user, version, model)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    job_update(job, status="succeeded", progress=1.0, adapter_path=str(adapter))
    return job


def test_a_merge_error_is_shown_under_the_name_field_of_the_merge_form(client, admin_user, succeeded_job):
    client.force_login(admin_user)

    response = client.post(reverse("training:job-merge", args=[succeeded_job.pk]), {"name": "bad name!"})

    assert response.status_code == 400
    page = response.content.decode()
    form = re.search(r'<form[^>]*id="merge-form".*?</form>', page, re.S).group(0)
    assert "hidden" not in form.split(">")[0]
    assert 'value="bad name!"' in form and "is-invalid" in form
    assert re.search(r'id="merge-error"[^>]*>Name the merged model with letters, digits, hyphens and underscores only', form)
    # and only there: not also in the message area at the top of the page
    assert page.count("Name the merged model with letters") == 1


def test_the_merge_name_pattern_escapes_the_hyphen_for_the_v_flag(client, admin_user, succeeded_job):
    client.force_login(admin_user)
    page = client.get(reverse("training:job-detail", args=[succeeded_job.pk])).content.decode()
    pattern = re.search(r'id="merge-name"[^>]*pattern="([^"]*)"', page).group(1)
    # Browsers compile pattern with the v flag, where an unescaped "-" in a class is a syntax
    # error (the attribute is then ignored): every "-" that is not a range must be escaped.
    cls = re.fullmatch(r"\[(.*)\]\+", pattern).group(1)
    assert "-" not in re.sub(r"\\-|[a-zA-Z0-9]-[a-zA-Z0-9]", "", cls)
    assert re.fullmatch(pattern.replace("\\-", "-"), "qwen3-med_v1") and not re.fullmatch(pattern.replace("\\-", "-"), "bad name!")


# ---- names: the evaluation runs list and the report ----------------------------------------


def test_the_runs_list_and_the_report_have_distinct_names_in_chinese(client, clinician, admin_user, curator, make_pair):
    base, tuned, job = make_eval_pair(admin_user, curator, make_pair)
    client.force_login(admin_user)
    with translation.override("zh-hans"):
        listing = client.get(reverse("training:evaluation-list"), HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
        report = client.get(reverse("training:evaluation-detail", args=[tuned.pk]), HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
        job_page = client.get(reverse("training:job-detail", args=[job.pk]), HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()

    assert re.search(r"<h1[^>]*>评测任务</h1>", listing)
    assert re.search(rf"<h1[^>]*>评测报告 #{tuned.pk}</h1>", report)
    assert re.search(r'href="/training/evaluations/">评测任务</a>', report)  # the breadcrumb and the nav
    assert "评测任务" in job_page and "新建评测" in job_page
    for page in (listing, report, job_page):
        assert "模型评测" not in page


# ---- one time zone; bounded answers --------------------------------------------------------


@override_settings(TIME_ZONE="Asia/Shanghai")
def test_the_job_page_hands_its_time_zone_to_the_script(client, clinician, succeeded_job):
    client.force_login(clinician)
    page = client.get(reverse("training:job-detail", args=[succeeded_job.pk])).content.decode()
    assert re.search(r'<div id="job-live"[^>]*data-time-zone="Asia/Shanghai"', page)


def test_runs_of_blank_lines_in_an_answer_are_shown_as_one():
    answer = "第一行\n" + "\n \n\t\n\u3000\n" * 3000 + "最后一行\n\n第二段"
    assert collapse_blank_lines(answer) == "第一行\n\n最后一行\n\n第二段"
    prediction, _reference = diff_html(answer, "第一行\n最后一行")
    assert prediction.count("\n") == 4  # two paragraph breaks, each one blank line


def test_each_answer_of_the_report_is_bounded_and_scrolls(client, clinician, admin_user, curator, make_pair):
    from django.contrib.staticfiles import finders

    base, tuned, _job = make_eval_pair(admin_user, curator, make_pair)
    tuned.samples.update(prediction="答案开头" + "\n" * 5000 + "答案结尾")
    client.force_login(clinician)
    page = client.get(reverse("training:evaluation-detail", args=[tuned.pk])).content.decode()

    for kind in ("prediction", "reference", "baseline"):
        assert re.search(rf'class="qa-text qa-answer[^"]*"[^>]*data-diff="{kind}"', page), kind
    assert "\n\n\n" not in re.search(r'data-diff="prediction">(.*?)</div>', page, re.S).group(1)
    css = open(finders.find("medportal/app.css"), encoding="utf-8").read()
    rule = re.search(r"\.qa-answer\s*\{([^}]*)\}", css).group(1)
    assert "max-height" in rule and "overflow-y: auto" in rule
