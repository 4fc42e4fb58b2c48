"""A tiny HPO release (obo, hpoa, Chinese labels, Orphanet names, CCRD list) for rare-disease tests."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

OBO = """format-version: 1.2
data-version: hp/releases/2099-01-01

[Term]
id: HP:0000001
name: All

[Term]
id: HP:0000118
name: Phenotypic abnormality
is_a: HP:0000001 ! All

[Term]
id: HP:0000005
name: Mode of inheritance
is_a: HP:0000001 ! All

[Term]
id: HP:0000007
name: Autosomal recessive inheritance
is_a: HP:0000005 ! Mode of inheritance

[Term]
id: HP:0003674
name: Onset
is_a: HP:0000001 ! All

[Term]
id: HP:0003577
name: Congenital onset
is_a: HP:0003674 ! Onset

[Term]
id: HP:0003581
name: Adult onset
is_a: HP:0003674 ! Onset

[Term]
id: HP:0040279
name: Frequency
is_a: HP:0000001 ! All

[Term]
id: HP:0040280
name: Obligate
is_a: HP:0040279 ! Frequency

[Term]
id: HP:0040281
name: Very frequent
is_a: HP:0040279 ! Frequency

[Term]
id: HP:0040282
name: Frequent
is_a: HP:0040279 ! Frequency

[Term]
id: HP:0040283
name: Occasional
is_a: HP:0040279 ! Frequency

[Term]
id: HP:0040284
name: Very rare
is_a: HP:0040279 ! Frequency

[Term]
id: HP:0040285
name: Excluded
is_a: HP:0040279 ! Frequency

[Term]
id: HP:0000707
name: Abnormality of the nervous system
is_a: HP:0000118 ! Phenotypic abnormality

[Term]
id: HP:0001250
name: Seizure
def: "A seizure is an intermittent abnormality of nervous system physiology." [HPO:probinson]
synonym: "Seizures" EXACT []
alt_id: HP:0001251
is_a: HP:0000707 ! Abnormality of the nervous system

[Term]
id: HP:0001263
name: Global developmental delay
is_a: HP:0000707 ! Abnormality of the nervous system

[Term]
id: HP:0000252
name: Microcephaly
is_a: HP:0000118 ! Phenotypic abnormality

[Term]
id: HP:0001508
name: Failure to thrive
is_a: HP:0000118 ! Phenotypic abnormality

[Term]
id: HP:0002240
name: Hepatomegaly
is_a: HP:0000118 ! Phenotypic abnormality

[Term]
id: HP:0001744
name: Splenomegaly
is_a: HP:0000118 ! Phenotypic abnormality

[Term]
id: HP:0001903
name: Anemia
is_a: HP:0000118 ! Phenotypic abnormality

[Term]
id: HP:0000365
name: Hearing impairment
is_a: HP:0000118 ! Phenotypic abnormality

[Term]
id: HP:0000999
name: obsolete Convulsions
is_obsolete: true
replaced_by: HP:0001250

