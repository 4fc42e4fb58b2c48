"""MedQuAD XML: one ``<Document id source url>`` per file with ``<QAPairs>``.

Two NINDS files of the collection use an older lower-case schema (``<doc docid corpus url>``,
``<doctitle-focus>``, ``<umls><cui>``, ``<qaPairs><pair pid><question qid qtype><answer>``);
both are read. XML is parsed with defusedxml (no entity expansion, no external DTDs).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from xml.etree.ElementTree import Element

from .base import ImportFileError, Item, ParsedRecord, RowIssue, Source, parse_xml
from .textutil import empty_issue_text

# MedlinePlus collections whose answers upstream removed for copyright reasons.
_ANSWERS_REMOVED = {"adam", "mplusdrugs", "mplusherbssupplements"}
_DECLARATION = re.compile(rb"^\s*<\?xml[^>]*\?>", re.S)


def _tag(element: Element) -> str:
    return element.tag.rsplit("}", 1)[-1].lower() if isinstance(element.tag, str) else ""


def _child(element: Element | None, *names: str) -> Element | None:
    if element is None:
        return None
    for child in element:
        if _tag(child) in names:
            return child
    return None


def _children(element: Element | None, *names: str) -> list[Element]:
    if element is None:
        return []
    return [child for child in element if _tag(child) in names]


_SPACES = re.compile(r"[ \t\u00a0]+")
_LINE_BREAKS = re.compile(r" ?(?:\r\n|\r|\n)[\s]*")


def _text(element: Element | None) -> str:
    """Element text with the XML's layout whitespace tidied: runs of spaces become one, lines
    are stripped and blank lines dropped (MedQuAD answers are indented by the pretty-printer)."""
    if element is None:
        return ""
    text = "".join(element.itertext())
    text = _SPACES.sub(" ", text)
    text = _LINE_BREAKS.sub("\n", text)
    return text.strip()


def _attr(element: Element, *names: str) -> str:
    for name in names:
        value = element.get(name)
        if value:
            return value.strip()
    return ""


def open_medquad(path: Path, data: bytes, *, text: str | None, encoding: str | None, file: str) -> Source:
    if text is not None:  # an explicit encoding: parse the decoded text
        data = _DECLARATION.sub(b"", text.encode("utf-8"), count=1)
    root = parse_xml(data)
    if _tag(root) not in ("document", "doc"):
        raise ImportFileError(f"The XML root element is <{root.tag}>; expected a MedQuAD <Document>.")
    pairs_parent = _child(root, "qapairs")
    pairs = _children(pairs_parent, "qapair", "pair")
    if not pairs:
        raise ImportFileError("The MedQuAD document has no <QAPair> elements.")

    doc_id = _attr(root, "id", "docid")
    source = _attr(root, "source", "corpus")
    url = _attr(root, "url")
    focus = _text(_child(root, "focus", "doctitle-focus"))
    annotations = _child(root, "focusannotations")
    umls = _child(annotations, "umls") if annotations is not None else _child(root, "umls")
    cuis_parent = _child(umls, "cuis")
    cui_elements = _children(cuis_parent if cuis_parent is not None else umls, "cui")
    cuis = [t for t in (_text(c) for c in cui_elements) if t]
    semantic_parent = _child(umls, "semantictypes")
    semantic_elements = _children(semantic_parent if semantic_parent is not None else umls, "semantictype")
    semantic_types = [t for t in (_text(e) for e in semantic_elements) if t]
    semantic_group = _text(_child(umls, "semanticgroup"))
    synonyms = [t for t in (_text(e) for e in _children(_child(annotations, "synonyms"), "synonym")) if t]
    category = _text(_child(annotations, "category"))
    removed = source.lower() in _ANSWERS_REMOVED

    base_extra: dict = {"focus": focus, "url": url, "document_id": doc_id, "source": source}
    if category:
        base_extra["category"] = category
    if semantic_types:
        base_extra["semantic_types"] = semantic_types
    if semantic_group:
        base_extra["semantic_group"] = semantic_group
    if synonyms:
        base_extra["synonyms"] = synonyms
    base_extra = {k: v for k, v in base_extra.items() if v}
    codes = [f"UMLS:{cui}" for cui in dict.fromkeys(cuis)]

    def produce() -> Iterator[Item]:
        for number, pair in enumerate(pairs, 1):
            pid = _attr(pair, "pid")
            question_el = _child(pair, "question")
            qid = _attr(question_el, "qid") if question_el is not None else ""
            qtype = _attr(question_el, "qtype") if question_el is not None else ""
            label = f"Pair {number} (pid {pid or '?'}{', qid ' + qid if qid else ''})"
            question = _text(question_el)
            answer = _text(_child(pair, "answer"))
            reason = empty_issue_text(question, answer)
            if reason:
                if question and not answer and removed:
                    reason = f"the answer is empty (upstream removed the {source} answers for copyright reasons)."
                yield RowIssue(number, f"{label}: {reason}", "skipped", file)
                continue
            extra = dict(base_extra)
            extra["pid"] = pid
            if qid:
                extra["qid"] = qid
            if qtype:
                extra["qtype"] = qtype
            yield ParsedRecord(
                row=number,
                instruction=question,
                output=answer,
                tags=[f"qtype:{qtype}"] if qtype else [],
                disease_codes=list(codes),
                source_ref=f"{source} {doc_id}#{pid}",
                file=file,
                extra=extra,
            )

    return Source(path, "medquad", encoding, [], {}, len(pairs), produce)


def xml_encoding(data: bytes) -> str:
    match = re.match(rb"""^\s*<\?xml[^>]*encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""", data)
    return match.group(1).decode("ascii").lower() if match else "utf-8"
