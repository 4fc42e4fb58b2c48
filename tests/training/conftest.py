"""The demo model every training test uses, built once per source version and shared between sessions.

``demo_model_dir`` builds the demo model with a short pre-training (seconds, not a minute) into
``.cache/test-models/<hash>`` at the repository root, keyed by the builder's source, the demo corpus and
the library versions, so an unchanged builder is never rebuilt. A file lock keeps two pytest-xdist
workers (or two sessions) from building it twice; the folder appears atomically when complete.

The cached folder is shared: tests must not write into it. A test that needs to change a model folder
copies it (``shutil.copytree``) or builds its own with ``build_test_model(path)``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from training.engine import demo_model

REPO_ROOT = Path(__file__).resolve().parents[2]
TEST_MODELS_DIR = REPO_ROOT / ".cache" / "test-models"
TEST_PRETRAIN_STEPS = 40
TEST_SEED = 0


def build_test_model(path: str | Path) -> dict:
    """A fresh demo model with the test-sized pre-training (same architecture as the real demo)."""
    return demo_model.build_demo_model(path, demo_model.demo_corpus(), pretrain_steps=TEST_PRETRAIN_STEPS, seed=TEST_SEED)


def _cache_key() -> str:
    import tokenizers
    import torch
    import transformers

    digest = hashlib.sha256()
    digest.update(Path(demo_model.__file__).read_bytes())
    for path in [*sorted(demo_model.DEMO_DATA_DIR.glob("*.jsonl")), demo_model.DEMO_CORPUS_FILE]:
        digest.update(path.read_bytes())
    digest.update(f"{TEST_PRETRAIN_STEPS}:{TEST_SEED}:{transformers.__version__}:{tokenizers.__version__}:{torch.__version__}".encode())
    return digest.hexdigest()[:16]


def cached_demo_model_dir() -> Path:
    """Build (once) and return the cached test-sized demo model folder."""
    from filelock import FileLock

    TEST_MODELS_DIR.mkdir(parents=True, exist_ok=True)
    key = _cache_key()
    target = TEST_MODELS_DIR / key
    with FileLock(str(TEST_MODELS_DIR / f"{key}.lock")):
        if not (target / demo_model.METADATA_FILE).is_file():
            scratch = TEST_MODELS_DIR / f"{key}.building-{os.getpid()}"
            shutil.rmtree(scratch, ignore_errors=True)
            build_test_model(scratch)
            shutil.rmtree(target, ignore_errors=True)
            os.replace(scratch, target)
    return target


@pytest.fixture(scope="session")
def demo_model_dir() -> Path:
    """Path of the shared test-sized demo model (read only: copy it before changing anything)."""
    return cached_demo_model_dir()
