"""Rare-disease knowledge (import) and synthetic case generation (writes).

* ``hpo_import`` reads the HPO release files (hp.obo, phenotype.hpoa), the Chinese HPO
  labels, Chinese Orphanet names and the CCRD list with its ORPHA mapping through the
  Django-free parsers of ``curation.rare`` and replaces the knowledge tables in one
  transaction. Re-importing the same files gives the same rows (upsert by id; the
  annotations are deleted and written again). Obsolete HPO ids in annotations and in the
  CCRD lists follow ``replaced_by`` / ``consider``; every remapping is counted and reported.
* ``rare_knowledge_base`` builds a ``curation.rare.KnowledgeBase`` from the tables (cached
  per process and release).
* ``rare_cases_generate`` turns generated cases into QA pairs that start in review (the
  ``generate_rare_cases`` command); ``rare_cases_start`` queues a ``GenerationJob`` for the
  django-q2 worker (``curation.workers.rare``; pages and the API never generate in the request).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from curation.models import (
    Disease,
    DiseasePhenotype,
    GenerationJob,
    HpoRelease,
    Phenotype,
    QAPair,
)
from curation.services import core
from curation.services.imports import fast_insert
from medportal import jobs
from medportal.audit import audit_record
from medportal.errors import InvalidInput, NotAllowed
from medportal.roles import CURATOR, has_role

logger = logging.getLogger(__name__)

GENERATOR = "medportal.rare.v1"
SOURCE = "rare-case-generator"
LANGS = ("zh", "en")
TASKS = ("diagnosis", "next_test", "differential")
MAX_CASES = 1000
MAX_DISEASES = 200
JOB_KIND = "rare_cases"  # medportal.jobs kind (registered in curation.apps)
PROGRESS_EVERY = 50_000

Progress = Callable[[str], None]


def _noop(_message: str) -> None:
    pass


def rare_department() -> str:
    return getattr(settings, "MEDPORTAL_RARE_DEPARTMENT", "罕见病")



# --------------------------------------------------------------------------- import


@dataclass(slots=True)
class HpoImportResult:
    version: str
    phenotypes: int = 0
    obsolete: int = 0
    diseases: int = 0
    annotations: int = 0
    zh_labels: int = 0
    orpha_names_zh: int = 0
    omim_names_zh: int = 0
    ccrd: int = 0
    ccrd_keys: int = 0
    remapped: int = 0
    unresolved: int = 0
    remapped_ids: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    release_id: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _file_info(kind: str, path: Path) -> dict:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"kind": kind, "name": path.name, "sha256": digest.hexdigest(), "bytes": path.stat().st_size}


def _existing(kind: str, value) -> Path | None:
    if value in (None, ""):
        return None
    path = Path(value)
    if not path.is_file():
        raise InvalidInput(_("The %(kind)s file %(path)s does not exist.") % {"kind": kind, "path": str(value)})
    return path


def _source_of(code: str) -> str:
    prefix = code.partition(":")[0].upper()
    if prefix == "ORPHANET":
        prefix = "ORPHA"
    return prefix if prefix in Disease.Source.values else Disease.Source.ORPHA


class _Resolver:
    """Follows obsolete ids through the ontology and records each remapping once per place."""

    def __init__(self, ontology, known: set[str]) -> None:
        self.ontology = ontology
        self.known = known
        self.remapped = 0
        self.unresolved = 0
        self.seen: dict[tuple[str, str], dict] = {}

    def __call__(self, hpo_id: str, where: str) -> str | None:
        try:
            target = self.ontology.resolve(hpo_id)
        except (KeyError, ValueError):
            target = None
        if target is None or target not in self.known:
            self.unresolved += 1
            return None
        if target != hpo_id:
            self.remapped += 1
            key = (hpo_id, where)
            entry = self.seen.get(key)
            if entry is None:
                self.seen[key] = {"from": hpo_id, "to": target, "where": where, "count": 1}
            else:
                entry["count"] += 1
        return target


def hpo_import(
    *,
    obo,
    hpoa,
    zh=None,
    orpha_names_zh=None,
    omim_names_zh=None,
    ccrd=None,
    ccrd_map=None,
    user=None,
    progress: Progress | None = None,
) -> HpoImportResult:
    """Import one HPO release and the Chinese resources; all or nothing, idempotent.

    Raises InvalidInput for a missing or unreadable file (nothing is written then).
    ``user`` (optional: the command may run without one) is recorded on the release and
    in the audit event; from the UI only admins may import.
    """
    from curation.rare import knowledge, parsers

    say = progress or _noop
    started = time.perf_counter()
    obo_path = _existing("hp.obo", obo)
    hpoa_path = _existing("phenotype.hpoa", hpoa)
    if obo_path is None or hpoa_path is None:
        raise InvalidInput(_("Both --obo and --hpoa are required."))
    zh_path = _existing(_("Chinese labels"), zh)
    names_path = _existing(_("Chinese Orphanet names"), orpha_names_zh)
    omim_names_path = _existing(_("Chinese OMIM names"), omim_names_zh)
    ccrd_path = _existing("CCRD", ccrd)
    ccrd_map_path = _existing(_("CCRD mapping"), ccrd_map)
    if (ccrd_path is None) != (ccrd_map_path is None):
        raise InvalidInput(_("The CCRD list and its ORPHA mapping go together: give both --ccrd and --ccrd-map."))

    try:
        say(f"Reading {obo_path.name}…")
        obo_version, terms = parsers.parse_obo(obo_path)
        ontology = knowledge.Ontology(terms)
        zh_labels = parsers.parse_zh_labels(zh_path) if zh_path else {}
        if zh_labels:
            ontology.set_zh_labels(zh_labels)
        known = {t.id for t in terms}
        resolve = _Resolver(ontology, known)

        say(f"Reading {hpoa_path.name}…")
        hpoa_version, rows = parsers.parse_hpoa(hpoa_path)
        diseases: dict[str, dict] = {}
        annotations: list[tuple] = []  # (disease code, hpo id, original id, row)
        for n, row in enumerate(rows, 1):
            if n % PROGRESS_EVERY == 0:
                say(f"  {n:,} annotation rows read")
            target = resolve(row.hpo_id, "hpoa")
            if target is None:
                continue
            if row.disease_id not in diseases:
                diseases[row.disease_id] = {"name": row.disease_name, "name_zh": "", "ccrd_ids": [], "links": []}
            annotations.append((row.disease_id, target, row.hpo_id if target != row.hpo_id else "", row))
        say(f"  {len(annotations):,} annotation rows, {len(diseases):,} diseases")

        def name_in_chinese(names: dict) -> int:
            n = 0
            for code, (name_zh, _name_en) in names.items():
                if code in diseases and name_zh:
                    diseases[code]["name_zh"] = name_zh
                    n += 1
            return n

        named = name_in_chinese(parsers.parse_orpha_names_zh(names_path) if names_path else {})
        named_omim = name_in_chinese(parsers.parse_omim_names_zh(omim_names_path) if omim_names_path else {})

        ccrd_entries = parsers.parse_ccrd(ccrd_path, ccrd_map_path) if ccrd_path else []
        ccrd_annotations: list[tuple] = []
        for entry in ccrd_entries:
            links = [_link(x) for x in (entry.orpha or ())]
            diseases[entry.id] = {"name": entry.name_en or entry.name_zh, "name_zh": entry.name_zh, "ccrd_ids": [], "links": links}
            for link in links:
                if link["id"] in diseases:
                    diseases[link["id"]]["ccrd_ids"].append(entry.id)
            for hpo_id in dict.fromkeys(entry.hpo_ids):
                target = resolve(hpo_id, "ccrd")
                if target is not None:
                    ccrd_annotations.append((entry.id, target, hpo_id if target != hpo_id else ""))
    except (OSError, ValueError, KeyError, UnicodeDecodeError) as exc:
        raise InvalidInput(_("The HPO files could not be read: %(error)s") % {"error": f"{exc.__class__.__name__}: {exc}"}) from None

    version = str(hpoa_version or obo_version or "").strip() or "unknown"
    files = [_file_info("obo", obo_path), _file_info("hpoa", hpoa_path)]
    optional = (
        ("zh", zh_path),
        ("orpha_names_zh", names_path),
        ("omim_names_zh", omim_names_path),
        ("ccrd", ccrd_path),
        ("ccrd_map", ccrd_map_path),
    )
    for kind, path in optional:
        if path is not None:
            files.append(_file_info(kind, path))

    result = HpoImportResult(
        version=version,
        phenotypes=len(terms),
        obsolete=sum(1 for t in terms if t.obsolete),
        diseases=len(diseases),
        annotations=len(annotations) + len(ccrd_annotations),
        zh_labels=sum(1 for hid in zh_labels if hid in known),
        orpha_names_zh=named,
        omim_names_zh=named_omim,
        ccrd=len({e.id.split(".")[0] for e in ccrd_entries}),
        ccrd_keys=len(ccrd_entries),
        remapped=resolve.remapped,
        unresolved=resolve.unresolved,
        remapped_ids=sorted(resolve.seen.values(), key=lambda x: (x["where"], x["from"])),
    )

    say("Saving…")
    with transaction.atomic():
        _write_phenotypes(terms, zh_labels)
        phenotype_pk = dict(Phenotype.objects.values_list("hpo_id", "pk"))
        _write_diseases(diseases)
        disease_pk = dict(Disease.objects.values_list("code", "pk"))
        DiseasePhenotype.objects.all().delete()
        rows_out = []
        for code, hpo_id, original, row in annotations:
            p, low, high = knowledge.frequency_to_probability(row.frequency)
            rows_out.append(
                {
                    "disease_id": disease_pk[code],
                    "phenotype_id": phenotype_pk[hpo_id],
                    "original_hpo_id": original,
                    "frequency_raw": (row.frequency or "")[:32],
                    "probability": p,
                    "probability_low": low,
                    "probability_high": high,
                    "onset": (row.onset or "")[:16],
                    "sex": (row.sex or "")[:8],
                    "modifier": (row.modifier or "")[:255],
                    "negated": bool(row.negated),
                    "evidence": (row.evidence or "")[:8],
                    "reference": (row.reference or "")[:255],
                    "aspect": (row.aspect or "")[:1],
                }
            )
        for code, hpo_id, original in ccrd_annotations:
            rows_out.append(
                {
                    "disease_id": disease_pk[code],
                    "phenotype_id": phenotype_pk[hpo_id],
                    "original_hpo_id": original,
                    "frequency_raw": "",
                    "probability": None,
                    "probability_low": None,
                    "probability_high": None,
                    "onset": "",
                    "sex": "",
                    "modifier": "",
                    "negated": False,
                    "evidence": "",
                    "reference": "",
                    "aspect": "P",
                }
            )
        fast_insert(DiseasePhenotype, rows_out, now=timezone.now())
        Disease.objects.exclude(code__in=list(diseases)).delete()
        Phenotype.objects.exclude(hpo_id__in=list(known)).delete()
        result.seconds = round(time.perf_counter() - started, 2)
        counts = {k: v for k, v in result.as_dict().items() if k not in ("remapped_ids", "version", "release_id")}
        release, _created = HpoRelease.objects.update_or_create(
            version=version,
            defaults={
                "imported_at": timezone.now(),
                "imported_by": user if getattr(user, "is_authenticated", False) else None,
                "files": files,
                "counts": counts,
                "remapped": result.remapped_ids,
            },
        )
        result.release_id = release.pk
        audit_record(
            actor=user,
            action="hpo.import",
            target=release,
            summary=(
                f"HPO {version}: {result.phenotypes} terms, {result.diseases} diseases, "
                f"{result.annotations} annotations, {result.remapped} obsolete ids remapped"
            ),
            changes={**counts, "files": files},
        )
    _kb_cache.clear()
    return result


def _link(item) -> dict:
    if isinstance(item, dict):
        return {"id": str(item.get("id", "")), "relation": str(item.get("relation", ""))}
    if isinstance(item, (list, tuple)):
        return {"id": str(item[0]), "relation": str(item[1]) if len(item) > 1 else ""}
    return {"id": str(item), "relation": ""}


def _write_phenotypes(terms, zh_labels: dict) -> None:
    objs = [
        Phenotype(
            hpo_id=t.id,
            name=(t.name or t.id)[:255],
            name_zh=(zh_labels.get(t.id) or "")[:255],
            definition=t.definition or "",
            synonyms=list(t.synonyms or ()),
            parents=list(t.parents or ()),
            alt_ids=list(t.alt_ids or ()),
            obsolete=bool(t.obsolete),
            replaced_by=(t.replaced_by or "")[:16],
            consider=list(t.consider or ()),
        )
        for t in terms
    ]
    Phenotype.objects.bulk_create(
        objs,
        batch_size=2000,
        update_conflicts=True,
        unique_fields=["hpo_id"],
        update_fields=["name", "name_zh", "definition", "synonyms", "parents", "alt_ids", "obsolete", "replaced_by", "consider"],
    )


def _write_diseases(diseases: dict[str, dict]) -> None:
    objs = [
        Disease(
            code=code,
            source=_source_of(code),
            name=(d["name"] or code)[:500],
            name_zh=(d["name_zh"] or "")[:500],
            ccrd_ids=d["ccrd_ids"],
            links=d["links"],
        )
        for code, d in diseases.items()
    ]
    Disease.objects.bulk_create(
        objs,
        batch_size=2000,
        update_conflicts=True,
        unique_fields=["code"],
        update_fields=["source", "name", "name_zh", "ccrd_ids", "links"],
    )


# --------------------------------------------------------------------------- knowledge base

_kb_cache: dict[str, tuple] = {}
_kb_lock = threading.Lock()


def rare_current_release() -> HpoRelease | None:
    return HpoRelease.objects.order_by("-imported_at", "-id").first()


def rare_knowledge_base():
    """The engine's KnowledgeBase built from the tables; one per process and release."""
    return _engine()[0]


