"""dataset_version_freeze: selection, hashing, stratified leak-free splits, immutability."""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter, defaultdict

import pytest

from curation.lib.fingerprint import DEFAULT_MAX_DISTANCE, hamming
from curation.models import DatasetItem, DatasetVersion, QAPair
from curation.services.core import derive, pair_apply_derived
from curation.services.versions import (
    Member,
    assign_splits,
    cluster_members,
    dataset_version_freeze,
    item_digest,
    largest_remainder,
    simhash_links,
    split_ratios_clean,
    version_hash,
)
from medportal.errors import InvalidInput, NotAllowed
from medportal.models import AuditEvent

APPROVED = QAPair.Status.APPROVED
# Tests of other things than the split freeze a handful of pairs: all into train (a split with
# a ratio above 0 that would stay empty is refused).
ONLY_TRAIN = (1.0, 0.0, 0.0)



def words(*key, n: int = 40) -> str:
    """Deterministic, unrelated Chinese text per key (no accidental near-duplicates)."""
    digest = hashlib.sha256(repr(key).encode()).digest() * 2
    return "".join(chr(0x4E00 + (b * 131 + i * 977) % 20000) for i, b in enumerate(digest[:n]))


@pytest.fixture
def approved(make_pair, curator):
    counter = itertools.count(1)

    def make(department="", *, status=APPROVED, **fields):
        n = next(counter)
        fields.setdefault("instruction", "问：" + words("q", n))
        fields.setdefault("output", "答：" + words("a", n))
        return make_pair(curator, status=status, department=department, **fields)

    return make


def split_of(version) -> dict[int, str]:
    return dict(DatasetItem.objects.filter(version=version).values_list("qa_pair_id", "split"))


# --------------------------------------------------------------------------- selection


def test_it_freezes_only_approved_pairs(approved, curator):
    keep = [approved() for _ in range(5)]
    for status in (
        QAPair.Status.DRAFT,
        QAPair.Status.IN_REVIEW,
        QAPair.Status.REJECTED,
        QAPair.Status.CHANGES_REQUESTED,
    ):
        approved(status=status)
    version = dataset_version_freeze(user=curator, name="v1", split=ONLY_TRAIN)
    assert set(split_of(version)) == {p.pk for p in keep}
    assert version.total == 5
    assert sum(version.counts.values()) == 5


def test_it_takes_approved_synthetic_pairs_and_counts_them(approved, curator):
    approved(synthetic=True)
    approved(synthetic=True, status=QAPair.Status.IN_REVIEW)  # never enters
    approved()
    approved()
    version = dataset_version_freeze(user=curator, name="v1", split=ONLY_TRAIN)
    assert version.total == 3
    assert version.synthetic_count == 1


def test_it_filters_by_synthetic_source_department_and_tag(approved, curator):
    a = approved("心内科", tags=["高血压"], source="huatuo")
    b = approved("心内科", tags=["糖尿病"], synthetic=True)
    c = approved("儿科", tags=["高血压"])
    approved("儿科")
    assert set(split_of(dataset_version_freeze(user=curator, name="d", departments=["心内科"], split=ONLY_TRAIN))) == {a.pk, b.pk}
    assert set(split_of(dataset_version_freeze(user=curator, name="t", tags=["高血压"], split=ONLY_TRAIN))) == {a.pk, c.pk}
    assert set(split_of(dataset_version_freeze(user=curator, name="dt", departments=["心内科"], tags=["高血压"], split=ONLY_TRAIN))) == {
        a.pk
    }
    real = dataset_version_freeze(user=curator, name="real", departments=["心内科"], filters={"synthetic": False}, split=ONLY_TRAIN)
    assert set(split_of(real)) == {a.pk}
    synth = dataset_version_freeze(user=curator, name="synth", filters={"synthetic": "yes"}, split=ONLY_TRAIN)
    assert set(split_of(synth)) == {b.pk}
    assert synth.synthetic_count == 1
    src = dataset_version_freeze(user=curator, name="src", filters={"source": "huatuo"}, split=ONLY_TRAIN)
    assert set(split_of(src)) == {a.pk}
    assert src.filters == {"departments": [], "tags": [], "synthetic": None, "sources": ["huatuo"]}


