"""Unit tests of the rare-disease engine on a tiny inline ontology (no Django, no shared data)."""
from __future__ import annotations

import pytest

from curation.rare import (
    CaseGenerator,
    CaseParams,
    KnowledgeBase,
    Ranker,
    frequency_to_probability,
    parse_hpoa,
    parse_obo,
)
from curation.rare.generator import difficulty_for_rank

from .fixtures import write_fixture




NO_NOISE = {"imprecision": 0.0, "extra_mean": 0.0, "drop": 0.0}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_fixture(tmp_path_factory.mktemp("hpo"))


@pytest.fixture(scope="module")
def kb(files):
    return KnowledgeBase.from_files(files["obo"], files["hpoa"], zh=files["zh"])


@pytest.fixture(scope="module")
def ranker(kb):
    return Ranker(kb)


@pytest.fixture(scope="module")
def gen(kb, ranker):
    return CaseGenerator(kb, ranker)


def test_obo_parser_reads_version_terms_and_fields(files):
    version, terms = parse_obo(files["obo"])
    assert version == "hp/releases/2099-01-01"
    by_id = {t.id: t for t in terms}
    assert len(terms) == 19  # the [Typedef] stanza is not a term
    seizure = by_id["HP:0001250"]
    assert seizure.parents == ("HP:0000707",)
    assert seizure.alt_ids == ("HP:0002279",)
    assert seizure.synonyms == ("Epileptic seizure",)
    assert seizure.definition == "A seizure is an intermittent abnormality."
    assert by_id["HP:0009999"].obsolete and by_id["HP:0009999"].replaced_by == "HP:0007359"
    assert by_id["HP:0009998"].consider == ("HP:0000505", "HP:0000518")


@pytest.mark.parametrize("gz", [True, False])
def test_hpoa_parser_reads_gzipped_and_plain_files(tmp_path, gz):
    f = write_fixture(tmp_path, gz=gz)
    version, rows = parse_hpoa(f["hpoa"])
    rows = list(rows)
    assert version == "2099-01-01"
    assert len(rows) == 14
    nots = [r for r in rows if r.negated]
    assert [(r.disease_id, r.hpo_id) for r in nots] == [("OMIM:100001", "HP:0001943")]
    assert rows[0].frequency == "HP:0040280" and rows[0].aspect == "P"


def test_ontology_resolves_obsolete_and_alternative_ids(kb):
    onto = kb.ontology
    assert onto.resolve("HP:0009999") == "HP:0007359"  # replaced_by
    assert onto.resolve("HP:0009998") == "HP:0000505"  # first consider
    assert onto.resolve("HP:0002279") == "HP:0001250"  # alt_id
    assert onto.resolve("HP:0001250") == "HP:0001250"
    assert onto.resolve("HP:1234567") is None
    assert "HP:0007359" in {a.hpo_id for a in kb.diseases["ORPHA:200002"].annotations}


def test_ancestors_include_the_term_and_walk_to_the_root(kb):
    onto = kb.ontology
    assert onto.ancestors("HP:0007359") == {"HP:0007359", "HP:0001250", "HP:0000707", "HP:0000118", "HP:0000001"}
    assert onto.is_descendant("HP:0007359", of="HP:0000707")
    assert not onto.is_descendant("HP:0000707", of="HP:0007359")


def test_chinese_labels_fall_back_to_english(kb):
    assert kb.ontology.label("HP:0007359", "zh") == "局灶性癫痫发作"
    assert kb.ontology.label("HP:0000518", "zh") == "Cataract"
    assert kb.ontology.label("HP:0007359") == "Focal-onset seizure"


@pytest.mark.parametrize(
    "freq, expected",
    [
        ("HP:0040280", (1.0, 1.0, 1.0)),
        ("HP:0040281", (0.895, 0.80, 0.99)),
        ("HP:0040283", (0.17, 0.05, 0.29)),
        ("HP:0040285", (0.0, 0.0, 0.0)),
        ("3/4", (0.75, 0.75, 0.75)),
        ("25%", (0.25, 0.25, 0.25)),
        ("12.5%", (0.125, 0.125, 0.125)),
    ],
)
def test_frequency_terms_fractions_and_percentages_become_probabilities(freq, expected):
    assert frequency_to_probability(freq) == pytest.approx(expected)


def test_unknown_frequency_has_no_point_estimate_but_a_default_range():
    p, lo, hi = frequency_to_probability("")
    assert p is None and 0 < lo < hi < 1
    assert frequency_to_probability("garbage")[0] is None


def test_information_content_never_decreases_from_ancestor_to_descendant(kb):
    onto = kb.ontology
    for tid in onto.terms:
        for anc in onto.ancestors(tid):
            assert kb.information_content(anc) <= kb.information_content(tid) + 1e-12
    assert kb.information_content("HP:0000118") == pytest.approx(0.0)


def test_ranker_puts_a_disease_first_for_its_full_profile(kb, ranker):
    for did, d in kb.diseases.items():
        profile = [a.hpo_id for a in d.phenotypes]
        assert ranker.rank(profile)[0][0] == did
        assert ranker.rank_of(did, profile) == 1