def _engine():
    """(KnowledgeBase, CaseGenerator) of the current release, built once per process and import."""
    from curation import rare

    release = rare_current_release()
    if release is None:
        raise InvalidInput(_("No HPO release is imported yet; run manage.py import_hpo first."))
    key = (release.pk, release.imported_at.timestamp())
    with _kb_lock:
        cached = _kb_cache.get("engine")
        if cached is not None and cached[0] == key:
            return cached[1], cached[2]
        kb = _build_knowledge_base(release)
        generator = rare.CaseGenerator(kb, rare.Ranker(kb))
        _kb_cache.clear()
        _kb_cache["engine"] = (key, kb, generator)
        return kb, generator


def _build_knowledge_base(release: HpoRelease):
    """Rebuild the engine's objects from the tables, through the engine's own grouping
    (``diseases_from_rows``) so the DB-backed knowledge base equals ``KnowledgeBase.from_files``."""
    from curation.rare import knowledge, parsers

    terms = []
    zh: dict[str, str] = {}
    for row in Phenotype.objects.order_by("pk").values_list(
        "hpo_id", "name", "parents", "synonyms", "definition", "obsolete", "replaced_by", "consider", "alt_ids", "name_zh"
    ).iterator(chunk_size=5000):
        hpo_id, name, parents, synonyms, definition, obsolete, replaced_by, consider, alt_ids, name_zh = row
        terms.append(
            parsers.Term(
                id=hpo_id,
                name=name,
                parents=tuple(parents or ()),
                synonyms=tuple(synonyms or ()),
                definition=definition,
                obsolete=obsolete,
                replaced_by=replaced_by or "",
                consider=tuple(consider or ()),
                alt_ids=tuple(alt_ids or ()),
            )
        )
        if name_zh:
            zh[hpo_id] = name_zh
    ontology = knowledge.Ontology(terms)
    if zh:
        ontology.set_zh_labels(zh)

    info = {pk: (code, name, name_zh) for pk, code, name, name_zh in Disease.objects.values_list("pk", "code", "name", "name_zh")}
    hpo_of = dict(Phenotype.objects.values_list("pk", "hpo_id"))
    names_zh = {code: name_zh for code, _name, name_zh in info.values() if name_zh}

    def rows():
        for d_pk, p_pk, negated, reference, evidence, onset, freq, sex, modifier, aspect in (
            DiseasePhenotype.objects.order_by("pk")
            .values_list("disease_id", "phenotype_id", "negated", "reference", "evidence", "onset", "frequency_raw", "sex", "modifier", "aspect")
            .iterator(chunk_size=20000)
        ):
            code, name, _zh = info[d_pk]
            yield parsers.HpoaRow(
                disease_id=code,
                disease_name=name,
                negated=negated,
                hpo_id=hpo_of[p_pk],
                reference=reference,
                evidence=evidence,
                onset=onset,
                frequency=freq,
                sex=sex,
                modifier=modifier,
                aspect=aspect or "P",
                biocuration="",
            )

    return knowledge.KnowledgeBase(ontology, knowledge.diseases_from_rows(ontology, rows(), names_zh), release.version)


