"""The prefetch builder beside ``load_facts``: the same facts from FHIR resources (no database
query; the value sets are given as a plan)."""

from __future__ import annotations

import datetime as dt

import pytest

from cdshooks.prefetch import PrefetchError, facts_from_prefetch
from decision.load import FactPlan
from decision.valuesets import Members

from .fhir import EGFR, LDL, bundle, condition, days_ago, genotype, medication_request, observation, patient

NOW = dt.datetime.now(dt.UTC)
PLAN = FactPlan(value_sets={
    "ldl": Members(slug="ldl", kind="observation", dimension="cholesterol", codes={"http://loinc.org": frozenset({LDL})}),
    "egfr": Members(slug="egfr", kind="observation", dimension="egfr", codes={"http://loinc.org": frozenset({EGFR})}),
    "pregnancy": Members(slug="pregnancy", kind="condition", codes={"http://snomed.info/sct": frozenset({"77386006"})}),
})


def _facts(pid: str = "p", **prefetch):
    return facts_from_prefetch(patient_id=pid, prefetch=prefetch, plan=PLAN, as_of=NOW)


def test_units_are_converted_to_the_analytes_canonical_unit_and_sorted_newest_first():
    # LDL-C 3.0 mmol/L = 116 mg/dL (x 38.67, cholesterol molar mass 386.65 g/mol)
    out = _facts(observations=bundle(observation("p", "a", LDL, 3.0, "mmol/L", days_ago(40)),
                                     observation("p", "b", LDL, 120, "mg/dL", days_ago(2))))
    values = out.facts.observations[LDL]
    assert [o.source for o in values] == ["Observation/b", "Observation/a"]
    assert values[1].unit == "mg/dL" and values[1].value == pytest.approx(116.0, abs=0.1)
    assert out.supplied == {"observations"}


def test_observations_outside_the_value_sets_or_the_look_back_are_left_out():
    out = _facts(observations=bundle(observation("p", "x", "2093-3", 200, "mg/dL", days_ago(3)),
                                     observation("p", "old", LDL, 200, "mg/dL", days_ago(PLAN.lookback_days + 5))))
    assert out.facts.observations == {}


def test_age_and_sex_from_the_patient_resource():
    born = (NOW.date().replace(year=NOW.year - 60) - dt.timedelta(days=1)).isoformat()
    out = _facts(patient=patient("p", gender="female", birth=born))
    assert (out.facts.age, out.facts.sex, out.patient_found) == (60, "female", True)


def test_genomic_results_in_both_shapes_and_hla_alleles():
    shape2 = {"resourceType": "Observation", "id": "g2", "status": "final", "subject": {"reference": "Patient/p"},
              "code": {"text": "SLCO1B1 phenotype"}, "effectiveDateTime": days_ago(100),
              "valueCodeableConcept": {"text": "Decreased function"}}
    hla = genotype("p", "g3", "HLA-B", "Positive", "*57:01")
    out = _facts(genomics=bundle(genotype("p", "g1", "CYP2C19", "Poor metabolizer", "*2/*2"), shape2, hla))
    genomics = out.facts.genomics
    assert genomics["CYP2C19"].phenotype == "Poor metabolizer" and genomics["CYP2C19"].diplotype == "*2/*2"
    assert genomics["SLCO1B1"].phenotype == "Decreased function"
    assert genomics["HLA-B*57:01"].phenotype == "Positive"


def test_inactive_conditions_and_stopped_medications_are_left_out_and_doses_read():
    resolved = condition("p", "c2", "49436004", "Atrial fibrillation")
    resolved["clinicalStatus"]["coding"][0]["code"] = "resolved"
    out = _facts(conditions=bundle(condition("p", "c1", "44054006", "Diabetes"), resolved),
                 medications=bundle(medication_request("p", "m1", "312961", "simvastatin 40 MG Oral Tablet"),
                                    medication_request("p", "m2", "1", "aspirin 81 MG", status="stopped")))
    assert [c.code for c in out.facts.conditions] == ["44054006"]
    assert [(m.source, m.dose_mg) for m in out.facts.medications] == [("MedicationRequest/m1", 40.0)]


def test_draft_orders_come_first_as_medications_being_ordered():
    draft = medication_request("p", "d1", "309362", "clopidogrel 75 MG Oral Tablet", status="draft")
    out = facts_from_prefetch(patient_id="p", plan=PLAN, as_of=NOW,
                              prefetch={"medications": bundle(medication_request("p", "m1", "6809", "metformin"))},
                              draft_orders={"resourceType": "Bundle", "type": "collection", "entry": [{"resource": draft}]},
                              selections=["MedicationRequest/d1"])
    assert [m.source for m in out.facts.medications] == ["MedicationRequest/d1", "MedicationRequest/m1"]
    assert out.draft_sources == ["MedicationRequest/d1"] and out.selected_sources == {"MedicationRequest/d1"}


def test_a_pregnancy_condition_sets_pregnant():
    out = _facts(conditions=bundle(condition("p", "c1", "77386006", "Pregnant")))
    assert out.facts.pregnant is True


def test_null_keys_are_supplied_without_data_and_unknown_keys_are_not():
    out = _facts(conditions=None, medications=None, somethingElse=None)
    assert out.supplied == {"conditions", "medications"}
    assert out.facts.conditions == [] and out.facts.medications == []


def test_a_resource_without_an_id_is_still_read():
    obs = observation("p", "x", EGFR, 25, "mL/min/{1.73_m2}", days_ago(1))
    del obs["id"]
    assert _facts(observations=bundle(obs)).facts.observations[EGFR][0].value == 25


