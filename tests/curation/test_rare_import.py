"""import_hpo and the hpo_import service: counts, obsolete ids, NOT rows, idempotence, version."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command

from curation.models import Disease, DiseasePhenotype, HpoRelease, Phenotype
from curation.services.rare import hpo_import
from medportal.errors import InvalidInput
from medportal.models import AuditEvent
from tests.curation.rare_data import import_tiny, write_release

pytestmark = pytest.mark.django_db


def test_it_imports_terms_diseases_and_annotations_with_chinese_names(tmp_path):
    result = import_tiny(tmp_path)
    assert result.version == "2099-01-01"
    assert result.phenotypes == 25 and result.obsolete == 2
    assert Phenotype.objects.count() == 25
    seizure = Phenotype.objects.get(hpo_id="HP:0001250")
    assert seizure.name == "Seizure" and seizure.name_zh == "癫痫发作"
    assert seizure.parents == ["HP:0000707"] and seizure.alt_ids == ["HP:0001251"] and "Seizures" in seizure.synonyms
    assert Phenotype.objects.get(hpo_id="HP:0000999").replaced_by == "HP:0001250"
    orpha = Disease.objects.get(code="ORPHA:1")
    assert orpha.source == "ORPHA" and orpha.name == "Testing syndrome" and orpha.name_zh == "测试综合征"
    assert orpha.ccrd_ids == ["CCRD:1"]
    assert Disease.objects.get(code="OMIM:100100").source == "OMIM"
    assert not Disease.objects.filter(code="ORPHA:999").exists()  # a Chinese name alone makes no disease
    assert result.zh_labels == 8 and result.orpha_names_zh == 2
    assert result.annotations == DiseasePhenotype.objects.count() == 16 + 6


def test_obsolete_ids_follow_replaced_by_and_consider_and_are_reported(tmp_path):
    result = import_tiny(tmp_path)
    omim = DiseasePhenotype.objects.get(disease__code="OMIM:100100", original_hpo_id="HP:0000999")
    assert omim.phenotype.hpo_id == "HP:0001250"
    orpha = DiseasePhenotype.objects.get(disease__code="ORPHA:1", original_hpo_id="HP:0000998")
    assert orpha.phenotype.hpo_id == "HP:0002240"
    ccrd = DiseasePhenotype.objects.get(disease__code="CCRD:1", original_hpo_id="HP:0000998")
    assert ccrd.phenotype.hpo_id == "HP:0002240"
    assert result.remapped == 3
    assert {(r["from"], r["to"], r["where"]) for r in result.remapped_ids} == {
        ("HP:0000999", "HP:0001250", "hpoa"),
        ("HP:0000998", "HP:0002240", "hpoa"),
        ("HP:0000998", "HP:0002240", "ccrd"),
    }
    assert HpoRelease.objects.get().remapped == result.remapped_ids


def test_not_annotations_are_stored_negated_and_frequencies_parsed(tmp_path):
    import_tiny(tmp_path)
    negated = DiseasePhenotype.objects.get(disease__code="ORPHA:1", phenotype__hpo_id="HP:0000365")
    assert negated.negated is True
    assert DiseasePhenotype.objects.filter(negated=True).count() == 1
    fraction = DiseasePhenotype.objects.get(disease__code="OMIM:100100", phenotype__hpo_id="HP:0001903")
    assert fraction.frequency_raw == "3/4" and fraction.probability == pytest.approx(0.75) and fraction.onset == "HP:0003581"
    percent = DiseasePhenotype.objects.get(disease__code="OMIM:100100", phenotype__hpo_id="HP:0001744")
    assert percent.probability == pytest.approx(0.75)
    very_frequent = DiseasePhenotype.objects.get(disease__code="ORPHA:1", phenotype__hpo_id="HP:0001263")
    assert very_frequent.probability_low == pytest.approx(0.80) and very_frequent.probability_high == pytest.approx(0.99)
    assert DiseasePhenotype.objects.get(disease__code="ORPHA:1", aspect="I").phenotype.hpo_id == "HP:0000007"


def test_the_ccrd_list_keeps_its_subtypes_and_orpha_mapping(tmp_path):
    result = import_tiny(tmp_path)
    assert result.ccrd == 2 and result.ccrd_keys == 3
    ccrd = Disease.objects.get(code="CCRD:1")
    assert ccrd.source == "CCRD" and ccrd.name_zh == "测试病" and ccrd.links == [{"id": "ORPHA:1", "relation": "E"}]
    assert Disease.objects.get(code="CCRD:2.1").links == [{"id": "ORPHA:2", "relation": "BTNT"}]
    assert set(ccrd.annotations.values_list("phenotype__hpo_id", flat=True)) == {"HP:0001250", "HP:0002240", "HP:0001263"}


def test_re_import_is_idempotent(tmp_path):
    first = import_tiny(tmp_path)
    before = {
        "phenotypes": list(Phenotype.objects.values_list("pk", "hpo_id", "name_zh")),
        "diseases": list(Disease.objects.values_list("pk", "code", "name", "name_zh", "links", "ccrd_ids")),
        "annotations": sorted(
            DiseasePhenotype.objects.values_list("disease__code", "phenotype__hpo_id", "negated", "frequency_raw", "aspect")
        ),
    }
    second = import_tiny(tmp_path)
    after = {
        "phenotypes": list(Phenotype.objects.values_list("pk", "hpo_id", "name_zh")),
        "diseases": list(Disease.objects.values_list("pk", "code", "name", "name_zh", "links", "ccrd_ids")),
        "annotations": sorted(
            DiseasePhenotype.objects.values_list("disease__code", "phenotype__hpo_id", "negated", "frequency_raw", "aspect")
        ),
    }
    assert before == after
    assert HpoRelease.objects.count() == 1 and first.release_id == second.release_id
    assert AuditEvent.objects.filter(action="hpo.import").count() == 2


def test_the_version_and_the_files_are_stored_on_the_release(tmp_path):
    import_tiny(tmp_path)
    release = HpoRelease.objects.get()
    assert release.version == "2099-01-01"
    kinds = {f["kind"]: f for f in release.files}
    assert set(kinds) == {"obo", "hpoa", "zh", "orpha_names_zh", "ccrd", "ccrd_map"}
    assert kinds["hpoa"]["name"] == "phenotype.hpoa.gz" and len(kinds["hpoa"]["sha256"]) == 64
    assert release.counts["annotations"] == 22


def test_a_plain_hpoa_file_works_like_the_gzipped_one(tmp_path):
    result = hpo_import(**write_release(tmp_path, gz=False))
    assert result.annotations == 22


def test_a_missing_file_is_a_clear_error_and_writes_nothing(tmp_path):
    files = write_release(tmp_path)
    files["zh"] = tmp_path / "nope.tsv"
    with pytest.raises(InvalidInput, match="nope.tsv"):
        hpo_import(**files)
    assert not Phenotype.objects.exists() and not HpoRelease.objects.exists()


def test_the_ccrd_list_needs_its_mapping(tmp_path):
    files = write_release(tmp_path)
    files["ccrd_map"] = None
    with pytest.raises(InvalidInput, match="--ccrd-map"):
        hpo_import(**files)


def test_a_broken_file_changes_nothing_already_stored(tmp_path):
    import_tiny(tmp_path)
    files = write_release(tmp_path / "broken")
    files["ccrd"].write_text("{not json", encoding="utf-8")
    with pytest.raises(InvalidInput, match="could not be read"):
        hpo_import(**files)
    assert DiseasePhenotype.objects.count() == 22


def test_the_command_prints_counts_as_json_and_progress_to_stderr(tmp_path):
    files = write_release(tmp_path)
    out, err = io.StringIO(), io.StringIO()
    args = [f"--{k.replace('_', '-')}={v}" for k, v in files.items()]
    call_command("import_hpo", *args, "--json", stdout=out, stderr=err)
    report = json.loads(out.getvalue().strip().splitlines()[-1])
    for key in ("phenotypes", "diseases", "annotations", "zh_labels", "ccrd", "remapped", "seconds"):
        assert key in report
    assert report["phenotypes"] == 25 and report["remapped"] == 3 and report["diseases"] == 6
    assert "Reading" in err.getvalue()


def test_the_command_reports_a_bad_path_in_one_line(tmp_path):
    with pytest.raises(CommandError, match="does not exist"):
        call_command("import_hpo", "--obo", str(tmp_path / "x.obo"), "--hpoa", str(tmp_path / "y.hpoa"), stdout=io.StringIO())


@pytest.mark.shared_data
def test_the_full_shared_release_imports_with_the_documented_counts(shared_datasets):
    hpo = shared_datasets / "hpo_rare_disease"
    ccrd = shared_datasets / "china_rare_disease_list_ccrd"
    result = hpo_import(
        obo=hpo / "hp.obo",
        hpoa=hpo / "phenotype.hpoa.gz",
        zh=hpo / "hp-zh.babelon.tsv",
        orpha_names_zh=ccrd / "cns_orphanet.json",
        omim_names_zh=ccrd / "CNSOMIM.json",
        ccrd=ccrd / "conpendium_hpo.json",
        ccrd_map=ccrd / "ccrd_to_orpha.json",
    )
    assert result.version == "2025-01-16"
    # PROVENANCE.md: 2,918 of the hpoa's ORPHA diseases have a Chinese name in cns_orphanet.json
    assert result.orpha_names_zh == 2_918
    assert result.omim_names_zh > 0
    assert Disease.objects.filter(source="OMIM").exclude(name_zh="").count() == result.omim_names_zh
    assert result.phenotypes == 19_484 and result.obsolete == 450
    assert result.zh_labels == 18_988
    assert result.ccrd_keys == 144
    # The upstream file holds 119 of the list's 121 numbers (CCRD:59 and CCRD:75 are absent).
    assert result.ccrd == 119
    assert result.unresolved == 0
    hpoa_rows = DiseasePhenotype.objects.exclude(disease__source="CCRD").count()
    assert hpoa_rows == 271_702
    by_source = {s: DiseasePhenotype.objects.filter(disease__source=s).count() for s in ("OMIM", "ORPHA", "DECIPHER")}
    assert by_source == {"OMIM": 156_446, "ORPHA": 114_960, "DECIPHER": 296}
    # 29 obsolete ids in the CCRD lists are remapped (PROVENANCE.md)
    assert len({r["from"] for r in result.remapped_ids if r["where"] == "ccrd"}) == 29
    assert not DiseasePhenotype.objects.filter(phenotype__obsolete=True).exists()
    assert Disease.objects.get(code="ORPHA:558").name == "Marfan syndrome"