# --------------------------------------------------------------------------- generation


@dataclass(slots=True)
class RareCasesResult:
    created: int = 0
    duplicates: int = 0
    qa_pair_ids: list[int] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    job_id: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class RareCasesParams:
    disease_ids: tuple[str, ...]
    count: int
    lang: str
    task: str
    seed: int
    rewrite: bool = False

    def to_dict(self) -> dict:
        return {
            "disease_ids": list(self.disease_ids),
            "count": self.count,
            "lang": self.lang,
            "task": self.task,
            "seed": self.seed,
            "rewrite": self.rewrite,
        }

    @classmethod
    def from_dict(cls, data: dict) -> RareCasesParams:
        return cls(
            disease_ids=tuple(data["disease_ids"]),
            count=int(data["count"]),
            lang=data["lang"],
            task=data["task"],
            seed=int(data["seed"]),
            rewrite=bool(data.get("rewrite", False)),
        )


def rare_cases_check(
    *, user, disease_ids: Iterable[str], count, lang: str = "zh", task: str = "diagnosis", seed=0, rewrite: bool = False
) -> RareCasesParams:
    """Validate a generation request; raises NotAllowed / InvalidInput, writes nothing."""
    if not has_role(user, CURATOR):
        raise NotAllowed(_("Only curators and admins can generate synthetic cases."))
    ids = list(dict.fromkeys(str(d).strip() for d in disease_ids if str(d).strip()))
    if not ids:
        raise InvalidInput(_("Pick at least one disease."))
    if len(ids) > MAX_DISEASES:
        raise InvalidInput(_("Pick at most %(n)d diseases at a time.") % {"n": MAX_DISEASES})
    try:
        count = int(count)
    except (TypeError, ValueError):
        raise InvalidInput(_("The number of cases must be a whole number.")) from None
    if not 1 <= count <= MAX_CASES:
        raise InvalidInput(_("The number of cases per disease must be between 1 and %(n)d.") % {"n": MAX_CASES})
    if lang not in LANGS:
        raise InvalidInput(_("Unknown language '%(lang)s'; expected zh or en.") % {"lang": lang})
    if task not in TASKS:
        raise InvalidInput(_("Unknown task '%(task)s'; expected one of %(tasks)s.") % {"task": task, "tasks": ", ".join(TASKS)})
    try:
        seed = int(seed)
    except (TypeError, ValueError):
        raise InvalidInput(_("The seed must be a whole number.")) from None
    known = set(Disease.objects.filter(code__in=ids).values_list("code", flat=True))
    missing = [d for d in ids if d not in known]
    if missing:
        raise InvalidInput(_("Unknown disease ids: %(ids)s.") % {"ids": ", ".join(missing)}, details={"unknown": missing})
    if rewrite:
        from curation.services.rare_rewrite import rewriter_get

        rewriter_get()  # InvalidInput when no rewrite model is configured
    return RareCasesParams(disease_ids=tuple(ids), count=count, lang=lang, task=task, seed=seed, rewrite=bool(rewrite))