def test_every_bad_place_is_named():
    with pytest.raises(PrefetchError) as caught:
        _facts(observations={"entry": "x", "resourceType": "Bundle"}, conditions=42,
               medications=bundle({"id": "no-type"}))
    assert caught.value.problems == ["prefetch.observations.entry must be a list",
                                     "prefetch.conditions must be a FHIR resource, a Bundle or null",
                                     "prefetch.medications.entry[0].resource has no resourceType"]


# Resources written out in full (rather than through tests/cdshooks/fhir.py's builders): entered-in-error
# and resolved rows left out, units converted, and pharmacogenomic results in each FHIR shape.
RESOURCE_NOW = dt.datetime(2026, 1, 15, tzinfo=dt.UTC)
SUBJECT = {"reference": "Patient/p1"}
PATIENT_P1 = {"resourceType": "Patient", "id": "p1", "birthDate": "1960-06-01", "gender": "male"}


def _from_resources(*resources):
    kinds = {"Patient": "patient", "Observation": "observations", "Condition": "conditions",
             "MedicationRequest": "medications"}
    prefetch: dict[str, list] = {}
    for r in resources:
        prefetch.setdefault(kinds[r["resourceType"]], []).append({"resource": r})
    return facts_from_prefetch(
        patient_id="p1", plan=PLAN, as_of=RESOURCE_NOW,
        prefetch={k: (v[0]["resource"] if k == "patient" else {"resourceType": "Bundle", "type": "searchset",
                                                               "entry": v}) for k, v in prefetch.items()},
    ).facts


def test_demographics_units_and_active_lists_from_full_resources():
    facts = _from_resources(
        PATIENT_P1,
        {"resourceType": "Observation", "id": "o1", "status": "final", "subject": SUBJECT,
         "code": {"coding": [{"system": "http://loinc.org", "code": LDL}]}, "effectiveDateTime": "2026-01-01",
         "valueQuantity": {"value": 5.0, "unit": "mmol/L", "code": "mmol/L"}},
        {"resourceType": "Observation", "id": "o2", "status": "entered-in-error", "subject": SUBJECT,
         "code": {"coding": [{"system": "http://loinc.org", "code": LDL}]}, "effectiveDateTime": "2026-01-02",
         "valueQuantity": {"value": 9.0, "code": "mmol/L"}},
        {"resourceType": "Condition", "id": "c1", "subject": SUBJECT,
         "clinicalStatus": {"coding": [{"code": "active"}]},
         "code": {"coding": [{"system": "http://snomed.info/sct", "code": "49436004"}]}},
        {"resourceType": "Condition", "id": "c2", "subject": SUBJECT,
         "clinicalStatus": {"coding": [{"code": "resolved"}]},
         "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}]}},
        {"resourceType": "MedicationRequest", "id": "m1", "status": "active", "intent": "order", "subject": SUBJECT,
         "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                   "code": "312961", "display": "simvastatin 40 MG Oral Tablet"}]}},
    )
    assert (facts.age, facts.sex) == (65, "male")
    ldl = facts.observations[LDL]
    assert len(ldl) == 1 and ldl[0].unit == "mg/dL" and ldl[0].value == pytest.approx(193.35)
    assert ldl[0].source == "Observation/o1"
    assert [c.code for c in facts.conditions] == ["49436004"]
    assert facts.medications[0].dose_mg == 40.0


@pytest.mark.parametrize("resource", [
    # gene in a component 48018-6, phenotype in a component 53040-2
    {"resourceType": "Observation", "id": "g", "status": "final", "effectiveDateTime": "2025-05-01",
     "subject": SUBJECT, "code": {"coding": [{"system": "http://loinc.org", "code": "69548-6"}]},
     "component": [{"code": {"coding": [{"system": "http://loinc.org", "code": "48018-6"}]},
                    "valueCodeableConcept": {"coding": [{"system": "http://www.genenames.org", "code": "HGNC:2621",
                                                         "display": "CYP2C19"}]}},
                   {"code": {"coding": [{"system": "http://loinc.org", "code": "53040-2"}]},
                    "valueCodeableConcept": {"text": "Poor metabolizer"}}]},
    # gene in the code's text, result as valueString
    {"resourceType": "Observation", "id": "g", "status": "final", "effectiveDateTime": "2025-05-01",
     "subject": SUBJECT, "code": {"text": "CYP2C19 phenotype"}, "valueString": "Poor metabolizer"},
    # gene component, phenotype as the Observation's own value
    {"resourceType": "Observation", "id": "g", "status": "final", "effectiveDateTime": "2025-05-01",
     "subject": SUBJECT, "code": {"coding": [{"system": "http://loinc.org", "code": "53040-2"}]},
     "component": [{"code": {"coding": [{"system": "http://loinc.org", "code": "48018-6"}]}, "valueString": "CYP2C19"}],
     "valueCodeableConcept": {"coding": [{"display": "Poor metabolizer"}]}},
])
def test_genomic_results_in_either_shape_drive_the_pgx_rule(resource):
    from decision.engine import compile_rule, evaluate

    facts = _from_resources(PATIENT_P1, resource, {
        "resourceType": "MedicationRequest", "id": "m", "status": "active", "intent": "order", "subject": SUBJECT,
        "medicationCodeableConcept": {"text": "clopidogrel 75 mg tablet"}})
    assert facts.genomics["CYP2C19"].phenotype == "Poor metabolizer"
    rule = compile_rule(slug="pgx", version=1, severity="warning", summary_template="x", value_sets={
        "clopidogrel": Members("clopidogrel", "medication", names=("clopidogrel",))}, conditions={"all": [
            {"fact": "medication:clopidogrel", "op": "present"},
            {"fact": "genomic:CYP2C19", "op": "=", "value": ["Poor metabolizer", "Intermediate metabolizer"]}]})
    assert evaluate([rule], facts)[0].fired
