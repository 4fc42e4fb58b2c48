"""No question of an evaluation test split enters training, across SFT, preference and evaluation data."""

from __future__ import annotations

import pytest

from curation.models import DatasetItem, QAPair
from curation.services import preferences as prefs
from curation.services.versions import dataset_version_freeze

pytestmark = pytest.mark.django_db


def split_of(version) -> dict[int, str]:
    return dict(DatasetItem.objects.filter(version=version).values_list("qa_pair_id", "split"))


def test_once_evaluated_a_test_question_stays_out_of_later_training(curator, clinician, admin_user, make_pair, demo_model_dir):
    from training.services.base_models import base_model_register
    from training.services.evaluations import evaluation_create

    for i in range(30):
        make_pair(curator, status=QAPair.Status.APPROVED, department="内科", instruction=f"第{i}题：血脂高要吃药吗？编号{i * 13}", output=f"视风险而定，遵医嘱。{i}")
    first = dataset_version_freeze(user=curator, name="v1", split=(0.6, 0.2, 0.2), seed=1)
    tested = {pk for pk, split in split_of(first).items() if split == "test"}
    # Before any evaluation, another seed reshuffles freely ...
    free = dataset_version_freeze(user=curator, name="v1b", split=(0.6, 0.2, 0.2), seed=2)
    assert any(split_of(free)[pk] != "test" for pk in tested) and free.held_out == []
    # ... after an evaluation ran on v1's test split, its questions stay in test.
    model = base_model_register(actor=admin_user, name="demo", path=demo_model_dir)
    evaluation_create(actor=admin_user, dataset_version=first, base_model=model, split="test", enqueue=False)
    later = dataset_version_freeze(user=curator, name="v2", split=(0.6, 0.2, 0.2), seed=2)
    assert all(split_of(later)[pk] == "test" for pk in tested) and later.held_out
    # A preference pair asking one of those questions goes to test in a preference version.
    question = QAPair.objects.get(pk=sorted(tested)[0]).instruction
    for n in range(8):
        pair = prefs.preference_pair_create(
            author=curator,
            prompt=question if n == 0 else f"偏好问题{n}：头晕？",
            chosen=f"就医{n}",
            rejected=f"不管{n}",
            source_kind="import",
            submit=True,
        )
        prefs.preference_pair_review(pair=pair, reviewer=clinician, decision="approve", version=pair.version)
    pv = prefs.preference_version_freeze(user=curator, name="pv", split=(0.8, 0.2, 0.0))
    assert len(pv.held_out) == 1 and pv.held_out[0]["tested_in"].startswith("dataset version v")
    assert not [x for x in prefs.training_leaks() if x["kind"] == "preference"]
    # A preference version's test questions stay out of a later SFT freeze's training.
    pv2 = prefs.preference_version_freeze(user=curator, name="pv2", split=(0.5, 0.0, 0.5), seed=3)
    pref_tested = {i.content["prompt"] for i in pv2.items.filter(split="test")} - {question}
    assert pref_tested
    copies = [make_pair(curator, status=QAPair.Status.APPROVED, department="内科", instruction=q, output="另一个回答。") for q in sorted(pref_tested)]
    v3 = dataset_version_freeze(user=curator, name="v3", split=(0.9, 0.1, 0.0), seed=5)
    assert all(split_of(v3)[p.pk] == "test" for p in copies)