def test_absent_findings_push_a_disease_down(ranker):
    base = ranker.rank_of("OMIM:300003", ["HP:0002151", "HP:0001250"])
    pushed = ranker.rank_of("OMIM:300003", ["HP:0002151", "HP:0001250"], absent=["HP:0001943"])
    assert pushed > base


def test_difficulty_follows_the_true_rank():
    assert [difficulty_for_rank(r) for r in (1, 2, 10, 11)] == ["easy", "medium", "medium", "hard"]


def test_frequency_sampling_matches_the_annotated_ranges(gen):
    cases = gen.generate(CaseParams("OMIM:100001", min_present=0, negatives=0, **NO_NOISE), 2000)
    share = lambda t: sum(t in c.present for c in cases) / len(cases)  # noqa: E731
    assert share("HP:0007359") == 1.0  # obligate
    assert 0.80 <= share("HP:0002151") <= 0.99  # very frequent
    assert 0.05 <= share("HP:0000518") <= 0.29  # occasional
    assert share("HP:0004322") == 0.0  # excluded


def test_negated_and_excluded_annotations_are_never_present_but_serve_as_negatives(gen):
    cases = gen.generate(CaseParams("OMIM:100001", seed=3), 300)
    assert not any({"HP:0001943", "HP:0004322"} & set(c.present) for c in cases)
    # the disease's own NOT / excluded annotations come first among the pertinent negatives
    assert all({"HP:0001943", "HP:0004322"} <= set(c.absent) for c in cases)
    assert not any(set(c.absent) & set(c.present) for c in cases)


def test_present_findings_keep_only_the_most_specific_term(gen, kb):
    onto = kb.ontology
    for c in gen.generate(CaseParams("ORPHA:200002", seed=5, imprecision=0.5, extra_mean=2.0), 200):
        for t in c.present:
            assert not any(t != o and onto.is_descendant(o, of=t) for o in c.present)


def test_age_follows_onset(gen):
    congenital = gen.generate(CaseParams("OMIM:100001"), 50)
    adult = gen.generate(CaseParams("ORPHA:200002"), 50)
    assert all(c.age_years <= 1.0 for c in congenital)
    assert all(16 <= c.age_years <= 60 for c in adult)


def test_chinese_cases_use_official_chinese_labels(gen):
    case = gen.generate(CaseParams("OMIM:100001", lang="zh", **NO_NOISE), 1)[0]
    assert "局灶性癫痫发作" in case.vignette
    assert "Focal-onset seizure" not in case.vignette
    assert "血清乳酸升高" in case.vignette or "HP:0002151" not in case.present
    assert "遗传科" in case.answer and "局灶性癫痫发作" in case.answer
    assert case.question.startswith(case.vignette)


def test_english_cases_use_english_labels_and_group_test_results(gen):
    cases = gen.generate(CaseParams("OMIM:100001", lang="en", **NO_NOISE), 20)
    case = next(c for c in cases if "HP:0002151" in c.present)
    assert "Investigations: increased serum lactate" in case.vignette
    assert "focal-onset seizure" in case.vignette.lower()
    assert "Alpha syndrome (OMIM:100001)" in case.answer


def test_generation_is_deterministic_for_a_seed(gen):
    a = gen.generate(CaseParams("ORPHA:200002", seed=11), 30)
    b = gen.generate(CaseParams("ORPHA:200002", seed=11), 30)
    c = gen.generate(CaseParams("ORPHA:200002", seed=12), 30)
    assert a == b
    assert [x.present for x in a] != [x.present for x in c] or [x.age_years for x in a] != [x.age_years for x in c]


def test_cases_record_rank_differential_params_and_version(gen, ranker):
    case = gen.generate(CaseParams("OMIM:300003", task="differential", seed=2), 1)[0]
    assert case.true_rank == ranker.rank_of("OMIM:300003", case.present, case.absent)
    assert case.difficulty == difficulty_for_rank(case.true_rank)
    assert "OMIM:300003" not in [d for d, _ in case.differential]
    assert case.params["seed"] == 2 and case.params["task"] == "differential"
    assert case.hpo_version == "hp/releases/2099-01-01"


def test_bad_params_are_rejected():
    with pytest.raises(ValueError):
        CaseParams("OMIM:1", task="prognosis")
    with pytest.raises(ValueError):
        CaseParams("OMIM:1", lang="fr")
    with pytest.raises(ValueError):
        CaseParams("OMIM:1", min_present=5, max_present=2)


def test_unknown_disease_is_rejected(gen):
    with pytest.raises(KeyError):
        gen.generate(CaseParams("OMIM:999999"), 1)


def test_the_engine_package_does_not_import_django():
    import pathlib

    import curation.rare as pkg

    for path in pathlib.Path(pkg.__file__).parent.glob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "import django" not in text and "from django" not in text, path.name


def test_only_onset_terms_of_the_clinical_course_aspect_count_as_onset(kb):
    from curation.rare import HpoaRow, diseases_from_rows

    def c_row(hpo):
        return HpoaRow("ORPHA:9", "Delta", False, hpo, "", "TAS", "", "HP:0040283", "", "", "C", "")

    # Orphanet files put course terms such as "Miscarriage" under aspect C too.
    (delta,) = diseases_from_rows(kb.ontology, [c_row("HP:0003577"), c_row("HP:0001943")])
    assert delta.onset == ("HP:0003577",)
