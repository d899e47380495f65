"""CDS Hooks 2.0.1 service (HL7, https://cds-hooks.hl7.org/2.0/).

Endpoints: ``GET /cds-services`` (discovery: ``patient-view``, ``order-select``, ``order-sign``),
``POST /cds-services/{id}`` (cards), ``POST /cds-services/{id}/feedback``, and the card
explanation page ``/cds-services/cards/{uuid}`` (clinicians, logged in).

Setting up an EHR: in the admin, add a *trusted client* with the issuer (``iss``) its tokens carry
and its public keys (JWKS JSON; a ``jku`` is allowlisted but never fetched), optionally limited to
one site, whose patients are then matched by FHIR id. Environment: ``CDS_HOOKS_REQUIRE_JWT=false``
turns authentication off for local testing only (``check --deploy`` warns);
``CDS_HOOKS_BASE_URL`` (e.g. ``https://cds.example.org``) is the URL the tokens' ``aud`` and the
card links use behind a proxy. Limits: request bodies of 5 MiB (``CDS_HOOKS_MAX_BODY_BYTES``) and
5000 resources.
"""
