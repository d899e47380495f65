"""The starter library: its test cases pass, loading is idempotent, and on the demo data the
rules fire for the expected patients for the right reasons."""

from __future__ import annotations

import datetime as dt
import io
import json

import pytest
from django.core.management import call_command
from django.utils import timezone

from decision.models import Recommendation, Rule, RuleVersion
from decision.starter import RULES
from patients.demo import demo_bundles
from patients.models import MedicationRequest, Observation, Patient

pytestmark = pytest.mark.django_db
SLUGS = {"statin-primary-prevention", "statin-ldl-190", "af-anticoagulation", "sepsis-screen", "metformin-egfr-30",
         "drug-allergy", "hba1c-9", "ckd-suspected", "pgx-cyp2c19-clopidogrel", "pgx-hla-b5701-abacavir", "pgx-slco1b1-simvastatin",
         "note-condition-not-on-problem-list", "imaging-pneumonia-unreported"}


def _load() -> str:
    out = io.StringIO()
    call_command("load_starter_rules", stdout=out)
    return out.getvalue()


def test_the_starter_library_loads_with_every_test_passing_and_loading_again_changes_nothing():
    assert "13 created, 13 new versions activated" in _load()
    assert set(Rule.objects.values_list("slug", flat=True)) == SLUGS
    active = RuleVersion.objects.filter(status="active")
    assert active.count() == 13 and all(v.tests_passed for v in active)
    assert all(v.citation_source and v.rule.test_cases.count() >= 2 for v in active)
    assert "0 new versions activated, 13 unchanged" in _load()
    assert RuleVersion.objects.count() == 13


def test_with_if_no_rules_the_library_loads_once_and_an_admins_edit_stays():
    out = io.StringIO()
    call_command("load_starter_rules", "--if-no-rules", stdout=out)
    assert "13 created, 13 new versions activated" in out.getvalue()
    active = RuleVersion.objects.get(rule__slug="hba1c-9", status="active")
    RuleVersion.objects.filter(pk=active.pk).update(summary_template="Edited in the admin: {hba1c}")
    out = io.StringIO()
    call_command("load_starter_rules", "--if-no-rules", stdout=out)
    assert "13 rules already defined: the starter library is not loaded again" in out.getvalue()
    assert RuleVersion.objects.get(pk=active.pk).summary_template == "Edited in the admin: {hba1c}"
    assert RuleVersion.objects.count() == 13
    assert "1 new versions activated, 12 unchanged" in _load()  # without it the library's text comes back


def test_every_starter_rule_cites_a_source_with_a_year_and_has_cases_both_ways():
    for spec in RULES:
        assert any(str(year) in spec["citation_source"] for year in range(2010, 2026)), spec["slug"]
        assert {c["expect"] for c in spec["tests"]} == {"fires", "does-not-fire"}, spec["slug"]


def _evaluate(*mrns: str) -> list[dict]:
    out = io.StringIO()
    call_command("evaluate_rules", "--patients", *(mrns or ("all",)), "--json", "--no-nlp", stdout=out)
    return [json.loads(line) for line in out.getvalue().splitlines()]


AS_OF = timezone.now().date()


@pytest.fixture
def demo(settings):
    settings.DEBUG = True
    call_command("demo_data", "--no-progress", "--patients", "12", f"--as-of={AS_OF.isoformat()}",
                 stdout=io.StringIO(), stderr=io.StringIO())
    _load()


def _showcase(index: int) -> Patient:
    """Demo patient ``index`` (0-4 are the showcase cases of patients/demo.py)."""
    mrn = demo_bundles(patients=index + 1, as_of=AS_OF)[index].mrn
    return Patient.objects.get(mrn=mrn)


def test_on_the_demo_the_clopidogrel_patient_with_cyp2c19_poor_metabolism_is_flagged(demo):
    fired = _evaluate()
    pgx = [f for f in fired if f["rule"] == "pgx-cyp2c19-clopidogrel"]
    # demo patient 1 (showcase): clopidogrel with CYP2C19 *2/*2
    showcase = _showcase(1)
    assert showcase.mrn in {f["patient"] for f in pgx}
    trace = next(f for f in pgx if f["patient"] == showcase.mrn)["trace"]
    assert trace[0]["held"] and trace[0]["source"].startswith("MedicationRequest:")
    assert trace[1]["value"] == "Poor metabolizer" and trace[1]["source"].startswith("GenomicResult:")
    assert trace[1]["explanation"]["diplotype"] == "*2/*2"
    # every fired rule's trace holds, and each object has the contract's keys
    for f in fired:
        assert set(f) >= {"patient", "rule", "version", "severity", "summary", "trace"}
    for f in (f for f in fired if f["rule"] == "statin-primary-prevention"):
        values = {t["name"]: t for t in f["trace"]}
        assert values["ascvd"]["value"] >= 7.5 and 70 <= values["ldl"]["value"] <= 189
        assert values["statins"]["held"] and 40 <= values["age"]["value"] <= 75