def test_it_refuses_an_empty_selection_and_writes_nothing(approved, curator):
    approved("心内科", status=QAPair.Status.DRAFT)
    with pytest.raises(InvalidInput, match="No approved QA pairs"):
        dataset_version_freeze(user=curator, name="v1", departments=["心内科"])
    assert not DatasetVersion.objects.exists()
    assert not AuditEvent.objects.filter(action="dataset_version.freeze").exists()


def test_it_refuses_a_duplicate_name(approved, curator):
    approved()
    dataset_version_freeze(user=curator, name="v1", split=ONLY_TRAIN)
    with pytest.raises(InvalidInput, match="already exists"):
        dataset_version_freeze(user=curator, name=" v1 ", split=ONLY_TRAIN)
    assert DatasetVersion.objects.count() == 1


def test_it_rejects_unknown_departments_and_tags_by_name(approved, curator):
    approved("心内科", tags=["高血压"])
    with pytest.raises(InvalidInput, match="Unknown department: 外星科"):
        dataset_version_freeze(user=curator, name="v1", departments=["外星科"])
    with pytest.raises(InvalidInput, match="Unknown tag: nope"):
        dataset_version_freeze(user=curator, name="v1", tags=["nope"])
    with pytest.raises(InvalidInput, match="Unknown filter"):
        dataset_version_freeze(user=curator, name="v1", filters={"status": "draft"})


@pytest.mark.parametrize(
    "split, message",
    [
        ((0.8, 0.1), "three split ratios"),
        ("0.8,0.1,x", "not a number"),
        ((0.9, 0.2, -0.1), "cannot be negative"),
        ((0.8, 0.1, 0.2), "add up to 1.1"),
        ((0.0, 0.5, 0.5), "train ratio must be above 0"),
        ((float("nan"), 0.5, 0.5), "three split ratios"),
    ],
)
def test_it_rejects_bad_split_ratios(approved, curator, split, message):
    approved()
    with pytest.raises(InvalidInput, match=message):
        dataset_version_freeze(user=curator, name="v1", split=split)
    assert not DatasetVersion.objects.exists()


def test_split_ratios_accept_a_string_and_a_tiny_rounding_error():
    assert split_ratios_clean("0.7, 0.2, 0.1") == (0.7, 0.2, 0.1)
    assert split_ratios_clean([1 / 3, 1 / 3, 1 / 3 + 5e-7]) == (1 / 3, 1 / 3, 1 / 3 + 5e-7)


def test_clinicians_and_outsiders_cannot_freeze(approved, clinician, outsider, admin_user):
    approved()
    for user in (clinician, outsider):
        with pytest.raises(NotAllowed):
            dataset_version_freeze(user=user, name=f"v-{user.username}", split=ONLY_TRAIN)
    assert dataset_version_freeze(user=admin_user, name="by-admin", split=ONLY_TRAIN).total == 1


def test_it_records_an_audit_event(approved, curator):
    approved()
    version = dataset_version_freeze(user=curator, name="v1", seed=7, split=ONLY_TRAIN)
    event = AuditEvent.objects.get(action="dataset_version.freeze")
    assert event.actor == curator
    assert event.target_id == str(version.pk)
    assert event.changes["content_hash"] == version.content_hash
    assert event.changes["seed"] == 7


# --------------------------------------------------------------------------- hash and determinism


def test_the_same_pairs_and_seed_give_the_same_hash_and_split(approved, curator):
    for i in range(30):
        approved(["内科", "外科", "儿科"][i % 3])
    a = dataset_version_freeze(user=curator, name="a", seed=3)
    b = dataset_version_freeze(user=curator, name="b", seed=3, description="another name, same data")
    assert a.content_hash == b.content_hash
    assert split_of(a) == split_of(b)
    assert a.counts == b.counts


def test_a_different_seed_changes_the_split_but_not_the_membership(approved, curator):
    for i in range(40):
        approved(["内科", "外科"][i % 2])
    a = dataset_version_freeze(user=curator, name="a", seed=1)
    b = dataset_version_freeze(user=curator, name="b", seed=2)
    assert set(split_of(a)) == set(split_of(b))
    assert split_of(a) != split_of(b)
    assert a.content_hash != b.content_hash
    assert a.counts == b.counts  # the quotas depend on the sizes, not the seed


