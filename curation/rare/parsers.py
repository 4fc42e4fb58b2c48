"""Streaming parsers for the public HPO release files and the Chinese rare-disease resources.

Files are read as they are (the HPO licence asks for unaltered files); ``.gz`` is read
transparently. No Django here.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Term",
    "HpoaRow",
    "CcrdDisease",
    "parse_obo",
    "parse_hpoa",
    "parse_zh_labels",
    "parse_orpha_names_zh",
    "parse_omim_names_zh",
    "parse_ccrd",
    "open_text",
]


@dataclass(frozen=True, slots=True)
class Term:
    id: str
    name: str
    parents: tuple[str, ...]
    synonyms: tuple[str, ...] = ()
    definition: str = ""
    obsolete: bool = False
    replaced_by: str = ""
    consider: tuple[str, ...] = ()
    alt_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HpoaRow:
    disease_id: str
    disease_name: str
    negated: bool
    hpo_id: str
    reference: str
    evidence: str
    onset: str
    frequency: str
    sex: str
    modifier: str
    aspect: str
    biocuration: str


@dataclass(frozen=True, slots=True)
class CcrdDisease:
    id: str  # "CCRD:1", "CCRD:82.1"
    name_zh: str
    name_en: str
    hpo_ids: tuple[str, ...]
    orpha: tuple[tuple[str, str], ...]  # (ORPHA id, relation E / BTNT / NTBT)

    @property
    def base_id(self) -> str:
        """The list entry this (sub)type belongs to: "CCRD:82.1" -> "CCRD:82"."""
        return self.id.split(".", 1)[0]


def open_text(path, encoding: str = "utf-8") -> io.TextIOBase:
    """Open a text file for reading; gzip when it starts with the gzip magic bytes."""
    path = Path(path)
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding=encoding, newline="")
    return open(path, encoding=encoding, newline="")


_QUOTED = re.compile(r'^"((?:[^"\\]|\\.)*)"')


def _unquote(value: str) -> str:
    m = _QUOTED.match(value)
    if not m:
        return value
    return m.group(1).replace('\\"', '"').replace("\\\\", "\\")


def _strip_comment(value: str) -> str:
    # "HP:0000001 ! All" -> "HP:0000001"; OBO comments start with " !"
    cut = value.find(" !")
    return (value[:cut] if cut >= 0 else value).strip()


def parse_obo(path) -> tuple[str, list[Term]]:
    """Parse an OBO 1.2 file: (data-version, every [Term] stanza including obsolete ones)."""
    version = ""
    terms: list[Term] = []
    cur: dict | None = None
    in_term = False

    def flush():
        if cur is not None and cur.get("id"):
            terms.append(
                Term(
                    id=cur["id"],
                    name=cur.get("name", ""),
                    parents=tuple(cur["is_a"]),
                    synonyms=tuple(cur["synonym"]),
                    definition=cur.get("def", ""),
                    obsolete=cur.get("obsolete", False),
                    replaced_by=cur.get("replaced_by", ""),
                    consider=tuple(cur["consider"]),
                    alt_ids=tuple(cur["alt_id"]),
                )
            )

    with open_text(path) as fh:
        for raw in fh:
            line = raw.rstrip("\r\n")
            if not line or line.startswith("!"):
                continue
            if line[0] == "[":
                if in_term:
                    flush()
                in_term = line.strip() == "[Term]"
                cur = {"is_a": [], "synonym": [], "consider": [], "alt_id": []} if in_term else None
                continue
            key, sep, value = line.partition(": ")
            if not sep:
                continue
            if cur is None:
                if key == "data-version" and not version and not in_term:
                    version = value.strip()
                continue
            if key == "id":
                cur["id"] = value.strip()
            elif key == "name":
                cur["name"] = value.strip()
            elif key == "is_a":
                cur["is_a"].append(_strip_comment(value))
            elif key == "synonym":
                cur["synonym"].append(_unquote(value))
            elif key == "def":
                cur["def"] = _unquote(value)
            elif key == "is_obsolete":
                cur["obsolete"] = value.strip() == "true"
            elif key == "replaced_by":
                cur["replaced_by"] = _strip_comment(value)
            elif key == "consider":
                cur["consider"].append(_strip_comment(value))
            elif key == "alt_id":
                cur["alt_id"].append(_strip_comment(value))
    if in_term:
        flush()
    return version, terms


_HPOA_FIELDS = 12


def parse_hpoa(path) -> tuple[str, Iterator[HpoaRow]]:
    """Parse phenotype.hpoa (plain or gzipped): (version from "#version:", lazy row iterator).

    The header comment block is read eagerly so the version is known before iterating.
    """
    fh = open_text(path)
    version = ""
    pending: str | None = None
    while True:
        line = fh.readline()
        if not line:
            break
        if line.startswith("#"):
            if line.startswith("#version:"):
                version = line.split(":", 1)[1].strip()
            continue
        if line.startswith("database_id\t"):
            break
        pending = line  # a file without the column header: first data row
        break

    def rows() -> Iterator[HpoaRow]:
        try:
            lines = fh if pending is None else _chain_first(pending, fh)
            for rec in csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE):
                if not rec or (len(rec) == 1 and not rec[0]):
                    continue
                if len(rec) < _HPOA_FIELDS:
                    rec = rec + [""] * (_HPOA_FIELDS - len(rec))
                yield HpoaRow(
                    disease_id=rec[0],
                    disease_name=rec[1],
                    negated=rec[2].strip().upper() == "NOT",
                    hpo_id=rec[3],
                    reference=rec[4],
                    evidence=rec[5],
                    onset=rec[6],
                    frequency=rec[7],
                    sex=rec[8].strip().upper(),
                    modifier=rec[9],
                    aspect=rec[10],
                    biocuration=rec[11],
                )
        finally:
            fh.close()

    return version, rows()


def _chain_first(first: str, rest):
    yield first
    yield from rest


def parse_zh_labels(path) -> dict[str, str]:
    """hp-zh.babelon.tsv: HP id -> official Chinese rdfs:label."""
    labels: dict[str, str] = {}
    with open_text(path) as fh:
        reader = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        for row in reader:
            if (row.get("predicate_id") or "rdfs:label") != "rdfs:label":
                continue
            sid = (row.get("subject_id") or "").strip()
            zh = (row.get("translation_value") or "").strip()
            if sid and zh:
                labels[sid] = zh
    return labels


def _names_zh(path) -> dict[str, tuple[str, str]]:
    with open_text(path) as fh:
        data = json.load(fh)
    out: dict[str, tuple[str, str]] = {}
    for key, rec in data.items():
        if isinstance(rec, dict):
            out[key] = ((rec.get("CNS_NAME") or "").strip(), (rec.get("ENG_NAME") or "").strip())
    return out


def parse_orpha_names_zh(path) -> dict[str, tuple[str, str]]:
    """cns_orphanet.json ({"ORPHA:5": {"CNS_NAME": .., "ENG_NAME": ..}}): id -> (zh, en)."""
    return _names_zh(path)


def parse_omim_names_zh(path) -> dict[str, tuple[str, str]]:
    """CNSOMIM.json, same shape as cns_orphanet.json: "OMIM:n" -> (zh, en)."""
    return _names_zh(path)


def parse_ccrd(path, map_path) -> list[CcrdDisease]:
    """conpendium_hpo.json + ccrd_to_orpha.json -> the national list with ORPHA mappings."""
    with open_text(path) as fh:
        data = json.load(fh)
    with open_text(map_path) as fh:
        mapping = json.load(fh)
    out = []
    for key, rec in data.items():
        orpha = tuple((str(o), str(rel)) for o, rel in mapping.get(key, ()))
        out.append(
            CcrdDisease(
                id=key,
                name_zh=(rec.get("CNS_NAME") or "").strip(),
                name_en=(rec.get("ENG_NAME") or "").strip(),
                hpo_ids=tuple(rec.get("PHENOTYPE_LIST") or ()),
                orpha=orpha,
            )
        )
    return out
