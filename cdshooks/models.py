"""Models of the CDS Hooks 2.0.1 service (HL7 CDS Hooks, https://cds-hooks.hl7.org/2.0/).

- ``TrustedClient``: an EHR allowed to call the services: its JWT issuer (``iss``) and its public
  keys (JWKS, stored here: a ``jku`` is recorded for the allowlist but never fetched at run time).
- ``UsedToken``: the ``jti`` of every accepted token until it expires (replay protection).
- ``IssuedCard``: every card sent, with the rule version that made it, so feedback (which names
  only the card's uuid) reaches the same per-rule statistics as in-app feedback. A patient known
  here is linked; otherwise only a keyed hash of the EHR's patient id is kept.
- ``CardFeedback``: what the EHR reported for a card; unique on (card, outcome, time,
  suggestion), so the same feedback sent twice is stored once.
"""

from __future__ import annotations

import uuid

from django.db import models


class TrustedClient(models.Model):
    """An EHR (CDS client) whose signed JWTs are accepted."""

    external_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=200)
    issuer = models.CharField(
        max_length=500, unique=True, help_text="The JWT 'iss' the client signs with (exact match)."
    )
    jwks = models.JSONField(
        default=dict, blank=True,
        help_text='The client\'s public keys as a JWKS: {"keys": [{"kty": "RSA", "kid": ..., "n": ..., "e": ...}]}. '
                  "Only asymmetric keys (RSA, EC) are accepted.",
    )
    jku = models.URLField(
        max_length=500, blank=True,
        help_text="The JWKS URL the client names in its tokens (allowlisted, never fetched: paste its keys above).",
    )
    site = models.ForeignKey(
        "patients.Site", null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="Patients of this site are matched by FHIR id; none = any site (a unique match only).",
    )
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class UsedToken(models.Model):
    """A token id seen from an issuer; kept until the token expires."""

    issuer = models.CharField(max_length=500)
    jti = models.CharField(max_length=255)
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["issuer", "jti"], name="usedtoken_issuer_jti_unique")]
        indexes = [models.Index(fields=["expires_at"], name="usedtoken_expires")]

    def __str__(self) -> str:
        return f"{self.issuer} {self.jti}"


class IssuedCard(models.Model):
    """A card sent to an EHR (with its explanation, shown by the card's link)."""

    uuid = models.UUIDField(unique=True)
    service_id = models.CharField(max_length=64)
    hook = models.CharField(max_length=64)
    hook_instance = models.UUIDField()
    client = models.ForeignKey(TrustedClient, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    rule = models.ForeignKey("decision.Rule", on_delete=models.PROTECT, related_name="+")
    rule_version = models.ForeignKey("decision.RuleVersion", on_delete=models.PROTECT, related_name="+")
    patient = models.ForeignKey(
        "patients.Patient", null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="The stored patient, when the EHR's patient id matched one.",
    )
    patient_ref_hash = models.CharField(
        max_length=64, help_text="HMAC-SHA256 of the EHR's patient id (no identifier is stored)."
    )
    recommendation = models.ForeignKey(
        "decision.Recommendation", null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="The open in-app recommendation of the same rule for a stored patient.",
    )
    indicator = models.CharField(max_length=8)
    summary = models.CharField(max_length=140)
    detail = models.TextField(blank=True)
    trace = models.JSONField(default=list, blank=True)
    suggestions = models.JSONField(default=dict, blank=True, help_text="Suggestion uuid -> label.")
    issued_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-issued_at"]
        indexes = [
            models.Index(fields=["rule", "issued_at"], name="issuedcard_rule_at"),
            models.Index(fields=["hook_instance"], name="issuedcard_hook_instance"),
        ]

    def __str__(self) -> str:
        return f"{self.service_id} card {self.uuid}"


class CardFeedback(models.Model):
    """One feedback item of the EHR for a card (accepted or overridden)."""

    class Outcome(models.TextChoices):
        ACCEPTED = "accepted", "Accepted"
        OVERRIDDEN = "overridden", "Overridden"

    card = models.ForeignKey(IssuedCard, on_delete=models.PROTECT, related_name="feedback")
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    outcome_timestamp = models.DateTimeField()
    suggestion = models.CharField(
        max_length=64, blank=True, help_text="The accepted suggestion's uuid (one row per accepted suggestion)."
    )
    reason_system = models.CharField(max_length=500, blank=True)
    reason_code = models.CharField(max_length=100, blank=True)
    reason_display = models.CharField(max_length=300, blank=True)
    user_comment = models.TextField(blank=True)
    action = models.ForeignKey(
        "decision.RecommendationAction", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="The in-app action row it was recorded as (stored patients with a recommendation).",
    )
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-received_at"]
        constraints = [
            models.UniqueConstraint(fields=["card", "outcome", "outcome_timestamp", "suggestion"],
                                    name="cardfeedback_idempotent"),
        ]

    def __str__(self) -> str:
        return f"{self.outcome} {self.card_id}"
