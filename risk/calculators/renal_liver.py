"""Renal and liver calculators: CKD-EPI 2021 eGFR, OPTN MELD(Na) (2016) and MELD 3.0.

Sources
-------
* ``ckd_epi_2021`` -- Inker LA, Eneanya ND, Coresh J, et al. New Creatinine- and Cystatin C-Based
  Equations to Estimate GFR without Race. N Engl J Med 2021;385:1737-1749 (the race-free 2021
  creatinine equation, eGFRcr). GFR categories: KDIGO 2012 Clinical Practice Guideline for the
  Evaluation and Management of CKD, Kidney Int Suppl 2013;3:1-150, Table 5 (Recommendation 1.2.3).
  Units: creatinine mg/dL (umol/L / 88.4), age years (18-120), result mL/min/1.73m2.
* ``meld_na`` -- OPTN Policy 9.1.D "MELD Score" as in effect from 11 January 2016 (OPTN/UNOS policy
  notice, November 2015), which added serum sodium following Kim WR, Biggins SW, Kremers WK, et al.
  Hyponatremia and mortality among patients on the liver-transplant waiting list. N Engl J Med
  2008;359:1018-1026; the MELD(i) equation is Kamath PS, Wiesner RH, Malinchoc M, et al. A model to
  predict survival in patients with end-stage liver disease. Hepatology 2001;33:464-470 (after
  Malinchoc M et al. Hepatology 2000;31:864-871). Units: creatinine and bilirubin mg/dL, sodium
  mmol/L, INR ratio; result points (6-40).
* ``meld_3`` -- Kim WR, Mannalithara A, Heimbach JK, et al. MELD 3.0: The Model for End-Stage Liver
  Disease Updated for the Modern Era. Gastroenterology 2021;161:1887-1895.e4 (the final model's
  equation as given in the paper), with the bounds and the cap of 40 of OPTN Policy 9.1.D as in effect
  from 13 July 2023. Units as for MELD(Na) plus albumin g/dL; result points (6-40).

Valid input ranges. The sources publish no input range beyond the bounds that are part of the
method (MELD's floors and caps, which are applied and reported in ``details["bounded"]``, never
silently). The ranges below are physiological plausibility limits chosen for this implementation:
a value outside them is far more likely a unit or entry error than a patient, so it is rejected.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from . import register
from .base import SEX, Calculator, Param, Result, age, flag

# Plausibility limits (implementation's own, see module docstring), canonical units.
CREATININE_RANGE = (0.1, 20.0)  # mg/dL (8.84-1768 umol/L)
BILIRUBIN_RANGE = (0.1, 80.0)  # mg/dL (1.7-1368 umol/L)
INR_RANGE = (0.5, 20.0)
SODIUM_RANGE = (100.0, 180.0)  # mmol/L
ALBUMIN_RANGE = (0.5, 7.0)  # g/dL (5-70 g/L)


def _round_half_up(value: float, places: int = 0) -> float:
    """Round as the written rules do (0.05 -> 0.1, 12.5 -> 13), not to even; the decimal is taken
    from the shortest repr so binary noise (1.25 stored as 1.2499999...) does not flip a tie."""
    quantum = Decimal(1).scaleb(-places)
    return float(Decimal(repr(value)).quantize(quantum, rounding=ROUND_HALF_UP))


# ============================================================================================
# CKD-EPI 2021 creatinine equation


CKD_EPI_2021_CITATION = (
    "Inker LA, Eneanya ND, Coresh J, et al. New Creatinine- and Cystatin C-Based Equations to Estimate "
    "GFR without Race. N Engl J Med 2021;385:1737-1749 (2021 CKD-EPI creatinine equation, eGFRcr). "
    "GFR categories: KDIGO 2012 Clinical Practice Guideline for the Evaluation and Management of Chronic "
    "Kidney Disease. Kidney Int Suppl 2013;3:1-150, Table 5 (GFR categories in CKD)."
)

# Inker 2021: eGFRcr = 142 x min(Scr/k,1)^a x max(Scr/k,1)^-1.200 x 0.9938^age x 1.012 [female]
_CKD_EPI = {
    "female": {"kappa": 0.7, "alpha": -0.241, "sex_factor": 1.012},
    "male": {"kappa": 0.9, "alpha": -0.302, "sex_factor": 1.0},
}
_CKD_EPI_INTERCEPT = 142.0
_CKD_EPI_UPPER_EXPONENT = -1.200
_CKD_EPI_AGE_BASE = 0.9938

# KDIGO 2012 Table 5: lower bound (mL/min/1.73m2) of each GFR category, highest first.
KDIGO_GFR_CATEGORIES: tuple[tuple[float, str], ...] = (
    (90, "G1"),  # normal or high
    (60, "G2"),  # mildly decreased
    (45, "G3a"),  # mildly to moderately decreased
    (30, "G3b"),  # moderately to severely decreased
    (15, "G4"),  # severely decreased
    (0, "G5"),  # kidney failure
)


def kdigo_gfr_category(egfr: float) -> str:
    """KDIGO 2012 GFR category (Table 5) of an eGFR reported as a whole number."""
    for lower, category in KDIGO_GFR_CATEGORIES:
        if egfr >= lower:
            return category
    return "G5"


def compute_ckd_epi_2021(values: Mapping[str, Any]) -> Result:
    """eGFR by the race-free 2021 CKD-EPI creatinine equation (Inker LA et al. N Engl J Med
    2021;385:1737-1749):

        eGFR = 142 x min(Scr/k, 1)^a x max(Scr/k, 1)^-1.200 x 0.9938^age x 1.012 [if female]
        k = 0.7 (female) / 0.9 (male); a = -0.241 (female) / -0.302 (male)

    Inputs: creatinine (IDMS-traceable serum creatinine, mg/dL; umol/L converted with 88.4; valid
    0.1-20 mg/dL, a plausibility range), age (years, 18-120: the equation is for adults), sex.
    Result: mL/min/1.73m2 rounded to the nearest whole number (KDIGO 2012 asks laboratories to report
    eGFR as a whole number); category = KDIGO 2012 GFR category (Table 5) of that reported value.
    Contributions are natural-log terms: ln(eGFR) = ln(142) + sum(contributions).
    """
    scr = float(values["creatinine"])
    years = float(values["age"])
    sex = str(values["sex"])
    coefficients = _CKD_EPI[sex]
    kappa, alpha, sex_factor = coefficients["kappa"], coefficients["alpha"], coefficients["sex_factor"]
    ratio = scr / kappa
    low_term = min(ratio, 1.0) ** alpha
    high_term = max(ratio, 1.0) ** _CKD_EPI_UPPER_EXPONENT
    age_term = _CKD_EPI_AGE_BASE**years
    egfr = _CKD_EPI_INTERCEPT * low_term * high_term * age_term * sex_factor
    reported = _round_half_up(egfr)
    contributions = {
        "creatinine": math.log(low_term) + math.log(high_term),
        "age": years * math.log(_CKD_EPI_AGE_BASE),
        "sex": math.log(sex_factor),
    }
    return Result(
        value=reported,
        unit="mL/min/1.73m2",
        category=kdigo_gfr_category(reported),
        contributions=contributions,
        citation=CKD_EPI_2021_CITATION,
        details={
            "egfr_unrounded": egfr,
            "equation": "142 x min(Scr/k,1)^a x max(Scr/k,1)^-1.200 x 0.9938^age x 1.012 [if female]",
            "kappa": kappa,
            "alpha": alpha,
            "factors": {
                "intercept": _CKD_EPI_INTERCEPT,
                "creatinine_below_kappa": low_term,
                "creatinine_above_kappa": high_term,
                "age": age_term,
                "sex": sex_factor,
            },
            "intercept_log": math.log(_CKD_EPI_INTERCEPT),
            "contribution_scale": (
                "natural-log terms of the multiplicative equation: ln(eGFR) = ln(142) + sum of contributions; "
                "creatinine = a*ln(min(Scr/k,1)) - 1.200*ln(max(Scr/k,1)), age = age*ln(0.9938), "
                "sex = ln(1.012) if female else 0"
            ),
            "rounding": "value is eGFR rounded to the nearest whole number (KDIGO 2012 reporting); "
            "category is assigned from that reported value",
        },
    )


ckd_epi_2021 = register(
    Calculator(
        name="ckd_epi_2021",
        title="eGFR, CKD-EPI 2021 creatinine equation (race-free)",
        version="1",
        citation=CKD_EPI_2021_CITATION,
        params=(
            Param("creatinine", "quantity", "Serum creatinine (IDMS-traceable)", dimension="creatinine",
                  minimum=CREATININE_RANGE[0], maximum=CREATININE_RANGE[1]),
            age(18, 120),
            SEX,
        ),
        compute=compute_ckd_epi_2021,
        unit="mL/min/1.73m2",
    )
)


# ============================================================================================
# MELD(Na): OPTN Policy 9.1.D, January 2016


MELD_NA_CITATION = (
    "OPTN Policy 9.1.D (MELD Score), in effect 11 January 2016 (OPTN/UNOS policy notice, November 2015): "
    "MELD(i) = 0.957 x ln(Cr) + 0.378 x ln(bilirubin) + 1.120 x ln(INR) + 0.643, rounded to the tenth and "
    "multiplied by 10; if MELD(i) > 11, MELD = MELD(i) + 1.32 x (137 - Na) - [0.033 x MELD(i) x (137 - Na)]. "
    "Sodium: Kim WR, Biggins SW, Kremers WK, et al. Hyponatremia and mortality among patients on the "
    "liver-transplant waiting list. N Engl J Med 2008;359:1018-1026. MELD: Kamath PS, Wiesner RH, "
    "Malinchoc M, et al. A model to predict survival in patients with end-stage liver disease. "
    "Hepatology 2001;33:464-470."
)

_MELD_I = {"creatinine": 0.957, "bilirubin": 0.378, "inr": 1.120, "intercept": 0.643}
_MELD_NA_SODIUM = 1.32
_MELD_NA_INTERACTION = 0.033
_MELD_NA_THRESHOLD = 11  # the sodium term applies when MELD(i) > 11
_MELD_CAP = 40
_LAB_FLOOR = 1.0  # "Laboratory values less than 1.0 will be set to 1.0"
_SODIUM_BOUNDS = (125.0, 137.0)


def _bound(name: str, value: float, lower: float | None, upper: float | None, bounded: dict[str, Any],
           rule: str) -> float:
    """Apply a bound that is part of the source's method, recording it (never silent)."""
    used = value
    if lower is not None and value < lower:
        used = lower
    if upper is not None and value > upper:
        used = upper
    if used != value:
        bounded[name] = {"measured": value, "used": used, "rule": rule}
    return used


