"""Facts from the database: a fixed number of queries, units converted, both genomic shapes."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone

from decision.load import fact_plan, load_facts, load_facts_bulk
from decision.services import value_sets_import
from nlp.models import NoteExtraction, NoteFact
from patients import models as m
from risk.models import RiskAssessment
from tests.factories import (
    AllergyFactory,
    ConditionFactory,
    MedicationRequestFactory,
    ObservationFactory,
    PatientFactory,
)

pytestmark = pytest.mark.django_db
STARTER = Path(__file__).resolve().parents[2] / "decision" / "data" / "starter_value_sets.json"
LOADED_QUERIES = 10  # patients, observations, conditions, medications, allergies, 2 x genomics, risks, notes, imaging


@pytest.fixture
def plan(db):
    value_sets_import(json.loads(STARTER.read_text()))
    return fact_plan()


def _days_ago(n: float) -> dt.datetime:
    return timezone.now() - dt.timedelta(days=n)


def _rich_patient(site: m.Site, n: int = 3) -> m.Patient:
    p: m.Patient = PatientFactory(site=site, birth_date=dt.date(1960, 1, 1), sex="male")  # type: ignore[assignment]
    for i in range(n):
        ObservationFactory(patient=p, code="18262-6", value_quantity=4.0 + i / 10, value_unit="mmol/L",
                           effective_at=_days_ago(30 * (i + 1)))
        ObservationFactory(patient=p, code="33914-3", value_quantity=50 + i, value_unit="mL/min/{1.73_m2}",
                           effective_at=_days_ago(100 * (i + 1)))
        ConditionFactory(patient=p, code="49436004", display="Atrial fibrillation")
        MedicationRequestFactory(patient=p, code="312961", display="simvastatin 40 MG Oral Tablet")
        AllergyFactory(patient=p)
        RiskAssessment.objects.create(patient=p, calculator="cha2ds2_vasc", calculator_version="1", status="computed",
                                      value=2 + i, unit="points", inputs_hash=f"{p.pk}-{i}", as_of=_days_ago(1),
                                      contributions={"age": 1})
    obs: m.Observation = ObservationFactory(  # type: ignore[assignment]
        patient=p, code="69548-6", display="Genetic variant assessment", value_quantity=None, value_unit="")
    m.GenomicResult.objects.create(patient=p, observation=obs, fhir_id=f"g-{p.pk}", gene="CYP2C19",
                                   diplotype="*2/*2", phenotype="Poor metabolizer", effective_at=_days_ago(200))
    note = m.ClinicalNote.objects.create(patient=p, fhir_id=f"n-{p.pk}", source_type="typed", text="AF noted",
                                         written_at=_days_ago(3))
    ext = NoteExtraction.objects.create(note=note, patient=p, pipeline_version="1")
    NoteFact.objects.create(extraction=ext, patient=p, kind="problem", concept_id="atrial-fibrillation",
                            preferred="Atrial fibrillation", text="AF", start=0, end=2, stage="lexicon",
                            codes=[{"system": "http://snomed.info/sct", "code": "49436004"}])
    return p


def test_load_facts_bulk_uses_a_fixed_number_of_queries(site_a, plan, django_assert_num_queries):
    few = [_rich_patient(site_a, n=1).pk]
    many = [_rich_patient(site_a, n=4).pk for _ in range(5)]
    with django_assert_num_queries(LOADED_QUERIES):
        load_facts_bulk(few, plan=plan)
    with django_assert_num_queries(LOADED_QUERIES):
        facts = load_facts_bulk(many, plan=plan)
    assert len(facts) == 5 and all(len(f.observations["18262-6"]) == 4 for f in facts.values())


def test_observations_are_converted_to_the_canonical_unit_with_their_source(site_a, plan):
    p = _rich_patient(site_a, n=1)
    f = load_facts(p, plan=plan)
    ldl = f.observations["18262-6"][0]
    assert ldl.unit == "mg/dL" and ldl.value == pytest.approx(4.0 * 38.67)  # cholesterol 1 mmol/L = 38.67 mg/dL
    assert ldl.source.startswith("Observation:")
    assert f.age is not None and f.sex == "male"
    assert f.conditions[0].code == "49436004" and f.medications[0].dose_mg == 40.0
    assert f.allergies and f.risks["cha2ds2_vasc"].value == 2 and f.risks["cha2ds2_vasc"].contributions
    assert f.genomics["CYP2C19"].phenotype == "Poor metabolizer"
    assert f.notes[0].concept == "atrial-fibrillation" and f.notes[0].affirmed


def test_entered_in_error_and_future_rows_are_left_out(site_a, plan):
    p = PatientFactory(site=site_a)
    ObservationFactory(patient=p, code="18262-6", value_quantity=200, value_unit="mg/dL", status="entered-in-error",
                       effective_at=_days_ago(1))
    ObservationFactory(patient=p, code="18262-6", value_quantity=210, value_unit="mg/dL",
                       effective_at=timezone.now() + dt.timedelta(days=2))
    assert load_facts(p, plan=plan).observations == {}


def test_the_latest_risk_row_is_current_even_when_it_lacks_inputs(site_a, plan):
    p = PatientFactory(site=site_a)
    RiskAssessment.objects.create(patient=p, calculator="qsofa", calculator_version="1", status="computed", value=2,
                                  unit="points", inputs_hash="a", as_of=_days_ago(2))
    RiskAssessment.objects.create(patient=p, calculator="qsofa", calculator_version="1", status="missing-inputs",
                                  inputs_hash="b", as_of=_days_ago(1))
    assert load_facts(p, plan=plan).risks["qsofa"].value is None


def test_genomic_results_in_both_fhir_shapes(site_a, plan):
    p = PatientFactory(site=site_a)
    # shape 1 with the phenotype as the Observation's own value, on a row stored without it
    obs = ObservationFactory(patient=p, code="53040-2", display="Genetic variation's effect on drug metabolism",
                             value_quantity=None, value_unit="", value_display="Decreased function",
                             effective_at=_days_ago(10))
    m.GenomicResult.objects.create(patient=p, observation=obs, fhir_id="g1", gene="SLCO1B1", phenotype="",
                                   effective_at=_days_ago(10))
    # shape 2 stored without a GenomicResult row: read from the Observation
    ObservationFactory(patient=p, code="", display="HLA-B*57:01", value_quantity=None, value_unit="",
                       value_string="Positive", raw={"code": {"text": "HLA-B*57:01"}}, effective_at=_days_ago(20))
    ObservationFactory(patient=p, code="53040-2", display="CYP2C19 phenotype", value_quantity=None, value_unit="",
                       value_display="Intermediate metabolizer", effective_at=_days_ago(5))
    g = load_facts(p, plan=plan).genomics
    assert g["SLCO1B1"].phenotype == "Decreased function"
    assert g["HLA-B*57:01"].phenotype == "Positive"
    assert g["CYP2C19"].phenotype == "Intermediate metabolizer"


def test_an_hla_allele_reported_as_a_diplotype_is_also_found_by_its_allele(site_a, plan):
    p = PatientFactory(site=site_a)
    m.GenomicResult.objects.create(patient=p, fhir_id="g2", gene="HLA-B", diplotype="*57:01 present",
                                   phenotype="Positive", effective_at=_days_ago(10))
    assert load_facts(p, plan=plan).genomics["HLA-B*57:01"].phenotype == "Positive"


def test_note_findings_of_a_superseded_extraction_are_ignored(site_a, plan):
    p = PatientFactory(site=site_a)
    note = m.ClinicalNote.objects.create(patient=p, fhir_id="n", source_type="typed", text="x", written_at=_days_ago(1))
    old = NoteExtraction.objects.create(note=note, patient=p, pipeline_version="1")
    new = NoteExtraction.objects.create(note=note, patient=p, pipeline_version="2")
    NoteFact.objects.create(extraction=old, patient=p, kind="problem", concept_id="copd", text="COPD", start=0, end=4,
                            stage="s")
    NoteFact.objects.create(extraction=new, patient=p, kind="problem", concept_id="copd", text="COPD", start=0, end=4,
                            stage="s", negated=True)
    notes = load_facts(p, plan=plan).notes
    assert len(notes) == 1 and notes[0].negated


def test_findings_of_active_imaging_models_are_facts_with_their_heat_map(site_a, plan, patient_a):
    from tests.imaging.test_pages import finding_for, model_version, upload

    instance = upload(patient_a)[0]
    active = model_version()
    finding = finding_for(instance, active, p=0.91)
    retired = model_version(name="pneumonia-old")
    retired.active = False
    retired.save(update_fields=["active"])
    finding_for(instance, retired, p=0.2)

    imaging = load_facts(patient_a, plan=plan).imaging
    assert [(f.label, f.probability, f.source) for f in imaging] == [("pneumonia", 0.91, f"ImagingFinding:{finding.pk}")]
    assert imaging[0].heatmap_url.endswith(f"/findings/{finding.external_id}/heatmap.png")
    # the image in the viewer, this finding's heat map shown first
    viewer = reverse("imaging-viewer", args=[patient_a.external_id, instance.external_id])
    assert imaging[0].viewer_url == f"{viewer}?finding={finding.external_id}"
    assert imaging[0].reported is False


def test_a_radiology_report_written_after_the_study_marks_its_findings_reported(site_a, plan, patient_a):
    from tests.imaging.test_pages import finding_for, model_version, upload

    instance = upload(patient_a)[0]
    finding = finding_for(instance, model_version(), p=0.91)
    study_day = instance.series.study.study_date
    # the study's day when the header has one, else when the image was read
    since = dt.datetime.combine(study_day, dt.time(), tzinfo=dt.UTC) if study_day else finding.created_at

    def note(fhir_id: str, code: str, at: dt.datetime, status: str = "") -> None:
        m.ClinicalNote.objects.create(patient=patient_a, fhir_id=fhir_id, source_type="DiagnosticReport", text="x",
                                      code_system="http://loinc.org", code=code, written_at=at, status=status)

    after = since + dt.timedelta(seconds=30)
    note("old-report", "18748-4", since - dt.timedelta(days=3))  # a report of an earlier study
    note("discharge", "18842-5", after)  # a discharge summary, not a radiology report
    note("withdrawn", "18748-4", after, status="entered-in-error")
    as_of = after + dt.timedelta(minutes=1)
    assert load_facts(patient_a, plan=plan, as_of=as_of).imaging[0].reported is False
    note("report", "18782-3", after)
    assert load_facts(patient_a, plan=plan, as_of=as_of).imaging[0].reported is True
    assert load_facts(patient_a, plan=plan, as_of=after - dt.timedelta(seconds=1)).imaging[0].reported is False


def test_medications_and_allergies_carry_their_rxnorm_ingredients_from_the_is_a_table(site_a):
    from decision.models import ConceptIsA, ValueSet, ValueSetCode

    rxnorm = "http://www.nlm.nih.gov/research/umls/rxnorm"
    vs = ValueSet.objects.create(slug="ace-inhibitors", name="ACE inhibitors", kind="medication")
    ValueSetCode.objects.create(value_set=vs, system=rxnorm, code="29046", match="is-a")
    ConceptIsA.objects.create(system=rxnorm, parent="29046", child="314076")
    p = PatientFactory(site=site_a)
    MedicationRequestFactory(patient=p, code_system=rxnorm, code="314076", display="lisinopril 10 MG Oral Tablet",
                             status="active")
    AllergyFactory(patient=p, code_system=rxnorm, code="29046", display="lisinopril")
    plan = fact_plan()
    assert plan.ingredients == {"314076": frozenset({"29046"})}
    f = load_facts(p, plan=plan)
    assert f.medications[0].ingredients == ("29046",)
    assert f.allergies[0].ingredients == ()  # an ingredient has no ingredients of its own