def _case_seed(seed: int, index: int) -> int:
    """A distinct, stable seed per disease of a request."""
    return seed + 1_000_003 * index


def generate_cases(params: RareCasesParams, *, on_progress: Callable[[int], None] | None = None):
    """Yield (disease id, case or exception) for every requested case, deterministically."""
    from curation import rare

    _kb, generator = _engine()
    done = 0
    for index, disease_id in enumerate(params.disease_ids):
        case_params = rare.CaseParams(disease_id=disease_id, lang=params.lang, task=params.task, seed=_case_seed(params.seed, index))
        try:
            cases = generator.generate(case_params, params.count)
        except Exception as exc:  # a disease without usable annotations: reported, others go on
            logger.info("rare case generation failed for %s: %s", disease_id, exc)
            yield disease_id, exc
            done += params.count
        else:
            for case in cases:
                yield disease_id, case
                done += 1
        if on_progress is not None:
            on_progress(done)


def _difficulty(value) -> str:
    value = str(value or "").lower()
    return value if value in QAPair.Difficulty.values else ""


def _pair_from_case(case, *, user, seed: int, department, now, rewrite: tuple[str | None, str, str] | None = None) -> QAPair:
    """``rewrite`` = (rewritten question or None, problem, model label) when the rewrite step ran."""
    params = case.params
    if hasattr(params, "__dataclass_fields__"):
        params = asdict(params)
    pair = core.synthetic_pair(
        author=user,
        question=case.question,
        answer=case.answer,
        now=now,
        source=SOURCE,
        source_ref=case.disease_id,
        synthetic_meta={
            "generator": GENERATOR,
            "params": params,
            "seed": seed,
            "hpo_version": case.hpo_version,
            "true_rank": case.true_rank,
            "difficulty": case.difficulty,
            "disease_id": case.disease_id,
            "disease_name": case.disease_name,
            "present": list(case.present),
            "absent": list(case.absent),
            "differential": [list(x) for x in case.differential],
            "age_years": case.age_years,
            "sex": case.sex,
            "rewritten": False,
        },
        disease_codes=[case.disease_id],
        difficulty=_difficulty(case.difficulty),
        department=department,
    )
    if rewrite is not None:
        text, problem, model_label = rewrite
        if text:
            pair.instruction = text
            pair.synthetic_meta.update(rewritten=True, original_question=case.question, rewrite_model=model_label)
        else:
            pair.synthetic_meta.update(rewrite_model=model_label, rewrite_error=problem)
    core.pair_apply_derived(pair)
    return pair