[Term]
id: HP:0000998
name: obsolete Big liver
is_obsolete: true
consider: HP:0002240
"""

ZH = {
    "HP:0001250": "癫痫发作",
    "HP:0001263": "全面发育迟缓",
    "HP:0000252": "小头畸形",
    "HP:0001508": "生长迟缓",
    "HP:0002240": "肝大",
    "HP:0001744": "脾大",
    "HP:0001903": "贫血",
    "HP:0000365": "听力障碍",
}

HPOA_HEADER = [
    "#description: tiny test release",
    "#version: 2099-01-01",
    "database_id\tdisease_name\tqualifier\thpo_id\treference\tevidence\tonset\tfrequency\tsex\tmodifier\taspect\tbiocuration",
]

# (disease, name, qualifier, hpo, frequency, aspect, onset)
ROWS = [
    ("ORPHA:1", "Testing syndrome", "", "HP:0001250", "HP:0040280", "P", ""),
    ("ORPHA:1", "Testing syndrome", "", "HP:0001263", "HP:0040281", "P", ""),
    ("ORPHA:1", "Testing syndrome", "", "HP:0000252", "HP:0040282", "P", ""),
    ("ORPHA:1", "Testing syndrome", "", "HP:0001508", "HP:0040283", "P", ""),
    ("ORPHA:1", "Testing syndrome", "", "HP:0000998", "HP:0040284", "P", ""),  # obsolete: consider HP:0002240
    ("ORPHA:1", "Testing syndrome", "NOT", "HP:0000365", "", "P", ""),
    ("ORPHA:1", "Testing syndrome", "", "HP:0000007", "", "I", ""),
    ("ORPHA:1", "Testing syndrome", "", "HP:0003577", "", "C", ""),
    ("OMIM:100100", "Anaemia with big spleen", "", "HP:0001903", "3/4", "P", "HP:0003581"),
    ("OMIM:100100", "Anaemia with big spleen", "", "HP:0001744", "75%", "P", ""),
    ("OMIM:100100", "Anaemia with big spleen", "", "HP:0002240", "HP:0040282", "P", ""),
    ("OMIM:100100", "Anaemia with big spleen", "", "HP:0000999", "HP:0040283", "P", ""),  # obsolete: replaced_by HP:0001250
    ("ORPHA:2", "Deafness with seizures", "", "HP:0000365", "HP:0040280", "P", ""),
    ("ORPHA:2", "Deafness with seizures", "", "HP:0001250", "HP:0040281", "P", ""),
    ("ORPHA:2", "Deafness with seizures", "", "HP:0001263", "HP:0040283", "P", ""),
    ("ORPHA:2", "Deafness with seizures", "", "HP:0000252", "", "P", ""),
]

ORPHA_NAMES = {
    "ORPHA:1": {"CNS_NAME": "测试综合征", "ENG_NAME": "Testing syndrome"},
    "ORPHA:2": {"CNS_NAME": "耳聋癫痫综合征", "ENG_NAME": "Deafness with seizures"},
    "ORPHA:999": {"CNS_NAME": "不在注释里", "ENG_NAME": "Not annotated"},
}

CCRD = {
    "CCRD:1": {"CNS_NAME": "测试病", "ENG_NAME": "Testing disease; TD", "PHENOTYPE_LIST": ["HP:0001250", "HP:0000998", "HP:0001263"]},
    "CCRD:2.1": {"CNS_NAME": "贫血脾大A型", "ENG_NAME": "Anaemia type A", "PHENOTYPE_LIST": ["HP:0001903", "HP:0001744"]},
    "CCRD:2.2": {"CNS_NAME": "贫血脾大B型", "ENG_NAME": "Anaemia type B", "PHENOTYPE_LIST": ["HP:0001903"]},
}
CCRD_MAP = {"CCRD:1": [["ORPHA:1", "E"]], "CCRD:2.1": [["ORPHA:2", "BTNT"]]}


def hpoa_text(rows=ROWS) -> str:
    lines = list(HPOA_HEADER)
    for disease, name, qualifier, hpo, freq, aspect, onset in rows:
        lines.append("\t".join([disease, name, qualifier, hpo, "PMID:1", "PCS", onset, freq, "", "", aspect, "HPO:test[2099-01-01]"]))
    return "\n".join(lines) + "\n"


def write_release(folder: Path, *, gz: bool = True, rows=ROWS) -> dict[str, Path]:
    """Write the tiny release to ``folder``; returns the keyword arguments of ``hpo_import``."""
    folder.mkdir(parents=True, exist_ok=True)
    obo = folder / "hp.obo"
    obo.write_text(OBO, encoding="utf-8")
    if gz:
        hpoa = folder / "phenotype.hpoa.gz"
        hpoa.write_bytes(gzip.compress(hpoa_text(rows).encode("utf-8")))
    else:
        hpoa = folder / "phenotype.hpoa"
        hpoa.write_text(hpoa_text(rows), encoding="utf-8")
    zh = folder / "hp-zh.babelon.tsv"
    lines = ["source_language\ttranslation_language\tsubject_id\tpredicate_id\tsource_value\ttranslation_value\ttranslation_status"]
    lines += [f"en\tzh\t{k}\trdfs:label\tx\t{v}\tOFFICIAL" for k, v in ZH.items()]
    zh.write_text("\n".join(lines) + "\n", encoding="utf-8")
    names = folder / "cns_orphanet.json"
    names.write_text(json.dumps(ORPHA_NAMES, ensure_ascii=False), encoding="utf-8")
    ccrd = folder / "conpendium_hpo.json"
    ccrd.write_text(json.dumps(CCRD, ensure_ascii=False), encoding="utf-8")
    ccrd_map = folder / "ccrd_to_orpha.json"
    ccrd_map.write_text(json.dumps(CCRD_MAP), encoding="utf-8")
    return {"obo": obo, "hpoa": hpoa, "zh": zh, "orpha_names_zh": names, "ccrd": ccrd, "ccrd_map": ccrd_map}


def import_tiny(folder: Path, **kwargs):
    from curation.services.rare import hpo_import

    return hpo_import(**write_release(folder), **kwargs)
