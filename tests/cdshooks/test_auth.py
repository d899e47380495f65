"""JWT authentication of the CDS client, with real RSA and EC keys (CDS Hooks 2.0.1 "Trusting CDS
Clients"), and the deploy check when it is switched off."""

from __future__ import annotations

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from cdshooks.auth import validate_jwks
from cdshooks.models import UsedToken

from .conftest import BASE, ISSUER, make_token, public_jwk
from .fhir import empty_prefetch, patient_view

pytestmark = pytest.mark.django_db
PATH = "/cds-services/patient-view"
AUD = BASE + PATH


def _call(client, token: str | None, path: str = PATH):
    extra = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token is not None else {}
    return client.post(path, data=patient_view("p1", empty_prefetch("p1")), content_type="application/json", **extra)


def _refused(response, words: str) -> None:
    assert response.status_code == 401, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid_token" and words in error["message"], error["message"]
    assert response["WWW-Authenticate"].startswith('Bearer error="invalid_token"')


def test_an_rs384_token_for_this_url_is_accepted(client, trusted, rsa_key):
    assert _call(client, make_token(rsa_key, aud=AUD)).status_code == 200


def test_an_es384_token_is_accepted(client, trusted, ec_key):
    assert _call(client, make_token(ec_key, aud=AUD, kid="ec-1", alg="ES384")).status_code == 200


def test_discovery_needs_a_token_for_its_own_url(client, trusted, rsa_key):
    _refused(client.get("/cds-services"), "bearer token is required")
    ok = client.get("/cds-services", HTTP_AUTHORIZATION=f"Bearer {make_token(rsa_key, aud=BASE + '/cds-services')}")
    assert ok.status_code == 200


def test_an_expired_token_is_refused(client, trusted, rsa_key):
    _refused(_call(client, make_token(rsa_key, aud=AUD, lifetime=-120)), "expired")


def test_a_token_for_another_service_url_is_refused(client, trusted, rsa_key):
    _refused(_call(client, make_token(rsa_key, aud=BASE + "/cds-services/order-select")), "audience (aud)")


def test_an_unknown_issuer_is_refused(client, trusted, rsa_key):
    _refused(_call(client, make_token(rsa_key, aud=AUD, iss="https://evil.example.org")), "not on this service's allow")


def test_an_inactive_client_is_refused(client, trusted, rsa_key):
    trusted.active = False
    trusted.save()
    _refused(_call(client, make_token(rsa_key, aud=AUD)), "allowlist")


def test_hs256_is_refused_even_with_the_right_claims(client, trusted):
    token = jwt.encode({"iss": ISSUER, "aud": AUD, "exp": 9999999999, "iat": 1, "jti": "x"}, "shared-secret-of-32-bytes-or-more!",
                       algorithm="HS256", headers={"kid": "rsa-1"})
    _refused(_call(client, token), "'HS256' is not accepted")


def test_alg_none_is_refused(client, trusted):
    token = jwt.encode({"iss": ISSUER, "aud": AUD, "exp": 9999999999, "iat": 1, "jti": "x"}, None, algorithm="none",
                       headers={"kid": "rsa-1"})
    _refused(_call(client, token), "'none' is not accepted")


def test_a_replayed_jti_is_refused(client, trusted, rsa_key):
    token = make_token(rsa_key, aud=AUD)
    assert _call(client, token).status_code == 200
    _refused(_call(client, token), "already used (jti replay)")
    assert UsedToken.objects.filter(issuer=ISSUER).count() == 1


def test_an_unknown_kid_is_refused(client, trusted, rsa_key):
    _refused(_call(client, make_token(rsa_key, aud=AUD, kid="rotated-away")), "unknown kid 'rotated-away'")


def test_a_key_of_the_wrong_type_for_the_algorithm_is_refused(client, trusted, rsa_key):
    _refused(_call(client, make_token(rsa_key, aud=AUD, kid="ec-1", alg="RS384")), "needs RSA")


def test_a_token_signed_by_another_key_is_refused(client, trusted):
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _refused(_call(client, make_token(stranger, aud=AUD)), "signature does not verify")


def test_a_token_without_jti_is_refused(client, trusted, rsa_key):
    token = make_token(rsa_key, aud=AUD)
    claims = jwt.decode(token, options={"verify_signature": False})
    del claims["jti"]
    _refused(_call(client, jwt.encode(claims, rsa_key, algorithm="RS384", headers={"kid": "rsa-1"})), "'jti'")


def test_a_long_lived_token_is_refused(client, trusted, rsa_key):
    _refused(_call(client, make_token(rsa_key, aud=AUD, lifetime=86400)), "longer than an hour")


def test_a_jku_other_than_the_recorded_one_is_refused(client, trusted, rsa_key):
    token = make_token(rsa_key, aud=AUD, headers={"jku": "https://evil.example.org/jwks.json"})
    _refused(_call(client, token), "jku")


def test_a_malformed_header_is_refused(client, trusted):
    _refused(client.post(PATH, data={}, content_type="application/json", HTTP_AUTHORIZATION="Basic abc"), "Bearer")
    _refused(_call(client, "not.a.jwt"), "not a well-formed JWT")


def test_with_jwt_switched_off_calls_need_no_token_and_deploy_check_warns(client, db, settings):
    settings.CDS_HOOKS_REQUIRE_JWT = False
    assert _call(client, None).status_code == 200
    with pytest.raises(SystemCheckError, match=r"cdshooks\.W001"):
        call_command("check", "--deploy", "--fail-level", "WARNING", "--tag", "security")


def test_the_deploy_check_is_quiet_when_jwt_is_required(settings):
    settings.CDS_HOOKS_REQUIRE_JWT = True
    from cdshooks.checks import cds_hooks_jwt_check

    assert cds_hooks_jwt_check() == []


def test_the_admin_refuses_symmetric_or_private_keys(rsa_key):
    assert validate_jwks({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "s"}]})[0].startswith("keys[0]: kty 'oct'")
    private = jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key, as_dict=True)
    assert any("private key" in p for p in validate_jwks({"keys": [{**private, "kid": "k"}]}))
    assert validate_jwks({"keys": [public_jwk(rsa_key, "k")]}) == []
    assert validate_jwks({}) != []
