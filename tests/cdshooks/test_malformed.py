"""Malformed requests: each a clear 4xx with a JSON error naming the problem."""

from __future__ import annotations

import json

import pytest

from cdshooks.models import IssuedCard
from cdshooks.prefetch import MAX_RESOURCES

from .fhir import EGFR, bundle, days_ago, empty_prefetch, medication_request, observation, order_select, patient_view

pytestmark = pytest.mark.django_db
PID = "p-42"


def _error(response, status: int) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["status"] == status and error["message"]
    return error


def test_bad_json_is_400(ehr, starter):
    error = _error(ehr.call("patient-view", '{"hook": "patient-view", '), 400)
    assert error["code"] == "invalid_json" and "not valid JSON" in error["message"]


def test_a_json_array_is_400(ehr, starter):
    assert "JSON object" in _error(ehr.call("patient-view", "[1, 2]"), 400)["message"]


def test_the_wrong_hook_for_the_service_is_400(ehr, starter):
    body = patient_view(PID, empty_prefetch(PID))
    body["hook"] = "order-select"
    error = _error(ehr.call("patient-view", body), 400)
    assert error["code"] == "wrong_hook" and "'patient-view' hook, not 'order-select'" in error["message"]


def test_missing_context_is_400(ehr, starter):
    body = patient_view(PID, empty_prefetch(PID))
    del body["context"]
    assert "context is required (an object)" in _error(ehr.call("patient-view", body), 400)["details"]


def test_missing_patient_id_and_bad_user_id_are_named(ehr, starter):
    body = patient_view(PID, empty_prefetch(PID))
    body["context"] = {"userId": "someone"}
    details = _error(ehr.call("patient-view", body), 400)["details"]
    assert "context.patientId is required (a string)" in details
    assert "context.userId must be a reference like 'Practitioner/123'" in details


@pytest.mark.parametrize("instance", [None, "", "not-a-uuid", 12])
def test_missing_or_bad_hook_instance_is_400(ehr, starter, instance):
    body = patient_view(PID, empty_prefetch(PID))
    if instance is None:
        del body["hookInstance"]
    else:
        body["hookInstance"] = instance
    assert "hookInstance is required and must be a UUID" in _error(ehr.call("patient-view", body), 400)["details"]


def test_fhir_authorization_without_fhir_server_is_400(ehr, starter):
    body = patient_view(PID, empty_prefetch(PID), fhirAuthorization={"access_token": "x", "token_type": "Bearer"})
    assert any("cds-r-1" in d for d in _error(ehr.call("patient-view", body), 400)["details"])


def test_order_select_needs_selections_and_draft_orders(ehr, starter):
    body = order_select(PID, [medication_request(PID, "d1", "309362", "clopidogrel 75 MG Oral Tablet", status="draft")])
    body["context"].pop("draftOrders")
    body["context"]["selections"] = []
    details = _error(ehr.call("order-select", body), 400)["details"]
    assert any("draftOrders is required" in d for d in details)
    assert any("selections is required" in d for d in details)


def test_a_selection_not_among_the_draft_orders_is_400(ehr, starter):
    body = order_select(PID, [medication_request(PID, "d1", "309362", "clopidogrel 75 MG Oral Tablet", status="draft")],
                        selected=["MedicationRequest/elsewhere"])
    assert any("not in draftOrders" in d for d in _error(ehr.call("order-select", body), 400)["details"])


def test_a_body_over_the_byte_limit_is_413(ehr, starter, settings):
    settings.CDS_HOOKS_MAX_BODY_BYTES = 10_000
    obs = [observation(PID, f"o{i}", EGFR, 50, "mL/min/{1.73_m2}", days_ago(i)) for i in range(100)]
    response = ehr.call("patient-view", patient_view(PID, empty_prefetch(PID, observations=bundle(*obs))))
    assert "limit is 10000 bytes" in _error(response, 413)["message"]


def test_a_prefetch_over_the_resource_limit_is_413(ehr, starter):
    obs = [{"resourceType": "Observation", "id": f"o{i}"} for i in range(MAX_RESOURCES + 1)]
    response = ehr.call("patient-view", patient_view(PID, empty_prefetch(PID, observations=bundle(*obs))))
    assert f"the limit is {MAX_RESOURCES}" in _error(response, 413)["message"]
    assert not IssuedCard.objects.exists()


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_a_body_that_is_not_json_by_content_type_is_415(ehr, starter, content_type):
    response = ehr.call("patient-view", json.dumps(patient_view(PID, empty_prefetch(PID))), content_type=content_type)
    assert "application/json" in _error(response, 415)["message"]


def test_an_unknown_service_is_404(ehr, starter):
    assert _error(ehr.call("no-such-service", patient_view(PID, empty_prefetch(PID))), 404)["code"] == "unknown_service"


def test_get_on_a_service_is_405(ehr, client):
    response = client.get("/cds-services/patient-view", **ehr.auth("/cds-services/patient-view"))
    assert _error(response, 405)["code"] == "method_not_allowed"
    assert "POST" in response["Allow"]


def test_a_prefetch_value_that_is_not_a_resource_is_400(ehr, starter):
    response = ehr.call("patient-view", patient_view(PID, empty_prefetch(PID, conditions=["Condition/1"])))
    assert "prefetch.conditions must be a FHIR resource, a Bundle or null" in _error(response, 400)["details"]


def test_a_resource_the_mapping_refuses_is_400_with_its_location(ehr, starter):
    bad = observation(PID, "o1", EGFR, 20, "mL/min/{1.73_m2}", days_ago(1))
    del bad["valueQuantity"]["unit"], bad["valueQuantity"]["code"]
    details = _error(ehr.call("patient-view", patient_view(PID, empty_prefetch(PID, observations=bundle(bad)))),
                     400)["details"]
    assert details == ["prefetch.observations.entry[0]: Observation.valueQuantity has no unit (a UCUM 'code' or "
                       "'unit' is required)"]


def test_prefetched_data_of_another_patient_is_refused(ehr, starter):
    other = observation("someone-else", "o1", EGFR, 20, "mL/min/{1.73_m2}", days_ago(1))
    details = _error(ehr.call("patient-view", patient_view(PID, empty_prefetch(PID, observations=bundle(other)))),
                     400)["details"]
    assert details == ["prefetch.observations.entry[0]: Observation is about another patient than context.patientId"]


def test_feedback_errors_are_named(ehr, starter):
    assert _error(ehr.feedback("patient-view", {"feedback": []}), 400)["code"] == "invalid_feedback"
    body = {"feedback": [{"card": "not-a-uuid", "outcome": "ignored", "outcomeTimestamp": "yesterday"}]}
    details = _error(ehr.feedback("patient-view", body), 400)["details"]
    assert "feedback[0].card is required (the card's uuid)" in details
    assert "feedback[0].outcome must be accepted or overridden (cds-fb-1)" in details
    assert "feedback[0].outcomeTimestamp is required (ISO 8601 with a time zone)" in details