def _meld_creatinine(values: Mapping[str, Any], cap: float, bounded: dict[str, Any]) -> float:
    creatinine = float(values["creatinine"])
    if values["dialysis_twice_in_week"]:
        bounded["creatinine"] = {
            "measured": creatinine, "used": cap,
            "rule": f"dialysis at least twice (or 24 h of CVVHD) in the prior week: creatinine set to {cap:g} mg/dL",
        }
        return cap
    return _bound("creatinine", creatinine, _LAB_FLOOR, cap, bounded,
                  f"creatinine < 1.0 set to 1.0; > {cap:g} set to {cap:g} mg/dL")


def compute_meld_na(values: Mapping[str, Any]) -> Result:
    """MELD(Na) exactly as OPTN Policy 9.1.D computed it from January 2016 to July 2023:

    1. Bounds: creatinine, bilirubin and INR < 1.0 are set to 1.0; creatinine > 4.0 mg/dL, or after two
       or more dialysis treatments (or 24 h of CVVHD) in the prior 7 days, is set to 4.0; sodium is
       bounded to 125-137 mmol/L. Each bound applied is listed in ``details["bounded"]``.
    2. MELD(i) = 0.957 x ln(Cr) + 0.378 x ln(bilirubin) + 1.120 x ln(INR) + 0.643, rounded to the tenth
       decimal place and multiplied by 10 (half up).
    3. If MELD(i) > 11: MELD = MELD(i) + 1.32 x (137 - Na) - [0.033 x MELD(i) x (137 - Na)];
       otherwise MELD = MELD(i).
    4. Rounded to the nearest whole number (half up); the maximum MELD score is 40.

    Inputs: creatinine (mg/dL, 0.1-20), bilirubin (mg/dL, 0.1-80), inr (0.5-20), sodium (mmol/L,
    100-180) -- plausibility ranges, the policy has none -- and dialysis_twice_in_week. For candidates
    aged 12 or more. Result in points (6-40); the policy defines no risk category, so category is None.
    Contributions: 10 x each log term of MELD(i) (creatinine 9.57 ln Cr, bilirubin 3.78 ln bili, inr
    11.2 ln INR; 6.43 = details["intercept"]) and the sodium term computed from the rounded MELD(i).
    """
    bounded: dict[str, Any] = {}
    creatinine = _meld_creatinine(values, 4.0, bounded)
    bilirubin = _bound("bilirubin", float(values["bilirubin"]), _LAB_FLOOR, None, bounded,
                       "bilirubin < 1.0 set to 1.0 mg/dL")
    inr = _bound("inr", float(values["inr"]), _LAB_FLOOR, None, bounded, "INR < 1.0 set to 1.0")
    sodium = _bound("sodium", float(values["sodium"]), *_SODIUM_BOUNDS, bounded,
                    "sodium < 125 set to 125; > 137 set to 137 mmol/L")

    terms = {
        "creatinine": _MELD_I["creatinine"] * math.log(creatinine),
        "bilirubin": _MELD_I["bilirubin"] * math.log(bilirubin),
        "inr": _MELD_I["inr"] * math.log(inr),
    }
    meld_i_raw = sum(terms.values()) + _MELD_I["intercept"]
    meld_i = _round_half_up(meld_i_raw, 1) * 10  # "rounded to the tenth decimal place and multiplied by 10"
    meld_i = float(round(meld_i))  # exact whole number (x.y * 10), clearing binary noise
    if meld_i > _MELD_NA_THRESHOLD:
        sodium_term = _MELD_NA_SODIUM * (137 - sodium) - _MELD_NA_INTERACTION * meld_i * (137 - sodium)
    else:
        sodium_term = 0.0
    score_unrounded = meld_i + sodium_term
    score = _round_half_up(score_unrounded)
    if score > _MELD_CAP:
        bounded["score"] = {"measured": score, "used": float(_MELD_CAP), "rule": "the maximum MELD score is 40"}
        score = float(_MELD_CAP)

    contributions = {name: 10 * term for name, term in terms.items()}
    contributions["sodium"] = sodium_term
    return Result(
        value=score,
        unit="points",
        category=None,
        contributions=contributions,
        citation=MELD_NA_CITATION,
        details={
            "bounded": bounded,
            "values_used": {"creatinine": creatinine, "bilirubin": bilirubin, "inr": inr, "sodium": sodium},
            "meld_i_unrounded": 10 * meld_i_raw,
            "meld_i": meld_i,
            "sodium_adjusted": meld_i > _MELD_NA_THRESHOLD,
            "score_unrounded": score_unrounded,
            "intercept": 10 * _MELD_I["intercept"],
            "contribution_scale": (
                "MELD points before rounding: intercept 6.43 + creatinine + bilirubin + inr = meld_i_unrounded "
                "(10 x the MELD(i) log terms); sodium = 1.32 x (137 - Na) - 0.033 x MELD(i) x (137 - Na) with the "
                "rounded MELD(i), so meld_i + sodium = score_unrounded (0 when MELD(i) <= 11)"
            ),
        },
    )