def test_a_content_change_changes_the_hash(approved, curator):
    pairs = [approved() for _ in range(5)]
    a = dataset_version_freeze(user=curator, name="a", split=ONLY_TRAIN)
    pairs[0].output = "改过的回答：" + words("edit")
    pair_apply_derived(pairs[0])
    pairs[0].save()
    b = dataset_version_freeze(user=curator, name="b", split=ONLY_TRAIN)
    assert a.content_hash != b.content_hash


def test_the_hash_covers_sorted_item_digests_and_splits(approved, curator):
    for _ in range(8):
        approved()
    version = dataset_version_freeze(user=curator, name="v")
    lines = [
        (item_digest(c), s) for c, s in DatasetItem.objects.filter(version=version).values_list("content", "split")
    ]
    assert version.content_hash == version_hash(lines)
    assert version.content_hash == version_hash(reversed(lines))
    first_digest, first_split = sorted(lines)[0]
    other = "test" if first_split != "test" else "train"
    moved = [(d, other if d == first_digest else s) for d, s in lines]
    assert version_hash(moved) != version.content_hash


def test_positions_run_from_zero_in_each_split(approved, curator):
    for _ in range(20):
        approved()
    version = dataset_version_freeze(user=curator, name="v")
    by_split = defaultdict(list)
    for split, position in DatasetItem.objects.filter(version=version).values_list("split", "position"):
        by_split[split].append(position)
    for split, positions in by_split.items():
        assert sorted(positions) == list(range(version.counts[split]))


# --------------------------------------------------------------------------- stratification


def test_it_stratifies_by_department(approved, curator):
    for _ in range(20):
        approved("内科")
    for _ in range(10):
        approved("外科")
    version = dataset_version_freeze(user=curator, name="v", split=(0.8, 0.1, 0.1))
    per = Counter(DatasetItem.objects.filter(version=version).values_list("content__department", "split"))
    assert per == {
        ("内科", "train"): 16,
        ("内科", "validation"): 2,
        ("内科", "test"): 2,
        ("外科", "train"): 8,
        ("外科", "validation"): 1,
        ("外科", "test"): 1,
    }
    assert version.counts == {"train": 24, "validation": 3, "test": 3}


def test_a_tiny_department_goes_to_train_and_a_zero_ratio_split_stays_empty(approved, curator):
    approved("罕见病科")
    for _ in range(10):
        approved("内科")
    version = dataset_version_freeze(user=curator, name="v", split=(0.8, 0.2, 0.0))
    splits = dict(DatasetItem.objects.filter(version=version).values_list("content__department", "split").distinct())
    assert splits["罕见病科"] == "train"
    assert version.counts == {"train": 9, "validation": 2, "test": 0}


def test_largest_remainder_allocates_every_pair():
    assert largest_remainder(10, (0.8, 0.1, 0.1)) == [8, 1, 1]
    assert largest_remainder(1, (0.8, 0.1, 0.1)) == [1, 0, 0]
    assert largest_remainder(2, (0.8, 0.1, 0.1)) == [2, 0, 0]
    assert largest_remainder(3, (0.5, 0.25, 0.25)) == [1, 1, 1]
    assert largest_remainder(2, (0.5, 0.25, 0.25)) == [1, 1, 0]  # a tie goes to the earlier split
    assert largest_remainder(7, (0.6, 0.2, 0.2)) == [4, 2, 1]
    assert largest_remainder(5, (1.0, 0.0, 0.0)) == [5, 0, 0]
    for n in range(0, 40):
        assert sum(largest_remainder(n, (0.7, 0.2, 0.1))) == n


# --------------------------------------------------------------------------- leakage


def near_variant(instruction: str, output: str, *, avoid=()) -> tuple[str, str]:
    """A slightly different (instruction, output) whose SimHash is within the near-dup distance."""
    base = derive(instruction=instruction, output=output).simhash
    for suffix in "吗呢吧啊了的么嘛呀哦":
        for candidate in ((instruction + suffix, output), (instruction, output + suffix)):
            if candidate in avoid:
                continue
            if hamming(base, derive(instruction=candidate[0], output=candidate[1]).simhash) <= DEFAULT_MAX_DISTANCE:
                return candidate
    raise AssertionError("no near variant found")  # pragma: no cover - the test data has some


