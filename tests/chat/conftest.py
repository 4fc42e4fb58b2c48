"""Chat fixtures: the session-built demo model, a real LoRA adapter on it, registry rows."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.training.conftest import demo_model_dir  # noqa: F401  (re-exported session fixture)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def lora_adapter_dir(demo_model_dir, tmp_path_factory):  # noqa: F811
    """A real PEFT LoRA adapter on the demo model, with non-zero weights so it changes answers."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("adapter")
    torch.manual_seed(3)
    model = AutoModelForCausalLM.from_pretrained(demo_model_dir)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=32, target_modules="all-linear", init_lora_weights=False))
    peft_model.save_pretrained(out)
    AutoTokenizer.from_pretrained(demo_model_dir).save_pretrained(out)
    return out


@pytest.fixture(autouse=True)
def _fresh_backend(settings):
    """Each test gets its own in-process backend (no OpenAI server configured)."""
    from training.runnables import reset_backends

    settings.MEDPORTAL_INFERENCE_URL = ""
    reset_backends()
    yield
    reset_backends()


@pytest.fixture
def base_model(db, admin_user, demo_model_dir):  # noqa: F811
    from training.models import BaseModel

    return BaseModel.objects.create(
        name="demo", path=str(demo_model_dir), architecture="Qwen3ForCausalLM", has_chat_template=True, registered_by=admin_user
    )


@pytest.fixture
def adapter_job(db, admin_user, curator, make_pair, base_model, lora_adapter_dir):
    from tests.training.ui_factories import job_update, make_version
    from training.models import FineTuneJob
    from training.services.jobs import finetune_job_create

    version = make_version(curator, make_pair)
    job = finetune_job_create(actor=admin_user, dataset_version=version, base_model=base_model, preset="cpu_demo", enqueue=False)
    job_update(job, status=FineTuneJob.Status.SUCCEEDED, adapter_path=str(lora_adapter_dir))
    return job


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
