"""One error shape everywhere, and a schema that validates with no warnings."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from rest_framework.exceptions import Throttled

from cdss.api_errors import exception_handler

pytestmark = pytest.mark.django_db


def _shape(response, status: int, code: str) -> dict:
    assert response.status_code == status
    assert response["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert error["status"] == status and error["code"] == code and error["message"]
    return error


def test_an_unknown_api_address_is_a_json_404_and_401_for_an_anonymous_caller(client, api_a):
    _shape(api_a.get("/api/nothing-here/"), 404, "not_found")
    _shape(api_a.put("/api/nothing-here/"), 404, "not_found")
    _shape(api_a.get("/api/patients/not-a-uuid/"), 404, "not_found")
    _shape(client.get("/api/patients/not-a-uuid/"), 401, "not_authenticated")


def test_a_wrong_method_is_a_405(api_a):
    _shape(api_a.delete("/api/patients/"), 405, "method_not_allowed")


def test_a_wrong_media_type_is_a_415(api_a, patient_a):
    response = api_a.post(f"/api/patients/{patient_a.external_id}/jobs/", b"<x/>", content_type="application/xml")
    _shape(response, 415, "unsupported_media_type")


def test_bad_json_is_a_400(api_a, patient_a):
    response = api_a.post(f"/api/patients/{patient_a.external_id}/jobs/", b"{", content_type="application/json")
    _shape(response, 400, "parse_error")


def test_a_bad_token_is_a_401(client):
    _shape(client.get("/api/patients/", HTTP_AUTHORIZATION="Token nope"), 401, "authentication_failed")


def test_throttling_answers_in_the_same_shape():
    response = exception_handler(Throttled(wait=3), {})
    assert response is not None and response.status_code == 429
    assert response.data["error"]["code"] == "throttled" and response["Retry-After"] == "3"


def test_the_schema_validates_with_no_warnings(tmp_path):
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    text = out.read_text()
    assert "/api/patients/{external_id}/$everything:" in text
    assert "/api/recommendations/{external_id}/feedback/:" in text and "/api/jobs/{external_id}/:" in text


def test_the_schema_and_docs_need_a_login(client, api_a):
    assert client.get("/api/schema/").status_code in (401, 403)
    assert api_a.get("/api/schema/").status_code == 200
