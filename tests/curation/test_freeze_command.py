"""manage.py freeze_dataset."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command

from curation.models import DatasetVersion, QAPair

APPROVED = QAPair.Status.APPROVED



def run(*args) -> list[str]:
    out = io.StringIO()
    call_command("freeze_dataset", *args, stdout=out)
    return out.getvalue().strip().splitlines()


@pytest.fixture
def pairs(make_pair, curator):
    # 8 + 6 pairs: enough for every split of 0.8/0.1/0.1 to get a pair
    for i in range(14):
        make_pair(curator, status=APPROVED, department="心内科" if i < 8 else "儿科", tags=["高血压"] if i % 2 else [])


def test_json_mode_ends_with_exactly_the_version_id_hash_and_counts(pairs, admin_user):
    lines = run("--name", "v1", "--json")
    result = json.loads(lines[-1])
    version = DatasetVersion.objects.get()
    assert result == {"version_id": version.pk, "hash": version.content_hash, "counts": version.counts}
    assert list(result) == ["version_id", "hash", "counts"]
    assert list(result["counts"]) == ["train", "validation", "test"]
    assert sum(result["counts"].values()) == 14
    assert version.created_by == admin_user


def test_it_filters_splits_and_seeds_as_asked(pairs, curator):
    run(
        "--name",
        "v1",
        "--department",
        "心内科",
        "--tag",
        "高血压",
        "--split",
        "0.5,0.5,0",
        "--seed",
        "9",
        "--as-user",
        "curator",
    )
    version = DatasetVersion.objects.get()
    assert version.total == 4
    assert version.split_ratios == [0.5, 0.5, 0.0]
    assert version.seed == 9
    assert version.counts["test"] == 0
    assert version.created_by == curator
    assert version.filters["departments"] == ["心内科"]


def test_the_default_user_is_the_first_active_superuser(pairs, django_user_model, admin_user):
    root = django_user_model.objects.create_superuser("root", "root@example.org", "pw")
    run("--name", "v1")
    assert DatasetVersion.objects.get().created_by == root


@pytest.mark.parametrize(
    "args, message",
    [
        (["--split", "0.8,0.1"], "three split ratios"),
        (["--split", "a,b,c"], "not a number"),
        (["--split", "0.8,0.3,0.1"], "add up to"),
        (["--department", "外星科"], "Unknown department: 外星科"),
        (["--tag", "nope"], "Unknown tag: nope"),
        (["--as-user", "ghost"], "No active user named 'ghost'"),
        (["--as-user", "clinician"], "Only curators and admins"),
    ],
)
def test_bad_input_is_a_one_line_command_error(request, pairs, admin_user, args, message):
    if "clinician" in args:
        request.getfixturevalue("clinician")
    with pytest.raises(CommandError, match=message) as info:
        run("--name", "v1", *args)
    assert "\n" not in str(info.value)
    assert not DatasetVersion.objects.exists()


def test_nothing_approved_is_a_command_error(make_pair, curator, admin_user):
    make_pair(curator, status=QAPair.Status.DRAFT)
    with pytest.raises(CommandError, match="No approved QA pairs"):
        run("--name", "v1")


def test_without_any_admin_it_asks_for_as_user(pairs):
    with pytest.raises(CommandError, match="--as-user"):
        run("--name", "v1")


def test_a_taken_name_is_a_command_error(pairs, admin_user):
    run("--name", "v1")
    with pytest.raises(CommandError, match="already exists"):
        run("--name", "v1")
