"""The risk panel of the patient page: an HTMX fragment with each current assessment, its gauge,
what contributed to it, the inputs it used (with their dates and where they came from), what was
missing, and its history. Access goes through ``patient_get_for_user`` (another site's patient
is a 404); every render shows clinical results, so every render writes an audit row."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.dateparse import parse_datetime
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from cdss.audit import audit_record
from patients.selectors import patient_get_for_user

from .calculators import all_calculators
from .calculators.cardiovascular import PCE_CATEGORIES
from .models import RiskAssessment
from .selectors import risk_assessment_history, risk_assessment_latest_list

# Category bands of the percentage risks that have them: (lower bound %, category), highest
# first, as each calculator's source defines them. Framingham 2008 and PREVENT total CVD / heart
# failure define none, so their bar has no bands.
PERCENT_BANDS: dict[str, tuple[tuple[float, str], ...]] = {
    "pce_ascvd_10y": PCE_CATEGORIES,  # Grundy 2019 (2018 AHA/ACC cholesterol guideline)
    # 2026 ACC/AHA dyslipidemia guideline, PREVENT-ASCVD (risk.calculators.prevent.ascvd_category)
    "prevent_ascvd_10y": ((10.0, "high"), (5.0, "intermediate"), (3.0, "borderline"), (0.0, "low")),
}
# The highest score of each points score, from its source, so the bar can show how far along the
# scale a patient is. MELD(Na) and MELD 3.0 are bounded 6-40 by OPTN policy 9.1.D.
POINTS_MAX: dict[str, float] = {
    "cha2ds2_vasc": 9,  # Lip 2010
    "has_bled": 9,  # Pisters 2010
    "qsofa": 3,  # Singer 2016 (Sepsis-3)
    "news2": 20,  # Royal College of Physicians 2017: seven parameters, 3 + 3 + 2 + 3 + 3 + 3 + 3
    "curb65": 5,  # Lim 2003
    "wells_pe": 12.5,  # Wells 2000
    "findrisc": 26,  # Lindstrom 2003, the 0-26 form
    "meld_na": 40,
    "meld_3": 40,
}
# How alarming a category is, for the badge's colour only (the word is always shown).
CATEGORY_LEVEL: dict[str, str] = {
    **dict.fromkeys(("low", "G1", "G2", "PE unlikely"), "low"),
    **dict.fromkeys(
        ("borderline", "intermediate", "moderate", "slightly elevated", "low-medium", "medium", "G3a", "G3b"), "mid"
    ),
    **dict.fromkeys(("high", "very high", "G4", "G5", "PE likely"), "high"),
}
# Input names whose plain form is not just the name with spaces.
LABELS: dict[str, str] = {
    "hdl_cholesterol": "HDL cholesterol",
    "non_hdl_cholesterol": "non-HDL cholesterol",
    "systolic_bp": "systolic BP",
    "diastolic_bp": "diastolic BP",
    "bp_treated": "BP treated",
    "egfr": "eGFR",
    "bmi": "BMI",
    "spo2": "SpO2",
    "spo2_scale": "SpO2 scale",
    "inr": "INR",
    "bun": "BUN",
    "group_mean": "cohort mean (offset)",
}
# Where an input came from: the kind of record row (its id is for the audit trail, not the page).
SOURCE_KINDS: dict[str, str] = {
    "Observation": "Observation",
    "Condition": "Problem list",
    "MedicationRequest": "Medication list",
}


# Trained models shown beside the calculators (risk.services.MODEL_CALCULATOR).
MODEL_TITLES = {"heart_disease_model": "Coronary disease probability, trained model (UCI Cleveland; referral population)"}

def label(name: str) -> str:
    return LABELS.get(name, name.replace("_", " "))


def source_label(source: str) -> str:
    """ "Observation:123" -> "Observation"; "Patient.birthDate" -> "Patient record"; a sentence
    such as "no matching active condition" stays as it is."""
    kind, sep, _ = source.partition(":")
    if sep and kind in SOURCE_KINDS:
        return SOURCE_KINDS[kind]
    if source.startswith("Patient"):
        return "Patient record"
    return source


def value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return f"{value:g}"
    if value is None:
        return "—"
    return str(value).replace("_", " ")


def result_text(value: float, unit: str) -> str:
    return f"{value:.1f}" if unit == "%" else f"{value:g}"


@dataclass(frozen=True)
class Band:
    name: str
    lower: float  # in the result's unit
    upper: float
    left: float  # percent of the bar's width
    width: float
    tone: int  # 0 (the lowest band, green) .. 3 (the highest, red), for the colour only


@dataclass(frozen=True)
class Gauge:
    """A horizontal bar: ``position`` (percent of the width) marks the value on ``0..maximum``."""

    maximum: float
    position: float
    bands: tuple[Band, ...] = ()


def gauge_for(assessment: RiskAssessment) -> Gauge | None:
    """Percentage risks on 0-100 (with category bands where the source has them), points scores
    against their maximum where it is known; anything else (eGFR) is shown as the number alone."""
    value = assessment.value
    if value is None:
        return None
    if assessment.unit == "%":
        maximum = 100.0
        bounds = PERCENT_BANDS.get(assessment.calculator, ())
        bands = []
        upper = maximum
        for rank, (lower, name) in enumerate(bounds):  # highest first
            tone = round(3 * (len(bounds) - 1 - rank) / max(len(bounds) - 1, 1))
            bands.append(Band(name, lower, upper, lower / maximum * 100, (upper - lower) / maximum * 100, tone))
            upper = lower
        return Gauge(maximum, _clamp(value / maximum * 100), tuple(reversed(bands)))
    if assessment.unit == "points" and assessment.calculator in POINTS_MAX:
        maximum = POINTS_MAX[assessment.calculator]
        return Gauge(maximum, _clamp(value / maximum * 100))
    return None


def _clamp(percent: float) -> float:
    return round(min(max(percent, 0.0), 100.0), 2)


@dataclass(frozen=True)
class InputRow:
    name: str
    value: str
    unit: str
    at: dt.datetime | None
    source: str


@dataclass(frozen=True)
class AssessmentCard:
    assessment: RiskAssessment
    title: str
    value: str
    level: str
    gauge: Gauge | None
    inputs: tuple[InputRow, ...]
    missing: tuple[str, ...]
    problems: tuple[tuple[str, str], ...]
    has_contributions: bool
    has_history: bool


def _input_rows(inputs: dict[str, Any], order: dict[str, int]) -> tuple[InputRow, ...]:
    """The inputs in the calculator's order of parameters (PostgreSQL's jsonb keeps no key order)."""
    rows = []
    for name, item in sorted(inputs.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])):
        item = item if isinstance(item, dict) else {"value": item}
        at = parse_datetime(item["at"]) if isinstance(item.get("at"), str) else None
        rows.append(
            InputRow(
                label(name),
                value_text(item.get("value")),
                str(item.get("unit", "")),
                at,
                # a derived input says how it was read ("Glasgow Coma Scale 14 < 15: altered")
                source_label(str(item.get("source", ""))) + (f" ({item['note']})" if item.get("note") else ""),
            )
        )
    return tuple(rows)


def risk_panel_context(patient: Any) -> dict[str, Any]:
    """The cards and the charts' data (for ``json_script``): two queries, whatever the number of
    assessments."""
    calculators = {c.name: c for c in all_calculators()}
    latest = risk_assessment_latest_list(patient=patient)
    history = risk_assessment_history(patient=patient)
    cards: list[AssessmentCard] = []
    charts: dict[str, dict[str, Any]] = {}
    for row in latest:
        calculator = calculators.get(row.calculator)
        order = {p.name: i for i, p in enumerate(calculator.params)} if calculator else {}
        computed = row.status == RiskAssessment.Status.COMPUTED and row.value is not None
        contributions = row.contributions if computed and isinstance(row.contributions, dict) else {}
        points = history.get(row.calculator, [])
        chart: dict[str, Any] = {"unit": row.unit}
        if contributions:
            ordered = sorted(contributions.items(), key=lambda kv: kv[1])
            chart["contributions"] = {
                "names": [label(k) for k, _ in ordered],
                "values": [v for _, v in ordered],
                "scale": "points" if row.unit == "points" else "equation terms",
            }
        if len(points) >= 2:
            chart["history"] = {"x": [at.isoformat() for at, _ in points], "y": [v for _, v in points]}
        if len(chart) > 1:
            charts[row.calculator] = chart
        cards.append(
            AssessmentCard(
                assessment=row,
                title=calculator.title if calculator else MODEL_TITLES.get(row.calculator, row.calculator),
                value=result_text(row.value, row.unit) if computed and row.value is not None else "",
                level=CATEGORY_LEVEL.get(row.category, ""),
                gauge=gauge_for(row) if computed else None,
                inputs=_input_rows(row.inputs if isinstance(row.inputs, dict) else {}, order),
                missing=tuple(label(name) for name in row.missing or []),
                problems=tuple(
                    (label(name), str(message))
                    for name, message in sorted(
                        (row.problems or {}).items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])
                    )
                ),
                has_contributions="contributions" in chart,
                has_history="history" in chart,
            )
        )
    return {
        "computed": [card for card in cards if card.value],
        "incomplete": [card for card in cards if not card.value],
        "charts": charts,
    }


@never_cache
@require_GET
@transaction.atomic
def patient_risk(request: HttpRequest, external_id: uuid.UUID) -> HttpResponse:
    """GET: the risk panel (a fragment the patient page loads, and reloads on ``risk-updated``)."""
    patient = patient_get_for_user(request.user, external_id)
    context = {"patient": patient, **risk_panel_context(patient)}
    audit_record(user=request.user, action="view", target="risk-panel", patient=patient, request=request)
    return render(request, "risk/_risk_panel.html", context)
