from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin

from cdss.adminkit import PatientAuditMixin, ReadOnlyAdmin

from .auth import validate_jwks
from .models import CardFeedback, IssuedCard, TrustedClient


class TrustedClientForm(forms.ModelForm):
    class Meta:
        model = TrustedClient
        fields = ["name", "issuer", "jwks", "jku", "site", "active"]

    def clean_jwks(self) -> Any:
        jwks = self.cleaned_data.get("jwks")
        problems = validate_jwks(jwks)
        if problems:
            raise forms.ValidationError(problems)
        return jwks


@admin.register(TrustedClient)
class TrustedClientAdmin(admin.ModelAdmin):
    form = TrustedClientForm
    list_display = ["name", "issuer", "site", "active", "updated_at"]
    list_filter = ["active"]
    search_fields = ["name", "issuer"]


@admin.register(IssuedCard)
class IssuedCardAdmin(PatientAuditMixin, ReadOnlyAdmin):
    list_display = ["uuid", "service_id", "rule", "indicator", "issued_at"]
    list_filter = ["service_id", "indicator"]
    list_select_related = ["rule"]
    exclude = ["patient_ref_hash"]


@admin.register(CardFeedback)
class CardFeedbackAdmin(PatientAuditMixin, ReadOnlyAdmin):
    patient_path = "card.patient"
    list_display = ["card", "outcome", "reason_code", "outcome_timestamp", "received_at"]
    list_filter = ["outcome"]
