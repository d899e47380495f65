"""An EHR that calls the CDS services with real signed JWTs (RSA and EC keys made per run)."""

from __future__ import annotations

import io
import json
import time
import uuid
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.core.management import call_command

from cdshooks.models import TrustedClient
from decision.models import Rule, RuleVersion
from decision.services import VERSION_FIELDS, value_sets_import
from decision.starter import RULES, VALUE_SETS_FILE

ISSUER = "https://ehr.example.org"
BASE = "http://testserver"


@pytest.fixture(scope="session")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def ec_key():
    return ec.generate_private_key(ec.SECP384R1())


def public_jwk(private: Any, kid: str) -> dict[str, Any]:
    algo = jwt.algorithms.RSAAlgorithm if isinstance(private, rsa.RSAPrivateKey) else jwt.algorithms.ECAlgorithm
    jwk = algo.to_jwk(private.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "use": "sig"}


def make_token(private: Any, *, aud: str, kid: str = "rsa-1", alg: str = "RS384", iss: str = ISSUER,
               lifetime: int = 300, headers: dict[str, Any] | None = None, **claims: Any) -> str:
    now = int(time.time())
    payload = {"iss": iss, "aud": aud, "exp": now + lifetime, "iat": now, "jti": str(uuid.uuid4()), **claims}
    return jwt.encode(payload, private, algorithm=alg, headers={"kid": kid, "typ": "JWT", **(headers or {})})


@pytest.fixture
def trusted(db, rsa_key, ec_key):
    return TrustedClient.objects.create(
        name="Example EHR", issuer=ISSUER,
        jwks={"keys": [public_jwk(rsa_key, "rsa-1"), public_jwk(ec_key, "ec-1")]})


class Ehr:
    """Posts hook calls and feedback as a trusted client would."""

    def __init__(self, client: Any, key: Any) -> None:
        self.client, self.key = client, key

    def auth(self, path: str) -> dict[str, str]:
        return {"HTTP_AUTHORIZATION": f"Bearer {make_token(self.key, aud=BASE + path)}"}

    def discover(self) -> Any:
        return self.client.get("/cds-services", **self.auth("/cds-services"))

    def post(self, path: str, body: Any, **extra: Any) -> Any:
        data = body if isinstance(body, (str, bytes)) else json.dumps(body)
        return self.client.post(path, data=data, content_type=extra.pop("content_type", "application/json"),
                                **{**self.auth(path), **extra})

    def call(self, service: str, body: Any, **extra: Any) -> Any:
        return self.post(f"/cds-services/{service}", body, **extra)

    def feedback(self, service: str, body: Any) -> Any:
        return self.post(f"/cds-services/{service}/feedback", body)


@pytest.fixture
def ehr(client, trusted, rsa_key):
    return Ehr(client, rsa_key)


@pytest.fixture
def starter(db):
    """The starter library, active: its value sets and one active version per rule, written
    directly (the library's own test cases run in tests/decision; here they would cost 2 s a test)."""
    value_sets_import(json.loads(VALUE_SETS_FILE.read_text(encoding="utf-8")))
    for spec in RULES:
        rule = Rule.objects.create(slug=spec["slug"], title=spec["title"], category=spec["category"],
                                   description=spec.get("rationale", ""))
        fields = {name: spec[name] for name in VERSION_FIELDS if name in spec}
        RuleVersion.objects.create(rule=rule, number=1, status=RuleVersion.Status.ACTIVE, tests_passed=True, **fields)


@pytest.fixture
def starter_loaded(db):
    """The starter library through its management command (rules tested and activated)."""
    call_command("load_starter_rules", stdout=io.StringIO())