meld_na = register(
    Calculator(
        name="meld_na",
        title="MELD(Na), OPTN/UNOS policy 9.1.D (January 2016)",
        version="1",
        citation=MELD_NA_CITATION,
        params=(
            Param("creatinine", "quantity", "Serum creatinine", dimension="creatinine",
                  minimum=CREATININE_RANGE[0], maximum=CREATININE_RANGE[1]),
            Param("bilirubin", "quantity", "Total serum bilirubin", dimension="bilirubin",
                  minimum=BILIRUBIN_RANGE[0], maximum=BILIRUBIN_RANGE[1]),
            Param("inr", "quantity", "INR of prothrombin time", dimension="ratio",
                  minimum=INR_RANGE[0], maximum=INR_RANGE[1]),
            Param("sodium", "quantity", "Serum sodium", dimension="sodium",
                  minimum=SODIUM_RANGE[0], maximum=SODIUM_RANGE[1]),
            flag("dialysis_twice_in_week",
                 "Two or more dialysis treatments, or 24 hours of CVVHD, in the prior 7 days"),
        ),
        compute=compute_meld_na,
        unit="points",
    )
)


# ============================================================================================
# MELD 3.0: Kim 2021; OPTN Policy 9.1.D, July 2023


MELD_3_CITATION = (
    "Kim WR, Mannalithara A, Heimbach JK, et al. MELD 3.0: The Model for End-Stage Liver Disease Updated for "
    "the Modern Era. Gastroenterology 2021;161:1887-1895.e4 (final model): MELD 3.0 = 1.33 (if female) "
    "+ 4.56 ln(bilirubin) + 0.82 (137 - Na) - 0.24 (137 - Na) ln(bilirubin) + 9.09 ln(INR) + 11.14 ln(Cr) "
    "+ 1.85 (3.5 - albumin) - 1.83 (3.5 - albumin) ln(Cr) + 6; bounds and maximum of 40 per OPTN Policy 9.1.D "
    "(in effect 13 July 2023)."
)

