"""Readers for literature files: each turns bytes into ``ParsedDocument`` rows and ``DocIssue``
row problems, or raises ``ImportFileError`` for a problem with the file as a whole (nothing
of it may then be stored).

Formats:

* ``pubmed_xml`` — a ``PubmedArticleSet`` as E-utilities ``efetch`` (``db=pubmed&retmode=xml``)
  returns it. Parsed with defusedxml: entity declarations and external references are refused.
* ``medline`` — MEDLINE/PubMed text (``efetch rettype=medline``): ``PMID- …`` records, one tag
  per line, continuation lines indented by six spaces, records separated by a blank line.
* ``pubmedqa`` — the PubMedQA JSON (``ori_pqal.json``): ``{pmid: {QUESTION, CONTEXTS[], LABELS[],
  MESHES[], YEAR, LONG_ANSWER, ...}}``. The question (the article's title turned into a
  question) is the title; ``LABELS``/``CONTEXTS`` are the abstract's sections and
  ``LONG_ANSWER`` its conclusion.
* ``text`` — one plain-text or Markdown document per file: an optional ``Key: value`` header
  (PMID, DOI, Title, Journal, Year, MeSH), a ``# Title`` line, ``## Section`` headings or
  ``LABEL:`` paragraph starts for the sections.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree.ElementTree import Element

from curation.importers.base import ImportFileError, parse_xml
from curation.importers.encoding import decode, detect_encoding

FORMATS = ("pubmed_xml", "medline", "pubmedqa", "text")
TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".text")
SUFFIXES = (".xml", ".json", ".nbib", ".medline", *TEXT_SUFFIXES)
MAX_BYTES = 200 * 1024 * 1024
TITLE_MAX = 2000
JOURNAL_MAX = 500


@dataclass(slots=True)
class ParsedDocument:
    row: int
    title: str
    sections: list[dict] = field(default_factory=list)  # [{"label": "BACKGROUND", "text": "…"}]
    pmid: str = ""
    doi: str = ""
    mesh_terms: list[str] = field(default_factory=list)
    journal: str = ""
    year: int | None = None
    language: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def abstract(self) -> str:
        return "\n\n".join(f"{s['label']}: {s['text']}" if s.get("label") else s["text"] for s in self.sections)


@dataclass(slots=True)
class DocIssue:
    row: int
    message: str
    kind: str = "error"  # "error", "skipped" or "duplicate"
    ref: str = ""


Item = ParsedDocument | DocIssue

_DOI = re.compile(r"10\.\d{4,9}/\S+")
_WS = re.compile(r"\s+")
_YEAR = re.compile(r"(1[89]\d\d|20\d\d)")


def clean(text: str) -> str:
    """Runs of whitespace as one space; NUL dropped (no visible form, and PostgreSQL refuses it)."""
    return _WS.sub(" ", (text or "").replace("\x00", "")).strip()


def normalize_doi(value: str) -> str:
    """``10.1000/xyz`` in lower case (DOIs are case-insensitive), without a resolver prefix."""
    m = _DOI.search((value or "").strip())
    return m.group().rstrip(".,;").lower()[:255] if m else ""


def normalize_pmid(value: str) -> str:
    value = (value or "").strip()
    return value if value.isdigit() and len(value) <= 12 else ""


def year_of(text: str) -> int | None:
    m = _YEAR.search(text or "")
    return int(m.group()) if m else None


def finish(doc: ParsedDocument) -> Item:
    """Trim a parsed document and refuse one that cannot be used (no abstract, no title)."""
    doc.title = clean(doc.title)[:TITLE_MAX]
    doc.journal = clean(doc.journal)[:JOURNAL_MAX]
    doc.sections = [{"label": clean(s.get("label", ""))[:100], "text": clean(s.get("text", ""))} for s in doc.sections]
    doc.sections = [s for s in doc.sections if s["text"]]
    doc.mesh_terms = list(dict.fromkeys(clean(m)[:255] for m in doc.mesh_terms if clean(m)))
    ref = f"PMID {doc.pmid}" if doc.pmid else (f"DOI {doc.doi}" if doc.doi else doc.title[:80])
    if not doc.sections:
        return DocIssue(doc.row, "The abstract is empty: there is nothing to draft questions from.", "skipped", ref)
    if not doc.title:
        doc.title = doc.sections[0]["text"][:200]
    return doc


# --------------------------------------------------------------------------- detection


def detect_format(name: str, data: bytes) -> str:
    head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n")
    suffix = Path(name).suffix.lower()
    if head.startswith(b"<"):
        if b"PubmedArticleSet" in data[:65536] or b"PubmedArticle" in data[:65536]:
            return "pubmed_xml"
        raise ImportFileError("This XML file is not a PubMed PubmedArticleSet (as E-utilities efetch returns it).")
    if head.startswith(b"{") or head.startswith(b"["):
        return "pubmedqa"
    if re.search(rb"(?m)^PMID- ?\d", data[:65536]):
        return "medline"
    if suffix in TEXT_SUFFIXES:
        return "text"
    raise ImportFileError(
        "Unknown format: expected PubMed XML, MEDLINE text (PMID- …), PubMedQA JSON, or a .txt / .md document."
    )


def read_documents(name: str, data: bytes, format: str | None = None) -> tuple[str, Iterator[Item]]:
    """``(format, items)`` for one file; raises ``ImportFileError`` for a bad file."""
    if not data.strip():
        raise ImportFileError("The file is empty.")
    if len(data) > MAX_BYTES:
        raise ImportFileError(f"The file is larger than {MAX_BYTES // (1024 * 1024)} MB.")
    fmt = format or detect_format(name, data)
    if fmt not in FORMATS:
        raise ImportFileError(f"Unknown format '{fmt}': use one of {', '.join(FORMATS)}.")
    reader = {"pubmed_xml": read_pubmed_xml, "medline": read_medline, "pubmedqa": read_pubmedqa, "text": read_text}[fmt]
    # Readers parse the whole file before yielding, so a broken file fails before any row.
    return fmt, iter(list(reader(data)))


def _text(data: bytes) -> str:
    return decode(data, detect_encoding(data), explicit=False)


# --------------------------------------------------------------------------- PubMed XML


def _all_text(element: Element | None) -> str:
    return clean("".join(element.itertext())) if element is not None else ""


def read_pubmed_xml(data: bytes) -> list[Item]:
    root = parse_xml(data)
    if root.tag != "PubmedArticleSet":
        raise ImportFileError(f"The XML root is <{root.tag}>, not <PubmedArticleSet>.")
    items: list[Item] = []
    for row, element in enumerate(root, start=1):
        if element.tag == "PubmedBookArticle":
            pmid = normalize_pmid(element.findtext("BookDocument/PMID", ""))
            items.append(DocIssue(row, "A book chapter (PubmedBookArticle) is not imported.", "skipped", f"PMID {pmid}"))
            continue
        if element.tag == "DeleteCitation":
            continue
        if element.tag != "PubmedArticle":
            items.append(DocIssue(row, f"Unexpected element <{element.tag}>.", "skipped"))
            continue
        items.append(_pubmed_article(row, element))
    if not items:
        raise ImportFileError("The PubmedArticleSet holds no PubmedArticle.")
    return items


def _pubmed_article(row: int, element: Element) -> Item:
    citation = element.find("MedlineCitation")
    if citation is None:
        return DocIssue(row, "The article has no MedlineCitation.")
    pmid_text = citation.findtext("PMID", "").strip()
    pmid = normalize_pmid(pmid_text)
    if not pmid:
        return DocIssue(row, f"The PMID '{pmid_text[:40]}' is not a number.")
    article = citation.find("Article")
    if article is None:
        return DocIssue(row, "The article has no <Article> element.", ref=f"PMID {pmid}")
    doi = ""
    for loc in article.findall("ELocationID"):
        if loc.get("EIdType") == "doi":
            doi = normalize_doi(loc.text or "")
    if not doi:
        for aid in element.findall("PubmedData/ArticleIdList/ArticleId"):
            if aid.get("IdType") == "doi":
                doi = normalize_doi(aid.text or "")
    sections = []
    for part in article.findall("Abstract/AbstractText"):
        label = part.get("Label") or ""
        sections.append({"label": label.upper() if label.isupper() or not label else label, "text": _all_text(part)})
    journal = article.find("Journal")
    year = None
    if journal is not None:
        pub = journal.find("JournalIssue/PubDate")
        if pub is not None:
            year = year_of(pub.findtext("Year", "") or pub.findtext("MedlineDate", ""))
    if year is None:
        year = year_of(article.findtext("ArticleDate/Year", ""))
    mesh = [_all_text(d) for d in citation.findall("MeshHeadingList/MeshHeading/DescriptorName")]
    return finish(
        ParsedDocument(
            row=row,
            pmid=pmid,
            doi=doi,
            title=_all_text(article.find("ArticleTitle")) or _all_text(article.find("VernacularTitle")),
            sections=sections,
            mesh_terms=mesh,
            journal=journal.findtext("Title", "") if journal is not None else "",
            year=year,
            language=article.findtext("Language", "").strip()[:8],
        )
    )


# --------------------------------------------------------------------------- MEDLINE text

_MEDLINE_LINE = re.compile(r"^([A-Z][A-Z0-9 ]{1,3})- (.*)$")
_LABEL = re.compile(r"(?:^|(?<=\s))([A-Z][A-Z ,&/-]{2,40}[A-Z]): ")


def structured_sections(text: str) -> list[dict]:
    """``BACKGROUND: … METHODS: …`` → sections; an unlabelled abstract is one section."""
    text = clean(text)
    marks = list(_LABEL.finditer(text))
    if not marks or marks[0].start() != 0:
        if not marks:
            return [{"label": "", "text": text}] if text else []
        head = text[: marks[0].start()]
        out = [{"label": "", "text": head}]
    else:
        out = []
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        out.append({"label": m.group(1), "text": text[m.end() : end]})
    return out


def read_medline(data: bytes) -> list[Item]:
    text = _text(data).replace("\r\n", "\n").replace("\r", "\n")
    records: list[list[tuple[str, str]]] = []
    current: list[tuple[str, str]] = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            if current:
                records.append(current)
                current = []
            continue
        m = _MEDLINE_LINE.match(line)
        if m:
            current.append((m.group(1).strip(), m.group(2)))
        elif line.startswith("      ") and current:
            tag, value = current[-1]
            current[-1] = (tag, value + " " + line.strip())
        else:
            raise ImportFileError(f"Line {number} is not a MEDLINE field ('TAG - value') nor a continuation line.")
    if current:
        records.append(current)
    if not records:
        raise ImportFileError("The file holds no MEDLINE record.")
    items: list[Item] = []
    for row, fields in enumerate(records, start=1):
        values: dict[str, list[str]] = {}
        for tag, value in fields:
            values.setdefault(tag, []).append(value)
        pmid = normalize_pmid((values.get("PMID") or [""])[0])
        if not pmid:
            items.append(DocIssue(row, "The record has no numeric PMID field."))
            continue
        doi = ""
        for value in values.get("LID", []) + values.get("AID", []):
            if value.endswith("[doi]"):
                doi = normalize_doi(value[: -len("[doi]")])
                break
        mesh = [v.split("/")[0].lstrip("*") for v in values.get("MH", [])]
        items.append(
            finish(
                ParsedDocument(
                    row=row,
                    pmid=pmid,
                    doi=doi,
                    title=" ".join(values.get("TI", [])),
                    sections=structured_sections(" ".join(values.get("AB", []))),
                    mesh_terms=mesh,
                    journal=(values.get("JT") or values.get("TA") or [""])[0],
                    year=year_of((values.get("DP") or [""])[0]),
                    language=(values.get("LA") or [""])[0][:8],
                )
            )
        )
    return items


# --------------------------------------------------------------------------- PubMedQA JSON


def read_pubmedqa(data: bytes) -> list[Item]:
    try:
        doc = json.loads(_text(data))
    except json.JSONDecodeError as exc:
        raise ImportFileError(f"Invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}.") from None
    except RecursionError:
        raise ImportFileError("The JSON is nested too deeply.") from None
    if not isinstance(doc, dict) or not doc:
        raise ImportFileError("PubMedQA JSON is an object keyed by PMID; this file is not.")
    items: list[Item] = []
    for row, (key, value) in enumerate(doc.items(), start=1):
        if not isinstance(value, dict) or "CONTEXTS" not in value:
            items.append(DocIssue(row, f"Entry '{str(key)[:40]}' has no CONTEXTS list.", ref=str(key)[:40]))
            continue
        pmid = normalize_pmid(str(key))
        if not pmid:
            items.append(DocIssue(row, f"The key '{str(key)[:40]}' is not a PMID."))
            continue
        contexts, labels = value.get("CONTEXTS"), value.get("LABELS") or []
        if not isinstance(contexts, list) or not all(isinstance(c, str) for c in contexts) or not isinstance(labels, list):
            items.append(DocIssue(row, "CONTEXTS must be a list of texts and LABELS a list.", ref=f"PMID {pmid}"))
            continue
        sections = [{"label": str(labels[i]) if i < len(labels) else "", "text": c} for i, c in enumerate(contexts)]
        if isinstance(value.get("LONG_ANSWER"), str) and value["LONG_ANSWER"].strip() and sections:
            sections.append({"label": "CONCLUSIONS", "text": value["LONG_ANSWER"]})
        meshes = value.get("MESHES") or []
        extra = {k: value[k] for k in ("final_decision",) if isinstance(value.get(k), str)}
        items.append(
            finish(
                ParsedDocument(
                    row=row,
                    pmid=pmid,
                    title=str(value.get("QUESTION") or ""),
                    sections=sections,
                    mesh_terms=[str(m) for m in meshes] if isinstance(meshes, list) else [],
                    year=year_of(str(value.get("YEAR") or "")),
                    extra=extra,
                )
            )
        )
    return items


# --------------------------------------------------------------------------- text / Markdown

_HEADER = re.compile(r"^(PMID|DOI|Title|Journal|Year|MeSH|Mesh)\s*[:：]\s*(.*)$", re.IGNORECASE)
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def read_text(data: bytes) -> list[Item]:
    text = _text(data).replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    meta: dict[str, str] = {}
    i = 0
    while i < len(lines) and (not lines[i].strip() or _HEADER.match(lines[i].strip())):
        m = _HEADER.match(lines[i].strip())
        if m:
            meta[m.group(1).lower()] = m.group(2).strip()
        i += 1
    title = meta.get("title", "")
    sections: list[dict] = []
    label, buffer = "", []

    def flush():
        body = "\n".join(buffer).strip()
        if body:
            paragraphs = [p for p in re.split(r"\n\s*\n", body) if p.strip()]
            for p in paragraphs:
                sub = structured_sections(p) if not label else [{"label": label, "text": p}]
                sections.extend(sub)
        buffer.clear()

    for line in lines[i:]:
        m = _HEADING.match(line)
        if m:
            if len(m.group(1)) == 1 and not title:
                title = m.group(2)
                continue
            flush()
            label = m.group(2).upper() if m.group(2).isupper() else m.group(2)
            continue
        buffer.append(line)
    flush()
    if not title and sections and not sections[0]["label"] and len(sections) > 1 and len(sections[0]["text"]) <= 300:
        title = sections.pop(0)["text"]
    mesh = [m.strip() for m in re.split(r"[;,；，]", meta.get("mesh", "")) if m.strip()]
    return [
        finish(
            ParsedDocument(
                row=1,
                pmid=normalize_pmid(meta.get("pmid", "")),
                doi=normalize_doi(meta.get("doi", "")),
                title=title,
                sections=sections,
                mesh_terms=mesh,
                journal=meta.get("journal", ""),
                year=year_of(meta.get("year", "")),
            )
        )
    ]