def rewrite_cases(items, params: RareCasesParams, on_progress: Callable[[int], None] | None = None) -> list:
    """(disease id, case, rewrite) triples; the rewrite is None unless the step was asked for."""
    if not params.rewrite:
        return [(d, item, None) for d, item in items]
    from curation.services.rare_rewrite import rewriter_get

    rewriter = rewriter_get()
    out = []
    for i, (disease_id, item) in enumerate(items):
        if isinstance(item, Exception):
            out.append((disease_id, item, None))
            continue
        text, problem = rewriter(item.question, lang=params.lang, seed=params.seed + i)
        out.append((disease_id, item, (text, problem, rewriter.model_label)))
        if on_progress is not None:
            on_progress(i + 1)
    return out


def store_cases(items, *, user, params: RareCasesParams, result: RareCasesResult) -> None:
    """Write generated (disease id, case, rewrite) triples as QA pairs (one transaction per call)."""
    now = timezone.now()
    department = core.department_get_or_create(rare_department())
    seen_hashes: set[str] = set()
    pairs: list[QAPair] = []
    for disease_id, item, rewrite in items:
        if isinstance(item, Exception):
            result.errors.append({"disease_id": disease_id, "message": f"{item.__class__.__name__}: {item}"})
            continue
        pair = _pair_from_case(item, user=user, seed=params.seed, department=department, now=now, rewrite=rewrite)
        if pair.content_hash in seen_hashes:
            result.duplicates += 1
            continue
        seen_hashes.add(pair.content_hash)
        pairs.append(pair)
    stored = set(QAPair.objects.filter(content_hash__in=[p.content_hash for p in pairs]).values_list("content_hash", flat=True))
    fresh = [p for p in pairs if p.content_hash not in stored]
    result.duplicates += len(pairs) - len(fresh)
    with transaction.atomic():
        created = QAPair.objects.bulk_create(fresh, batch_size=500)
        ids = [p.pk for p in created]
        if ids and None in ids:  # backends without RETURNING: read the ids back by key
            by_hash = dict(QAPair.objects.filter(content_hash__in=[p.content_hash for p in fresh]).values_list("content_hash", "pk"))
            ids = [by_hash[p.content_hash] for p in fresh]
        result.qa_pair_ids.extend(ids)
        result.created += len(ids)


