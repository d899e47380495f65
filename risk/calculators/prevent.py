"""AHA PREVENT equations, BASE model, 10-year risk of total CVD, ASCVD and heart failure.

Source: Khan SS, Matsushita K, Sang Y, et al. Development and Validation of the American Heart
Association's PREVENT Equations. Circulation. 2024;149(6):430-449. doi:10.1161/CIRCULATIONAHA.123.067626.
Coefficients: Supplemental Table S12, sex-specific 10-year BASE models (total CVD, ASCVD, HF).

Each outcome is a sex-specific LOGISTIC model: risk = 1 / (1 + exp(-(constant + sum(beta x term)))),
with centred/scaled terms (the same for every outcome; HF has no cholesterol or statin terms and is
the only one with BMI terms):

    age                          (age - 55) / 10
    non_hdl_cholesterol          (TC - HDL) [mmol/L] - 3.5
    hdl_cholesterol              (HDL [mmol/L] - 1.3) / 0.3
    systolic_bp_lt_110           (min(SBP, 110) - 110) / 20
    systolic_bp_ge_110           (max(SBP, 110) - 130) / 20
    bmi_lt_30 (HF)               (min(BMI, 30) - 25) / 5
    bmi_ge_30 (HF)               (max(BMI, 30) - 30) / 5
    egfr_lt_60                   (min(eGFR, 60) - 60) / -15
    egfr_ge_60                   (max(eGFR, 60) - 90) / -15
    diabetes, smoker, bp_treated, statin            0/1
    bp_treated:systolic_bp_ge_110, statin:non_hdl_cholesterol, age:non_hdl_cholesterol,
    age:hdl_cholesterol, age:systolic_bp_ge_110, age:diabetes, age:smoker, age:bmi_ge_30 (HF),
    age:egfr_lt_60                                  products of the terms above

The min/max splines are part of the published model (piecewise-linear terms with knots at SBP 110,
BMI 30, eGFR 60), not a clamp of the input; inputs outside the valid range are rejected.

Cholesterol: inputs in mg/dL (or mmol/L, converted by base.py with 38.67 mg/dL per mmol/L) are
converted to mmol/L by dividing by 38.67. (The AHA reference code and the R package `preventr`
multiply by 0.02586; 1/38.67 = 0.0258598, a relative difference below 1e-5.)

Valid ranges (AHA PREVENT calculator / Khan 2024): age 30-79 years, total cholesterol 130-320 mg/dL,
HDL cholesterol 20-100 mg/dL, systolic BP 90-200 mm[Hg], eGFR 15-140 mL/min/1.73 m2,
BMI 18.5-39.9 kg/m2 (HF only; the CVD and ASCVD equations have no BMI term and do not take BMI).

Coefficients were transcribed from Supplemental Table S12 as reproduced in three independent
public implementations that agree to every printed digit: the Stata module `prevent10i`
(Linden 2024, SSC), the coefficient table of the R package `preventr` (Mayer), and a port of the
AHA's own `AHAprevent` R code (which prints the female total-CVD SBP>=110 coefficient as 0.360078
instead of 0.3600781; the Table S12 value is used here).

Risk category (ASCVD only): 2026 ACC/AHA Guideline on the Management of Dyslipidemia (Blumenthal RS,
Morris PB, et al. Circulation 2026), PREVENT-ASCVD 10-year risk: low <3%, borderline 3-<5%,
intermediate 5-<10%, high >=10%. Those thresholds replace the Pooled Cohort Equations' <5 / 5-<7.5 /
7.5-<20 / >=20% bands, which were set for PCE and are not applied to PREVENT here. No source defines
categories for PREVENT 10-year total CVD or heart failure risk, so those return category None.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Literal

from . import register
from .base import SEX, Calculator, Param, Result, age, flag

Outcome = Literal["cvd", "ascvd", "hf"]

MGDL_PER_MMOLL_CHOLESTEROL = 38.67  # mg/dL -> mmol/L: divide by 38.67 (stated by the brief and base.py)

CITATION = (
    "Khan SS, Matsushita K, Sang Y, et al. Development and Validation of the American Heart Association's "
    "PREVENT Equations. Circulation. 2024;149(6):430-449. doi:10.1161/CIRCULATIONAHA.123.067626. "
    "Coefficients: Supplemental Table S12 (sex-specific 10-year BASE logistic models)."
)
ASCVD_CATEGORY_CITATION = (
    "Blumenthal RS, Morris PB, et al. 2026 ACC/AHA Guideline on the Management of Dyslipidemia. "
    "Circulation. 2026. PREVENT-ASCVD 10-year risk categories: low <3%, borderline 3-<5%, "
    "intermediate 5-<10%, high >=10%."
)

# --------------------------------------------------------------------------------------------
# Supplemental Table S12, 10-year BASE model. Terms absent from an outcome's table are 0 there.

_COEFFICIENTS: dict[tuple[Outcome, str], dict[str, float]] = {
    ("cvd", "female"): {
        "constant": -3.307728,
        "age": 0.7939329,
        "non_hdl_cholesterol": 0.0305239,
        "hdl_cholesterol": -0.1606857,
        "systolic_bp_lt_110": -0.2394003,
        "systolic_bp_ge_110": 0.3600781,
        "diabetes": 0.8667604,
        "smoker": 0.5360739,
        "egfr_lt_60": 0.6045917,
        "egfr_ge_60": 0.0433769,
        "bp_treated": 0.3151672,
        "statin": -0.1477655,
        "bp_treated:systolic_bp_ge_110": -0.0663612,
        "statin:non_hdl_cholesterol": 0.1197879,
        "age:non_hdl_cholesterol": -0.0819715,
        "age:hdl_cholesterol": 0.0306769,
        "age:systolic_bp_ge_110": -0.0946348,
        "age:diabetes": -0.27057,
        "age:smoker": -0.078715,
        "age:egfr_lt_60": -0.1637806,
    },
    ("cvd", "male"): {
        "constant": -3.031168,
        "age": 0.7688528,
        "non_hdl_cholesterol": 0.0736174,
        "hdl_cholesterol": -0.0954431,
        "systolic_bp_lt_110": -0.4347345,
        "systolic_bp_ge_110": 0.3362658,
        "diabetes": 0.7692857,
        "smoker": 0.4386871,
        "egfr_lt_60": 0.5378979,
        "egfr_ge_60": 0.0164827,
        "bp_treated": 0.288879,
        "statin": -0.1337349,
        "bp_treated:systolic_bp_ge_110": -0.0475924,
        "statin:non_hdl_cholesterol": 0.150273,
        "age:non_hdl_cholesterol": -0.0517874,
        "age:hdl_cholesterol": 0.0191169,
        "age:systolic_bp_ge_110": -0.1049477,
        "age:diabetes": -0.2251948,
        "age:smoker": -0.0895067,
        "age:egfr_lt_60": -0.1543702,
    },
    ("ascvd", "female"): {
        "constant": -3.819975,
        "age": 0.719883,
        "non_hdl_cholesterol": 0.1176967,
        "hdl_cholesterol": -0.151185,
        "systolic_bp_lt_110": -0.0835358,
        "systolic_bp_ge_110": 0.3592852,
        "diabetes": 0.8348585,
        "smoker": 0.4831078,
        "egfr_lt_60": 0.4864619,
        "egfr_ge_60": 0.0397779,
        "bp_treated": 0.2265309,
        "statin": -0.0592374,
        "bp_treated:systolic_bp_ge_110": -0.0395762,
        "statin:non_hdl_cholesterol": 0.0844423,
        "age:non_hdl_cholesterol": -0.0567839,
        "age:hdl_cholesterol": 0.0325692,
        "age:systolic_bp_ge_110": -0.1035985,
        "age:diabetes": -0.2417542,
        "age:smoker": -0.0791142,
        "age:egfr_lt_60": -0.1671492,
    },
    ("ascvd", "male"): {
        "constant": -3.500655,
        "age": 0.7099847,
        "non_hdl_cholesterol": 0.1658663,
        "hdl_cholesterol": -0.1144285,
        "systolic_bp_lt_110": -0.2837212,
        "systolic_bp_ge_110": 0.3239977,
        "diabetes": 0.7189597,
        "smoker": 0.3956973,
        "egfr_lt_60": 0.3690075,
        "egfr_ge_60": 0.0203619,
        "bp_treated": 0.2036522,
        "statin": -0.0865581,
        "bp_treated:systolic_bp_ge_110": -0.0322916,
        "statin:non_hdl_cholesterol": 0.114563,
        "age:non_hdl_cholesterol": -0.0300005,
        "age:hdl_cholesterol": 0.0232747,
        "age:systolic_bp_ge_110": -0.0927024,
        "age:diabetes": -0.2018525,
        "age:smoker": -0.0970527,
        "age:egfr_lt_60": -0.1217081,
    },
    ("hf", "female"): {
        "constant": -4.310409,
        "age": 0.8998235,
        "systolic_bp_lt_110": -0.4559771,
        "systolic_bp_ge_110": 0.3576505,
        "diabetes": 1.038346,
        "smoker": 0.583916,
        "bmi_lt_30": -0.0072294,
        "bmi_ge_30": 0.2997706,
        "egfr_lt_60": 0.7451638,
        "egfr_ge_60": 0.0557087,
        "bp_treated": 0.3534442,
        "bp_treated:systolic_bp_ge_110": -0.0981511,
        "age:systolic_bp_ge_110": -0.0946663,
        "age:diabetes": -0.3581041,
        "age:smoker": -0.1159453,
        "age:bmi_ge_30": -0.003878,
        "age:egfr_lt_60": -0.1884289,
    },
    ("hf", "male"): {
        "constant": -3.946391,
        "age": 0.8972642,
        "systolic_bp_lt_110": -0.6811466,
        "systolic_bp_ge_110": 0.3634461,
        "diabetes": 0.923776,
        "smoker": 0.5023736,
        "bmi_lt_30": -0.0485841,
        "bmi_ge_30": 0.3726929,
        "egfr_lt_60": 0.6926917,
        "egfr_ge_60": 0.0251827,
        "bp_treated": 0.2980922,
        "bp_treated:systolic_bp_ge_110": -0.0497731,
        "age:systolic_bp_ge_110": -0.1289201,
        "age:diabetes": -0.3040924,
        "age:smoker": -0.1401688,
        "age:bmi_ge_30": 0.0068126,
        "age:egfr_lt_60": -0.1797778,
    },
}

# --------------------------------------------------------------------------------------------
# Inputs (canonical units; ranges from the AHA PREVENT calculator / Khan 2024)

AGE = age(30, 79)
TOTAL_CHOLESTEROL = Param("total_cholesterol", "quantity", "Total cholesterol", dimension="cholesterol",
                          minimum=130, maximum=320)
HDL_CHOLESTEROL = Param("hdl_cholesterol", "quantity", "HDL cholesterol", dimension="cholesterol",
                        minimum=20, maximum=100)
SYSTOLIC_BP = Param("systolic_bp", "quantity", "Systolic blood pressure", dimension="pressure",
                    minimum=90, maximum=200)
EGFR = Param("egfr", "quantity", "Estimated glomerular filtration rate", dimension="egfr",
             minimum=15, maximum=140)
BMI = Param("bmi", "quantity", "Body mass index", dimension="bmi", minimum=18.5, maximum=39.9)
BP_TREATED = flag("bp_treated", "Taking antihypertensive medication")
STATIN = flag("statin", "Taking a statin")
DIABETES = flag("diabetes", "Diabetes")
SMOKER = flag("smoker", "Current smoker (cigarettes within the last 30 days)")

_CVD_ASCVD_PARAMS: tuple[Param, ...] = (AGE, SEX, TOTAL_CHOLESTEROL, HDL_CHOLESTEROL, SYSTOLIC_BP, BP_TREATED,
                                        STATIN, DIABETES, SMOKER, EGFR)
_HF_PARAMS: tuple[Param, ...] = (AGE, SEX, SYSTOLIC_BP, BP_TREATED, DIABETES, SMOKER, EGFR, BMI)

# --------------------------------------------------------------------------------------------
# Computation


def transformed_terms(values: Mapping[str, Any]) -> dict[str, float]:
    """The centred/scaled model terms (Khan 2024, Table S12 footnotes) for the inputs present.

    Cholesterol terms need total_cholesterol and hdl_cholesterol (mg/dL), BMI terms need bmi;
    terms whose inputs are absent are left out (the outcome's table then has no such term)."""
    a = (float(values["age"]) - 55) / 10
    sbp = float(values["systolic_bp"])
    egfr = float(values["egfr"])
    bp_treated = 1.0 if values["bp_treated"] else 0.0
    diabetes = 1.0 if values["diabetes"] else 0.0
    smoker = 1.0 if values["smoker"] else 0.0
    sbp_ge_110 = (max(sbp, 110) - 130) / 20
    egfr_lt_60 = (min(egfr, 60) - 60) / -15
    terms: dict[str, float] = {
        "age": a,
        "systolic_bp_lt_110": (min(sbp, 110) - 110) / 20,
        "systolic_bp_ge_110": sbp_ge_110,
        "diabetes": diabetes,
        "smoker": smoker,
        "egfr_lt_60": egfr_lt_60,
        "egfr_ge_60": (max(egfr, 60) - 90) / -15,
        "bp_treated": bp_treated,
        "bp_treated:systolic_bp_ge_110": bp_treated * sbp_ge_110,
        "age:systolic_bp_ge_110": a * sbp_ge_110,
        "age:diabetes": a * diabetes,
        "age:smoker": a * smoker,
        "age:egfr_lt_60": a * egfr_lt_60,
    }
    if values.get("total_cholesterol") is not None and values.get("hdl_cholesterol") is not None:
        tc_mmol = float(values["total_cholesterol"]) / MGDL_PER_MMOLL_CHOLESTEROL
        hdl_mmol = float(values["hdl_cholesterol"]) / MGDL_PER_MMOLL_CHOLESTEROL
        non_hdl = tc_mmol - hdl_mmol - 3.5
        hdl = (hdl_mmol - 1.3) / 0.3
        statin = 1.0 if values.get("statin") else 0.0
        terms.update({
            "non_hdl_cholesterol": non_hdl,
            "hdl_cholesterol": hdl,
            "statin": statin,
            "statin:non_hdl_cholesterol": statin * non_hdl,
            "age:non_hdl_cholesterol": a * non_hdl,
            "age:hdl_cholesterol": a * hdl,
        })
    if values.get("bmi") is not None:
        bmi = float(values["bmi"])
        bmi_ge_30 = (max(bmi, 30) - 30) / 5
        terms.update({
            "bmi_lt_30": (min(bmi, 30) - 25) / 5,
            "bmi_ge_30": bmi_ge_30,
            "age:bmi_ge_30": a * bmi_ge_30,
        })
    return terms


def ascvd_category(risk_percent: float) -> str:
    """2026 ACC/AHA dyslipidemia guideline PREVENT-ASCVD 10-year bands (percent)."""
    if risk_percent < 3:
        return "low"
    if risk_percent < 5:
        return "borderline"
    if risk_percent < 10:
        return "intermediate"
    return "high"


def _compute(outcome: Outcome, values: Mapping[str, Any]) -> Result:
    coefficients = _COEFFICIENTS[(outcome, values["sex"])]
    terms = transformed_terms(values)
    contributions = {name: beta * terms[name] for name, beta in coefficients.items() if name != "constant"}
    intercept = coefficients["constant"]
    linear_predictor = intercept + sum(contributions.values())
    risk = 100.0 / (1.0 + math.exp(-linear_predictor))
    value = round(risk, 1)
    details: dict[str, Any] = {
        "model": f"PREVENT base model, 10-year {outcome.upper()} risk, {values['sex']} equation (Table S12)",
        "contribution_scale": (
            "linear predictor (log-odds) terms: coefficient x centred/scaled term, relative to the reference "
            "profile (age 55, non-HDL-C 3.5 mmol/L, HDL-C 1.3 mmol/L, SBP 130 mm[Hg], BMI 25 kg/m2, "
            "eGFR 90 mL/min/1.73m2, no diabetes, non-smoker, untreated); "
            "log-odds = intercept + sum(contributions)"
        ),
        "intercept": intercept,
        "linear_predictor": linear_predictor,
        "risk_percent_unrounded": risk,
        "terms": {name: terms[name] for name in contributions},
        "rounding": "value is the risk in percent rounded to 0.1 (as the AHA PREVENT calculator reports it)",
    }
    if "non_hdl_cholesterol" in contributions:
        details["cholesterol_conversion"] = "mg/dL / 38.67 = mmol/L; non-HDL-C = total - HDL cholesterol"
        details["non_hdl_cholesterol_mmol_l"] = terms["non_hdl_cholesterol"] + 3.5
    if outcome == "ascvd":
        category: str | None = ascvd_category(value)
        details["category_source"] = ASCVD_CATEGORY_CITATION
    else:
        category = None
        details["category_source"] = (
            f"none: no published risk categories for PREVENT 10-year {'total CVD' if outcome == 'cvd' else 'heart failure'}"
            " risk"
        )
    return Result(value=value, unit="%", category=category, contributions=contributions, citation=CITATION,
                  details=details)


def prevent_cvd_10y(values: Mapping[str, Any]) -> Result:
    """PREVENT 10-year risk of total CVD (ASCVD + heart failure), base model.

    Khan SS et al., Circulation 2024;149:430-449, Supplemental Table S12 (sex-specific logistic model).
    Inputs: age 30-79 a, sex, total_cholesterol 130-320 mg/dL, hdl_cholesterol 20-100 mg/dL,
    systolic_bp 90-200 mm[Hg], bp_treated, statin, diabetes, smoker, egfr 15-140 mL/min/1.73m2.
    No BMI term. Returns percent; category None (no published bands for total CVD)."""
    return _compute("cvd", values)


def prevent_ascvd_10y(values: Mapping[str, Any]) -> Result:
    """PREVENT 10-year risk of ASCVD (CHD + stroke), base model.

    Khan SS et al., Circulation 2024;149:430-449, Supplemental Table S12 (sex-specific logistic model).
    Inputs as prevent_cvd_10y (no BMI term). Returns percent; category per the 2026 ACC/AHA dyslipidemia
    guideline: low <3, borderline 3-<5, intermediate 5-<10, high >=10 %."""
    return _compute("ascvd", values)


def prevent_hf_10y(values: Mapping[str, Any]) -> Result:
    """PREVENT 10-year risk of heart failure, base model.

    Khan SS et al., Circulation 2024;149:430-449, Supplemental Table S12 (sex-specific logistic model).
    Inputs: age 30-79 a, sex, systolic_bp 90-200 mm[Hg], bp_treated, diabetes, smoker,
    egfr 15-140 mL/min/1.73m2, bmi 18.5-39.9 kg/m2 (the HF equation has no cholesterol or statin
    terms). Returns percent; category None (no published bands for HF)."""
    return _compute("hf", values)


def _calculator(name: str, title: str, params: tuple[Param, ...],
                compute: Callable[[Mapping[str, Any]], Result]) -> Calculator:
    return register(Calculator(name=name, title=title, version="1 (base model, Table S12)", citation=CITATION,
                               params=params, compute=compute, unit="%"))


PREVENT_CVD_10Y = _calculator("prevent_cvd_10y", "AHA PREVENT 10-year total CVD risk (base model)",
                              _CVD_ASCVD_PARAMS, prevent_cvd_10y)
PREVENT_ASCVD_10Y = _calculator("prevent_ascvd_10y", "AHA PREVENT 10-year ASCVD risk (base model)",
                                _CVD_ASCVD_PARAMS, prevent_ascvd_10y)
PREVENT_HF_10Y = _calculator("prevent_hf_10y", "AHA PREVENT 10-year heart failure risk (base model)",
                             _HF_PARAMS, prevent_hf_10y)
