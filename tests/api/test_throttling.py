"""Request rates (cdss.throttling): over its rate, an API user and a CDS Hooks client get 429 in
the project's error shape with Retry-After; the rates come from the settings."""

from __future__ import annotations

from typing import Any

import pytest

from tests.factories import clinician_of

from .conftest import token_client

pytestmark = pytest.mark.django_db


def set_rates(settings: Any, **rates: str | None) -> None:
    current = settings.REST_FRAMEWORK
    settings.REST_FRAMEWORK = {**current, "DEFAULT_THROTTLE_RATES": {**current["DEFAULT_THROTTLE_RATES"], **rates}}


def is_throttled(response: Any) -> None:
    assert response.status_code == 429, response.content
    error = response.json()["error"]
    assert error["status"] == 429 and error["code"] == "throttled" and error["message"]
    assert int(response["Retry-After"]) >= 1


def test_an_api_user_over_the_rate_gets_429_and_other_users_do_not(settings, api_a, site_a):
    set_rates(settings, api="3/minute")
    for _ in range(3):
        assert api_a.get("/api/patients/").status_code == 200
    is_throttled(api_a.get("/api/patients/"))
    other = token_client(clinician_of(site_a, username="another-clinician"))
    assert other.get("/api/patients/").status_code == 200


def test_the_import_scope_has_its_own_rate(settings, api_a, site_a):
    set_rates(settings, **{"api-import": "1/minute"})
    body = {"resourceType": "Bundle", "type": "collection", "entry": []}
    first = api_a.post(f"/api/fhir/?site={site_a.code}", body, format="json")
    assert first.status_code != 429
    is_throttled(api_a.post(f"/api/fhir/?site={site_a.code}", body, format="json"))
    assert api_a.get("/api/patients/").status_code == 200  # reads keep the general rate


def test_an_empty_rate_turns_the_limit_off(settings, api_a):
    set_rates(settings, api=None)
    assert all(api_a.get("/api/patients/").status_code == 200 for _ in range(5))
