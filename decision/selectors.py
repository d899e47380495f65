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


def rule_statistics(rule_id: int) -> dict[str, Any]:
    """The numbers that tell an admin whether a rule causes alert fatigue: recommendations by
    status, overrides by reason, and the override rate per ISO week (overrides / responses)."""
    from django.db.models import Count
    from django.db.models.functions import TruncWeek

    from .models import RecommendationAction

    by_status = dict(Recommendation.objects.filter(rule_id=rule_id, shadow=False).values_list("status")
                     .annotate(n=Count("pk")).values_list("status", "n"))
    actions = RecommendationAction.objects.filter(rule_id=rule_id)
    by_reason = {code or "(none)": n for code, n in actions.filter(action=RecommendationAction.Action.OVERRIDE)
                 .values_list("reason_code").annotate(n=Count("pk")).values_list("reason_code", "n")}
    weeks: dict[str, dict[str, int]] = {}
    for week, action, n in (actions.annotate(week=TruncWeek("at")).values_list("week", "action")
                            .annotate(n=Count("pk")).values_list("week", "action", "n").order_by("week")):
        weeks.setdefault(week.date().isoformat(), {})[action] = n
    rate = [{"week": week, "responses": sum(counts.values()),
             "override_rate": counts.get(RecommendationAction.Action.OVERRIDE, 0) / sum(counts.values())}
            for week, counts in weeks.items()]
    return {"fired": sum(by_status.values()), "by_status": by_status,
            "accepted": by_status.get(Recommendation.Status.ACCEPTED, 0),
            "overridden": by_status.get(Recommendation.Status.OVERRIDDEN, 0), "overrides_by_reason": by_reason,
            "override_rate_by_week": rate}
