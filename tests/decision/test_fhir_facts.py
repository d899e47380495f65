"""Facts from FHIR resources (a CDS Hooks prefetch) match what the rules expect."""

from __future__ import annotations

import datetime as dt

import pytest

from decision.engine import compile_rule, evaluate
from decision.fhir_facts import facts_from_fhir
from decision.valuesets import Members

NOW = dt.datetime(2026, 1, 15, tzinfo=dt.UTC)
LOINC = "http://loinc.org"
DIMENSIONS = {"18262-6": "cholesterol", "33914-3": "egfr"}


def _bundle(*resources):
    return {"resourceType": "Bundle", "entry": [{"resource": r} for r in resources]}


PATIENT = {"resourceType": "Patient", "id": "p1", "birthDate": "1960-06-01", "gender": "male"}


def test_demographics_units_and_active_lists():
    facts = facts_from_fhir([_bundle(
        PATIENT,
        {"resourceType": "Observation", "id": "o1", "status": "final",
         "code": {"coding": [{"system": LOINC, "code": "18262-6"}]}, "effectiveDateTime": "2026-01-01",
         "valueQuantity": {"value": 5.0, "unit": "mmol/L", "code": "mmol/L"}},
        {"resourceType": "Observation", "id": "o2", "status": "entered-in-error",
         "code": {"coding": [{"system": LOINC, "code": "18262-6"}]}, "effectiveDateTime": "2026-01-02",
         "valueQuantity": {"value": 9.0, "code": "mmol/L"}},
        {"resourceType": "Condition", "id": "c1", "clinicalStatus": {"coding": [{"code": "active"}]},
         "code": {"coding": [{"system": "http://snomed.info/sct", "code": "49436004"}]}},
        {"resourceType": "Condition", "id": "c2", "clinicalStatus": {"coding": [{"code": "resolved"}]},
         "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}]}},
        {"resourceType": "MedicationRequest", "id": "m1", "status": "active", "intent": "order",
         "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                   "code": "312961", "display": "simvastatin 40 MG Oral Tablet"}]}},
    )], as_of=NOW, dimensions=DIMENSIONS)
    assert (facts.age, facts.sex) == (65, "male")
    ldl = facts.observations["18262-6"]
    assert len(ldl) == 1 and ldl[0].unit == "mg/dL" and ldl[0].value == pytest.approx(193.35)
    assert ldl[0].source == "Observation/o1"
    assert [c.code for c in facts.conditions] == ["49436004"]
    assert facts.medications[0].dose_mg == 40.0


@pytest.mark.parametrize("resource", [
    # gene in a component 48018-6, phenotype in a component 53040-2
    {"resourceType": "Observation", "id": "g", "status": "final", "effectiveDateTime": "2025-05-01",
     "code": {"coding": [{"system": LOINC, "code": "69548-6"}]},
     "component": [{"code": {"coding": [{"system": LOINC, "code": "48018-6"}]},
                    "valueCodeableConcept": {"coding": [{"system": "http://www.genenames.org", "code": "HGNC:2621",
                                                         "display": "CYP2C19"}]}},
                   {"code": {"coding": [{"system": LOINC, "code": "53040-2"}]},
                    "valueCodeableConcept": {"text": "Poor metabolizer"}}]},
    # gene in the code's text, result as valueString
    {"resourceType": "Observation", "id": "g", "status": "final", "effectiveDateTime": "2025-05-01",
     "code": {"text": "CYP2C19 phenotype"}, "valueString": "Poor metabolizer"},
    # gene component, phenotype as the Observation's own value
    {"resourceType": "Observation", "id": "g", "status": "final", "effectiveDateTime": "2025-05-01",
     "code": {"coding": [{"system": LOINC, "code": "53040-2"}]},
     "component": [{"code": {"coding": [{"system": LOINC, "code": "48018-6"}]}, "valueString": "CYP2C19"}],
     "valueCodeableConcept": {"coding": [{"display": "Poor metabolizer"}]}},
])
def test_genomic_results_in_either_shape_drive_the_pgx_rule(resource):
    facts = facts_from_fhir([PATIENT, resource, {
        "resourceType": "MedicationRequest", "id": "m", "status": "active",
        "medicationCodeableConcept": {"text": "clopidogrel 75 mg tablet"}}], as_of=NOW, dimensions=DIMENSIONS)
    assert facts.genomics["CYP2C19"].phenotype == "Poor metabolizer"
    rule = compile_rule(slug="pgx", version=1, severity="warning", summary_template="x", value_sets={
        "clopidogrel": Members("clopidogrel", "medication", names=("clopidogrel",))}, conditions={"all": [
            {"fact": "medication:clopidogrel", "op": "present"},
            {"fact": "genomic:CYP2C19", "op": "=", "value": ["Poor metabolizer", "Intermediate metabolizer"]}]})
    assert evaluate([rule], facts)[0].fired
