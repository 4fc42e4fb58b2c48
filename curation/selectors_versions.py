"""Reads for dataset versions: lists, access, the pairs a freeze would take, per-split figures.

Dataset versions are shared read-only artefacts: every MedPortal role may see every version,
so the access helper only has to turn an unknown id into a 404.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from django.db.models import Count, QuerySet
from django.http import Http404

from curation.models import DatasetItem, DatasetVersion, QAPair

SPLITS: tuple[str, ...] = ("train", "validation", "test")


def version_list() -> QuerySet[DatasetVersion]:
    """Every version, newest first, with the user who froze it (one query per page)."""
    return DatasetVersion.objects.select_related("created_by").order_by("-created_at", "-id")


def access_version(user, pk) -> DatasetVersion:
    """The version ``pk`` for a user who already passed the role check; 404 when unknown."""
    try:
        return version_list().get(pk=int(pk))
    except (DatasetVersion.DoesNotExist, TypeError, ValueError):
        raise Http404("No such dataset version.") from None


def approved_pairs(
    *,
    departments: Iterable[str] = (),
    tags: Iterable[str] = (),
    synthetic: bool | None = None,
    sources: Iterable[str] = (),
) -> QuerySet[QAPair]:
    """Approved pairs matching every given filter (a list filter matches any of its values).

    ``departments`` and ``tags`` are names; ``synthetic`` None means both kinds;
    ``sources`` matches ``QAPair.source`` exactly.
    """
    qs = QAPair.objects.filter(status=QAPair.Status.APPROVED)
    departments = list(departments)
    tags = list(tags)
    sources = list(sources)
    if departments:
        qs = qs.filter(department__name__in=departments)
    if tags:
        through = QAPair.tags.through
        qs = qs.filter(pk__in=through.objects.filter(tag__name__in=tags).values("qapair_id"))
    if synthetic is not None:
        qs = qs.filter(synthetic=synthetic)
    if sources:
        qs = qs.filter(source__in=sources)
    return qs


def version_department_counts(version: DatasetVersion) -> list[dict]:
    """Per frozen department: {"department", "train", "validation", "test", "total"}, by name."""
    rows = (
        DatasetItem.objects.filter(version=version)
        .values("split", "content__department")
        .annotate(n=Count("id"))
        .order_by()
    )
    table: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(SPLITS, 0))
    for row in rows:
        table[row["content__department"] or ""][row["split"]] = row["n"]
    return [
        {"department": name, **counts, "total": sum(counts.values())}
        for name, counts in sorted(table.items(), key=lambda kv: (kv[0] == "", kv[0]))
    ]


def version_preview(version: DatasetVersion, *, per_split: int = 5) -> dict[str, list[DatasetItem]]:
    """The first ``per_split`` items of each split, in export order (one query per split)."""
    return {
        split: list(
            DatasetItem.objects.filter(version=version, split=split)
            .order_by("position")
            .only("id", "qa_pair_id", "split", "position", "content")[:per_split]
        )
        for split in SPLITS
    }


def version_items(version: DatasetVersion, split: str):
    """(qa_pair_id, frozen content) of one split in export order, streamed from the database."""
    return (
        DatasetItem.objects.filter(version=version, split=split)
        .order_by("position")
        .values_list("qa_pair_id", "content")
        .iterator(chunk_size=2000)
    )
