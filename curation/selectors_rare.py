"""Reads for the rare-disease knowledge: search, disease pages, the CCRD catalogue, jobs.

Knowledge pages are open to every MedPortal role; generation jobs are seen by the curator
who started them and by admins (``access_generation_job``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, QuerySet
from django.http import Http404
from django.utils.translation import gettext_lazy as _

from curation.models import Disease, DiseasePhenotype, GenerationJob, HpoRelease
from curation.selectors import job_progress
from medportal.roles import ALL_ROLES, CURATOR, has_role, is_admin

# HPO frequency terms → class (the disease page groups phenotypes by these).
FREQUENCY_TERMS = {
    "HP:0040280": "obligate",
    "HP:0040281": "very_frequent",
    "HP:0040282": "frequent",
    "HP:0040283": "occasional",
    "HP:0040284": "very_rare",
    "HP:0040285": "excluded",
}
FREQUENCY_CLASSES = [
    ("obligate", _("Obligate (100%)")),
    ("very_frequent", _("Very frequent (80–99%)")),
    ("frequent", _("Frequent (30–79%)")),
    ("occasional", _("Occasional (5–29%)")),
    ("very_rare", _("Very rare (1–4%)")),
    ("excluded", _("Excluded (NOT)")),
    ("unknown", _("Frequency unknown")),
]
ONSET_LABELS_FALLBACK = "onset"


def frequency_class(annotation: DiseasePhenotype) -> str:
    """The frequency class of an annotation: from its HPO frequency term, or its probability."""
    if annotation.negated:
        return "excluded"
    term = FREQUENCY_TERMS.get(annotation.frequency_raw)
    if term:
        return term
    p = annotation.probability
    if p is None:
        return "unknown"
    if p >= 0.9999:
        return "obligate"
    if p >= 0.80:
        return "very_frequent"
    if p >= 0.30:
        return "frequent"
    if p >= 0.05:
        return "occasional"
    if p > 0:
        return "very_rare"
    return "excluded"


def _check_reader(user) -> None:
    if not has_role(user, *ALL_ROLES):
        raise PermissionDenied


def hpo_release_current() -> HpoRelease | None:
    return HpoRelease.objects.order_by("-imported_at", "-id").first()


def disease_search(*, user, q: str = "", source: str = "") -> QuerySet[Disease]:
    """Diseases whose id, English or Chinese name contains every word of ``q``.

    Plain ``icontains`` on the short name fields: Chinese names match by substring, which
    is what a bigram index would give for them, and ~13k rows scan in milliseconds.
    """
    _check_reader(user)
    qs = Disease.objects.annotate(annotation_count=Count("annotations")).order_by("source", "code")
    if source:
        qs = qs.filter(source=source)
    for word in (q or "").split():
        word = word.strip()
        if not word:
            continue
        cond = Q(name__icontains=word) | Q(name_zh__icontains=word) | Q(code__iexact=word)
        if ":" in word or word.isdigit():
            cond |= Q(code__iendswith=":" + word.partition(":")[2] if ":" in word else ":" + word)
        qs = qs.filter(cond)
    return qs


def access_disease(*, user, code: str) -> Disease:
    _check_reader(user)
    try:
        return Disease.objects.get(code=str(code).strip())
    except Disease.DoesNotExist:
        raise Http404("No such disease.") from None


@dataclass(slots=True)
class PhenotypeGroup:
    key: str
    label: str
    rows: list = field(default_factory=list)


@dataclass(slots=True)
class DiseasePage:
    disease: Disease
    groups: list[PhenotypeGroup]
    inheritance: list[DiseasePhenotype]
    onset: list[DiseasePhenotype]
    other: list[DiseasePhenotype]
    linked: list[Disease]
    ccrd: list[Disease]


def disease_page(disease: Disease) -> DiseasePage:
    """The annotations of a disease grouped by frequency class (one query), plus its links."""
    rows = list(
        DiseasePhenotype.objects.filter(disease=disease)
        .select_related("phenotype")
        .order_by("phenotype__name", "id")
    )
    groups = {key: PhenotypeGroup(key=key, label=str(label)) for key, label in FREQUENCY_CLASSES}
    inheritance, onset, other = [], [], []
    seen: set[tuple] = set()
    for row in rows:
        if row.aspect == "I":
            inheritance.append(row)
            continue
        if row.aspect == "C":
            onset.append(row)
            continue
        if row.aspect not in ("P", "H", ""):
            other.append(row)
            continue
        cls = frequency_class(row)
        key = (cls, row.phenotype_id)
        if key in seen:  # the same phenotype from several references: show it once
            continue
        seen.add(key)
        row.frequency_class = cls
        groups[cls].rows.append(row)
    linked_ids = [link.get("id") for link in disease.links or [] if link.get("id")]
    relation = {link.get("id"): link.get("relation", "") for link in disease.links or []}
    linked = list(Disease.objects.filter(code__in=linked_ids).order_by("code")) if linked_ids else []
    for d in linked:
        d.relation = relation.get(d.code, "")
    ccrd = list(Disease.objects.filter(code__in=disease.ccrd_ids or []).order_by("code")) if disease.ccrd_ids else []
    return DiseasePage(
        disease=disease,
        groups=[g for g in groups.values() if g.rows],
        inheritance=inheritance,
        onset=onset,
        other=other,
        linked=linked,
        ccrd=ccrd,
    )


def ccrd_catalogue(*, user, q: str = "") -> list[Disease]:
    """The 121-disease national list (144 entries with subtypes), in list order."""
    qs = disease_search(user=user, q=q, source=Disease.Source.CCRD)
    return sorted(qs, key=lambda d: d.ccrd_number)


# --------------------------------------------------------------------------- jobs


def generation_job_list(*, user) -> QuerySet[GenerationJob]:
    qs = GenerationJob.objects.select_related("created_by").order_by("-created_at", "-id")
    if not is_admin(user):
        qs = qs.filter(created_by=user)
    return qs


def access_generation_job(*, user, pk) -> GenerationJob:
    """The job ``pk`` if ``user`` may see it: 403 without the curator role, 404 otherwise."""
    if not has_role(user, CURATOR):
        raise PermissionDenied
    try:
        return generation_job_list(user=user).get(pk=int(pk))
    except (GenerationJob.DoesNotExist, TypeError, ValueError):
        raise Http404("No such generation job.") from None


def generation_job_progress(job: GenerationJob) -> dict:
    return job_progress(
        job, rows_done=job.done, rows_total=job.total,
        created=job.created_count, duplicates=job.duplicate_count, errors=len(job.errors or []),
    )