_MELD_3 = {
    "female": 1.33,
    "bilirubin": 4.56,
    "sodium": 0.82,
    "bilirubin_x_sodium": -0.24,
    "inr": 9.09,
    "creatinine": 11.14,
    "albumin": 1.85,
    "albumin_x_creatinine": -1.83,
    "intercept": 6.0,
}
_ALBUMIN_BOUNDS = (1.5, 3.5)


def compute_meld_3(values: Mapping[str, Any]) -> Result:
    """MELD 3.0 (Kim WR et al. Gastroenterology 2021;161:1887-1895; OPTN Policy 9.1.D, July 2023):

        MELD 3.0 = 1.33 x (female) + 4.56 x ln(bili) + 0.82 x (137 - Na) - 0.24 x (137 - Na) x ln(bili)
                   + 9.09 x ln(INR) + 11.14 x ln(Cr) + 1.85 x (3.5 - alb) - 1.83 x (3.5 - alb) x ln(Cr) + 6

    Bounds (part of the method, listed in ``details["bounded"]``): bilirubin, INR and creatinine < 1.0
    set to 1.0; creatinine > 3.0 mg/dL, or after two or more dialysis treatments (or 24 h of CVVHD) in
    the prior week, set to 3.0; sodium bounded 125-137 mmol/L; albumin bounded 1.5-3.5 g/dL. The
    result is rounded to the nearest whole number (half up) and capped at 40.

    Inputs: sex, bilirubin (mg/dL, 0.1-80), sodium (mmol/L, 100-180), inr (0.5-20), creatinine
    (mg/dL, 0.1-20), albumin (g/dL, 0.5-7.0) -- plausibility ranges, the sources have none -- and
    dialysis_twice_in_week. For adult candidates: OPTN gives candidates aged 12-17 the 1.33 regardless
    of sex, which needs an age input this calculator does not take. No category is defined by the
    source. Contributions are each term in points (intercept 6 in details); intercept + sum =
    score_unrounded.
    """
    bounded: dict[str, Any] = {}
    creatinine = _meld_creatinine(values, 3.0, bounded)
    bilirubin = _bound("bilirubin", float(values["bilirubin"]), _LAB_FLOOR, None, bounded,
                       "bilirubin < 1.0 set to 1.0 mg/dL")
    inr = _bound("inr", float(values["inr"]), _LAB_FLOOR, None, bounded, "INR < 1.0 set to 1.0")
    sodium = _bound("sodium", float(values["sodium"]), *_SODIUM_BOUNDS, bounded,
                    "sodium < 125 set to 125; > 137 set to 137 mmol/L")
    albumin = _bound("albumin", float(values["albumin"]), *_ALBUMIN_BOUNDS, bounded,
                     "albumin < 1.5 set to 1.5; > 3.5 set to 3.5 g/dL")

    ln_bili, ln_cr = math.log(bilirubin), math.log(creatinine)
    contributions = {
        "sex": _MELD_3["female"] if values["sex"] == "female" else 0.0,
        "bilirubin": _MELD_3["bilirubin"] * ln_bili,
        "sodium": _MELD_3["sodium"] * (137 - sodium),
        "bilirubin_x_sodium": _MELD_3["bilirubin_x_sodium"] * (137 - sodium) * ln_bili,
        "inr": _MELD_3["inr"] * math.log(inr),
        "creatinine": _MELD_3["creatinine"] * ln_cr,
        "albumin": _MELD_3["albumin"] * (3.5 - albumin),
        "albumin_x_creatinine": _MELD_3["albumin_x_creatinine"] * (3.5 - albumin) * ln_cr,
    }
    score_unrounded = _MELD_3["intercept"] + sum(contributions.values())
    score = _round_half_up(score_unrounded)
    if score > _MELD_CAP:
        bounded["score"] = {"measured": score, "used": float(_MELD_CAP), "rule": "the maximum MELD score is 40"}
        score = float(_MELD_CAP)
    return Result(
        value=score,
        unit="points",
        category=None,
        contributions=contributions,
        citation=MELD_3_CITATION,
        details={
            "bounded": bounded,
            "values_used": {"creatinine": creatinine, "bilirubin": bilirubin, "inr": inr, "sodium": sodium,
                            "albumin": albumin},
            "score_unrounded": score_unrounded,
            "intercept": _MELD_3["intercept"],
            "contribution_scale": (
                "MELD 3.0 points before rounding: intercept 6 + sum of contributions = score_unrounded; "
                "interaction terms are reported under bilirubin_x_sodium and albumin_x_creatinine"
            ),
        },
    )


