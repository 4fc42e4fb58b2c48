"""The optional vignette rewrite through the configured inference model (a real small model)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from training.runnables import reset_backends
from curation.models import QAPair
from curation.services.rare import rare_cases_generate, rare_knowledge_base
from medportal.errors import InvalidInput
from tests.curation.rare_data import import_tiny
from tests.training.conftest import demo_model_dir  # noqa: F401  (session fixture)

pytestmark = pytest.mark.django_db


@pytest.fixture
def kb(tmp_path):
    import_tiny(tmp_path)
    return rare_knowledge_base()


@pytest.fixture
def rewrite_model(settings, demo_model_dir, admin_user):  # noqa: F811
    from training.models import BaseModel

    BaseModel.objects.create(name="demo-rewriter", path=str(demo_model_dir), registered_by=admin_user, has_chat_template=True)
    settings.MEDPORTAL_REWRITE_MODEL = "demo-rewriter"
    settings.MEDPORTAL_REWRITE_MAX_NEW_TOKENS = 96
    settings.MEDPORTAL_INFERENCE_URL = ""
    reset_backends()
    yield "demo-rewriter"
    reset_backends()


def test_asking_for_a_rewrite_without_a_configured_model_is_refused(kb, curator, settings):
    settings.MEDPORTAL_REWRITE_MODEL = ""
    with pytest.raises(InvalidInput, match="No rewrite model is configured"):
        rare_cases_generate(user=curator, disease_ids=["ORPHA:1"], count=1, rewrite=True)
    settings.MEDPORTAL_REWRITE_MODEL = "missing-model"
    with pytest.raises(InvalidInput, match="not a registered, active base model"):
        rare_cases_generate(user=curator, disease_ids=["ORPHA:1"], count=1, rewrite=True)
    assert not QAPair.objects.exists()  # nothing half-done


def test_rewritten_vignettes_keep_the_original_and_are_marked(kb, curator, rewrite_model, client):
    plain = rare_cases_generate(user=curator, disease_ids=["ORPHA:1"], count=2, seed=5)
    originals = [p.instruction for p in QAPair.objects.filter(pk__in=plain.qa_pair_ids).order_by("pk")]
    QAPair.objects.all().delete()

    result = rare_cases_generate(user=curator, disease_ids=["ORPHA:1"], count=2, seed=5, rewrite=True)
    assert result.created == 2
    pairs = list(QAPair.objects.filter(pk__in=result.qa_pair_ids).order_by("pk"))
    for pair, original in zip(pairs, originals, strict=True):
        meta = pair.synthetic_meta
        assert meta["rewrite_model"] == rewrite_model and meta["params"] is not None
        if meta["rewritten"]:
            assert meta["original_question"] == original and pair.instruction != original
        else:  # an implausible rewrite keeps the generator's text and says why
            assert pair.instruction == original and meta["rewrite_error"]
        assert pair.status == QAPair.Status.IN_REVIEW and pair.synthetic
    rewritten = [p for p in pairs if p.synthetic_meta["rewritten"]]
    if rewritten:
        client.force_login(curator)
        page = client.get(reverse("curation:pair-detail", args=[rewritten[0].pk])).content.decode()
        assert "Rewritten by demo-rewriter" in page and "Original vignette" in page

    # Seeded: the same request rewrites the same way.
    QAPair.objects.all().delete()
    again = rare_cases_generate(user=curator, disease_ids=["ORPHA:1"], count=2, seed=5, rewrite=True)
    assert [p.instruction for p in QAPair.objects.filter(pk__in=again.qa_pair_ids).order_by("pk")] == [p.instruction for p in pairs]
