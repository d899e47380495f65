"""order-select and order-sign with the drug-allergy starter rule: a draft order of a class the
patient is allergic to, with the allergy prefetched or stored here."""

from __future__ import annotations

import pytest

from cdshooks.cards import response_problems
from tests.factories import AllergyFactory, PatientFactory

from .fhir import allergy, bundle, empty_prefetch, medication_request, order_select, patient_view

pytestmark = pytest.mark.django_db
AUGMENTIN = ("617993", "Amoxicillin 120 MG/ML / clavulanate potassium 8.58 MG/ML Oral Suspension")


def _cards(response) -> list[dict]:
    assert response.status_code == 200, response.content
    assert response_problems(response.json()) == []
    return response.json()["cards"]


def _prefetch(pid: str, *allergies: dict) -> dict:
    return {"observations": None, "medications": None, "genomics": None,
            "allergies": bundle(*allergies) if allergies else None}


def test_a_draft_penicillin_with_a_prefetched_penicillin_allergy_gets_a_card_naming_both(ehr, starter):
    pid = "allergic-1"
    draft = medication_request(pid, "draft-amox", *AUGMENTIN, status="draft")
    prefetch = _prefetch(pid, allergy(pid, "al-1", "91936005", "Allergy to penicillin"))
    cards = _cards(ehr.call("order-select", order_select(pid, [draft], prefetch=prefetch)))
    assert [c["source"]["topic"]["code"] for c in cards] == ["drug-allergy"]
    card = cards[0]
    assert card["indicator"] == "warning"
    assert card["summary"].startswith("Amoxicillin 120 MG/ML") and "(Allergy to penicillin)" in card["summary"]
    assert "AllergyIntolerance/al-1" in card["detail"] and "MedicationRequest/draft-amox" in card["detail"]
    assert card["suggestions"][0]["actions"] == [{"type": "delete",
                                                   "description": "Remove the draft order MedicationRequest/draft-amox",
                                                   "resourceId": "MedicationRequest/draft-amox"}]


def test_an_allergy_coded_in_rxnorm_and_an_order_by_name_match_too(ehr, starter):
    pid = "allergic-2"
    draft = medication_request(pid, "d-smx", "", "sulfamethoxazole 800 MG / trimethoprim 160 MG Oral Tablet",
                               status="draft")
    draft["medicationCodeableConcept"]["coding"][0].pop("code")
    prefetch = _prefetch(pid, allergy(pid, "al-2", "10180", "sulfamethoxazole",
                                      system="http://www.nlm.nih.gov/research/umls/rxnorm"))
    cards = _cards(ehr.call("order-sign", order_select(pid, [draft], prefetch=prefetch, hook="order-sign")))
    assert [c["source"]["topic"]["code"] for c in cards] == ["drug-allergy"]
    assert "sulfamethoxazole 800 MG" in cards[0]["summary"]


@pytest.mark.parametrize("verification,clinical", [("refuted", "active"), ("entered-in-error", "active"),
                                                   ("confirmed", "resolved")])
def test_a_refuted_or_resolved_allergy_does_not_fire(ehr, starter, verification, clinical):
    pid = "allergic-3"
    draft = medication_request(pid, "d1", *AUGMENTIN, status="draft")
    prefetch = _prefetch(pid, allergy(pid, "al-3", "91936005", "Allergy to penicillin", verification=verification,
                                      clinical=clinical))
    assert _cards(ehr.call("order-select", order_select(pid, [draft], prefetch=prefetch))) == []


def test_another_class_or_an_unselected_order_does_not_fire(ehr, starter):
    pid = "allergic-4"
    cephalexin = medication_request(pid, "d-ceph", "", "cephalexin 500 MG Oral Capsule", status="draft")
    amox = medication_request(pid, "d-amox", *AUGMENTIN, status="draft")
    prefetch = _prefetch(pid, allergy(pid, "al-4", "91936005", "Allergy to penicillin"))
    body = order_select(pid, [cephalexin, amox], selected=["MedicationRequest/d-ceph"], prefetch=prefetch)
    assert _cards(ehr.call("order-select", body)) == []  # the penicillin is a draft, but not the one selected
    body = order_select(pid, [cephalexin, amox], selected=["MedicationRequest/d-amox"], prefetch=prefetch)
    assert [c["source"]["topic"]["code"] for c in _cards(ehr.call("order-select", body))] == ["drug-allergy"]


