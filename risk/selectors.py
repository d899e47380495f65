"""Reads of risk results (the caller has already checked access to the patient)."""

from __future__ import annotations

from typing import Any

from .models import RiskAssessment


def risk_assessment_latest_list(*, patient: Any) -> list[RiskAssessment]:
    """The current assessment per calculator (the latest row of each), one query."""
    rows = RiskAssessment.objects.filter(patient=patient).order_by("calculator", "-computed_at", "-pk")
    latest: dict[str, RiskAssessment] = {}
    for row in rows.defer("details"):
        latest.setdefault(row.calculator, row)
    return sorted(latest.values(), key=lambda r: (r.status != RiskAssessment.Status.COMPUTED, r.calculator))


def risk_assessment_history(*, patient: Any, limit_per_calculator: int = 50) -> dict[str, list[tuple[Any, float]]]:
    """(time, value) per calculator for computed assessments, oldest first, one query."""
    out: dict[str, list[tuple[Any, float]]] = {}
    rows = (RiskAssessment.objects.filter(patient=patient, status=RiskAssessment.Status.COMPUTED)
            .order_by("calculator", "as_of", "pk").values_list("calculator", "as_of", "value"))
    for calculator, at, value in rows:
        if value is not None:
            out.setdefault(calculator, []).append((at, value))
    return {k: v[-limit_per_calculator:] for k, v in out.items()}
