"""The services on the starter rules: a stored patient answered from the record and its stored
results, prefetch-only patients, order-select and order-sign on draft orders."""

from __future__ import annotations

import pytest
from django.utils import timezone

from cdshooks.cards import response_problems
from cdshooks.models import IssuedCard, TrustedClient
from cdss.models import AuditEvent
from decision.models import Recommendation
from decision.services import patients_evaluate
from risk.models import RiskAssessment
from tests.factories import ConditionFactory, PatientFactory

from .fhir import (
    EGFR,
    bundle,
    days_ago,
    empty_prefetch,
    genotype,
    medication_request,
    observation,
    order_select,
    patient,
    patient_view,
)

pytestmark = pytest.mark.django_db
AF_SNOMED = "49436004"


def _topics(response) -> list[str]:
    assert response.status_code == 200, response.content
    assert response_problems(response.json()) == []
    return [c["source"]["topic"]["code"] for c in response.json()["cards"]]


@pytest.fixture
def af_patient(site_a):
    """A man with atrial fibrillation, CHA2DS2-VASc 3 (stored by the risk job), no anticoagulant."""
    p = PatientFactory(site=site_a, fhir_id="af-1", sex="male")
    ConditionFactory(patient=p, code=AF_SNOMED, display="Atrial fibrillation")
    now = timezone.now()
    for calculator, value in (("cha2ds2_vasc", 3.0), ("has_bled", 1.0)):
        RiskAssessment.objects.create(patient=p, calculator=calculator, calculator_version="1",
                                      status=RiskAssessment.Status.COMPUTED, value=value, unit="points",
                                      inputs_hash=f"h-{calculator}", as_of=now)
    return p


def test_a_stored_af_patient_without_anticoagulant_gets_the_card_from_the_record(ehr, starter_loaded, af_patient):
    response = ehr.call("patient-view", patient_view("af-1"))  # no prefetch: the record and its stored results
    assert _topics(response) == ["af-anticoagulation"]
    card = response.json()["cards"][0]
    assert card["indicator"] == "warning"
    assert "CHA2DS2-VASc 3 points" in card["summary"] and "HAS-BLED 1 points" in card["summary"]
    assert "`risk:cha2ds2_vasc` >= 2 points: **met**" in card["detail"]
    issued = IssuedCard.objects.get(uuid=card["uuid"])
    assert issued.patient == af_patient
    assert AuditEvent.objects.filter(patient=af_patient, action="cds-hooks").count() == 1


def test_a_prefetched_anticoagulant_replaces_the_stored_medications(ehr, starter, af_patient):
    apixaban = medication_request("af-1", "m1", "1364445", "apixaban 5 MG Oral Tablet")
    response = ehr.call("patient-view", patient_view("af-1", {"medications": bundle(apixaban)}))
    assert _topics(response) == []


def test_a_null_prefetch_key_for_a_stored_patient_overrides_the_record(ehr, starter, af_patient):
    response = ehr.call("patient-view", patient_view("af-1", {"conditions": None}))
    assert _topics(response) == []  # the EHR says: no active condition


def test_a_client_of_another_site_does_not_see_the_stored_patient(ehr, starter, af_patient, site_b):
    TrustedClient.objects.update(site=site_b)
    response = ehr.call("patient-view", patient_view("af-1"))
    assert response.status_code == 412  # not stored for this client, and nothing prefetched


def test_pgx_order_select_for_clopidogrel_with_a_cyp2c19_poor_metabolizer(ehr, starter):
    pid = "pgx-7"
    draft = medication_request(pid, "draft-1", "309362", "clopidogrel 75 MG Oral Tablet", status="draft")
    prefetch = {"observations": None, "medications": None, "allergies": None,
                "genomics": bundle(genotype(pid, "g1", "CYP2C19", "Poor metabolizer", "*2/*2"))}
    response = ehr.call("order-select", order_select(pid, [draft], prefetch=prefetch))
    assert _topics(response) == ["pgx-cyp2c19-clopidogrel"]
    card = response.json()["cards"][0]
    assert "CYP2C19 Poor metabolizer on clopidogrel" in card["summary"]
    assert card["suggestions"][0]["label"] == "Switch to prasugrel or ticagrelor"
    assert "MedicationRequest/draft-1" in card["detail"]
    assert IssuedCard.objects.get(uuid=card["uuid"]).patient is None


