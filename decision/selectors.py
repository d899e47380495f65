"""Reads of decision support, scoped to what a user may see."""

from __future__ import annotations

from typing import Any

from django.db.models import Exists, OuterRef, QuerySet
from django.utils import timezone

from patients.models import Patient, SiteMembership

from .models import SEVERITY_RANK, Recommendation, Severity, Snooze


def _specialties(user: Any, patient: Patient) -> set[str]:
    return {s.strip().lower() for s in SiteMembership.objects.filter(user=user, site_id=patient.site_id)
            .values_list("specialty", flat=True) if s.strip()}


def recommendations_for_patient(patient: Patient, *, user: Any) -> list[Recommendation]:
    """The active, shown recommendations for a patient the caller may already see (use
    ``patients.selectors.patient_get_for_user`` first): not shadow, not snoozed, and for a rule
    limited to specialties, only for users of those specialties at the patient's site. Ordered
    by severity (critical first), then most recent."""
    now = timezone.now()
    snoozed = Snooze.objects.filter(patient_id=OuterRef("patient_id"), rule_id=OuterRef("rule_id"), until__gt=now)
    recs = list(
        Recommendation.objects.filter(patient=patient, status=Recommendation.Status.ACTIVE, shadow=False)
        .exclude(Exists(snoozed))
        .select_related("rule", "rule_version")
    )
    if any(r.rule.specialties for r in recs):
        mine = _specialties(user, patient)
        recs = [r for r in recs if not r.rule.specialties or mine & {s.lower() for s in r.rule.specialties}]
    recs.sort(key=lambda r: (SEVERITY_RANK.get(Severity(r.severity), 9), -r.last_fired_at.timestamp()))
    return recs


def active_recommendations(patient_ids: Any = None) -> QuerySet[Recommendation]:
    """Active, shown, not snoozed (for worklist counts by severity)."""
    now = timezone.now()
    snoozed = Snooze.objects.filter(patient_id=OuterRef("patient_id"), rule_id=OuterRef("rule_id"), until__gt=now)
    qs = Recommendation.objects.filter(status=Recommendation.Status.ACTIVE, shadow=False).exclude(Exists(snoozed))
    if patient_ids is not None:
        qs = qs.filter(patient_id__in=patient_ids)
    return qs
