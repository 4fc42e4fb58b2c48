"""Parsers and knowledge base on the real HPO release and Chinese rare-disease files (counts from PROVENANCE.md)."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from curation.rare import (
    KnowledgeBase,
    Ontology,
    Ranker,
    parse_ccrd,
    parse_hpoa,
    parse_obo,
    parse_orpha_names_zh,
    parse_zh_labels,
)

pytestmark = pytest.mark.shared_data

SHARED = Path(__file__).resolve().parents[4] / "shared" / "datasets"
HPO = SHARED / "hpo_rare_disease"
CCRD = SHARED / "china_rare_disease_list_ccrd"

if not (HPO / "hp.obo").exists():
    pytest.skip(f"shared datasets not found at {SHARED}", allow_module_level=True)



@pytest.fixture(scope="module")
def obo():
    return parse_obo(HPO / "hp.obo")


@pytest.fixture(scope="module")
def onto(obo):
    return Ontology(obo[1])


def test_obo_has_every_term_including_the_obsolete_ones(obo):
    version, terms = obo
    assert version == "hp/releases/2025-01-16"
    assert len(terms) == 19_484
    assert sum(t.obsolete for t in terms) == 450


def test_hpoa_row_counts_match_provenance():
    version, rows = parse_hpoa(HPO / "phenotype.hpoa.gz")
    by_db = Counter(r.disease_id.split(":", 1)[0] for r in rows)
    assert version == "2025-01-16"
    assert sum(by_db.values()) == 271_702
    assert by_db == {"OMIM": 156_446, "ORPHA": 114_960, "DECIPHER": 296}


def test_chinese_labels_and_orphanet_names():
    zh = parse_zh_labels(HPO / "hp-zh.babelon.tsv")
    assert len(zh) == 18_988
    assert zh["HP:0001250"] == "癫痫发作"
    names = parse_orpha_names_zh(CCRD / "cns_orphanet.json")
    assert len(names) == 4_348
    assert names["ORPHA:5"] == ("长链3-羟酰辅酶A脱氢酶缺乏症", "Long chain 3-hydroxyacyl-CoA dehydrogenase deficiency")


def test_ccrd_list_and_its_orpha_mapping():
    ccrd = parse_ccrd(CCRD / "conpendium_hpo.json", CCRD / "ccrd_to_orpha.json")
    by_id = {c.id: c for c in ccrd}
    assert len(ccrd) == 144
    # numbered CCRD:1..121; the file has no entry for CCRD:59 or CCRD:75, so 119 list diseases appear
    bases = {c.base_id for c in ccrd}
    assert len(bases) == 119 and max(int(b.split(":")[1]) for b in bases) == 121
    assert sum(len(c.hpo_ids) for c in ccrd) == 4_258
    assert by_id["CCRD:1"].name_zh == "21-羟化酶缺乏症"
    assert by_id["CCRD:1"].orpha == (("ORPHA:90794", "E"),)
    assert by_id["CCRD:82.1"].base_id == "CCRD:82"
    assert len({o for c in ccrd for o, _ in c.orpha}) == 191


def test_obsolete_ids_in_the_chinese_resources_all_resolve(onto):
    ccrd = parse_ccrd(CCRD / "conpendium_hpo.json", CCRD / "ccrd_to_orpha.json")
    ids = {h for c in ccrd for h in c.hpo_ids}
    obsolete = {h for h in ids if h in onto.obsolete_ids}
    assert len(obsolete) == 29
    assert all(onto.resolve(h) in onto.terms for h in obsolete)
    cases = json.loads((CCRD / "Public_Test_set.json").read_text(encoding="utf-8"))
    case_ids = {h for hpos, _ in cases for h in hpos}
    case_obsolete = {h for h in case_ids if h in onto.obsolete_ids}
    assert len(case_obsolete) == 19
    assert all(onto.resolve(h) in onto.terms for h in case_obsolete)


def test_knowledge_base_and_ranker_on_the_full_release():
    kb = KnowledgeBase.from_files(HPO / "hp.obo", HPO / "phenotype.hpoa.gz", zh=HPO / "hp-zh.babelon.tsv",
                                  orpha_names_zh=CCRD / "cns_orphanet.json")
    assert kb.version == "hp/releases/2025-01-16"
    assert len(kb.diseases) == 12_687
    cah = kb.diseases["ORPHA:90794"]
    assert cah.name_zh and cah.phenotypes
    assert kb.ontology.label("HP:0001250", "zh") == "癫痫发作"
    ranker = Ranker(kb)
    assert ranker.rank_of("ORPHA:90794", [a.hpo_id for a in cah.phenotypes]) == 1