meld_3 = register(
    Calculator(
        name="meld_3",
        title="MELD 3.0 (Kim 2021; OPTN policy 9.1.D, July 2023)",
        version="1",
        citation=MELD_3_CITATION,
        params=(
            SEX,
            Param("bilirubin", "quantity", "Total serum bilirubin", dimension="bilirubin",
                  minimum=BILIRUBIN_RANGE[0], maximum=BILIRUBIN_RANGE[1]),
            Param("sodium", "quantity", "Serum sodium", dimension="sodium",
                  minimum=SODIUM_RANGE[0], maximum=SODIUM_RANGE[1]),
            Param("inr", "quantity", "INR of prothrombin time", dimension="ratio",
                  minimum=INR_RANGE[0], maximum=INR_RANGE[1]),
            Param("creatinine", "quantity", "Serum creatinine", dimension="creatinine",
                  minimum=CREATININE_RANGE[0], maximum=CREATININE_RANGE[1]),
            Param("albumin", "quantity", "Serum albumin", dimension="albumin",
                  minimum=ALBUMIN_RANGE[0], maximum=ALBUMIN_RANGE[1]),
            flag("dialysis_twice_in_week",
                 "Two or more dialysis treatments, or 24 hours of CVVHD, in the prior 7 days"),
        ),
        compute=compute_meld_3,
        unit="points",
    )
)

__all__ = ["ckd_epi_2021", "compute_ckd_epi_2021", "compute_meld_3", "compute_meld_na", "kdigo_gfr_category",
           "meld_3", "meld_na"]
