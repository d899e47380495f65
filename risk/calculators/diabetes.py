"""FINDRISC, the Finnish Diabetes Risk Score (10-year risk of type 2 diabetes).

Source: Lindström J, Tuomilehto J. The Diabetes Risk Score: a practical tool to predict type 2 diabetes risk.
Diabetes Care 2003;26(3):725-731, with the points and risk bands as printed on the FINDRISC form (Type 2
Diabetes Risk Assessment Form, Finnish Diabetes Association; test designed by J Tuomilehto and J Lindström).
The 2003 paper's score has seven items (range 0-20); the form adds family history of diabetes (0/3/5 points),
giving the 0-26 scale whose bands (<7, 7-11, 12-14, 15-20, >20) are implemented here.

Units (canonical, see base.DIMENSIONS): age years, bmi kg/m2, waist cm (m and [in_i] accepted).
Valid ranges: the source gives cut points, not limits, so inputs are bounded by what is possible for an adult
(the form is a self-assessment for adults; the 2003 derivation cohort was aged 35-64): age 18-120 years,
bmi 10-80 kg/m2, waist 40-250 cm. Out-of-range input is rejected, never clamped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import register
from .base import SEX, Calculator, Param, Result, age, flag

FINDRISC_CITATION = (
    "Lindström J, Tuomilehto J. The Diabetes Risk Score: a practical tool to predict type 2 diabetes risk. "
    "Diabetes Care 2003;26(3):725-731; item points and 10-year risk bands as printed on the FINDRISC form "
    "(Type 2 Diabetes Risk Assessment Form, Finnish Diabetes Association), which adds family history of "
    "diabetes to the 2003 score (range 0-26)."
)

# Waist circumference cut points (cm) by sex: (lower bound of the 3-point band, upper bound of it).
# Form: men <94 cm 0, 94-102 cm 3, >102 cm 4; women <80 cm 0, 80-88 cm 3, >88 cm 4.
WAIST_BANDS_CM = {"male": (94.0, 102.0), "female": (80.0, 88.0)}

FAMILY_HISTORY_POINTS = {"none": 0, "second_degree": 3, "first_degree": 5}

# (upper bound of the band inclusive, category, estimated 10-year risk as printed, percent)
FINDRISC_BANDS = (
    (6, "low", "1 in 100", 1.0),
    (11, "slightly elevated", "1 in 25", 4.0),
    (14, "moderate", "1 in 6", 17.0),
    (20, "high", "1 in 3", 33.0),
    (26, "very high", "1 in 2", 50.0),
)


def _measured(value: float) -> float:
    """The value with the binary floating-point noise of unit conversion removed before it meets a cut point
    (six decimals, far finer than any measurement: changes no real value)."""
    return round(value, 6)


def _age_points(years: float) -> int:
    # Form: under 45 years 0, 45-54 2, 55-64 3, over 64 4 (completed years, so 54.9 is "54").
    if years < 45:
        return 0
    if years < 55:
        return 2
    if years < 65:
        return 3
    return 4


def _bmi_points(bmi: float) -> int:
    # Form: lower than 25 kg/m2 0, 25-30 kg/m2 1 (both ends inclusive), higher than 30 kg/m2 3.
    if bmi < 25:
        return 0
    if bmi <= 30:
        return 1
    return 3


def _waist_points(waist: float, sex: str) -> int:
    low, high = WAIST_BANDS_CM[sex]
    if waist < low:
        return 0
    if waist <= high:
        return 3
    return 4


def findrisc_compute(values: Mapping[str, Any]) -> Result:
    """FINDRISC, Lindström & Tuomilehto, Diabetes Care 2003;26:725-731 and the FINDRISC form.

    Points: age < 45 years 0, 45-54 2, 55-64 3, > 64 4; BMI < 25 kg/m2 0, 25-30 1, > 30 3; waist (men)
    < 94 cm 0, 94-102 3, > 102 4, (women) < 80 cm 0, 80-88 3, > 88 4; not physically active at least 30 min
    daily 2; vegetables, fruit or berries not every day 1; ever on regular antihypertensive medication 2;
    ever found to have high blood glucose 5; family history of diabetes: none 0, second-degree relative only
    (grandparent, aunt, uncle, first cousin) 3, first-degree (parent, sibling, own child) 5. Range 0-26.
    Categories, 10-year risk of type 2 diabetes: < 7 "low" (1 in 100, ~1 %), 7-11 "slightly elevated"
    (1 in 25, ~4 %), 12-14 "moderate" (1 in 6, ~17 %), 15-20 "high" (1 in 3, ~33 %), > 20 "very high"
    (1 in 2, ~50 %). Units and valid ranges: age years 18-120, bmi kg/m2 10-80, waist cm 40-250.
    """
    contributions = {
        "age": float(_age_points(_measured(values["age"]))),
        "bmi": float(_bmi_points(_measured(values["bmi"]))),
        "waist": float(_waist_points(_measured(values["waist"]), values["sex"])),
        "physically_active": 0.0 if values["physically_active"] else 2.0,
        "daily_vegetables": 0.0 if values["daily_vegetables"] else 1.0,
        "bp_medication": 2.0 if values["bp_medication"] else 0.0,
        "high_glucose_history": 5.0 if values["high_glucose_history"] else 0.0,
        "family_history_diabetes": float(FAMILY_HISTORY_POINTS[values["family_history_diabetes"]]),
    }
    total = sum(contributions.values())
    category, odds, percent = next((c, o, p) for upper, c, o, p in FINDRISC_BANDS if total <= upper)
    low, high = WAIST_BANDS_CM[values["sex"]]
    return Result(
        value=total,
        unit="points",
        category=category,
        contributions=contributions,
        citation=FINDRISC_CITATION,
        details={
            "estimated_10_year_risk": odds,
            "estimated_10_year_risk_percent": percent,
            "waist_cut_points_cm": {"sex": values["sex"], "3_points_from": low, "4_points_above": high},
            "categories": {"low": "<7 (1 in 100)", "slightly elevated": "7-11 (1 in 25)",
                           "moderate": "12-14 (1 in 6)", "high": "15-20 (1 in 3)", "very high": ">20 (1 in 2)"},
            "note": "sex selects the waist cut points and carries no points itself. The 2003 paper's score "
                    "(0-20) lacks the family-history item; the bands are those of the 0-26 form.",
        },
    )


FINDRISC = register(Calculator(
    name="findrisc",
    title="FINDRISC, Finnish Diabetes Risk Score (0-26 form with family history)",
    version="1",
    citation=FINDRISC_CITATION,
    params=(
        age(18, 120),
        SEX,
        Param("bmi", "quantity", "Body-mass index", dimension="bmi", minimum=10, maximum=80),
        Param("waist", "quantity", "Waist circumference (below the ribs, usually at the navel)",
              dimension="length", minimum=40, maximum=250),
        flag("physically_active", "At least 30 minutes of physical activity daily (work and/or leisure)"),
        flag("daily_vegetables", "Eats vegetables, fruit or berries every day"),
        flag("bp_medication", "Has ever taken medication for high blood pressure regularly"),
        flag("high_glucose_history", "Has ever been found to have high blood glucose (health check, illness, "
             "pregnancy)"),
        Param("family_history_diabetes", "choice", "Relatives diagnosed with diabetes (type 1 or 2): none; "
              "second_degree (grandparent, aunt, uncle, first cousin, but no first-degree); first_degree "
              "(parent, brother, sister, own child)", choices=("none", "second_degree", "first_degree")),
    ),
    compute=findrisc_compute,
    unit="points",
))
