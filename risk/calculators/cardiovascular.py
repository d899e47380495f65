"""Cardiovascular risk calculators (pure Python, no Django).

* ``pce_ascvd_10y`` - ACC/AHA 2013 Pooled Cohort Equations, 10-year risk of a first hard ASCVD event
  (Goff DC Jr et al., 2013 ACC/AHA Guideline on the Assessment of Cardiovascular Risk, Circulation
  2014;129(25 Suppl 2):S49-S73, Appendix 7, Table A - the original published coefficients). Age 40-79 a,
  total cholesterol 130-320 mg/dL, HDL cholesterol 20-100 mg/dL, systolic BP 90-200 mm[Hg]. Risk categories
  from the 2018 AHA/ACC cholesterol guideline (Grundy SM et al., Circulation 2019;139:e1082-e1143).
* ``framingham_cvd_10y`` - Framingham general CVD risk, 10-year risk (D'Agostino RB Sr et al., Circulation
  2008;117:743-753, Table 2, lipid model). Age 30-74 a (the paper's study population); total cholesterol
  130-320 mg/dL, HDL 20-100 mg/dL, systolic BP 90-200 mm[Hg] (the paper states no bounds for these - see
  ``_FRAMINGHAM_RANGE_NOTE``).
* ``cha2ds2_vasc`` - CHA2DS2-VASc stroke risk in atrial fibrillation (Lip GYH et al., Chest 2010;137:263-272),
  categories per the 2020 ESC AF guideline (Hindricks G et al., Eur Heart J 2021;42:373-498). Age 18-120 a.
* ``has_bled`` - HAS-BLED major-bleeding risk on anticoagulation in AF (Pisters R et al., Chest
  2010;138:1093-1100). Age 18-120 a.

Equation-based risks are percentages (0-100, unit "%"); the points scores are in "points". Contributions of the
equation-based risks are terms of the linear predictor (log hazard), see ``details["contribution_scale"]``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from . import register
from .base import SEX, Calculator, Param, Result, age, flag

# ============================================================================================
# Shared quantity inputs


def _total_cholesterol(minimum: float, maximum: float) -> Param:
    return Param("total_cholesterol", "quantity", "Total cholesterol", dimension="cholesterol",
                 minimum=minimum, maximum=maximum)


def _hdl_cholesterol(minimum: float, maximum: float) -> Param:
    return Param("hdl_cholesterol", "quantity", "HDL cholesterol", dimension="cholesterol",
                 minimum=minimum, maximum=maximum)


def _systolic_bp(minimum: float, maximum: float) -> Param:
    return Param("systolic_bp", "quantity", "Systolic blood pressure", dimension="pressure",
                 minimum=minimum, maximum=maximum)


_BP_TREATED = flag("bp_treated", "Currently treated with blood-pressure-lowering medication")
_SMOKER = flag("smoker", "Current smoker")
_DIABETES = flag("diabetes", "Diabetes mellitus")

_LP_SCALE = (
    "linear predictor (log hazard) terms: coefficient x transformed input (ln of age, cholesterol, HDL, SBP; "
    "1/0 for smoker/diabetes), grouped by input (interaction terms with ln(age) are attributed to the other "
    "input); 'group_mean' is minus the source's mean sum of coefficient x value, so the contributions sum to "
    "individual sum - mean = ln(hazard ratio versus the source's mean profile). Every term is in details['terms']."
)

# Which input each linear-predictor term belongs to (for contributions by input).
_TERM_INPUT = {
    "ln_age": "age",
    "ln_age_squared": "age",
    "ln_total_cholesterol": "total_cholesterol",
    "ln_age_x_ln_total_cholesterol": "total_cholesterol",
    "ln_hdl_cholesterol": "hdl_cholesterol",
    "ln_age_x_ln_hdl_cholesterol": "hdl_cholesterol",
    "ln_treated_systolic_bp": "systolic_bp",
    "ln_age_x_ln_treated_systolic_bp": "systolic_bp",
    "ln_untreated_systolic_bp": "systolic_bp",
    "ln_age_x_ln_untreated_systolic_bp": "systolic_bp",
    "smoker": "smoker",
    "ln_age_x_smoker": "smoker",
    "diabetes": "diabetes",
}


def _term_values(values: Mapping[str, Any]) -> dict[str, float]:
    """The transformed value of every possible term (ln of the continuous inputs, 1/0 for flags)."""
    ln_age = math.log(values["age"])
    ln_tc = math.log(values["total_cholesterol"])
    ln_hdl = math.log(values["hdl_cholesterol"])
    ln_sbp = math.log(values["systolic_bp"])
    treated = 1.0 if values["bp_treated"] else 0.0
    smoker = 1.0 if values["smoker"] else 0.0
    return {
        "ln_age": ln_age,
        "ln_age_squared": ln_age * ln_age,
        "ln_total_cholesterol": ln_tc,
        "ln_age_x_ln_total_cholesterol": ln_age * ln_tc,
        "ln_hdl_cholesterol": ln_hdl,
        "ln_age_x_ln_hdl_cholesterol": ln_age * ln_hdl,
        "ln_treated_systolic_bp": ln_sbp * treated,
        "ln_age_x_ln_treated_systolic_bp": ln_age * ln_sbp * treated,
        "ln_untreated_systolic_bp": ln_sbp * (1.0 - treated),
        "ln_age_x_ln_untreated_systolic_bp": ln_age * ln_sbp * (1.0 - treated),
        "smoker": smoker,
        "ln_age_x_smoker": ln_age * smoker,
        "diabetes": 1.0 if values["diabetes"] else 0.0,
    }


def _cox_risk(values: Mapping[str, Any], coefficients: Mapping[str, float], mean: float,
              baseline_survival: float) -> tuple[float, dict[str, float], dict[str, Any]]:
    """10-year risk (%) = 100 x (1 - S0(10) ** exp(sum(coefficient x value) - mean)); contributions by input."""
    transformed = _term_values(values)
    terms: dict[str, dict[str, float]] = {}
    contributions: dict[str, float] = {}
    for term, coefficient in coefficients.items():
        product = coefficient * transformed[term]
        terms[term] = {"coefficient": coefficient, "value": transformed[term], "product": product}
        key = _TERM_INPUT[term]
        contributions[key] = contributions.get(key, 0.0) + product
    individual_sum = sum(t["product"] for t in terms.values())
    contributions["group_mean"] = -mean
    risk = 100.0 * (1.0 - baseline_survival ** math.exp(individual_sum - mean))
    details: dict[str, Any] = {
        "terms": terms,
        "individual_sum": individual_sum,
        "group_mean": mean,
        "baseline_survival_10y": baseline_survival,
        "linear_predictor_minus_mean": individual_sum - mean,
        "contribution_scale": _LP_SCALE,
    }
    return risk, contributions, details


# ============================================================================================
# ACC/AHA 2013 Pooled Cohort Equations (Goff 2013, Appendix 7, Table A; original coefficients)

PCE_CITATION = (
    "Goff DC Jr, Lloyd-Jones DM, Bennett G, Coady S, D'Agostino RB Sr, Gibbons R, et al. 2013 ACC/AHA Guideline "
    "on the Assessment of Cardiovascular Risk: a report of the American College of Cardiology/American Heart "
    "Association Task Force on Practice Guidelines. Circulation. 2014;129(25 Suppl 2):S49-S73. Pooled Cohort "
    "Equations: Appendix 7, Table A (equation parameters and worked example; Goff 2013 original coefficients). "
    "Risk categories: Grundy SM, Stone NJ, Bailey AL, et al. 2018 AHA/ACC/AACVPR/AAPA/ABC/ACPM/ADA/AGS/APhA/ASPC/"
    "NLA/PCNA Guideline on the Management of Blood Cholesterol. Circulation. 2019;139(25):e1082-e1143 "
    "(low <5%, borderline 5-<7.5%, intermediate 7.5-<20%, high >=20%)."
)

# Goff 2013, Table A: coefficient per term, mean (coefficient x value) sum, baseline survival S0(10).
# Terms marked N/A in Table A for a group are simply absent.
PCE_EQUATIONS: dict[str, dict[str, Any]] = {
    "white_female": {
        "coefficients": {
            "ln_age": -29.799,
            "ln_age_squared": 4.884,
            "ln_total_cholesterol": 13.540,
            "ln_age_x_ln_total_cholesterol": -3.114,
            "ln_hdl_cholesterol": -13.578,
            "ln_age_x_ln_hdl_cholesterol": 3.149,
            "ln_treated_systolic_bp": 2.019,
            "ln_untreated_systolic_bp": 1.957,
            "smoker": 7.574,
            "ln_age_x_smoker": -1.665,
            "diabetes": 0.661,
        },
        "mean": -29.18,
        "baseline_survival": 0.9665,
    },
    "african_american_female": {
        "coefficients": {
            "ln_age": 17.114,
            "ln_total_cholesterol": 0.940,
            "ln_hdl_cholesterol": -18.920,
            "ln_age_x_ln_hdl_cholesterol": 4.475,
            "ln_treated_systolic_bp": 29.291,
            "ln_age_x_ln_treated_systolic_bp": -6.432,
            "ln_untreated_systolic_bp": 27.820,
            "ln_age_x_ln_untreated_systolic_bp": -6.087,
            "smoker": 0.691,
            "diabetes": 0.874,
        },
        "mean": 86.61,
        "baseline_survival": 0.9533,
    },
    "white_male": {
        "coefficients": {
            "ln_age": 12.344,
            "ln_total_cholesterol": 11.853,
            "ln_age_x_ln_total_cholesterol": -2.664,
            "ln_hdl_cholesterol": -7.990,
            "ln_age_x_ln_hdl_cholesterol": 1.769,
            "ln_treated_systolic_bp": 1.797,
            "ln_untreated_systolic_bp": 1.764,
            "smoker": 7.837,
            "ln_age_x_smoker": -1.795,
            "diabetes": 0.658,
        },
        "mean": 61.18,
        "baseline_survival": 0.9144,
    },
    "african_american_male": {
        "coefficients": {
            "ln_age": 2.469,
            "ln_total_cholesterol": 0.302,
            "ln_hdl_cholesterol": -0.307,
            "ln_treated_systolic_bp": 1.916,
            "ln_untreated_systolic_bp": 1.809,
            "smoker": 0.549,
            "diabetes": 0.645,
        },
        "mean": 19.54,
        "baseline_survival": 0.8954,
    },
}

# Grundy 2019 (2018 AHA/ACC cholesterol guideline) 10-year ASCVD risk categories: (lower bound %, name).
PCE_CATEGORIES: tuple[tuple[float, str], ...] = ((20.0, "high"), (7.5, "intermediate"), (5.0, "borderline"),
                                                 (0.0, "low"))


def pce_category(risk_percent: float) -> str:
    """2018 AHA/ACC cholesterol guideline (Grundy 2019): low <5%, borderline 5-<7.5%, intermediate 7.5-<20%,
    high >=20% (applied to the unrounded risk)."""
    for lower, name in PCE_CATEGORIES:
        if risk_percent >= lower:
            return name
    return "low"


def pce_ascvd_10y(values: Mapping[str, Any]) -> Result:
    """ACC/AHA 2013 Pooled Cohort Equations: 10-year risk (%) of a first hard ASCVD event (nonfatal MI, CHD
    death, fatal or nonfatal stroke).

    Source: Goff DC Jr et al., 2013 ACC/AHA Guideline on the Assessment of Cardiovascular Risk, Circulation
    2014;129(25 Suppl 2):S49-S73, Appendix 7, Table A (original published coefficients):
    risk = 1 - S0(10) ** exp(sum(coefficient x value) - group mean), sex- and race-specific.
    Inputs: age 40-79 a; sex; race (white / african_american / other - other uses the white equations, as the
    guideline advises for populations other than African-American and non-Hispanic white); total cholesterol
    130-320 mg/dL; HDL cholesterol 20-100 mg/dL; systolic BP 90-200 mm[Hg]; bp_treated, smoker, diabetes.
    Category: Grundy 2019 (low <5, borderline 5-<7.5, intermediate 7.5-<20, high >=20 %).
    """
    race = values["race"]
    race_group = "african_american" if race == "african_american" else "white"
    group = f"{race_group}_{values['sex']}"
    equation = PCE_EQUATIONS[group]
    risk, contributions, details = _cox_risk(values, equation["coefficients"], equation["mean"],
                                             equation["baseline_survival"])
    details["equation"] = group
    details["coefficient_set"] = "Goff 2013 original coefficients (Table A)"
    details["category_source"] = "Grundy 2019 (2018 AHA/ACC cholesterol guideline): low <5, borderline 5-<7.5, " \
                                 "intermediate 7.5-<20, high >=20 (% 10-year risk)"
    if race == "other":
        details["race_note"] = ("race 'other': the white equations are used, as Goff 2013 advises for patients "
                                "from populations other than African-American and non-Hispanic white; the risk "
                                "may be over- or underestimated")
    return Result(value=risk, unit="%", category=pce_category(risk), contributions=contributions,
                  citation=PCE_CITATION, details=details)


PCE = register(Calculator(
    name="pce_ascvd_10y",
    title="ACC/AHA 2013 Pooled Cohort Equations: 10-year hard ASCVD risk (Goff 2013 original coefficients)",
    version="1 (Goff 2013 original coefficients)",
    citation=PCE_CITATION,
    params=(
        age(40, 79),
        SEX,
        Param("race", "choice", "Race (other: the white equations are used, per Goff 2013)",
              choices=("white", "african_american", "other")),
        _total_cholesterol(130, 320),
        _hdl_cholesterol(20, 100),
        _systolic_bp(90, 200),
        _BP_TREATED,
        _SMOKER,
        _DIABETES,
    ),
    compute=pce_ascvd_10y,
    unit="%",
))


# ============================================================================================
# Framingham general CVD risk (D'Agostino 2008, Table 2)

FRAMINGHAM_CITATION = (
    "D'Agostino RB Sr, Vasan RS, Pencina MJ, Wolf PA, Cobain M, Massaro JM, Kannel WB. General cardiovascular "
    "risk profile for use in primary care: the Framingham Heart Study. Circulation. 2008;117(6):743-753. "
    "Table 2 (regression coefficients of the lipid model and 10-year baseline survival S0(10) 0.95012 women / "
    "0.88936 men); mean sums of coefficient x value 26.1931 women / 23.9802 men as published with the "
    "Framingham Heart Study risk functions."
)

FRAMINGHAM_EQUATIONS: dict[str, dict[str, Any]] = {
    "female": {
        "coefficients": {
            "ln_age": 2.32888,
            "ln_total_cholesterol": 1.20904,
            "ln_hdl_cholesterol": -0.70833,
            "ln_untreated_systolic_bp": 2.76157,
            "ln_treated_systolic_bp": 2.82263,
            "smoker": 0.52873,
            "diabetes": 0.69154,
        },
        "mean": 26.1931,
        "baseline_survival": 0.95012,
    },
    "male": {
        "coefficients": {
            "ln_age": 3.06117,
            "ln_total_cholesterol": 1.12370,
            "ln_hdl_cholesterol": -0.93263,
            "ln_untreated_systolic_bp": 1.93303,
            "ln_treated_systolic_bp": 1.99881,
            "smoker": 0.65451,
            "diabetes": 0.57367,
        },
        "mean": 23.9802,
        "baseline_survival": 0.88936,
    },
}

_FRAMINGHAM_RANGE_NOTE = (
    "Age 30-74 a is the age range of the derivation cohort (D'Agostino 2008, Methods). The paper states no valid "
    "range for total cholesterol, HDL or systolic BP; the bounds used (total cholesterol 130-320 mg/dL, HDL 20-100 "
    "mg/dL, SBP 90-200 mm[Hg]) are those the ACC/AHA 2013 Pooled Cohort Equations set for the same kind of "
    "log-linear Cox model (fitted on cohorts that include Framingham), to avoid extrapolating far outside the "
    "observed data."
)


def framingham_cvd_10y(values: Mapping[str, Any]) -> Result:
    """Framingham general cardiovascular disease: 10-year risk (%) of a first CVD event (coronary death, MI,
    coronary insufficiency, angina, ischaemic or haemorrhagic stroke, TIA, peripheral artery disease, heart
    failure).

    Source: D'Agostino RB Sr et al., General cardiovascular risk profile for use in primary care: the Framingham
    Heart Study, Circulation 2008;117:743-753, Table 2 (lipid model):
    risk = 1 - S0(10) ** exp(sum(beta x X) - mean), with ln age, ln total cholesterol, ln HDL, ln SBP (treated or
    untreated coefficient), smoking, diabetes; S0(10) 0.95012 (women) / 0.88936 (men), mean 26.1931 / 23.9802.
    Inputs: age 30-74 a; sex; total cholesterol 130-320 mg/dL; HDL 20-100 mg/dL; SBP 90-200 mm[Hg] (see
    ``_FRAMINGHAM_RANGE_NOTE`` for why); bp_treated, smoker, diabetes. The paper defines no risk categories, so
    ``category`` is None.
    """
    equation = FRAMINGHAM_EQUATIONS[values["sex"]]
    risk, contributions, details = _cox_risk(values, equation["coefficients"], equation["mean"],
                                             equation["baseline_survival"])
    details["equation"] = values["sex"]
    details["valid_ranges"] = _FRAMINGHAM_RANGE_NOTE
    details["category_note"] = "D'Agostino 2008 defines no risk categories for the general CVD risk"
    return Result(value=risk, unit="%", category=None, contributions=contributions,
                  citation=FRAMINGHAM_CITATION, details=details)


FRAMINGHAM = register(Calculator(
    name="framingham_cvd_10y",
    title="Framingham general CVD 10-year risk (D'Agostino 2008, lipid model)",
    version="1",
    citation=FRAMINGHAM_CITATION,
    params=(
        age(30, 74),
        SEX,
        _total_cholesterol(130, 320),
        _hdl_cholesterol(20, 100),
        _systolic_bp(90, 200),
        _BP_TREATED,
        _SMOKER,
        _DIABETES,
    ),
    compute=framingham_cvd_10y,
    unit="%",
))


# ============================================================================================
# CHA2DS2-VASc (Lip 2010), categories per ESC 2020

CHA2DS2_VASC_CITATION = (
    "Lip GYH, Nieuwlaat R, Pisters R, Lane DA, Crijns HJGM. Refining clinical risk stratification for predicting "
    "stroke and thromboembolism in atrial fibrillation using a novel risk factor-based approach: the Euro Heart "
    "Survey on Atrial Fibrillation. Chest. 2010;137(2):263-272 (CHA2DS2-VASc point allocation). Categories: "
    "Hindricks G, Potpara T, Dagres N, et al. 2020 ESC Guidelines for the diagnosis and management of atrial "
    "fibrillation. Eur Heart J. 2021;42(5):373-498 (OAC recommended for CHA2DS2-VASc >=2 in men / >=3 in women; "
    "should be considered for 1 in men / 2 in women; low risk 0 in men / 1 in women). Annual rates: Friberg L, "
    "Rosenqvist M, Lip GYH. Evaluation of risk stratification schemes for ischaemic stroke and bleeding in "
    "182 678 patients with atrial fibrillation: the Swedish Atrial Fibrillation cohort study. Eur Heart J. "
    "2012;33(12):1500-1510."
)

# Friberg 2012 (Swedish AF cohort, patients without anticoagulation): events per 100 patient-years by score.
FRIBERG_2012_ISCHAEMIC_STROKE = {0: 0.2, 1: 0.6, 2: 2.2, 3: 3.2, 4: 4.8, 5: 7.2, 6: 9.7, 7: 11.2, 8: 10.8, 9: 12.2}
FRIBERG_2012_STROKE_TIA_EMBOLISM = {0: 0.3, 1: 0.9, 2: 2.9, 3: 4.6, 4: 6.7, 5: 10.0, 6: 13.6, 7: 15.7, 8: 15.2,
                                    9: 17.4}

_ESC_2020_ADVICE = {
    "low": "low risk: no antithrombotic therapy for stroke prevention (ESC 2020)",
    "moderate": "oral anticoagulation should be considered (ESC 2020, class IIa)",
    "high": "oral anticoagulation recommended (ESC 2020, class I)",
}


def cha2ds2_vasc_category(score: int, sex: str) -> str:
    """ESC 2020: low = 0 (men) / 1 (women); moderate = 1 (men) / 2 (women); high = >=2 (men) / >=3 (women).
    Female sex alone (score 1 in a woman) is low risk: the thresholds for women are one point higher."""
    non_sex_score = score - (1 if sex == "female" else 0)
    if non_sex_score <= 0:
        return "low"
    if non_sex_score == 1:
        return "moderate"
    return "high"


def cha2ds2_vasc(values: Mapping[str, Any]) -> Result:
    """CHA2DS2-VASc score (points, 0-9) for stroke/thromboembolism risk in non-valvular atrial fibrillation.

    Source: Lip GYH et al., Chest 2010;137:263-272: Congestive heart failure/LV dysfunction 1, Hypertension 1,
    Age >=75 2, Diabetes 1, Stroke/TIA/thromboembolism 2, Vascular disease (prior MI, PAD, aortic plaque) 1,
    Age 65-74 1, Sex category female 1 (maximum 9). Inputs: the yes/no items, age 18-120 a, sex.
    Category: 2020 ESC AF guideline (Hindricks 2021): low (men 0 / women 1), moderate (men 1 / women 2),
    high (men >=2 / women >=3). ``details`` carries Friberg 2012 annual event rates for the score.
    """
    years = values["age"]
    age_points = 2 if years >= 75 else 1 if years >= 65 else 0
    contributions: dict[str, float] = {
        "congestive_heart_failure": 1 if values["congestive_heart_failure"] else 0,
        "hypertension": 1 if values["hypertension"] else 0,
        "age": age_points,
        "diabetes": 1 if values["diabetes"] else 0,
        "stroke_tia_thromboembolism": 2 if values["stroke_tia_thromboembolism"] else 0,
        "vascular_disease": 1 if values["vascular_disease"] else 0,
        "sex": 1 if values["sex"] == "female" else 0,
    }
    score = int(sum(contributions.values()))
    category = cha2ds2_vasc_category(score, values["sex"])
    details = {
        "contribution_scale": "points per item (Lip 2010)",
        "recommendation": _ESC_2020_ADVICE[category],
        "category_source": "2020 ESC AF guideline (Hindricks 2021): low men 0 / women 1; moderate men 1 / "
                           "women 2; high men >=2 / women >=3",
        "annual_ischaemic_stroke_rate_percent": FRIBERG_2012_ISCHAEMIC_STROKE[score],
        "annual_stroke_tia_systemic_embolism_rate_percent": FRIBERG_2012_STROKE_TIA_EMBOLISM[score],
        "annual_rate_source": "Friberg 2012, Swedish AF cohort, patients not on anticoagulation (events per 100 "
                              "patient-years)",
    }
    return Result(value=float(score), unit="points", category=category, contributions=contributions,
                  citation=CHA2DS2_VASC_CITATION, details=details)


CHA2DS2_VASC = register(Calculator(
    name="cha2ds2_vasc",
    title="CHA2DS2-VASc stroke risk in atrial fibrillation (Lip 2010; ESC 2020 categories)",
    version="1",
    citation=CHA2DS2_VASC_CITATION,
    params=(
        flag("congestive_heart_failure", "Congestive heart failure or moderate-severe LV systolic dysfunction"),
        flag("hypertension", "Hypertension"),
        age(18, 120),
        _DIABETES,
        flag("stroke_tia_thromboembolism", "Prior stroke, TIA or thromboembolism (2 points)"),
        flag("vascular_disease", "Vascular disease: prior myocardial infarction, peripheral artery disease or "
                                 "aortic plaque"),
        SEX,
    ),
    compute=cha2ds2_vasc,
    unit="points",
))


# ============================================================================================
# HAS-BLED (Pisters 2010)

HAS_BLED_CITATION = (
    "Pisters R, Lane DA, Nieuwlaat R, de Vos CB, Crijns HJGM, Lip GYH. A novel user-friendly score (HAS-BLED) to "
    "assess 1-year risk of major bleeding in patients with atrial fibrillation: the Euro Heart Survey. Chest. "
    "2010;138(5):1093-1100 (HAS-BLED items and points; bleeds per 100 patient-years by score; risk of bleeding "
    "low 0, moderate 1-2, high >=3 - a score >=3 calls for caution and regular review)."
)

# Pisters 2010: bleeds per 100 patient-years by HAS-BLED score (scores above 5: insufficient data).
PISTERS_2010_BLEEDS_PER_100_PATIENT_YEARS = {0: 1.13, 1: 1.02, 2: 1.88, 3: 3.74, 4: 8.70, 5: 12.50}


def has_bled_category(score: int) -> str:
    """Pisters 2010: low 0, moderate 1-2, high >=3."""
    if score >= 3:
        return "high"
    return "moderate" if score >= 1 else "low"


def has_bled(values: Mapping[str, Any]) -> Result:
    """HAS-BLED score (points, 0-9): 1-year risk of major bleeding in anticoagulated atrial fibrillation.

    Source: Pisters R et al., Chest 2010;138:1093-1100: Hypertension (uncontrolled, SBP >160 mm[Hg]) 1;
    Abnormal renal function (dialysis, transplant, creatinine >=200 umol/L) 1 and abnormal liver function
    (cirrhosis, or bilirubin >2x ULN with AST/ALT/ALP >3x ULN) 1; Stroke 1; Bleeding history or predisposition 1;
    Labile INR (time in therapeutic range <60%) 1; Elderly (age >65) 1; Drugs (antiplatelet agents, NSAIDs) 1
    and alcohol (>=8 drinks a week) 1. Inputs: the yes/no items, age 18-120 a.
    Category (Pisters 2010): low 0, moderate 1-2, high >=3 (caution and regular review).
    """
    contributions: dict[str, float] = {
        "uncontrolled_hypertension": 1 if values["uncontrolled_hypertension"] else 0,
        "abnormal_renal_function": 1 if values["abnormal_renal_function"] else 0,
        "abnormal_liver_function": 1 if values["abnormal_liver_function"] else 0,
        "stroke_history": 1 if values["stroke_history"] else 0,
        "bleeding_history": 1 if values["bleeding_history"] else 0,
        "labile_inr": 1 if values["labile_inr"] else 0,
        "age": 1 if values["age"] > 65 else 0,
        "antiplatelet_or_nsaid": 1 if values["antiplatelet_or_nsaid"] else 0,
        "alcohol_excess": 1 if values["alcohol_excess"] else 0,
    }
    score = int(sum(contributions.values()))
    category = has_bled_category(score)
    details: dict[str, Any] = {
        "contribution_scale": "points per item (Pisters 2010)",
        "category_source": "Pisters 2010: low 0, moderate 1-2, high >=3",
        "bleeds_per_100_patient_years": PISTERS_2010_BLEEDS_PER_100_PATIENT_YEARS.get(score),
        "bleed_rate_source": "Pisters 2010, Euro Heart Survey validation cohort (scores >5: insufficient data)",
    }
    if category == "high":
        details["recommendation"] = ("high bleeding risk: caution and regular review after starting "
                                     "antithrombotic therapy; correct the modifiable risk factors")
    return Result(value=float(score), unit="points", category=category, contributions=contributions,
                  citation=HAS_BLED_CITATION, details=details)


HAS_BLED = register(Calculator(
    name="has_bled",
    title="HAS-BLED major bleeding risk in atrial fibrillation (Pisters 2010)",
    version="1",
    citation=HAS_BLED_CITATION,
    params=(
        flag("uncontrolled_hypertension", "Uncontrolled hypertension, systolic BP >160 mm Hg"),
        flag("abnormal_renal_function", "Abnormal renal function: chronic dialysis, renal transplant or serum "
                                        "creatinine >=200 umol/L"),
        flag("abnormal_liver_function", "Abnormal liver function: chronic liver disease (e.g. cirrhosis) or "
                                        "bilirubin >2x ULN with AST/ALT/ALP >3x ULN"),
        flag("stroke_history", "Prior stroke"),
        flag("bleeding_history", "Prior major bleeding or predisposition to bleeding"),
        flag("labile_inr", "Labile INR: unstable/high INRs or time in therapeutic range <60%"),
        age(18, 120),
        flag("antiplatelet_or_nsaid", "Concomitant antiplatelet agent or NSAID"),
        flag("alcohol_excess", "Alcohol excess, >=8 drinks a week"),
    ),
    compute=has_bled,
    unit="points",
))

__all__ = ["CHA2DS2_VASC", "FRAMINGHAM", "HAS_BLED", "PCE", "cha2ds2_vasc", "cha2ds2_vasc_category",
           "framingham_cvd_10y", "has_bled", "has_bled_category", "pce_ascvd_10y", "pce_category"]
