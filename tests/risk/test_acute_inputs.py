"""qSOFA and NEWS2 from the record: altered mentation and consciousness from the Glasgow Coma
Scale, supplemental oxygen from the inhaled oxygen flow rate or FiO2, the SpO2 scale; and the
sepsis screen firing from them for a stored patient."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from decision.models import Recommendation
from decision.services import patients_evaluate, value_sets_import
from risk.calculators import calculate, get
from risk.models import RiskAssessment
from risk.record_inputs import (
    NEWS2_SCALE_SOURCE,
    CodedFact,
    ObservationValue,
    RecordSnapshot,
    inputs_for,
)
from tests.factories import ObservationFactory, PatientFactory

AS_OF = dt.datetime(2024, 3, 1, 12, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


def _snapshot(*obs: tuple[str, float, str, dt.timedelta], conditions: list[CodedFact] | None = None) -> RecordSnapshot:
    snap = RecordSnapshot(patient_id=1, birth_date=dt.date(1950, 1, 1), sex="male", race=None,
                          conditions=conditions or [])
    for n, (code, value, unit, ago) in enumerate(obs):
        snap.observations[code] = ObservationValue(code, value, unit, AS_OF - ago, 100 + n)
    return snap


VITALS = (("9279-1", 24, "/min", HOUR), ("8480-6", 95, "mm[Hg]", HOUR), ("8867-4", 115, "/min", HOUR),
          ("8310-5", 38.6, "Cel", HOUR), ("59408-5", 93, "%", HOUR))


def test_qsofa_from_the_record_rr_24_sbp_95_gcs_14_is_3_points():
    snap = _snapshot(*VITALS, ("9269-2", 14, "{score}", 2 * HOUR))
    mapped = inputs_for(get("qsofa"), snap, AS_OF)
    assert mapped.missing == [] and mapped.problems == {}
    assert mapped.values["altered_mentation"].value is True
    assert mapped.values["altered_mentation"].source == "Observation:105"
    assert "14" in mapped.values["altered_mentation"].note
    assert calculate("qsofa", mapped.raw()).value == 3


def test_gcs_15_is_no_altered_mentation_and_alert():
    snap = _snapshot(*VITALS, ("9269-2", 15, "{score}", HOUR))
    qsofa = inputs_for(get("qsofa"), snap, AS_OF)
    assert qsofa.values["altered_mentation"].value is False
    assert calculate("qsofa", qsofa.raw()).value == 2  # RR 24 and SBP 95 only
    news2 = inputs_for(get("news2"), snap, AS_OF)
    assert news2.values["consciousness"].value == "A"


def test_gcs_below_15_is_not_alert_scored_3_and_the_note_says_the_level_is_not_recorded():
    snap = _snapshot(*VITALS, ("9269-2", 12, "{score}", HOUR), ("3151-8", 2, "L/min", HOUR))
    mapped = inputs_for(get("news2"), snap, AS_OF)
    assert mapped.missing == [] and mapped.problems == {}
    consciousness = mapped.values["consciousness"]
    assert consciousness.value == "C" and "not recorded" in consciousness.note and "3 points" in consciousness.note
    result = calculate("news2", mapped.raw())
    assert result.contributions["consciousness"] == 3
    # RR 24: 2, SpO2 93 (scale 1): 2, oxygen: 2, SBP 95: 2, pulse 115: 2, consciousness: 3, 38.6: 1
    assert result.value == 14


def test_gcs_older_than_24_hours_or_out_of_range_is_not_used():
    old = _snapshot(*VITALS, ("9269-2", 13, "{score}", 30 * HOUR))
    mapped = inputs_for(get("qsofa"), old, AS_OF)
    assert mapped.missing == ["altered_mentation"]
    bad = _snapshot(*VITALS, ("9269-2", 16, "{score}", HOUR))
    mapped = inputs_for(get("qsofa"), bad, AS_OF)
    assert "3 to 15" in mapped.problems["altered_mentation"]


def test_qsofa_reads_blood_pressure_from_the_last_24_hours_only():
    vitals = [v for v in VITALS if v[0] != "8480-6"]
    snap = _snapshot(*vitals, ("8480-6", 95, "mm[Hg]", 30 * HOUR), ("9269-2", 14, "{score}", HOUR))
    assert inputs_for(get("qsofa"), snap, AS_OF).missing == ["systolic_bp"]


@pytest.mark.parametrize(("code", "value", "unit", "on"), [
    ("3151-8", 2, "L/min", True), ("3151-8", 0, "L/min", False), ("3151-8", 500, "mL/min", True),
    ("3150-0", 40, "%", True), ("3150-0", 21, "%", False), ("3150-0", 0.4, "1", True), ("3150-0", 0.21, "1", False),
])
def test_supplemental_oxygen_from_flow_rate_or_fio2(code, value, unit, on):
    snap = _snapshot(*VITALS, ("9269-2", 15, "{score}", HOUR), (code, value, unit, HOUR))
    mapped = inputs_for(get("news2"), snap, AS_OF)
    assert mapped.values["on_oxygen"].value is on
    assert mapped.values["on_oxygen"].source.startswith("Observation:")


def test_the_latest_oxygen_observation_wins_and_unreadable_units_are_problems():
    snap = _snapshot(*VITALS, ("3151-8", 4, "L/min", 5 * HOUR), ("3150-0", 21, "%", HOUR))
    assert inputs_for(get("news2"), snap, AS_OF).values["on_oxygen"].value is False
    snap = _snapshot(*VITALS, ("3150-0", 40, "L/min", HOUR))
    assert "cannot be read" in inputs_for(get("news2"), snap, AS_OF).problems["on_oxygen"]


def test_no_oxygen_observation_leaves_on_oxygen_missing_not_air():
    snap = _snapshot(*VITALS, ("9269-2", 15, "{score}", HOUR))
    mapped = inputs_for(get("news2"), snap, AS_OF)
    assert mapped.missing == ["on_oxygen"]


def test_spo2_scale_1_by_default_and_missing_with_hypercapnic_respiratory_failure():
    snap = _snapshot(*VITALS, ("9269-2", 15, "{score}", HOUR), ("3151-8", 0, "L/min", HOUR))
    mapped = inputs_for(get("news2"), snap, AS_OF)
    assert mapped.values["spo2_scale"].value == 1 and mapped.values["spo2_scale"].source == NEWS2_SCALE_SOURCE
    hypercapnic = CodedFact("http://hl7.org/fhir/sid/icd-10-cm", "J96.12",
                            "Chronic respiratory failure with hypercapnia", 7)
    snap.conditions.append(hypercapnic)
    assert inputs_for(get("news2"), snap, AS_OF).missing == ["spo2_scale"]


@pytest.fixture
def starter_active(db):
    """The starter library's value sets and rules, one active version each."""
    import json

    from decision.models import Rule, RuleVersion
    from decision.services import VERSION_FIELDS
    from decision.starter import RULES, VALUE_SETS_FILE

    value_sets_import(json.loads(VALUE_SETS_FILE.read_text(encoding="utf-8")))
    for spec in RULES:
        rule = Rule.objects.create(slug=spec["slug"], title=spec["title"], category=spec["category"])
        fields = {name: spec[name] for name in VERSION_FIELDS if name in spec}
        RuleVersion.objects.create(rule=rule, number=1, status=RuleVersion.Status.ACTIVE, tests_passed=True, **fields)


