"""A tiny inline ontology + annotation file for fast unit tests."""
from __future__ import annotations

import gzip
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
id: HP:0000707
name: Abnormality of the nervous system
is_a: HP:0000118 ! Phenotypic abnormality

[Term]
id: HP:0001250
name: Seizure
alt_id: HP:0002279
synonym: "Epileptic seizure" EXACT []
def: "A seizure is an intermittent abnormality." []
is_a: HP:0000707 ! Abnormality of the nervous system

[Term]
id: HP:0007359
name: Focal-onset seizure
is_a: HP:0001250 ! Seizure

[Term]
id: HP:0000478
name: Abnormality of the eye
is_a: HP:0000118 ! Phenotypic abnormality

[Term]
id: HP:0000518
name: Cataract
is_a: HP:0000478 ! Abnormality of the eye

[Term]
id: HP:0000505
name: Visual impairment
is_a: HP:0000478 ! Abnormality of the eye

[Term]
id: HP:0001939
name: Abnormality of metabolism/homeostasis
is_a: HP:0000118 ! Phenotypic abnormality

[Term]
id: HP:0002151
name: Increased serum lactate
is_a: HP:0001939 ! Abnormality of metabolism/homeostasis

[Term]
id: HP:0001943
name: Hypoglycemia
is_a: HP:0001939 ! Abnormality of metabolism/homeostasis

[Term]
id: HP:0000924
name: Abnormality of the skeletal system
is_a: HP:0000118 ! Phenotypic abnormality

[Term]
id: HP:0004322
name: Short stature
is_a: HP:0000924 ! Abnormality of the skeletal system

[Term]
id: HP:0001382
name: Joint hypermobility
is_a: HP:0000924 ! Abnormality of the skeletal system

[Term]
id: HP:0009999
name: obsolete Old seizure term
is_obsolete: true
replaced_by: HP:0007359

[Term]
id: HP:0009998
name: obsolete Vague eye term
is_obsolete: true
consider: HP:0000505
consider: HP:0000518

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

[Typedef]
id: part_of
name: part of
"""

HEADER = """#description: "tiny"
#version: 2099-01-01
#tracker: x
#hpo-version: x
database_id\tdisease_name\tqualifier\thpo_id\treference\tevidence\tonset\tfrequency\tsex\tmodifier\taspect\tbiocuration
"""


def row(d, name, hpo, freq="", qual="", aspect="P", sex=""):
    return f"{d}\t{name}\t{qual}\t{hpo}\tPMID:1\tPCS\t\t{freq}\t{sex}\t\t{aspect}\tHPO:x[2020-01-01]\n"


ROWS = [
    # Disease A: neuro-metabolic, congenital
    row("OMIM:100001", "Alpha syndrome", "HP:0007359", "HP:0040280"),  # obligate
    row("OMIM:100001", "Alpha syndrome", "HP:0002151", "HP:0040281"),  # very frequent
    row("OMIM:100001", "Alpha syndrome", "HP:0000518", "HP:0040283"),  # occasional
    row("OMIM:100001", "Alpha syndrome", "HP:0004322", "HP:0040285"),  # excluded
    row("OMIM:100001", "Alpha syndrome", "HP:0001943", "", qual="NOT"),  # NOT
    row("OMIM:100001", "Alpha syndrome", "HP:0003577", "", aspect="C"),
    # Disease B: eye + skeleton, adult
    row("ORPHA:200002", "Beta disease", "HP:0000505", "3/4"),
    row("ORPHA:200002", "Beta disease", "HP:0004322", "50%"),
    row("ORPHA:200002", "Beta disease", "HP:0001382", ""),
    row("ORPHA:200002", "Beta disease", "HP:0009999", "HP:0040282"),  # obsolete -> HP:0007359
    row("ORPHA:200002", "Beta disease", "HP:0003581", "", aspect="C"),
    # Disease C: metabolic
    row("OMIM:300003", "Gamma deficiency", "HP:0001943", "HP:0040281"),
    row("OMIM:300003", "Gamma deficiency", "HP:0002151", "HP:0040282"),
    row("OMIM:300003", "Gamma deficiency", "HP:0001250", "HP:0040283"),
]

ZH = """source_language\ttranslation_language\tsubject_id\tpredicate_id\tsource_value\ttranslation_value\ttranslation_status
en\tzh\tHP:0007359\trdfs:label\tFocal-onset seizure\t局灶性癫痫发作\tOFFICIAL
en\tzh\tHP:0002151\trdfs:label\tIncreased serum lactate\t血清乳酸升高\tOFFICIAL
en\tzh\tHP:0001943\trdfs:label\tHypoglycemia\t低血糖\tOFFICIAL
"""


def write_fixture(tmp: Path, gz: bool = True) -> dict[str, Path]:
    obo = tmp / "hp.obo"
    obo.write_text(OBO, encoding="utf-8")
    text = HEADER + "".join(ROWS)
    if gz:
        hpoa = tmp / "phenotype.hpoa.gz"
        with gzip.open(hpoa, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        hpoa = tmp / "phenotype.hpoa"
        hpoa.write_text(text, encoding="utf-8")
    zh = tmp / "hp-zh.babelon.tsv"
    zh.write_text(ZH, encoding="utf-8")
    return {"obo": obo, "hpoa": hpoa, "zh": zh}