def test_a_stored_patient_allergy_is_read_from_the_record(ehr, starter, site_a):
    stored = PatientFactory(site=site_a, fhir_id="stored-allergic")
    AllergyFactory(patient=stored)  # Allergy to penicillin, confirmed, active
    draft = medication_request("stored-allergic", "d1", *AUGMENTIN, status="draft")
    # The EHR sends no allergies key: the stored list is used.
    body = order_select("stored-allergic", [draft], prefetch={"observations": None, "genomics": None})
    cards = _cards(ehr.call("order-select", body))
    assert [c["source"]["topic"]["code"] for c in cards] == ["drug-allergy"]
    assert "Allergy to penicillin" in cards[0]["summary"]
    # An empty (null) allergies key from the EHR replaces the stored list.
    body = order_select("stored-allergic", [draft], prefetch={"observations": None, "genomics": None,
                                                              "allergies": None})
    assert _cards(ehr.call("order-select", body)) == []


def test_patient_view_flags_an_active_penicillin_with_the_allergy(ehr, starter):
    pid = "allergic-5"
    prefetch = empty_prefetch(pid, medications=bundle(medication_request(pid, "m1", *AUGMENTIN)),
                              allergies=bundle(allergy(pid, "al-5", "91936005", "Allergy to penicillin")))
    cards = _cards(ehr.call("patient-view", patient_view(pid, prefetch)))
    assert "drug-allergy" in [c["source"]["topic"]["code"] for c in cards]


LISINOPRIL = ("314076", "lisinopril 10 MG Oral Tablet")  # RxNorm clinical drug of ingredient 29046
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


def test_a_draft_order_of_the_ingredient_the_patient_is_allergic_to_gets_a_card_naming_both(ehr, starter):
    pid = "allergic-ingredient"
    draft = medication_request(pid, "d-lis", *LISINOPRIL, status="draft")
    prefetch = _prefetch(pid, allergy(pid, "al-lis", "29046", "lisinopril", system=RXNORM))
    cards = _cards(ehr.call("order-select", order_select(pid, [draft], prefetch=prefetch)))
    assert [c["source"]["topic"]["code"] for c in cards] == ["drug-allergy"]
    card = cards[0]
    assert card["summary"].startswith("lisinopril 10 MG Oral Tablet with a recorded allergy (lisinopril)")
    assert "AllergyIntolerance/al-lis" in card["detail"] and "MedicationRequest/d-lis" in card["detail"]
    assert card["suggestions"][0]["actions"][0]["resourceId"] == "MedicationRequest/d-lis"


def test_an_order_whose_text_lacks_the_ingredient_is_matched_through_the_is_a_table(ehr, starter):
    pid = "allergic-ingredient-code"
    draft = medication_request(pid, "d-brand", LISINOPRIL[0], "Zestril 10 mg tablet", status="draft")
    prefetch = _prefetch(pid, allergy(pid, "al-lis", "29046", "lisinopril", system=RXNORM))
    cards = _cards(ehr.call("order-select", order_select(pid, [draft], prefetch=prefetch)))
    assert [c["source"]["topic"]["code"] for c in cards] == ["drug-allergy"]
    assert "Zestril 10 mg tablet" in cards[0]["summary"]


def test_a_draft_of_another_ingredient_does_not_fire(ehr, starter):
    pid = "allergic-other"
    draft = medication_request(pid, "d-aml", "197361", "amlodipine 5 MG Oral Tablet", status="draft")
    prefetch = _prefetch(pid, allergy(pid, "al-lis", "29046", "lisinopril", system=RXNORM),
                         allergy(pid, "al-2", "", "Allergy to lisinopril"))
    assert _cards(ehr.call("order-select", order_select(pid, [draft], prefetch=prefetch))) == []