def rare_cases_generate(
    *, user, disease_ids: Sequence[str], count: int = 1, lang: str = "zh", task: str = "diagnosis", seed: int = 0, rewrite: bool = False
) -> RareCasesResult:
    """Generate ``count`` cases per disease now and store them as synthetic QA pairs in review."""
    params = rare_cases_check(user=user, disease_ids=disease_ids, count=count, lang=lang, task=task, seed=seed, rewrite=rewrite)
    result = RareCasesResult()
    items = rewrite_cases(list(generate_cases(params)), params)  # model calls stay outside the transaction
    with transaction.atomic():
        store_cases(items, user=user, params=params, result=result)
        audit_generate(user=user, params=params, result=result, target=None)
    return result


def audit_generate(*, user, params: RareCasesParams, result: RareCasesResult, target) -> None:
    if target is None:
        target = QAPair.objects.get(pk=result.qa_pair_ids[0]) if result.qa_pair_ids else user
    audit_record(
        actor=user,
        action="rare_cases.generate",
        target=target,
        summary=(
            f"{result.created} synthetic rare-disease cases ({params.task}, {params.lang}, seed {params.seed}) "
            f"for {', '.join(params.disease_ids)[:200]}"
        ),
        changes={
            **params.to_dict(),
            "created": result.created,
            "duplicates": result.duplicates,
            "errors": len(result.errors),
            "qa_pair_ids": result.qa_pair_ids[:1000],
            "generator": GENERATOR,
        },
    )