def test_near_duplicates_by_fingerprint_never_straddle_splits(approved, curator):
    groups = []
    for g in range(12):
        question, answer = "问：" + words("nd", g, n=120), "答：" + words("na", g, n=120)
        base = approved("内科", instruction=question, output=answer)
        q2, a2 = near_variant(question, answer)
        twin = approved("内科", instruction=q2, output=a2)
        q3, a3 = near_variant(question, answer, avoid=[(q2, a2)])
        triplet = approved("内科", instruction=q3, output=a3)
        assert hamming(base.simhash, twin.simhash) <= DEFAULT_MAX_DISTANCE  # precondition
        assert hamming(base.simhash, triplet.simhash) <= DEFAULT_MAX_DISTANCE
        groups.append((base.pk, twin.pk, triplet.pk))
    version = dataset_version_freeze(user=curator, name="v", split=(0.5, 0.25, 0.25))
    splits = split_of(version)
    assert len(splits) == 36
    for group in groups:
        assert len({splits[pk] for pk in group}) == 1, group
    assert len(set(splits.values())) == 3  # the groups themselves are spread out


def test_near_duplicate_chains_through_unselected_pairs_keep_pairs_together(approved, curator):
    chains = []
    for _ in range(12):
        root = approved("内科")
        middle = approved("内科", status=QAPair.Status.REJECTED, near_duplicate_of=root)
        leaf = approved("内科", near_duplicate_of=middle)
        chains.append((root.pk, leaf.pk))
    version = dataset_version_freeze(user=curator, name="v", split=(0.5, 0.25, 0.25))
    splits = split_of(version)
    assert len(splits) == 24
    for root, leaf in chains:
        assert splits[root] == splits[leaf]


def test_simhash_links_find_every_close_pair_exactly():
    import random

    rng = random.Random(5)
    prints = [rng.getrandbits(64) for _ in range(200)]
    prints += [p ^ (1 << rng.randrange(64)) ^ (1 << rng.randrange(64)) for p in prints[:50]]
    members = [
        Member(pk=i, digest=f"{i:064x}", stratum="", simhash=p - (1 << 64) if p >> 63 else p)
        for i, p in enumerate(prints)
    ]
    brute = {
        (a.pk, b.pk)
        for a, b in itertools.combinations(members, 2)
        if hamming(a.simhash, b.simhash) <= DEFAULT_MAX_DISTANCE
    }
    assert set(simhash_links(members)) == brute
    assert len(brute) >= 50


def test_clusters_are_assigned_whole():
    members = [
        Member(pk=i, digest=hashlib.sha256(bytes([i])).hexdigest(), stratum="", content_hash=f"h{i}") for i in range(20)
    ]
    edges = [(i, i + 1) for i in range(0, 20, 2)]  # ten clusters of two
    groups = cluster_members(members, near_duplicate_edges=edges)
    assert sorted(len(g) for g in groups) == [2] * 10
    assignment = assign_splits(groups, (0.6, 0.2, 0.2), seed=1)
    for a, b in edges:
        assert assignment[a] == assignment[b]
    assert Counter(assignment.values()) == {"train": 12, "validation": 4, "test": 4}


# --------------------------------------------------------------------------- immutability


def test_frozen_content_survives_later_edits_of_the_pair(approved, curator):
    pair = approved("内科", tags=["高血压"], system="你是医生", history=[["之前的问题", "之前的回答"]])
    version = dataset_version_freeze(user=curator, name="v", split=ONLY_TRAIN)
    frozen = DatasetItem.objects.get(version=version, qa_pair=pair).content
    before_hash = version.content_hash

    pair.instruction = "完全不同的问题"
    pair.output = "完全不同的回答"
    pair.status = QAPair.Status.IN_REVIEW
    pair_apply_derived(pair)
    pair.save()
    pair.tags.clear()

    item = DatasetItem.objects.get(version=version, qa_pair=pair)
    assert item.content == frozen
    assert item.content["tags"] == ["高血压"]
    assert item.content["history"] == [["之前的问题", "之前的回答"]]
    assert item.content["system"] == "你是医生"
    version.refresh_from_db()
    assert version.content_hash == before_hash
    assert version.total == 1
