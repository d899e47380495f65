"""Authenticating the CDS client: the JWT of CDS Hooks 2.0.1, "Security and Safety / Trusting CDS
Clients".

Every call carries ``Authorization: Bearer <JWT>``, signed by the client with an asymmetric key:
header ``alg`` (RS/PS/ES 256-512; ``none`` and HMAC are refused, as the specification requires),
``kid`` (a key of the client's JWKS) and ``typ`` "JWT"; claims ``iss`` (an allowlisted
``TrustedClient``), ``aud`` (exactly the URL called), ``exp``, ``iat`` and ``jti`` (each token
is accepted once: its ``jti`` is stored until it expires). A ``jku`` in the header must be the
client's recorded one; keys are never fetched at run time (there is no network): the client's
JWKS is stored in the admin.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from typing import Any

import jwt
from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.utils import timezone

from .models import TrustedClient, UsedToken

ALLOWED_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"})
KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC"}
LEEWAY_SECONDS = 30
PURGE_EVERY = 50
MAX_LIFETIME = dt.timedelta(hours=1)  # a longer-lived token is refused (the spec suggests 5 minutes)


class AuthError(Exception):
    """401: the message says what is wrong with the token (never its contents)."""


@dataclass
class Caller:
    client: TrustedClient | None  # None when JWT checking is switched off (local testing)
    issuer: str = ""


def jwt_required() -> bool:
    return bool(getattr(settings, "CDS_HOOKS_REQUIRE_JWT", True))


def endpoint_url(request: HttpRequest) -> str:
    """The URL called, as the token's ``aud`` must name it (CDS_HOOKS_BASE_URL when set, for a
    service behind a proxy)."""
    base = str(getattr(settings, "CDS_HOOKS_BASE_URL", "") or "").rstrip("/")
    return f"{base}{request.path}" if base else request.build_absolute_uri(request.path)


def base_url(request: HttpRequest) -> str:
    base = str(getattr(settings, "CDS_HOOKS_BASE_URL", "") or "").rstrip("/")
    return base or request.build_absolute_uri("/").rstrip("/")


def validate_jwks(jwks: Any) -> list[str]:
    """Problems with a stored JWKS (for the admin): asymmetric public keys with a kid."""
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list) or not jwks["keys"]:
        return ['the JWKS must be an object {"keys": [...]} with at least one key']
    problems = []
    kids = set()
    for i, key in enumerate(jwks["keys"]):
        if not isinstance(key, dict):
            problems.append(f"keys[{i}] must be an object")
            continue
        if key.get("kty") not in ("RSA", "EC"):
            problems.append(f"keys[{i}]: kty {key.get('kty')!r} is not RSA or EC (symmetric keys are refused)")
        if not key.get("kid"):
            problems.append(f"keys[{i}]: kid is required")
        elif key["kid"] in kids:
            problems.append(f"keys[{i}]: kid {key['kid']!r} appears twice")
        kids.add(key.get("kid"))
        if "d" in key:
            problems.append(f"keys[{i}] holds a private key: store the public key only")
        try:
            jwt.PyJWK(key)
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError) as exc:
            problems.append(f"keys[{i}] cannot be read ({exc})")
    return problems


def _key_for(client: TrustedClient, kid: str, alg: str) -> Any:
    keys = (client.jwks or {}).get("keys") if isinstance(client.jwks, dict) else None
    for key in keys or []:
        if isinstance(key, dict) and key.get("kid") == kid:
            if key.get("kty") != KEY_TYPES[alg[:2]]:
                raise AuthError(f"key {kid!r} is a {key.get('kty')} key; {alg} needs {KEY_TYPES[alg[:2]]}")
            try:
                return jwt.PyJWK(key, algorithm=alg).key
            except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
                raise AuthError(f"key {kid!r} of the issuer cannot be used with {alg}") from None
    raise AuthError(f"unknown kid {kid!r} for this issuer (not in its JWKS)")


def authenticate(request: HttpRequest) -> Caller:
    """The calling client, or AuthError. With CDS_HOOKS_REQUIRE_JWT off, an anonymous caller
    (a token, if sent, is still checked so tests see the same behaviour)."""
    header = request.headers.get("Authorization", "")
    if not header:
        if not jwt_required():
            return Caller(client=None)
        raise AuthError("a bearer token is required (Authorization: Bearer <JWT>)")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("the Authorization header must be 'Bearer <JWT>'")
    token = token.strip()
    try:
        head = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise AuthError("the bearer token is not a well-formed JWT") from None
    alg = head.get("alg")
    if alg not in ALLOWED_ALGORITHMS:
        raise AuthError(f"algorithm {alg!r} is not accepted: use an asymmetric algorithm "
                        f"({', '.join(sorted(ALLOWED_ALGORITHMS))}); 'none' and HMAC are refused")
    if head.get("typ") not in (None, "JWT"):
        raise AuthError("the JWT header's typ must be 'JWT'")
    kid = head.get("kid")
    if not isinstance(kid, str) or not kid:
        raise AuthError("the JWT header must name its key (kid)")
    issuer = unverified.get("iss")
    if not isinstance(issuer, str) or not issuer:
        raise AuthError("the token has no issuer (iss)")
    client = TrustedClient.objects.filter(issuer=issuer, active=True).first()
    if client is None:
        raise AuthError("the issuer is not on this service's allowlist")
    jku = head.get("jku")
    if jku is not None and jku != client.jku:
        raise AuthError("the header's jku is not the one recorded for this issuer")
    key = _key_for(client, kid, str(alg))
    audience = endpoint_url(request)
    try:
        claims = jwt.decode(
            token, key, algorithms=[str(alg)], audience=[audience, audience.rstrip("/") + "/"], issuer=issuer,
            leeway=LEEWAY_SECONDS, options={"require": ["iss", "aud", "exp", "iat", "jti"]},
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("the token has expired (exp)") from None
    except jwt.InvalidAudienceError:
        raise AuthError(f"the token's audience (aud) must be the URL called: {audience}") from None
    except jwt.MissingRequiredClaimError as exc:
        raise AuthError(f"the token lacks the required claim {exc.claim!r}") from None
    except jwt.InvalidSignatureError:
        raise AuthError("the token's signature does not verify with the issuer's key") from None
    except jwt.ImmatureSignatureError:
        raise AuthError("the token is not valid yet (iat or nbf in the future)") from None
    except jwt.PyJWTError as exc:
        raise AuthError(f"the token is not valid ({type(exc).__name__})") from None
    expires = dt.datetime.fromtimestamp(int(claims["exp"]), tz=dt.UTC)
    issued = dt.datetime.fromtimestamp(int(claims["iat"]), tz=dt.UTC)
    if expires - issued > MAX_LIFETIME:
        raise AuthError("the token lives longer than an hour (exp - iat); issue short-lived tokens")
    jti = str(claims["jti"])
    if not jti or len(jti) > 255:
        raise AuthError("the token's jti must be 1-255 characters")
    now = timezone.now()
    try:
        with transaction.atomic():
            if secrets.randbelow(PURGE_EVERY) == 0:  # expired ids are purged now and then, not on every call
                UsedToken.objects.filter(expires_at__lt=now - dt.timedelta(seconds=LEEWAY_SECONDS)).delete()
            UsedToken.objects.create(issuer=issuer, jti=jti,
                                     expires_at=expires + dt.timedelta(seconds=LEEWAY_SECONDS))
    except IntegrityError:
        raise AuthError("the token was already used (jti replay)") from None
    return Caller(client=client, issuer=issuer)
