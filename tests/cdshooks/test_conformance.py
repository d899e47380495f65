"""Conformance with CDS Hooks 2.0.1: discovery, the response rules (required fields, no null or
empty member, summary < 140, indicator values, selectionBehavior with suggestions, absolute
links), prefetch semantics (null = no data; a key left out = 412 unless the patient is stored)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from cdshooks.cards import response_problems
from cdshooks.models import IssuedCard

from .fhir import (
    EGFR,
    LDL,
    RXNORM,
    bundle,
    days_ago,
    empty_prefetch,
    genotype,
    medication_request,
    observation,
    patient_view,
)

pytestmark = pytest.mark.django_db
PID = "1288992"  # the specification's example patient


def _walk(node: Any, path: str = "") -> list[str]:
    """Paths of null or empty members anywhere in a document."""
    bad = []
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}"
            if value is None or value == "" or value == [] or value == {}:
                bad.append(where)
            bad += _walk(value, where)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            bad += _walk(value, f"{path}[{i}]")
    return bad


def test_discovery_lists_the_three_services_with_their_required_fields(ehr, starter):
    response = ehr.discover()
    assert response.status_code == 200
    services = {s["id"]: s for s in response.json()["services"]}
    assert set(services) == {"patient-view", "order-select", "order-sign"}
    for sid, service in services.items():
        assert service["hook"] == sid and service["description"] and service["title"]
        for template in service["prefetch"].values():
            assert "{{context.patientId}}" in template
    assert _walk(response.json()) == []
    assert "usageRequirements" not in services["patient-view"]
    # The templates ask for what the rules read: eGFR for renal dosing, genotypes for pgx rules.
    assert "33914-3" in services["order-select"]["prefetch"]["observations"]
    assert "genomics" in services["order-select"]["prefetch"]
    assert "conditions" in services["patient-view"]["prefetch"]


def test_discovery_with_no_active_rule_still_answers_services(ehr):
    body = ehr.discover().json()
    assert [s["id"] for s in body["services"]] == ["patient-view", "order-select", "order-sign"]
    assert _walk(body) == []


def test_the_spec_example_patient_with_metformin_and_egfr_24_gets_a_conformant_critical_card(ehr, starter):
    prefetch = empty_prefetch(
        PID,
        observations=bundle(observation(PID, "egfr-1", EGFR, 24, "mL/min/{1.73_m2}", days_ago(10))),
        medications=bundle(medication_request(PID, "med-42", "860975",
                                              "24 HR metformin hydrochloride 500 MG Extended Release Oral Tablet")),
    )
    response = ehr.call("patient-view", patient_view(PID, prefetch))
    assert response.status_code == 200, response.content
    body = response.json()
    assert response_problems(body) == []
    assert _walk(body) == []
    cards = body["cards"]
    assert len(cards) == 1
    card = cards[0]
    assert card["indicator"] == "critical" and len(card["summary"]) < 140
    assert "eGFR 24" in card["summary"]
    assert card["source"]["label"] and card["source"]["topic"]["code"] == "metformin-egfr-30"
    assert card["source"]["url"].startswith("https://")
    assert "metformin-egfr-30 v1" in card["detail"] and "Observation/egfr-1" not in card["summary"]
    assert "`observation:egfr` < 30" in card["detail"]
    assert all(r["display"] and r["system"] and r["code"] for r in card["overrideReasons"])
    assert card["selectionBehavior"] == "at-most-one" and card["suggestions"][0]["label"] == "Stop metformin"
    assert sum(s.get("isRecommended", False) for s in card["suggestions"]) <= 1
    link = card["links"][0]
    assert link["type"] == "absolute" and link["url"] == f"http://testserver/cds-services/cards/{card['uuid']}"
    issued = IssuedCard.objects.get(uuid=card["uuid"])
    assert issued.rule.slug == "metformin-egfr-30" and issued.patient is None
    assert PID not in issued.patient_ref_hash and len(issued.patient_ref_hash) == 64


def test_units_are_normalised_like_the_record_ldl_in_mmol_per_l(ehr, starter):
    # 5.2 mmol/L LDL-C = 201 mg/dL (x 38.67): statin-ldl-190 fires as it would on the stored record.
    prefetch = empty_prefetch(PID, observations=bundle(observation(PID, "ldl-1", LDL, 5.2, "mmol/L", days_ago(20))))
    prefetch["patient"]["birthDate"] = "1980-01-01"
    cards = ehr.call("patient-view", patient_view(PID, prefetch)).json()["cards"]
    assert [c["source"]["topic"]["code"] for c in cards] == ["statin-ldl-190"]
    assert "201" in cards[0]["summary"]


def test_a_null_prefetch_key_means_no_data_and_is_answered(ehr, starter):
    response = ehr.call("patient-view", patient_view(PID, empty_prefetch(PID)))
    assert response.status_code == 200
    assert response.json() == {"cards": []}


def test_a_key_left_out_for_a_patient_not_stored_here_is_412_naming_it(ehr, starter):
    prefetch = empty_prefetch(PID)
    del prefetch["medications"]
    response = ehr.call("patient-view", patient_view(PID, prefetch))
    assert response.status_code == 412
    error = response.json()["error"]
    assert error["code"] == "prefetch_required" and "medications" in error["message"]
    assert PID not in error["message"]


def test_no_prefetch_at_all_for_an_unknown_patient_is_412_even_with_a_fhir_server(ehr, starter):
    body = patient_view(PID, fhirServer="https://ehr.example.org/fhir",
                        fhirAuthorization={"access_token": "x", "token_type": "Bearer", "expires_in": 300,
                                           "scope": "user/Patient.read", "subject": "cdss"})
    response = ehr.call("patient-view", body)
    assert response.status_code == 412
    assert "does not query FHIR servers" in response.json()["error"]["message"]


def test_an_operation_outcome_in_place_of_a_key_counts_as_left_out(ehr, starter):
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "timeout"}]}
    response = ehr.call("patient-view", patient_view(PID, empty_prefetch(PID, conditions=outcome)))
    assert response.status_code == 412
    assert "OperationOutcome: conditions" in response.json()["error"]["message"]


def test_unknown_extension_members_are_ignored(ehr, starter):
    body = patient_view(PID, empty_prefetch(PID))
    body["extension"] = {"org.example.flag": True}
    body["context"]["encounterId"] = "89284"
    assert ehr.call("patient-view", body).status_code == 200


def test_every_card_of_every_service_is_conformant(ehr, starter):
    meds = bundle(medication_request(PID, "m1", "860975", "metformin 500 MG Oral Tablet"),
                  medication_request(PID, "m2", "309362", "clopidogrel 75 MG Oral Tablet"))
    prefetch = empty_prefetch(PID, medications=meds, genomics=bundle(genotype(PID, "g1", "CYP2C19", "Poor metabolizer")),
                              observations=bundle(observation(PID, "e1", EGFR, 22, "mL/min/{1.73_m2}", days_ago(3)),
                                                  observation(PID, "l1", LDL, 230, "mg/dL", days_ago(3))))
    prefetch["patient"]["birthDate"] = "1975-06-01"
    body = ehr.call("patient-view", patient_view(PID, prefetch)).json()
    assert {c["source"]["topic"]["code"] for c in body["cards"]} == {
        "metformin-egfr-30", "statin-ldl-190", "pgx-cyp2c19-clopidogrel"}
    assert response_problems(body) == []
    uuids = [c["uuid"] for c in body["cards"]]
    assert len(set(uuids)) == len(uuids) and all(uuid.UUID(u) for u in uuids)
    assert RXNORM  # the codes above are RxNorm clinical drugs