def test_on_the_demo_rules_follow_changes_to_the_record(demo):
    # demo patient 3 (showcase): atrial fibrillation on warfarin -> no anticoagulation alert
    af = _showcase(3)
    assert not [f for f in _evaluate(af.mrn) if f["rule"] == "af-anticoagulation"]
    MedicationRequest.objects.filter(patient=af, display__icontains="warfarin").update(status="stopped")
    fired = [f for f in _evaluate(af.mrn) if f["rule"] == "af-anticoagulation"]
    assert len(fired) == 1 and "HAS-BLED" in fired[0]["summary"]
    branch = next(t for t in fired[0]["trace"] if t["kind"] == "group" and t["held"])
    score = next(i for i in branch["items"] if i["fact"] == "risk:cha2ds2_vasc")
    assert score["value"] >= 3 and score["explanation"]["contributions"]  # woman: >= 3
    # demo patient 2 (showcase): CKD stage 3 on metformin; a new eGFR of 25 -> stop metformin
    ckd = _showcase(2)
    latest = Observation.objects.filter(patient=ckd, code="33914-3").order_by("-effective_at").first()
    assert latest is not None
    Observation.objects.create(patient=ckd, fhir_id="egfr-25", code="33914-3", code_system="http://loinc.org",
                               value_quantity=25, value_unit="mL/min/{1.73_m2}", status="final",
                               effective_at=timezone.now() - dt.timedelta(days=1))
    fired = [f for f in _evaluate(ckd.mrn) if f["rule"] == "metformin-egfr-30"]
    assert len(fired) == 1 and fired[0]["severity"] == "critical" and "eGFR 25" in fired[0]["summary"]
    assert Recommendation.objects.filter(patient=ckd, rule__slug="metformin-egfr-30", status="active").exists()


def test_on_the_demo_the_acute_visit_patient_gets_the_sepsis_screen_and_the_drug_allergy_cards(demo):
    from decision.load import fact_plan
    from decision.services import active_rules, evaluate_batch, plan_for_rules, recommendations_apply
    from risk.models import RiskAssessment
    from risk.services import risk_compute_for_patients

    # demo patient 4 (showcase): penicillin allergy; at the emergency visit 3 hours before midnight
    # of the load day, amoxicillin is ordered and RR 24, SBP 95, GCS 14, HR 112, 38.6 Cel, SpO2 93 %
    # on 2 L/min oxygen are recorded. Scored at that midnight, so the vital signs are 3 hours old.
    patient = _showcase(4)
    at = dt.datetime(AS_OF.year, AS_OF.month, AS_OF.day, tzinfo=dt.UTC)
    others = list(Patient.objects.exclude(pk=patient.pk).values_list("pk", flat=True))
    ids = [patient.pk, *others]
    risk_compute_for_patients(ids, as_of=at)
    scores = {a.calculator: a.value for a in RiskAssessment.objects.filter(patient=patient,
                                                                          calculator__in=("qsofa", "news2"))}
    assert scores == {"qsofa": 3, "news2": 14}
    plan = fact_plan()
    rules, sites = active_rules(value_sets=plan.value_sets)
    results = evaluate_batch(ids, rules, sites, as_of=at, plan=plan_for_rules(plan, rules))
    fired = {r.rule: r for r in results[patient.pk] if r.fired}
    assert "qSOFA 3 points" in fired["sepsis-screen"].summary and fired["sepsis-screen"].severity == "critical"
    assert "amoxicillin 500 MG Oral Capsule" in fired["drug-allergy"].summary
    assert "Allergy to penicillin" in fired["drug-allergy"].summary
    # the acute visit is the only one: no other demo patient screens positive
    assert [pk for pk in others if any(r.fired and r.rule == "sepsis-screen" for r in results[pk])] == []
    recommendations_apply(results, now=at)
    assert set(Recommendation.objects.filter(patient=patient, status="active",
                                             rule__slug__in=("sepsis-screen", "drug-allergy"))
               .values_list("rule__slug", flat=True)) == {"sepsis-screen", "drug-allergy"}
