"""Import QA pairs from files: create a batch, run it inline or on the django-q2 worker.

Flow (docs/import-service.md has the user-facing version):

1. ``import_batch_create`` checks the options, stores the upload under MEDIA (or records the
   path given to ``import_qa``) and opens the file with ``curation.importers.open_source``.
   A file-level problem is saved on the batch (status *failed*, ``error``) and nothing else
   is created.
2. ``import_batch_dispatch`` runs small files at once and hands larger ones to the
   django-q2 worker (``curation.tasks.import_batch_task``) once the request commits, through
   the one job lifecycle (``medportal.jobs``, kind "import").
3. ``curation.workers.imports.import_batch_run`` claims the batch with a conditional UPDATE
   (queued → running, so a redelivered task never runs twice) and works in two phases:

   * **read** (no write transaction): stream the records, derive the duplicate key,
     fingerprint, identifier findings and search document of each, drop exact duplicates
     (already stored, or earlier in the same file) and flag near-duplicates against an
     in-memory index of every stored fingerprint plus the file's own rows. ``rows_done``
     is written after every chunk in its own short autocommit UPDATE, which is what the
     progress bar polls. A file-level error found here (say, truncated JSON) fails the
     batch before anything was written.
   * **write** (one short transaction, all or nothing): labels, the pairs (``fast_insert``:
     one prepared INSERT through ``executemany``), tag links through the M2M table, the
     batch report and the audit events (revision 1 of a pair is written at its first edit).

   There is never a half-done import: either every new pair of the file is stored, or none.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from itertools import islice
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files import File
from django.db import connection, models, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from curation.importers import (
    FORMATS,
    QA_FIELDS,
    ArchiveTooLarge,
    EncodingNameError,
    ImportFileError,
    ParsedRecord,
    RowIssue,
    open_source,
    read_columns,
)
from curation.lib import fingerprint
from curation.models import Department, ImportBatch, QAPair, Tag
from curation.selectors_imports import import_batch_counts
from curation.validators import encoding_error_text, validate_text_encoding
from curation.services import core
from curation.services.core import near_duplicate_index
from medportal import jobs
from medportal.audit import audit_record
from medportal.errors import InvalidInput, NotAllowed
from medportal.roles import CURATOR, has_role, is_admin

logger = logging.getLogger(__name__)

CHUNK = 1000
PAIR_STATUSES = (QAPair.Status.DRAFT, QAPair.Status.APPROVED)
STAGING_DIR = "imports/staging"
STAGING_MAX_AGE_S = 24 * 3600
JOB_KIND = "import"  # medportal.jobs kind (registered in curation.apps)
# pg_advisory_xact_lock key taken by the write phase of every import ("MPIM").
IMPORT_LOCK_ID = 0x4D50494D


# --------------------------------------------------------------------------- options


@dataclass(frozen=True, slots=True)
class ImportOptions:
    format: str | None = None
    encoding: str | None = None
    mapping: dict[str, str] = field(default_factory=dict)
    department: str = ""
    status: str = QAPair.Status.DRAFT

    def to_dict(self) -> dict:
        return {
            "format": self.format or "",
            "encoding": self.encoding or "",
            "mapping": dict(self.mapping),
            "department": self.department,
            "status": self.status,
        }

    @classmethod
    def from_dict(cls, data: dict) -> ImportOptions:
        return cls(
            format=data.get("format") or None,
            encoding=data.get("encoding") or None,
            mapping=dict(data.get("mapping") or {}),
            department=data.get("department") or "",
            status=data.get("status") or QAPair.Status.DRAFT,
        )


def import_options_check(
    *,
    user,
    format: str | None = None,
    encoding: str | None = None,
    mapping: dict[str, str] | None = None,
    department: str = "",
    status: str = QAPair.Status.DRAFT,
) -> ImportOptions:
    """Validate the options of an import; raises InvalidInput / NotAllowed (nothing is saved)."""
    if not has_role(user, CURATOR):
        raise NotAllowed(_("Only curators and admins can import QA pairs."))
    fmt = (format or "").strip().lower() or None
    if fmt == "auto":
        fmt = None
    if fmt is not None and fmt not in FORMATS:
        raise InvalidInput(
            _("Unknown format '%(format)s'; expected one of %(formats)s.") % {"format": format, "formats": ", ".join(FORMATS)}
        )
    enc = (encoding or "").strip() or None
    if enc is not None and enc.lower() == "auto":
        enc = None
    if enc is not None:
        try:
            validate_text_encoding(enc)
        except ValidationError as exc:
            raise InvalidInput(exc.messages[0], details={"encoding": exc.messages}) from None
    clean_mapping: dict[str, str] = {}
    for key, column in (mapping or {}).items():
        key = str(key).strip()
        if key not in QA_FIELDS:
            raise InvalidInput(_unknown_field(key))
        clean_mapping[key] = str(column or "").strip()
    status = (status or QAPair.Status.DRAFT).strip()
    if status not in PAIR_STATUSES:
        raise InvalidInput(_("Unknown status '%(status)s'; imported pairs are 'draft' or 'approved'.") % {"status": status})
    if status == QAPair.Status.APPROVED and not is_admin(user):
        raise NotAllowed(_("Only admins can import pairs as approved."))
    department = (department or "").strip()
    if len(department) > 100:
        raise InvalidInput(_("The department name is longer than 100 characters."))
    return ImportOptions(format=fmt, encoding=enc, mapping=clean_mapping, department=department, status=status)


def import_file_error_text(exc: ImportFileError) -> str:
    """The sentence stored on a failed batch and shown for a file-level error.

    The readers are Django-free and speak English; the errors a user can meet on any file
    of theirs (an archive over the bound, an encoding that is not one) are translated here,
    when the batch is written, in the language of the user who started it.
    """
    if isinstance(exc, ArchiveTooLarge):
        return _(
            "This XLSX workbook unpacks to more than %(limit)d MB, the limit for archives; it was refused "
            "without being read. Split it into smaller workbooks or save it as CSV."
        ) % {"limit": max(1, exc.limit_bytes // (1024 * 1024))}
    if isinstance(exc, EncodingNameError):
        return encoding_error_text(exc)
    return str(exc)


def _max_inflated() -> int:
    return settings.MEDPORTAL_IMPORT_MAX_INFLATED_BYTES


def _unknown_field(key: str) -> str:
    return _("Unknown field '%(field)s' in the column mapping; expected one of %(fields)s.") % {
        "field": key,
        "fields": ", ".join(QA_FIELDS),
    }


def mapping_parse(items: Iterable[str]) -> dict[str, str]:
    """``["instruction=ask", "output=answer"]`` → ``{"instruction": "ask", ...}`` (for --map)."""
    mapping: dict[str, str] = {}
    for item in items:
        key, sep, column = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InvalidInput(_("Bad mapping '%(item)s': write FIELD=COLUMN, e.g. instruction=ask.") % {"item": item})
        if key not in QA_FIELDS:
            raise InvalidInput(_unknown_field(key))
        mapping[key] = column.strip()
    return mapping


# --------------------------------------------------------------------------- create


def _too_big(size: int) -> str:
    return _("The file is %(size)d MB; the limit is %(limit)d MB.") % {
        "size": size // (1024 * 1024),
        "limit": settings.MEDPORTAL_UPLOAD_MAX_BYTES // (1024 * 1024),
    }


def _is_path(value) -> bool:
    return isinstance(value, (str, os.PathLike))


def _size_of(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0


def import_batch_path(batch: ImportBatch) -> Path:
    """The file (or folder) a batch reads."""
    if batch.file:
        return Path(batch.file.path)
    return Path(batch.source_path)


def import_batch_size(batch: ImportBatch) -> int:
    try:
        return _size_of(import_batch_path(batch))
    except OSError:
        return 0


def import_batch_create(
    *,
    user,
    path_or_upload,
    filename: str = "",
    format: str | None = None,
    encoding: str | None = None,
    mapping: dict[str, str] | None = None,
    department: str = "",
    status: str = QAPair.Status.DRAFT,
) -> ImportBatch:
    """Create a queued batch, or a failed one carrying the file-level error.

    ``path_or_upload`` is a path (``import_qa``: recorded in ``source_path``, nothing is
    copied) or an uploaded file (stored under MEDIA in ``ImportBatch.file``). Option errors
    raise InvalidInput / NotAllowed before anything is saved.
    """
    options = import_options_check(
        user=user, format=format, encoding=encoding, mapping=mapping, department=department, status=status
    )
    if _is_path(path_or_upload):
        path = Path(path_or_upload).expanduser().resolve()
        batch = ImportBatch(created_by=user, source_path=str(path), filename=(filename or path.name)[:255])
    else:
        upload = path_or_upload
        size = getattr(upload, "size", None) or 0
        if size > settings.MEDPORTAL_UPLOAD_MAX_BYTES:
            raise InvalidInput(_too_big(size))
        name = Path(filename or getattr(upload, "name", "") or "upload").name
        batch = ImportBatch(created_by=user, filename=name[:255])
        batch.file.save(name, upload if isinstance(upload, File) else File(upload, name=name), save=False)
        path = Path(batch.file.path)
    batch.options = options.to_dict()
    batch.format = options.format or ""
    batch.encoding = options.encoding or ""
    batch.status = ImportBatch.Status.QUEUED
    try:
        if not path.exists():
            raise ImportFileError(f"The file '{path.name}' does not exist.")
        source = open_source(
            path,
            format=options.format,
            encoding=options.encoding,
            mapping=options.mapping or None,
            max_inflated_bytes=_max_inflated(),
        )
    except ImportFileError as exc:
        batch.status = ImportBatch.Status.FAILED
        batch.error = import_file_error_text(exc)
        batch.finished_at = timezone.now()
    else:
        batch.format = source.format[:32]
        batch.encoding = (source.encoding or "")[:32]
        batch.rows_total = source.total
        if source.mapping:
            batch.options["mapping"] = dict(source.mapping)
    batch.full_clean()
    with transaction.atomic():
        batch.save()
        audit_record(
            actor=user,
            action="import.create",
            target=batch,
            summary=f"{batch.filename}: {batch.error}" if batch.error else batch.filename,
            changes={"options": batch.options, "status": batch.status},
        )
    return batch


def import_batch_dispatch(*, batch: ImportBatch, inline: bool | None = None) -> ImportBatch:
    """Run a queued batch now (small files) or enqueue it for the worker (large files).

    ``inline=None`` decides by size against MEDPORTAL_IMPORT_INLINE_MAX_BYTES. The task is
    enqueued with the batch id only, after the surrounding transaction commits.
    """
    if batch.status != ImportBatch.Status.QUEUED:
        return batch
    if inline is None:
        inline = import_batch_size(batch) <= settings.MEDPORTAL_IMPORT_INLINE_MAX_BYTES
    if inline:
        from curation.workers.imports import import_batch_run

        return import_batch_run(batch_id=batch.pk)
    jobs.enqueue_after_commit(JOB_KIND, batch.pk)
    return batch


# --------------------------------------------------------------------------- run


@dataclass(slots=True)
class _Pending:
    """A record that will become a pair (phase 1 output): column values by attname."""

    values: dict
    tags: list[str]
    department: str
    near_key: int | None  # a stored pk (>= 0) or -(index+1) of an earlier pending row


@dataclass(slots=True)
class _Plan:
    pending: list[_Pending] = field(default_factory=list)
    issues: list[dict] = field(default_factory=list)
    # issue index → ("db", pk) or ("file", pending index)
    duplicate_refs: dict[int, tuple[str, int]] = field(default_factory=dict)
    hash_to_pending: dict[str, int] = field(default_factory=dict)
    rows: int = 0
    skipped: int = 0
    errors: int = 0
    seconds_read: float = 0.0


def _chunks(items: Iterator, size: int) -> Iterator[list]:
    while True:
        chunk = list(islice(items, size))
        if not chunk:
            return
        yield chunk


class JobLost(Exception):
    """The batch is not ours any more (cancelled, reaped): the write phase stores nothing."""


def import_batch_stale_after() -> timedelta:
    """A running batch silent for longer than this has lost its worker: django-q2 kills a task
    at MEDPORTAL_Q_TIMEOUT, and the write phase is a single transaction (no heartbeat while it
    runs), so nothing of it was stored. The reaper (``medportal.jobs``) fails it then."""
    return timedelta(seconds=settings.Q_CLUSTER["timeout"] + 60)


def _progress(batch: ImportBatch, done: int, total: int | None) -> None:
    """A short autocommit heartbeat the progress bar polls (phase 1 holds no transaction);
    JobLost once the batch is not ours any more."""
    share = min(0.99, done / total) if total else 0.0
    if not jobs.set_progress(JOB_KIND, batch.pk, batch.attempt, share, rows_done=done, rows_total=total):
        raise JobLost()


def _stored_pks(hashes: list[str]) -> dict[str, int]:
    """content_hash → pk of the stored pairs among ``hashes``.

    Plain SQL in chunks: the ORM's ``__in`` lookup spends more time preparing thousands of
    parameters than the database spends answering.
    """
    table = connection.ops.quote_name(QAPair._meta.db_table)
    found: dict[str, int] = {}
    with connection.cursor() as cursor:
        for i in range(0, len(hashes), CHUNK):
            part = hashes[i : i + CHUNK]
            cursor.execute(f"SELECT content_hash, id FROM {table} WHERE content_hash IN ({', '.join(['%s'] * len(part))})", part)
            found.update(cursor.fetchall())
    return found


def derive_many(rows: list[dict]) -> None:
    """``core.derive`` for each row dict (content fields by name), written into the dict;
    computed by ``core.derive_many``, which fingerprints and indexes the rows together."""
    for row, d in zip(rows, core.derive_many(rows)):
        row["content_hash"], row["simhash"] = d.content_hash, d.simhash
        row["identifiers"], row["has_identifiers"] = d.identifiers, d.has_identifiers
        row["search_text"] = d.search_text


def import_plan_read(batch: ImportBatch, options: ImportOptions) -> _Plan:
    """Phase 1: parse, derive and de-duplicate everything; no write transaction is open."""
    started = time.perf_counter()
    source = open_source(
        import_batch_path(batch),
        format=options.format,
        encoding=options.encoding,
        mapping=options.mapping or None,
        max_inflated_bytes=_max_inflated(),
    )
    total = source.total
    _progress(batch, 0, total)
    plan = _Plan()
    index = near_duplicate_index()
    near_distance = fingerprint.near_duplicate_distance
    status = options.status
    decided_at = timezone.now() if status == QAPair.Status.APPROVED else None
    source_label = f"{batch.filename} ({source.format})"[:255]
    author_id = batch.created_by_id
    for chunk in _chunks(source.records(), CHUNK):
        fresh: list[tuple[ParsedRecord, dict]] = []
        for item in chunk:
            plan.rows += 1
            if isinstance(item, RowIssue):
                kind = "error" if item.kind == "error" else "skipped"
                plan.issues.append({"row": item.row, "file": item.file, "kind": kind, "message": item.message})
                if kind == "error":
                    plan.errors += 1
                else:
                    plan.skipped += 1
                continue
            extra = dict(item.extra or {})
            if item.file:
                extra["file"] = item.file
            values = {
                "instruction": item.instruction,
                "input": item.input,
                "output": item.output,
                "system": item.system,
                "history": item.history or [],
                "reasoning": item.reasoning,
                "disease_codes": list(item.disease_codes or []),
                "status": status,
                "decided_at": decided_at,
                "author_id": author_id,
                "source": source_label,
                "source_ref": (item.source_ref or "")[:255],
                "import_batch_id": batch.pk,
                "source_row": item.row,
                "extra": extra,
            }
            fresh.append((item, values))
        derive_many([v for _, v in fresh])
        stored = _stored_pks(list({v["content_hash"] for _, v in fresh}))
        for item, values in fresh:
            h = values["content_hash"]
            if h in stored or h in plan.hash_to_pending:
                ref = ("db", stored[h]) if h in stored else ("file", plan.hash_to_pending[h])
                plan.duplicate_refs[len(plan.issues)] = ref
                plan.issues.append({"row": item.row, "file": item.file, "kind": "duplicate", "message": ""})
                continue
            near_key = None
            if values["simhash"] is not None:
                # The same per-script distance as core.find_near_duplicate.
                text = f"{values['instruction']}\n{values['input']}\n{values['output']}"
                near_key = index.query(values["simhash"], max_distance=near_distance(text))
                index.add(-(len(plan.pending) + 1), values["simhash"])
            plan.hash_to_pending[h] = len(plan.pending)
            plan.pending.append(
                _Pending(values=values, tags=item.tags, department=item.department or options.department, near_key=near_key)
            )
        _progress(batch, plan.rows, max(total, plan.rows) if total is not None else None)
    _progress(batch, plan.rows, plan.rows)
    plan.seconds_read = time.perf_counter() - started
    return plan


def _labels(plan: _Plan, keep: list[int]) -> tuple[dict[str, int], dict[str, int]]:
    """Ids of the departments and tags the new pairs name, creating the missing ones."""
    pending = plan.pending
    dept_names = {pending[k].department for k in keep if pending[k].department}
    departments: dict[str, int] = {}
    if dept_names:
        departments = dict(Department.objects.filter(name__in=dept_names).values_list("name", "pk"))
        missing = [Department(name=n) for n in sorted(dept_names - departments.keys())]
        if missing:
            Department.objects.bulk_create(missing, ignore_conflicts=True)
            departments = dict(Department.objects.filter(name__in=dept_names).values_list("name", "pk"))
    tag_names = {t for k in keep for t in pending[k].tags}
    tags: dict[str, int] = {}
    if tag_names:
        for i in range(0, len(sorted_names := sorted(tag_names)), CHUNK):
            tags.update(Tag.objects.filter(name__in=sorted_names[i : i + CHUNK]).values_list("name", "pk"))
        missing_tags = [Tag(name=n) for n in sorted_names if n not in tags]
        if missing_tags:
            Tag.objects.bulk_create(missing_tags, ignore_conflicts=True, batch_size=CHUNK)
            for i in range(0, len(sorted_names), CHUNK):
                tags.update(Tag.objects.filter(name__in=sorted_names[i : i + CHUNK]).values_list("name", "pk"))
    return departments, tags


def fast_insert(model: type[models.Model], rows: list[dict], *, now) -> int:
    """INSERT ``rows`` (dicts of attname → value): ``executemany`` of one prepared statement
    (SQLite), or one ``COPY … FROM STDIN`` (PostgreSQL with psycopg 3).

    ``bulk_create`` builds its SQL in Python value by value, and on SQLite Django caps a
    statement at 999 parameters (37 QA pairs); with model instances on top that was two
    thirds of an import's time. Values are prepared the way ``bulk_create`` prepares them:
    text, integers, booleans and integer foreign keys as they are, JSON through
    ``connection.ops.adapt_json_value``, ``auto_now``/``auto_now_add`` timestamps set to
    ``now``, missing fields from ``Field.get_default()``, anything else through
    ``Field.get_db_prep_save``. As with ``bulk_create`` no signals are sent.
    """
    if not rows:
        return 0
    ops = connection.ops
    fields = [f for f in model._meta.concrete_fields if not (f.primary_key and isinstance(f, models.AutoField))]
    preps: list[tuple[str, str, object]] = []
    for f in fields:
        if isinstance(f, models.DateTimeField) and (f.auto_now or f.auto_now_add):
            preps.append((f.attname, "const", f.get_db_prep_save(now, connection)))
            continue
        if f.attname not in rows[0]:
            default = f.get_default()
            if isinstance(f, models.JSONField):
                default = None if default is None else ops.adapt_json_value(default, f.encoder)
            else:
                default = f.get_db_prep_save(default, connection)
            preps.append((f.attname, "const", default))
        elif isinstance(f, models.JSONField):
            preps.append((f.attname, "json", f.encoder))
        elif isinstance(f, (models.TextField, models.CharField)) and not f.null:
            preps.append((f.attname, "text", None))
        elif isinstance(f.target_field if isinstance(f, models.ForeignKey) else f, (models.IntegerField, models.BooleanField)):
            preps.append((f.attname, "plain", None))
        else:
            preps.append((f.attname, "field", f))
    adapt_json = ops.adapt_json_value
    empty_json: dict = {}
    values = []
    for row in rows:
        out = []
        for attname, how, extra in preps:
            if how == "const":
                out.append(extra)
                continue
            value = row[attname]
            if how == "text":
                out.append(value if type(value) is str else str(value))
            elif how == "plain" or value is None:
                out.append(value)
            elif how == "json":
                # Most pairs have no history, codes or findings: encode "[]"/"{}" once.
                if not value and type(value) in (list, dict):
                    key = (attname, type(value))
                    if key not in empty_json:
                        empty_json[key] = adapt_json(type(value)(), extra)
                    out.append(empty_json[key])
                else:
                    out.append(adapt_json(value, extra))
            else:
                out.append(extra.get_db_prep_save(value, connection))
        values.append(out)
    qn = ops.quote_name
    table = qn(model._meta.db_table)
    columns = ", ".join(qn(f.column) for f in fields)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql" and hasattr(cursor.cursor, "copy"):  # psycopg 3
            # COPY: one statement for all rows instead of one INSERT per row.
            with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in values:
                    copy.write_row(row)
        else:
            sql = f"INSERT INTO {table} ({columns}) VALUES ({', '.join(['%s'] * len(fields))})"
            for start in range(0, len(values), CHUNK * 5):
                cursor.executemany(sql, values[start : start + CHUNK * 5])
    return len(values)


def _clean_labels(plan: _Plan) -> None:
    for p in plan.pending:
        p.department = (p.department or "").strip()[:100]
        p.tags = list(dict.fromkeys(t.strip()[:100] for t in p.tags if t and t.strip()))


def import_plan_write(batch: ImportBatch, options: ImportOptions, plan: _Plan) -> None:
    """Phase 2: store everything in one transaction (all or nothing), ending with the
    conditional ``succeed`` of this claim (JobLost, and nothing stored, when it is not ours)."""
    started = time.perf_counter()
    user = batch.created_by
    _clean_labels(plan)
    pending = plan.pending
    with transaction.atomic():
        if connection.vendor == "postgresql":
            # One import writes at a time, so the duplicate re-check below cannot race
            # with another import (SQLite's IMMEDIATE transactions already serialise writers).
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [IMPORT_LOCK_ID])
                # The GIN search index (migration 0002) costs most of a PostgreSQL import:
                # let new entries collect in its pending list and be merged in bulk later
                # (by autovacuum or when the list fills) instead of one row at a time.
                cursor.execute("SET LOCAL gin_pending_list_limit = '64MB'")
        # Re-check the keys: a pair with the same text may have been stored since phase 1.
        hashes = [p.values["content_hash"] for p in pending]
        late = _stored_pks(hashes)
        issues = [dict(x) for x in plan.issues]
        duplicate_refs = dict(plan.duplicate_refs)
        dropped: set[int] = set()
        if late:
            for k, p in enumerate(pending):
                if p.values["content_hash"] in late:
                    dropped.add(k)
                    duplicate_refs[len(issues)] = ("db", late[p.values["content_hash"]])
                    issues.append(
                        {"row": p.values["source_row"], "file": p.values["extra"].get("file", ""), "kind": "duplicate", "message": ""}
                    )
        keep = [k for k in range(len(pending)) if k not in dropped]
        departments, tags = _labels(plan, keep)

        in_file_near: list[tuple[int, int]] = []  # (pending index, pending index it resembles)
        rows = []
        for k in keep:
            p = pending[k]
            values = p.values
            values["department_id"] = departments[p.department] if p.department else None
            ref = p.near_key
            values["near_duplicate_of_id"] = ref if ref is not None and ref >= 0 else None
            if ref is not None and ref < 0 and (-ref - 1) not in dropped:
                in_file_near.append((k, -ref - 1))
            rows.append(values)
        now = timezone.now()
        fast_insert(QAPair, rows, now=now)
        # One query maps the new rows back to their ids (content_hash is unique).
        ids = dict(QAPair.objects.filter(import_batch_id=batch.pk).values_list("content_hash", "pk"))
        pk_of: dict[int, int] = {k: ids[pending[k].values["content_hash"]] for k in keep}
        if in_file_near:
            for k, target in in_file_near:
                pending[k].values["near_duplicate_of_id"] = pk_of[target]
            table = connection.ops.quote_name(QAPair._meta.db_table)
            with connection.cursor() as cursor:
                cursor.executemany(
                    f"UPDATE {table} SET near_duplicate_of_id = %s WHERE id = %s",
                    [(pk_of[target], pk_of[k]) for k, target in in_file_near],
                )

        links = [{"qapair_id": pk_of[k], "tag_id": tags[n]} for k in keep for n in pending[k].tags]
        if links:
            fast_insert(QAPair.tags.through, links, now=now)
        # No revision rows here: the content as imported becomes revision 1 just before the
        # first edit (core.revision_ensure_initial), so an import does not store every text twice.

        for i, (where, ref) in duplicate_refs.items():
            # Stored in English for the API and the command; the page renders its own
            # translated sentence from duplicate_of / duplicate_of_row.
            if where == "db":
                issues[i]["duplicate_of"] = ref
                issues[i]["message"] = f"Exact duplicate of pair #{ref}, already stored."
            else:
                first = pending[ref].values
                issues[i]["duplicate_of"] = pk_of.get(ref)
                issues[i]["duplicate_of_row"] = first["source_row"]
                where_first = f"row {first['source_row']}" + (f" of {first['extra']['file']}" if first["extra"].get("file") else " of this file")
                issues[i]["message"] = f"Exact duplicate of {where_first} (pair #{pk_of.get(ref)})."
        issues.sort(key=lambda x: (x.get("file", ""), x["row"]))

        created_count = len(keep)
        ended = jobs.succeed(
            JOB_KIND,
            batch.pk,
            batch.attempt,
            created_count=created_count,
            duplicate_count=sum(1 for x in issues if x["kind"] == "duplicate"),
            near_duplicate_count=sum(1 for k in keep if pending[k].values["near_duplicate_of_id"] is not None),
            skipped_count=plan.skipped,
            error_count=plan.errors,
            identifier_count=sum(1 for k in keep if pending[k].values["has_identifiers"]),
            issues=issues,
            rows_total=plan.rows,
            rows_done=plan.rows,
        )
        if not ended:
            raise JobLost()  # rolls the pairs back: a cancelled or reaped batch stores nothing
        batch.refresh_from_db()
        counts = import_batch_counts(batch)
        audit_record(
            actor=user,
            action="import.run",
            target=batch,
            summary=(
                f"{batch.filename}: {counts['created']} created, {counts['duplicates']} duplicates, "
                f"{counts['skipped']} skipped, {counts['errors']} row errors"
            ),
            changes={
                **counts,
                "seconds_read": round(plan.seconds_read, 3),
                "seconds_write": round(time.perf_counter() - started, 3),
            },
        )
        if options.status == QAPair.Status.APPROVED and created_count:
            audit_record(
                actor=user,
                action="import.approved_status",
                target=batch,
                summary=f"{created_count} pairs of import #{batch.pk} ({batch.filename}) imported as approved, without review",
                changes={"batch": batch.pk, "count": created_count},
            )


# --------------------------------------------------------------------------- the uploaded file


def import_batch_file_download(*, user, batch: ImportBatch):
    """The uploaded file of ``batch``, opened for reading, or None; the download is audited.

    The caller reached ``batch`` through ``access_import_batch`` (its owner or an admin): uploads
    are never served from MEDIA_URL. An ``import_qa`` batch names a path on the server, which
    is never handed out; a file removed from MEDIA is gone.
    """
    if not batch.file:
        return None
    try:
        handle = batch.file.storage.open(batch.file.name, "rb")
    except (FileNotFoundError, OSError, ValueError):
        return None
    audit_record(actor=user, action="import.download", target=batch, summary=batch.filename)
    return handle


# --------------------------------------------------------------------------- upload staging (mapping step)


@dataclass(frozen=True, slots=True)
class Preview:
    format: str
    encoding: str
    columns: list[str]
    mapping: dict[str, str]
    records: list[ParsedRecord]
    issues: list[RowIssue]
    total: int | None


def import_preview(
    *, path: Path, format: str | None = None, encoding: str | None = None, mapping: dict[str, str] | None = None, limit: int = 5
) -> Preview:
    """Columns, the effective mapping and the first ``limit`` parsed rows; raises ImportFileError."""
    columns = read_columns(path, format=format, encoding=encoding, max_inflated_bytes=_max_inflated())
    source = open_source(path, format=format, encoding=encoding, mapping=mapping or None, max_inflated_bytes=_max_inflated())
    records: list[ParsedRecord] = []
    issues: list[RowIssue] = []
    for item in source.records():
        if isinstance(item, RowIssue):
            if len(issues) < limit:
                issues.append(item)
        else:
            records.append(item)
        if len(records) >= limit:
            break
    return Preview(
        format=source.format,
        encoding=source.encoding or "",
        columns=columns or list(source.columns),
        mapping=dict(source.mapping),
        records=records,
        issues=issues,
        total=source.total,
    )


def _staging_root() -> Path:
    return Path(settings.MEDIA_ROOT) / STAGING_DIR


def import_upload_stage(*, upload) -> str:
    """Keep an upload until the user confirms the column mapping; returns a token."""
    size = getattr(upload, "size", None) or 0
    if size > settings.MEDPORTAL_UPLOAD_MAX_BYTES:
        raise InvalidInput(_too_big(size))
    _staging_sweep()
    token = uuid.uuid4().hex
    name = Path(getattr(upload, "name", "") or "upload").name or "upload"
    folder = _staging_root() / token
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / name, "wb") as out:
        for chunk in upload.chunks() if hasattr(upload, "chunks") else iter(lambda: upload.read(1 << 20), b""):
            out.write(chunk)
    return token


def import_staged_path(token: str) -> Path | None:
    """The staged file of ``token``, or None when it is gone or the token is malformed."""
    if not token or len(token) != 32 or not all(c in "0123456789abcdef" for c in token):
        return None
    folder = _staging_root() / token
    if not folder.is_dir():
        return None
    files = [p for p in folder.iterdir() if p.is_file()]
    return files[0] if files else None


def import_staged_discard(token: str) -> None:
    path = import_staged_path(token)
    if path is not None:
        shutil.rmtree(path.parent, ignore_errors=True)


def _staging_sweep() -> None:
    root = _staging_root()
    if not root.is_dir():
        return
    cutoff = time.time() - STAGING_MAX_AGE_S
    for folder in root.iterdir():
        try:
            if folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            continue


def import_batch_create_from_staged(*, user, token: str, **options) -> ImportBatch:
    """``import_batch_create`` for a staged upload; the staged copy is removed afterwards."""
    path = import_staged_path(token)
    if path is None:
        raise InvalidInput(_("The uploaded file has expired; upload it again."))
    with open(path, "rb") as handle:
        batch = import_batch_create(user=user, path_or_upload=File(handle, name=path.name), filename=path.name, **options)
    import_staged_discard(token)
    return batch


__all__ = [
    "ImportOptions",
    "Preview",
    "import_batch_counts",
    "import_batch_create",
    "import_batch_create_from_staged",
    "import_batch_dispatch",
    "JobLost",
    "import_batch_file_download",
    "import_batch_path",
    "import_plan_read",
    "import_plan_write",
    "import_file_error_text",
    "import_options_check",
    "import_preview",
    "import_staged_discard",
    "import_staged_path",
    "import_upload_stage",
    "mapping_parse",
]