def _acute_patient(site, *, gcs: float):
    now = timezone.now()
    patient = PatientFactory(site=site, birth_date=dt.date(1950, 1, 1), sex="female")
    rows = {}
    for code, value, unit in (("9279-1", 24, "/min"), ("8480-6", 95, "mm[Hg]"), ("9269-2", gcs, "{score}")):
        rows[code] = ObservationFactory(patient=patient, code=code, value_quantity=value, value_unit=unit,
                                        effective_at=now - 2 * HOUR)
    return patient, rows, now


@pytest.mark.django_db
def test_the_sepsis_screen_fires_for_a_stored_patient_from_the_risk_job(site_a, starter_active):
    patient, rows, now = _acute_patient(site_a, gcs=14)
    summary = patients_evaluate([patient.pk], as_of=now, compute_risk=True)
    qsofa = RiskAssessment.objects.get(patient=patient, calculator="qsofa")
    assert qsofa.status == "computed" and qsofa.value == 3
    assert qsofa.inputs["altered_mentation"]["source"] == f"Observation:{rows['9269-2'].pk}"
    assert summary.fired >= 1
    rec = Recommendation.objects.get(patient=patient, rule__slug="sepsis-screen", closed_at__isnull=True)
    assert rec.severity == "critical" and "qSOFA 3 points" in rec.summary
    held = [e for e in rec.trace if e.get("fact") == "risk:qsofa"]
    assert held and held[0]["held"] and held[0]["source"] == f"RiskAssessment:{qsofa.pk}"


@pytest.mark.django_db
def test_a_gcs_of_15_keeps_the_stored_patient_below_the_sepsis_screen(site_a, starter_active):
    patient, _, now = _acute_patient(site_a, gcs=15)
    ObservationFactory(patient=patient, code="9279-1", value_quantity=18, value_unit="/min",
                       effective_at=now - HOUR)  # the latest respiratory rate: below 22
    patients_evaluate([patient.pk], as_of=now, compute_risk=True)
    qsofa = RiskAssessment.objects.get(patient=patient, calculator="qsofa")
    assert qsofa.value == 1 and qsofa.inputs["altered_mentation"]["value"] is False
    assert not Recommendation.objects.filter(patient=patient, rule__slug="sepsis-screen").exists()
