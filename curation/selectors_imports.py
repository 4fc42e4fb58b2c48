"""Reads for import batches: the list a user may see and the one access helper.

A curator sees only the batches they started; an admin sees every batch. Clinicians and
users without a role never reach these (the views and the API check the role first, and
``access_import_batch`` checks it again).
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404

from curation.models import ImportBatch
from curation.selectors import job_progress
from medportal.roles import CURATOR, has_role, is_admin


def import_batch_list(*, user, with_issues: bool = False) -> QuerySet[ImportBatch]:
    """Batches visible to ``user``, newest first, with their author (one query per page).

    The row report (``issues``) can be large; it is left out unless ``with_issues``.
    """
    qs = ImportBatch.objects.select_related("created_by").order_by("-created_at", "-id")
    if not with_issues:
        qs = qs.defer("issues")
    if not is_admin(user):
        qs = qs.filter(created_by=user)
    return qs


def access_import_batch(*, user, pk, with_issues: bool = True) -> ImportBatch:
    """The batch ``pk`` if ``user`` may see it: 403 without the curator role, 404 otherwise."""
    if not has_role(user, CURATOR):
        raise PermissionDenied
    try:
        return import_batch_list(user=user, with_issues=with_issues).get(pk=int(pk))
    except (ImportBatch.DoesNotExist, TypeError, ValueError):
        raise Http404("No such import.") from None


def import_batch_counts(batch: ImportBatch) -> dict:
    """The counts of a finished batch, in the shape the command, the API and the UI show."""
    return {
        "created": batch.created_count,
        "duplicates": batch.duplicate_count,
        "near_duplicates": batch.near_duplicate_count,
        "skipped": batch.skipped_count,
        "errors": batch.error_count,
        "identifiers": batch.identifier_count,
        "rows": batch.rows_total if batch.rows_total is not None else 0,
    }


def import_batch_progress(batch: ImportBatch) -> dict:
    """The small JSON document the progress bar polls."""
    reading = batch.rows_total is None or batch.rows_done < batch.rows_total
    phase = "queued" if batch.status == ImportBatch.Status.QUEUED else ("reading" if reading else "saving")
    return job_progress(
        batch, rows_done=batch.rows_done, rows_total=batch.rows_total, phase=phase, **import_batch_counts(batch)
    )
