"""The regression gate: blocks a worse adapter, permits one that is not worse, admin override
audited, runnable adapters filtered; one gate through real evaluation runs of the demo model."""

from __future__ import annotations

import pytest

from medportal.errors import InvalidInput, InvalidTransition, NotAllowed
from training.models import AdapterGate, EvalRun, EvalSample, FineTuneJob
from tests.chat.conftest import lora_adapter_dir  # noqa: F401  (a real LoRA adapter on the demo model)
from training.services.gate import gate_decide, gate_open, gate_override, paired_bootstrap

pytestmark = pytest.mark.django_db


def test_paired_bootstrap_interval():
    mean, low, high = paired_bootstrap([-3.0, -2.0, -4.0, -2.5, -3.5] * 4)
    assert mean == pytest.approx(-3.0) and high < 0
    mean, low, high = paired_bootstrap([1.0, -1.0, 2.0, -2.0, 0.5, -0.5] * 3)
    assert low < 0 < high
    assert paired_bootstrap([1.0, -1.0, 2.0], seed=3) == paired_bootstrap([1.0, -1.0, 2.0], seed=3)


@pytest.fixture
def succeeded_job(admin_user, curator, make_pair, demo_model_dir, lora_adapter_dir):
    from tests.training.ui_factories import job_update, make_version
    from training.services.base_models import base_model_register
    from training.services.jobs import finetune_job_create

    version = make_version(curator, make_pair, pairs=8, split=(0.5, 0.0, 0.5))
    model = base_model_register(actor=admin_user, name="demo", path=demo_model_dir)
    job = finetune_job_create(actor=admin_user, dataset_version=version, base_model=model, preset="cpu_demo", enqueue=False)
    job_update(job, status=FineTuneJob.Status.SUCCEEDED, adapter_path=str(lora_adapter_dir))
    return job


def finish(run: EvalRun, scores: list[float]) -> None:
    """The run as the evaluation worker leaves it: samples with their ROUGE-L, succeeded."""
    EvalSample.objects.bulk_create(EvalSample(run=run, position=i, prompt=f"q{i}", rougel=s) for i, s in enumerate(scores))
    EvalRun.objects.filter(pk=run.pk).update(status=EvalRun.Status.SUCCEEDED)


def test_the_gate_blocks_a_worse_adapter_and_an_admin_may_override(succeeded_job, admin_user, clinician):
    from training.runnables import runnable_jobs

    assert runnable_jobs().filter(pk=succeeded_job.pk).exists()  # not gated yet
    gate = gate_open(actor=admin_user, job=succeeded_job, enqueue=False)
    assert gate.status == "pending" and gate.parent_run.job_id is None and gate.candidate_run.job_id == succeeded_job.pk
    assert gate.candidate_run.group == gate.parent_run.group and gate.split == "test"
    assert not runnable_jobs().filter(pk=succeeded_job.pk).exists()  # pending: not for clinicians
    finish(gate.candidate_run, [10.0, 12.0, 9.0, 11.0])
    assert gate_decide(gate).status == "pending"  # the parent's run has not finished
    finish(gate.parent_run, [20.0, 21.0, 19.5, 22.0])
    gate = gate_decide(gate)
    assert gate.status == "blocked" and gate.summary["n"] == 4 and gate.summary["high"] < 0
    assert not runnable_jobs().filter(pk=succeeded_job.pk).exists()
    with pytest.raises(NotAllowed):
        gate_override(actor=clinician, gate=gate, reason="x")
    with pytest.raises(InvalidInput):
        gate_override(actor=admin_user, gate=gate, reason=" ")
    gate = gate_override(actor=admin_user, gate=gate, reason="Clinicians asked for this one; the test split is tiny.")
    assert gate.status == "overridden" and gate.overridden_by == admin_user
    assert runnable_jobs().filter(pk=succeeded_job.pk).exists()
    from medportal.models import AuditEvent

    assert AuditEvent.objects.filter(action="adapter_gate.override", actor=admin_user).exists()
    with pytest.raises(InvalidTransition):
        gate_override(actor=admin_user, gate=gate, reason="again")
    with pytest.raises(InvalidTransition):
        gate_open(actor=admin_user, job=succeeded_job, enqueue=False)


def test_the_gate_permits_an_adapter_that_is_not_worse(succeeded_job, admin_user):
    gate = gate_open(actor=admin_user, job=succeeded_job, enqueue=False)
    finish(gate.candidate_run, [20.0, 12.0, 25.0, 11.0])
    finish(gate.parent_run, [18.0, 14.0, 22.0, 13.0])
    gate = gate_decide(gate)
    assert gate.status == "passed" and gate.summary["delta"] == pytest.approx(0.25) and gate.summary["high"] >= 0
    assert gate.allows


def test_a_dpo_adapter_is_runnable_only_through_its_gate(succeeded_job, admin_user):
    from tests.training.ui_factories import job_update
    from training.runnables import runnable_jobs

    job_update(succeeded_job, stage="dpo")
    assert not runnable_jobs().filter(pk=succeeded_job.pk).exists()
    gate = gate_open(actor=admin_user, job=succeeded_job, enqueue=False)
    finish(gate.candidate_run, [5.0, 5.0])
    finish(gate.parent_run, [5.0, 5.0])
    assert gate_decide(gate).status == "passed"
    assert runnable_jobs().filter(pk=succeeded_job.pk).exists()


def test_a_gate_through_real_evaluation_runs(succeeded_job, admin_user, settings):
    """The evaluation kind's on_succeeded step decides the gate once both runs succeeded."""
    from training.workers.evaluation import evaluation_run

    gate = gate_open(actor=admin_user, job=succeeded_job, max_samples=2, enqueue=False)
    evaluation_run(run_id=gate.candidate_run_id)
    assert AdapterGate.objects.get(pk=gate.pk).status == "pending"
    evaluation_run(run_id=gate.parent_run_id)
    gate.refresh_from_db()
    assert gate.candidate_run.status == "succeeded" and gate.parent_run.status == "succeeded"
    assert gate.status in ("passed", "blocked") and gate.summary["n"] == 2
    assert (gate.status == "blocked") == (gate.summary["high"] < 0)


def test_the_job_page_shows_the_gate_and_admins_act_on_it(succeeded_job, admin_user, clinician, client):
    client.force_login(clinician)
    assert client.post(f"/training/jobs/{succeeded_job.pk}/gate/").status_code == 403
    client.force_login(admin_user)
    response = client.post(f"/training/jobs/{succeeded_job.pk}/gate/", {"metric": "rougel"})
    assert response.status_code == 302
    gate = AdapterGate.objects.get(job=succeeded_job)
    finish(gate.candidate_run, [1.0, 2.0, 1.5])
    finish(gate.parent_run, [30.0, 31.0, 29.0])
    gate_decide(gate)
    html = client.get(f"/training/jobs/{succeeded_job.pk}/").content.decode()
    assert 'data-gate="blocked"' in html and f"/training/evaluations/{gate.candidate_run_id}/" in html and "job-gate-override" not in html
    client.post(f"/training/jobs/{succeeded_job.pk}/gate/override/", {"reason": "reviewed by the panel"})
    gate.refresh_from_db()
    assert gate.status == "overridden" and gate.override_reason == "reviewed by the panel"
