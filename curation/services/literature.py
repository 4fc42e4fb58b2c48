"""Literature documents: import files (PubMed XML, MEDLINE, PubMedQA JSON, text / Markdown).

``documents_import`` parses the whole file first (``curation.literature.parsers``); a problem
with the file as a whole (malformed XML, unknown format, an empty file) is stored on the
``LiteratureImport`` row and no document is created. Otherwise every usable row is stored in
one transaction; rows that cannot be used (empty abstract, no PMID) and duplicates (a PMID or
DOI already stored, or seen earlier in the file) are listed in the row report, as QA imports do.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils.translation import gettext as _

from curation.importers.base import ImportFileError
from curation.lib.search import index_texts
from curation.literature.parsers import DocIssue, ParsedDocument, read_documents
from curation.literature.sentences import document_sentences
from curation.models import Document, LiteratureImport
from medportal.audit import audit_record
from medportal.errors import InvalidInput, NotAllowed
from medportal.roles import CURATOR, has_role

logger = logging.getLogger(__name__)

MAX_ISSUES = 1000
BATCH = 500


def _may_import(user) -> None:
    if not has_role(user, CURATOR):
        raise NotAllowed(_("Only curators and admins import documents."))


def documents_import(*, user, name: str, data: bytes, format: str | None = None, query: str = "") -> LiteratureImport:
    """Import one literature file; the returned row says what happened (``error`` when failed)."""
    _may_import(user)
    name = (name or "upload").rsplit("/", 1)[-1][:255]
    if format and format not in Document.Format.values:
        raise InvalidInput(_("Unknown document format '%(format)s'.") % {"format": format})
    try:
        fmt, items = read_documents(name, data, format or None)
        items = list(items)
    except ImportFileError as exc:
        batch = LiteratureImport.objects.create(created_by=user, filename=name, format=format or "", query=query[:1000], error=str(exc))
        audit_record(actor=user, action="literature.import.fail", target=batch, summary=str(exc)[:500])
        return batch
    return documents_store(user=user, name=name, fmt=fmt, items=items, query=query)


def documents_store(*, user, name: str, fmt: str, items: Iterable[ParsedDocument | DocIssue], query: str = "") -> LiteratureImport:
    """Store parsed documents in one transaction, with the row report."""
    _may_import(user)
    items = list(items)
    issues: list[dict] = []
    counts = {"duplicate": 0, "skipped": 0, "error": 0}

    def issue(i: DocIssue) -> None:
        counts[i.kind] = counts.get(i.kind, 0) + 1
        if len(issues) < MAX_ISSUES:
            issues.append({"row": i.row, "kind": i.kind, "ref": i.ref, "message": i.message})

    docs = [i for i in items if isinstance(i, ParsedDocument)]
    pmids = {d.pmid for d in docs if d.pmid}
    dois = {d.doi for d in docs if d.doi}
    existing = Document.objects.filter(Q(pmid__in=pmids) | Q(doi__in=dois)).values_list("pmid", "doi") if (pmids or dois) else []
    seen_pmid = {p for p, _d in existing if p}
    seen_doi = {d for _p, d in existing if d}
    fresh: list[ParsedDocument] = []
    for item in items:
        if isinstance(item, DocIssue):
            issue(item)
            continue
        dup = None
        if item.pmid and item.pmid in seen_pmid:
            dup = f"PMID {item.pmid}"
        elif item.doi and item.doi in seen_doi:
            dup = f"DOI {item.doi}"
        if dup:
            issue(DocIssue(item.row, f"Duplicate: {dup} is already stored or earlier in this file.", "duplicate", dup))
            continue
        seen_pmid.add(item.pmid) if item.pmid else None
        seen_doi.add(item.doi) if item.doi else None
        fresh.append(item)
    search_docs = index_texts([(d.title, d.abstract, " ".join(d.mesh_terms), d.journal) for d in fresh])
    try:
        with transaction.atomic():
            batch = LiteratureImport.objects.create(
                created_by=user,
                filename=name[:255],
                format=fmt,
                query=query[:1000],
                rows_total=len(items),
                created_count=len(fresh),
                duplicate_count=counts["duplicate"],
                skipped_count=counts["skipped"],
                error_count=counts["error"],
                issues=issues,
            )
            rows = [
                Document(
                    pmid=d.pmid,
                    doi=d.doi,
                    title=d.title,
                    abstract=d.abstract,
                    sections=d.sections,
                    sentences=document_sentences(d.sections),
                    mesh_terms=d.mesh_terms,
                    journal=d.journal,
                    year=d.year if d.year and d.year < 32767 else None,
                    language=d.language,
                    format=fmt,
                    source_file=name[:255],
                    source_row=d.row,
                    import_batch=batch,
                    extra=d.extra,
                    search_text=search,
                )
                for d, search in zip(fresh, search_docs)
            ]
            Document.objects.bulk_create(rows, batch_size=BATCH)
            audit_record(
                actor=user,
                action="literature.import",
                target=batch,
                summary=f"{name}: {len(fresh)} documents, {counts['duplicate']} duplicates, {counts['skipped'] + counts['error']} rows not imported",
            )
    except IntegrityError:
        # Another import stored one of these PMIDs/DOIs meanwhile: nothing of this file is kept.
        batch = LiteratureImport.objects.create(
            created_by=user,
            filename=name[:255],
            format=fmt,
            query=query[:1000],
            error="Another import stored some of these documents at the same time; nothing was imported. Import the file again.",
        )
    return batch


def documents_fetch_pubmed(*, user, query: str, email: str, max_results: int = 100, api_key: str = "", base_url: str = "") -> LiteratureImport:
    """Search PubMed through E-utilities and import what ``efetch`` returns, as one import.

    The query goes to NCBI, an external service: one holding an identifier (a phone number, an
    ID card number…) is refused. E-utilities failures raise ``InvalidInput`` with NCBI's words.
    """
    from curation.lib.identifiers import find_identifiers
    from curation.literature.eutils import DEFAULT_BASE_URL, Eutils, EutilsError
    from curation.literature.parsers import read_pubmed_xml

    _may_import(user)
    query = (query or "").strip()
    if not query:
        raise InvalidInput(_("The PubMed query is empty."))
    if find_identifiers(query):
        raise InvalidInput(_("The query holds a personal identifier; it is not sent to PubMed."))
    items: list[ParsedDocument | DocIssue] = []
    try:
        client = Eutils(email=email, api_key=api_key, base_url=base_url or DEFAULT_BASE_URL)
    except EutilsError as exc:
        raise InvalidInput(str(exc)) from None
    try:
        found = client.search(query, max_results=max_results)
        for body in client.fetch(found.ids):
            for item in read_pubmed_xml(body):
                item.row = len(items) + 1
                items.append(item)
    except (EutilsError, ImportFileError) as exc:
        raise InvalidInput(_("PubMed could not be searched: %(error)s") % {"error": str(exc)}) from None
    finally:
        client.close()
    return documents_store(user=user, name=f"PubMed: {query}"[:255], fmt="pubmed_xml", items=items, query=query)
