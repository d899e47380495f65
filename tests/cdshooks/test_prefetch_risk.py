"""Risk-based rules for a patient known only from the prefetch: the calculators the rules name
are scored from the prefetch in the call, by the risk job's own input mapping and formulas."""

from __future__ import annotations

import datetime as dt

import pytest

from cdshooks.cards import response_problems
from cdshooks.catalog import catalog_get
from cdshooks.models import IssuedCard
from risk.calculators import calculate

from .fhir import LDL, LOINC, SNOMED, bundle, condition, days_ago, empty_prefetch, observation, patient, patient_view

pytestmark = pytest.mark.django_db
RACE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"


def _born(age: int) -> str:
    """A birth date giving this age today (1 July: the age holds for about half a year either way)."""
    return f"{dt.date.today().year - age}-07-01"


def _patient(pid: str, *, age: int = 60, race: str | None = "2106-3") -> dict:
    out = patient(pid, birth=_born(age))
    if race:
        out["extension"] = [{"url": RACE, "extension": [{"url": "ombCategory", "valueCoding": {
            "system": "urn:oid:2.16.840.1.113883.6.238", "code": race}}]}]
    return out


def _smoking(pid: str, answer: str) -> dict:
    return {"resourceType": "Observation", "id": "smk", "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "72166-2"}]}, "subject": {"reference": f"Patient/{pid}"},
            "effectiveDateTime": days_ago(100), "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": answer}]}}


def _lipids(pid: str, *, smoking: bool = True) -> list[dict]:
    out = [observation(pid, "ldl", LDL, 150, "mg/dL", days_ago(30)),
           observation(pid, "tc", "2093-3", 240, "mg/dL", days_ago(30)),
           observation(pid, "hdl", "2085-9", 40, "mg/dL", days_ago(30)),
           observation(pid, "sbp", "8480-6", 150, "mm[Hg]", days_ago(10))]
    if smoking:
        out.append(_smoking(pid, "266919005"))  # never smoked tobacco
    return out


def _cards(response) -> list[dict]:
    assert response.status_code == 200, response.content
    assert response_problems(response.json()) == []
    return response.json()["cards"]


def test_discovery_asks_for_the_observations_the_risk_calculators_read(starter):
    template = catalog_get().prefetch["patient-view"]["observations"]
    for code in ("2093-3", "2085-9", "8480-6", "72166-2", LDL):
        assert f"{LOINC}|{code}" in template


def test_a_prefetch_only_patient_gets_the_statin_card_from_an_ascvd_risk_computed_in_the_call(ehr, starter):
    pid = "visitor-ascvd"
    prefetch = empty_prefetch(pid, patient=_patient(pid), observations=bundle(*_lipids(pid)))
    cards = _cards(ehr.call("patient-view", patient_view(pid, prefetch)))
    statin = [c for c in cards if c["source"]["topic"]["code"] == "statin-primary-prevention"]
    assert len(statin) == 1
    # the same Pooled Cohort Equations the risk job uses, on the same inputs
    age = IssuedCard.objects.get(uuid=statin[0]["uuid"]).trace[0]["value"]
    expected = calculate("pce_ascvd_10y", {"age": age, "sex": "male", "race": "white", "total_cholesterol": "240 mg/dL",
                                           "hdl_cholesterol": "40 mg/dL", "systolic_bp": "150 mm[Hg]",
                                           "bp_treated": False, "smoker": False, "diabetes": False}).value
    assert expected >= 7.5
    assert f"10-year ASCVD risk {round(expected, 2):g} %" in statin[0]["summary"]
    assert "computed from the prefetch" in str(IssuedCard.objects.get(uuid=statin[0]["uuid"]).trace)


def test_a_missing_calculator_input_gives_no_risk_and_no_card(ehr, starter):
    pid = "visitor-no-smoking"
    prefetch = empty_prefetch(pid, patient=_patient(pid), observations=bundle(*_lipids(pid, smoking=False)))
    cards = _cards(ehr.call("patient-view", patient_view(pid, prefetch)))
    assert "statin-primary-prevention" not in [c["source"]["topic"]["code"] for c in cards]


def test_a_prefetch_only_af_patient_is_scored_with_cha2ds2_vasc(ehr, starter):
    pid = "visitor-af"
    conditions = bundle(condition(pid, "c1", "49436004", "Atrial fibrillation"),
                        condition(pid, "c2", "38341003", "Hypertensive disorder"))
    older = empty_prefetch(pid, patient=_patient(pid, age=70), conditions=conditions)
    cards = _cards(ehr.call("patient-view", patient_view(pid, older)))
    af = [c for c in cards if c["source"]["topic"]["code"] == "af-anticoagulation"]
    assert len(af) == 1 and "CHA2DS2-VASc 2 points" in af[0]["summary"]  # hypertension 1 + age 65-74 1
    younger = empty_prefetch(pid, patient=_patient(pid, age=45), conditions=conditions)
    cards = _cards(ehr.call("patient-view", patient_view(pid, younger)))
    assert "af-anticoagulation" not in [c["source"]["topic"]["code"] for c in cards]  # score 1


def _acute(pid: str, gcs: float) -> list[dict]:
    hours_ago = days_ago(2 / 24)
    return [observation(pid, "rr", "9279-1", 24, "/min", hours_ago),
            observation(pid, "sbp", "8480-6", 95, "mm[Hg]", hours_ago),
            observation(pid, "gcs", "9269-2", gcs, "{score}", hours_ago)]


def test_discovery_asks_for_the_bedside_observations_of_qsofa_and_news2(starter):
    template = catalog_get().prefetch["patient-view"]["observations"]
    # Glasgow Coma Scale total, inhaled oxygen flow rate and concentration, besides the vital signs
    for code in ("9269-2", "3151-8", "3150-0", "9279-1", "8480-6", "59408-5"):
        assert f"{LOINC}|{code}" in template


def test_a_prefetch_only_patient_with_rr_24_sbp_95_gcs_14_gets_the_sepsis_card(ehr, starter):
    pid = "visitor-sepsis"
    prefetch = empty_prefetch(pid, patient=_patient(pid), observations=bundle(*_acute(pid, 14)))
    cards = _cards(ehr.call("patient-view", patient_view(pid, prefetch)))
    sepsis = [c for c in cards if c["source"]["topic"]["code"] == "sepsis-screen"]
    assert len(sepsis) == 1 and "qSOFA 3 points" in sepsis[0]["summary"]
    assert sepsis[0]["indicator"] == "critical"


def test_a_prefetch_only_patient_with_gcs_15_gets_no_sepsis_card(ehr, starter):
    pid = "visitor-alert"
    observations = [o for o in _acute(pid, 15) if o["id"] != "rr"]
    observations.append(observation(pid, "rr", "9279-1", 18, "/min", days_ago(1 / 24)))
    prefetch = empty_prefetch(pid, patient=_patient(pid), observations=bundle(*observations))
    cards = _cards(ehr.call("patient-view", patient_view(pid, prefetch)))
    assert "sepsis-screen" not in [c["source"]["topic"]["code"] for c in cards]  # qSOFA 1 (SBP 95 only)
