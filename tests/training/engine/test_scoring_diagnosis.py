"""Disease-name matching by names and synonyms, in Chinese and English."""

from __future__ import annotations

from training.engine.scoring.diagnosis import DiagnosisMatcher, DiseaseNames, normalize_name

CATALOGUE = [
    DiseaseNames.build("ORPHA:558", "Marfan syndrome", "马凡综合征", ["Marfan's syndrome", "马方综合征", "MFS"]),
    DiseaseNames.build("ORPHA:284963", "Marfan syndrome type 2", "马凡综合征2型"),
    DiseaseNames.build("ORPHA:286", "Ehlers-Danlos syndrome", "埃勒斯-当洛斯综合征", ["EDS"]),
    DiseaseNames.build("ORPHA:355", "Gaucher disease", "戈谢病", ["Gaucher's disease", "葡萄糖脑苷脂病"]),
]
MATCHER = DiagnosisMatcher(CATALOGUE)


def test_a_chinese_synonym_names_the_disease():
    score = MATCHER.score("最可能的诊断：马方综合征。", "ORPHA:558")
    assert score.top1 and score.in_differential


def test_an_english_synonym_with_possessive_and_hyphen_variants():
    assert MATCHER.score("This is Marfan’s syndrome.", "ORPHA:558").top1
    assert MATCHER.score("Consider Ehlers Danlos syndrome.", "ORPHA:286").top1
    assert MATCHER.score("考虑埃勒斯 - 当洛斯综合征", "ORPHA:286").top1


def test_the_disease_id_counts_as_a_name():
    assert MATCHER.score("Leading diagnosis: ORPHA:355", "ORPHA:355").top1


def test_the_longest_name_wins_over_a_contained_one():
    score = MATCHER.score("马凡综合征2型", "ORPHA:558")
    assert score.leading == "ORPHA:284963" and not score.top1 and not score.in_differential


def test_the_marker_decides_the_leading_diagnosis_and_the_rest_is_the_differential():
    answer = "鉴别需考虑埃勒斯-当洛斯综合征。首先考虑戈谢病，也需排除马凡综合征。"
    score = MATCHER.score(answer, "ORPHA:355")
    assert score.top1 and score.leading == "ORPHA:355"
    assert score.named == ("ORPHA:286", "ORPHA:355", "ORPHA:558")
    wrong = MATCHER.score(answer, "ORPHA:558")
    assert not wrong.top1 and wrong.in_differential


def test_short_latin_names_and_parts_of_words_do_not_match():
    # "MFS"/"EDS" are under 4 letters: ignored; "Gaucher disease" must be whole words.
    assert MATCHER.score("MFS or EDS", "ORPHA:558").named == ()
    assert MATCHER.score("NonGaucher diseases", "ORPHA:355").named == ()


def test_no_disease_named():
    score = MATCHER.score("请到医院进一步检查。", "ORPHA:558")
    assert (score.top1, score.in_differential, score.leading) == (False, False, None)


def test_normalize_name():
    assert normalize_name("Ehlers–Danlos  Syndrome") == "ehlers danlos syndrome"
    assert normalize_name("马凡 综合征") == "马凡综合征"