# --------------------------------------------------------------------------- background jobs


def rare_cases_start(
    *,
    user,
    disease_ids: Sequence[str],
    count: int = 1,
    lang: str = "zh",
    task: str = "diagnosis",
    seed: int = 0,
    rewrite: bool = False,
) -> GenerationJob:
    """Queue a generation job for the worker (``curation.workers.rare``) once the request
    commits; the job's page shows its progress. With ``rewrite`` every vignette is also
    paraphrased by the configured model."""
    params = rare_cases_check(user=user, disease_ids=disease_ids, count=count, lang=lang, task=task, seed=seed, rewrite=rewrite)
    total = params.count * len(params.disease_ids)
    job = GenerationJob(created_by=user, params=params.to_dict(), total=total)
    job.full_clean()
    with transaction.atomic():
        job.save()
        audit_record(actor=user, action="rare_cases.queue", target=job, summary=f"Case generation #{job.pk}: {total} cases", changes=params.to_dict())
        jobs.enqueue_after_commit(JOB_KIND, job.pk)
    return job


__all__ = [
    "GENERATOR",
    "HpoImportResult",
    "RareCasesParams",
    "RareCasesResult",
    "hpo_import",
    "rare_cases_check",
    "audit_generate",
    "generate_cases",
    "rewrite_cases",
    "store_cases",
    "rare_cases_generate",
    "rare_cases_start",
    "rare_current_release",
    "rare_knowledge_base",
]
