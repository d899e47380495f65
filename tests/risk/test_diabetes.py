"""FINDRISC: source checks, every band edge, bad input, units, contributions.

Neither Lindström & Tuomilehto (Diabetes Care 2003;26:725-731) nor the FINDRISC form prints a worked patient,
so the "source" cases are patients scored by hand from the form's item table; the ranges the sources state are
checked too (2003 paper: 0-20 for its seven items in its 35-64-year cohort; the form with family history: 0-26).
Plain functions, no database.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from risk.calculators import _REGISTRY
from risk.calculators.base import CalculatorInputError
from risk.calculators.diabetes import FINDRISC

BASE = {"age": 40, "sex": "male", "bmi": 22.0, "waist": 85, "physically_active": True, "daily_vegetables": True,
        "bp_medication": False, "high_glucose_history": False, "family_history_diabetes": "none"}


def with_(**changes: Any) -> dict[str, Any]:
    out = dict(BASE)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def errors(raw: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(CalculatorInputError) as info:
        FINDRISC(raw)
    return info.value.as_dict()


def test_registered_and_describable():
    assert _REGISTRY["findrisc"] is FINDRISC
    json.dumps(FINDRISC.describe())


@pytest.mark.parametrize(("changes", "expected", "category", "risk"), [
    # Hand-scored from the FINDRISC form's item table (Lindström & Tuomilehto 2003; Finnish Diabetes
    # Association form), bands from the form's "Total Risk Score" table.
    ({}, 0, "low", "1 in 100"),
    # 58-year-old woman, BMI 27.5, waist 85 cm, inactive, daily vegetables, no BP drugs, no high glucose,
    # mother with diabetes: 3 + 1 + 3 + 2 + 0 + 0 + 0 + 5 = 14.
    ({"age": 58, "sex": "female", "bmi": 27.5, "waist": 85, "physically_active": False,
      "family_history_diabetes": "first_degree"}, 14, "moderate", "1 in 6"),
    # 50-year-old man, BMI 31, waist 104 cm, active, no daily vegetables, on BP drugs, no high glucose, uncle
    # with diabetes: 2 + 3 + 4 + 0 + 1 + 2 + 0 + 3 = 15.
    ({"age": 50, "bmi": 31, "waist": 104, "daily_vegetables": False, "bp_medication": True,
      "family_history_diabetes": "second_degree"}, 15, "high", "1 in 3"),
    # 2003 paper's seven items all at maximum in its 35-64 cohort: 3 + 3 + 4 + 2 + 1 + 2 + 5 = 20, the
    # paper's stated maximum ("The Diabetes Risk Score value varied from 0 to 20").
    ({"age": 64, "bmi": 35, "waist": 110, "physically_active": False, "daily_vegetables": False,
      "bp_medication": True, "high_glucose_history": True}, 20, "high", "1 in 3"),
    # Every form item at maximum: 26, the top of the 0-26 form scale.
    ({"age": 70, "bmi": 35, "waist": 110, "physically_active": False, "daily_vegetables": False,
      "bp_medication": True, "high_glucose_history": True, "family_history_diabetes": "first_degree"},
     26, "very high", "1 in 2"),
])
def test_findrisc_source_cases(changes, expected, category, risk):
    result = FINDRISC(with_(**changes))
    assert result.value == expected
    assert result.category == category
    assert result.unit == "points"
    assert result.details["estimated_10_year_risk"] == risk
    assert sum(result.contributions.values()) == result.value
    json.dumps(result.as_dict())


@pytest.mark.parametrize(("changes", "name", "points"), [
    # Age: under 45 0, 45-54 2, 55-64 3, over 64 4 (completed years).
    ({"age": 18}, "age", 0), ({"age": 44.9}, "age", 0), ({"age": 45}, "age", 2), ({"age": 54}, "age", 2),
    ({"age": 54.9}, "age", 2), ({"age": 55}, "age", 3), ({"age": 64}, "age", 3), ({"age": 64.9}, "age", 3),
    ({"age": 65}, "age", 4), ({"age": 120}, "age", 4),
    # BMI: lower than 25 0, 25-30 1 (inclusive), higher than 30 3.
    ({"bmi": 10}, "bmi", 0), ({"bmi": 24.9}, "bmi", 0), ({"bmi": 25}, "bmi", 1), ({"bmi": 27.5}, "bmi", 1),
    ({"bmi": 30}, "bmi", 1), ({"bmi": 30.1}, "bmi", 3), ({"bmi": 80}, "bmi", 3),
    # Waist, men: less than 94 0, 94-102 3, more than 102 4.
    ({"waist": 93.9}, "waist", 0), ({"waist": 94}, "waist", 3), ({"waist": 102}, "waist", 3),
    ({"waist": 102.1}, "waist", 4),
    # Waist, women: less than 80 0, 80-88 3, more than 88 4.
    ({"sex": "female", "waist": 79.9}, "waist", 0), ({"sex": "female", "waist": 80}, "waist", 3),
    ({"sex": "female", "waist": 88}, "waist", 3), ({"sex": "female", "waist": 88.1}, "waist", 4),
    ({"sex": "female", "waist": 94}, "waist", 4),  # 94 cm: 3 points for a man, 4 for a woman
    # Yes/no items.
    ({"physically_active": True}, "physically_active", 0), ({"physically_active": False}, "physically_active", 2),
    ({"daily_vegetables": True}, "daily_vegetables", 0), ({"daily_vegetables": False}, "daily_vegetables", 1),
    ({"bp_medication": True}, "bp_medication", 2), ({"high_glucose_history": True}, "high_glucose_history", 5),
    # Family history: none 0, second-degree only 3, first-degree 5.
    ({"family_history_diabetes": "none"}, "family_history_diabetes", 0),
    ({"family_history_diabetes": "second_degree"}, "family_history_diabetes", 3),
    ({"family_history_diabetes": "first_degree"}, "family_history_diabetes", 5),
])
def test_findrisc_item_band_edges(changes, name, points):
    result = FINDRISC(with_(**changes))
    assert result.contributions[name] == points
    assert result.value == points  # the base patient scores 0 elsewhere


@pytest.mark.parametrize(("changes", "total", "category", "percent"), [
    # Form: <7 low (1 in 100), 7-11 slightly elevated (1 in 25), 12-14 moderate (1 in 6),
    # 15-20 high (1 in 3), >20 very high (1 in 2).
    ({"high_glucose_history": True, "daily_vegetables": False}, 6, "low", 1.0),
    ({"high_glucose_history": True, "physically_active": False}, 7, "slightly elevated", 4.0),
    ({"high_glucose_history": True, "family_history_diabetes": "second_degree", "bp_medication": True,
      "daily_vegetables": False}, 11, "slightly elevated", 4.0),
    ({"high_glucose_history": True, "family_history_diabetes": "first_degree", "physically_active": False},
     12, "moderate", 17.0),
    ({"high_glucose_history": True, "family_history_diabetes": "first_degree", "physically_active": False,
      "bp_medication": True}, 14, "moderate", 17.0),
    ({"high_glucose_history": True, "family_history_diabetes": "first_degree", "physically_active": False,
      "bp_medication": True, "daily_vegetables": False}, 15, "high", 33.0),
    ({"high_glucose_history": True, "family_history_diabetes": "first_degree", "physically_active": False,
      "bp_medication": True, "daily_vegetables": False, "age": 50, "waist": 94}, 20, "high", 33.0),
    ({"high_glucose_history": True, "family_history_diabetes": "first_degree", "physically_active": False,
      "bp_medication": True, "daily_vegetables": False, "age": 55, "waist": 94}, 21, "very high", 50.0),
])
def test_findrisc_category_edges(changes, total, category, percent):
    result = FINDRISC(with_(**changes))
    assert result.value == total
    assert result.category == category
    assert result.details["estimated_10_year_risk_percent"] == percent
    assert sum(result.contributions.values()) == result.value


@pytest.mark.parametrize(("raw", "bad"), [
    (with_(waist=None), "waist"),
    (with_(sex=None), "sex"),
    (with_(family_history_diabetes=None), "family_history_diabetes"),
    (with_(physically_active=None), "physically_active"),
    (with_(age=17), "age"),
    (with_(age=121), "age"),
    (with_(bmi=9.9), "bmi"),
    (with_(bmi=81), "bmi"),
    (with_(waist=39), "waist"),
    (with_(waist=251), "waist"),
    (with_(waist="90 kg"), "waist"),
    (with_(bmi="22 cm"), "bmi"),
    (with_(age="40 kg"), "age"),
    (with_(sex="M"), "sex"),
    (with_(family_history_diabetes="yes"), "family_history_diabetes"),
    (with_(physically_active="no"), "physically_active"),
    (with_(high_glucose_history=0), "high_glucose_history"),
    (with_(smoker=True), "smoker"),
])
def test_findrisc_bad_input(raw, bad):
    assert bad in errors(raw)


def test_findrisc_reports_every_problem_at_once():
    assert {"age", "waist", "sex"} <= set(errors(with_(age=10, waist="1 kg", sex="x")))


@pytest.mark.parametrize(("waist", "points"), [
    ("0.94 m", 3), ("1.02 m", 3), ("1.025 m", 4), ("94 cm", 3), ("37 [in_i]", 0),  # 37 in = 93.98 cm
    ("37.01 in", 3), ("40.2 in", 4),  # 40.2 in = 102.108 cm
])
def test_findrisc_waist_units(waist, points):
    result = FINDRISC(with_(waist=waist))
    assert result.contributions["waist"] == points


def test_findrisc_same_patient_in_other_units():
    metric = FINDRISC(with_(age=58, sex="female", bmi=27.5, waist=85, physically_active=False))
    other = FINDRISC(with_(age="58 a", sex="female", bmi="27.5 kg/m2", waist="0.85 m", physically_active=False))
    inches = FINDRISC(with_(age=58, sex="female", bmi=27.5, waist=f"{85 / 2.54} [in_i]", physically_active=False))
    assert metric.value == other.value == inches.value == 9
    assert metric.contributions == other.contributions == inches.contributions
