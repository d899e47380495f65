"""CDS Hooks request rates: a trusted client over its rate gets 429 in the error shape."""

from __future__ import annotations

from typing import Any

import pytest

from cdshooks.models import TrustedClient
from tests.api.test_throttling import is_throttled, set_rates

from .conftest import BASE, make_token

pytestmark = pytest.mark.django_db


def test_a_cds_hooks_client_over_the_rate_gets_429_in_the_same_shape(settings, client, trusted, rsa_key):
    set_rates(settings, **{"cds-hooks": "2/minute"})

    def discover() -> Any:
        token = make_token(rsa_key, aud=f"{BASE}/cds-services")
        return client.get("/cds-services", HTTP_AUTHORIZATION=f"Bearer {token}")

    assert discover().status_code == 200 and discover().status_code == 200
    is_throttled(discover())
    # another trusted client has its own count
    other = TrustedClient.objects.create(name="Other EHR", issuer="https://other.example.org", jwks=trusted.jwks)
    token = make_token(rsa_key, aud=f"{BASE}/cds-services", iss=other.issuer)
    assert client.get("/cds-services", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200
