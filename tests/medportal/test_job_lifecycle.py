"""Every kind of background work through the shared lifecycle harness (tests/jobs_harness.py):
a duplicate delivery runs once, a cancel cancels, and kill -9 of a real qcluster mid-job is
reaped into "queued again" (resumable kinds) or "failed with the reason"."""

from __future__ import annotations

import sys

import pytest

from tests.jobs_harness import CASES, World, check_cancel, check_claim_twice_runs_once, check_kill_and_reap

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process groups and PR_SET_PDEATHSIG")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from tests.training.conftest import cached_demo_model_dir

    return World(tmp_path_factory.mktemp("jobs-world"), cached_demo_model_dir())


def test_every_registered_kind_runs_through_the_harness():
    from medportal.jobs import kinds

    assert {kind.name for kind in kinds()} == {case.kind for case in CASES}


@pytest.mark.parametrize("case", CASES, ids=str)
def test_a_second_claim_finds_nothing_and_a_duplicate_task_changes_nothing(world, case):
    check_claim_twice_runs_once(world, case)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_a_queued_row_is_cancelled_and_its_task_then_does_nothing(world, case):
    check_cancel(world, case)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_kill_9_of_the_worker_mid_job_is_reaped(world, case):
    check_kill_and_reap(world, case)