def test_order_select_with_a_normal_metabolizer_gives_no_card(ehr, starter):
    pid = "pgx-8"
    draft = medication_request(pid, "draft-1", "309362", "clopidogrel 75 MG Oral Tablet", status="draft")
    prefetch = {"observations": None, "medications": None, "allergies": None,
                "genomics": bundle(genotype(pid, "g1", "CYP2C19", "Normal metabolizer"))}
    assert _topics(ehr.call("order-select", order_select(pid, [draft], prefetch=prefetch))) == []


def test_order_select_reports_only_rules_about_the_selected_orders(ehr, starter):
    """Metformin already taken with eGFR 20 is patient-view's business; ordering clopidogrel
    (normal metabolizer) must not raise it."""
    pid = "p-9"
    prefetch = {"observations": bundle(observation(pid, "e1", EGFR, 20, "mL/min/{1.73_m2}", days_ago(5))),
                "medications": bundle(medication_request(pid, "m1", "860975", "metformin 500 MG Oral Tablet")),
                "genomics": None, "allergies": None}
    draft = medication_request(pid, "d1", "309362", "clopidogrel 75 MG Oral Tablet", status="draft")
    assert _topics(ehr.call("order-select", order_select(pid, [draft], prefetch=prefetch))) == []
    pv = ehr.call("patient-view", patient_view(pid, empty_prefetch(pid, **prefetch)))
    assert "metformin-egfr-30" in _topics(pv)


def test_order_sign_of_metformin_with_egfr_24_suggests_deleting_the_draft(ehr, starter):
    pid = "p-10"
    prefetch = {"observations": bundle(observation(pid, "e1", EGFR, 24, "mL/min/{1.73_m2}", days_ago(5))),
                "medications": None, "genomics": None, "allergies": None}
    draft = medication_request(pid, "d-met", "860975", "metformin 500 MG Oral Tablet", status="draft")
    response = ehr.call("order-sign", order_select(pid, [draft], prefetch=prefetch, hook="order-sign"))
    assert _topics(response) == ["metformin-egfr-30"]
    suggestion = response.json()["cards"][0]["suggestions"][0]
    assert suggestion["actions"] == [{"type": "delete", "description": "Remove the draft order MedicationRequest/d-met",
                                      "resourceId": "MedicationRequest/d-met"}]


def test_order_select_without_the_needed_prefetch_is_412(ehr, starter):
    draft = medication_request("p-11", "d1", "309362", "clopidogrel 75 MG Oral Tablet", status="draft")
    response = ehr.call("order-select", order_select("p-11", [draft], prefetch={"medications": None}))
    assert response.status_code == 412
    message = response.json()["error"]["message"]
    assert "observations" in message and "genomics" in message and "allergies" in message


def test_a_patient_only_in_the_prefetch_is_answered_and_nothing_is_stored_about_them(ehr, starter):
    pid = "visitor-1"
    prefetch = empty_prefetch(pid, patient=patient(pid, birth="1970-01-01"),
                              observations=bundle(observation(pid, "l1", "18262-6", 250, "mg/dL", days_ago(3))))
    assert _topics(ehr.call("patient-view", patient_view(pid, prefetch))) == ["statin-ldl-190"]
    card = IssuedCard.objects.get()
    assert card.patient is None and pid not in str(card.trace) + card.summary + card.detail


def test_shadow_rules_are_not_sent(ehr, starter):
    from decision.models import Rule

    Rule.objects.filter(slug="statin-ldl-190").update(shadow=True, updated_at=timezone.now())
    pid = "visitor-2"
    prefetch = empty_prefetch(pid, patient=patient(pid, birth="1970-01-01"),
                              observations=bundle(observation(pid, "l1", "18262-6", 250, "mg/dL", days_ago(3))))
    assert _topics(ehr.call("patient-view", patient_view(pid, prefetch))) == []


def test_the_card_links_to_the_stored_recommendation(ehr, starter, af_patient):
    patients_evaluate([af_patient.pk])
    rec = Recommendation.objects.get(patient=af_patient, status="active")
    card = ehr.call("patient-view", patient_view("af-1")).json()["cards"][0]
    assert IssuedCard.objects.get(uuid=card["uuid"]).recommendation == rec


def test_a_full_prefetch_for_a_stored_patient_still_uses_the_stored_risk_results(ehr, starter, af_patient):
    from .fhir import condition

    prefetch = empty_prefetch("af-1", conditions=bundle(condition("af-1", "c9", AF_SNOMED, "Atrial fibrillation")))
    assert _topics(ehr.call("patient-view", patient_view("af-1", prefetch))) == ["af-anticoagulation"]
    without_af = empty_prefetch("af-1")
    assert _topics(ehr.call("patient-view", patient_view("af-1", without_af))) == []
