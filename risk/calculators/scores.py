"""Bedside points scores: qSOFA, NEWS2, CURB-65 and the Wells score for pulmonary embolism.

Sources (each calculator's docstring gives the detail):

* qSOFA: Seymour CW, Liu VX, Iwashyna TJ, et al. Assessment of clinical criteria for sepsis: for the
  Third International Consensus Definitions for Sepsis and Septic Shock (Sepsis-3). JAMA 2016;315(8):762-774;
  Singer M, Deutschman CS, Seymour CW, et al. The Third International Consensus Definitions for Sepsis and
  Septic Shock (Sepsis-3). JAMA 2016;315(8):801-810 (qSOFA criteria).
* NEWS2: Royal College of Physicians. National Early Warning Score (NEWS) 2: Standardising the assessment of
  acute-illness severity in the NHS. Updated report of a working party. London: RCP, 2017. Chart 1 (the NEWS
  scoring system) and Chart 2 (NEWS thresholds and triggers / clinical risk).
* CURB-65: Lim WS, van der Eerden MM, Laing R, et al. Defining community acquired pneumonia severity on
  presentation to hospital: an international derivation and validation study. Thorax 2003;58(5):377-382.
* Wells (PE): Wells PS, Anderson DR, Rodger M, et al. Derivation of a simple clinical model to categorize
  patients probability of pulmonary embolism: increasing the models utility with the SimpliRED D-dimer.
  Thromb Haemost 2000;83(3):416-420.

Units (canonical, see base.DIMENSIONS): respiratory and heart rate /min, blood pressure mm[Hg] (kPa accepted),
SpO2 %, temperature Cel ([degF] accepted), urea mmol/L, BUN mg/dL, age years.

Valid ranges. None of these sources states an input range beyond its cut points, so every vital sign is
bounded by what is physiologically possible; a value outside is rejected (CalculatorInputError), never
clamped: respiratory_rate 0-80 /min, heart_rate 20-250 /min, systolic_bp 40-300 mm[Hg], diastolic_bp
20-200 mm[Hg], spo2 50-100 %, temperature 25-45 Cel, urea 0.5-100 mmol/L, bun 1-280 mg/dL, age (CURB-65)
18-120 years (the source studies enrolled adults admitted with pneumonia).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from . import register
from .base import Calculator, CalculatorInputError, Param, Result, age, flag

# --------------------------------------------------------------------------------------------
# Shared vital-sign inputs (physiologically possible ranges; the sources define cut points only).

RESPIRATORY_RATE = Param("respiratory_rate", "quantity", "Respiratory rate (breaths per minute)",
                         dimension="rate", minimum=0, maximum=80)
HEART_RATE = Param("heart_rate", "quantity", "Heart (pulse) rate (beats per minute)",
                   dimension="rate", minimum=20, maximum=250)
SYSTOLIC_BP = Param("systolic_bp", "quantity", "Systolic blood pressure",
                    dimension="pressure", minimum=40, maximum=300)
DIASTOLIC_BP = Param("diastolic_bp", "quantity", "Diastolic blood pressure",
                     dimension="pressure", minimum=20, maximum=200)
SPO2 = Param("spo2", "quantity", "Peripheral oxygen saturation (pulse oximetry)",
             dimension="percent", minimum=50, maximum=100)
TEMPERATURE = Param("temperature", "quantity", "Body temperature", dimension="temperature", minimum=25, maximum=45)

POINTS = "points"


def _measured(value: float) -> float:
    """The value with the binary floating-point noise of unit conversion removed before it meets a cut point
    (e.g. 19.6 mg/dL / 2.8 = 7.000000000000001 mmol/L must not count as urea > 7). Six decimals is far finer
    than any clinical measurement, so this changes no real value."""
    return round(value, 6)


# --------------------------------------------------------------------------------------------
# qSOFA

QSOFA_CITATION = (
    "Seymour CW, Liu VX, Iwashyna TJ, et al. Assessment of Clinical Criteria for Sepsis: For the Third "
    "International Consensus Definitions for Sepsis and Septic Shock (Sepsis-3). JAMA 2016;315(8):762-774; "
    "Singer M, Deutschman CS, Seymour CW, et al. The Third International Consensus Definitions for Sepsis and "
    "Septic Shock (Sepsis-3). JAMA 2016;315(8):801-810 (qSOFA criteria: respiratory rate >=22/min, altered "
    "mentation, systolic blood pressure <=100 mm Hg; >=2 positive)."
)


def qsofa_compute(values: Mapping[str, Any]) -> Result:
    """qSOFA (quick Sequential Organ Failure Assessment), Seymour et al. / Singer et al., JAMA 2016 (Sepsis-3).

    One point each for respiratory_rate >= 22 /min, altered_mentation (Glasgow Coma Scale < 15), and
    systolic_bp <= 100 mm[Hg]; range 0-3 points. A score >= 2 identifies adults with suspected infection who
    are likely to have poor outcomes (category "high"); < 2 is "low". qSOFA is a prompt to consider sepsis,
    not a definition of it. Units: respiratory_rate /min (0-80), systolic_bp mm[Hg] (40-300).
    """
    contributions = {
        "respiratory_rate": 1.0 if _measured(values["respiratory_rate"]) >= 22 else 0.0,
        "altered_mentation": 1.0 if values["altered_mentation"] else 0.0,
        "systolic_bp": 1.0 if _measured(values["systolic_bp"]) <= 100 else 0.0,
    }
    total = sum(contributions.values())
    return Result(
        value=total,
        unit=POINTS,
        category="high" if total >= 2 else "low",
        contributions=contributions,
        citation=QSOFA_CITATION,
        details={
            "criteria_met": [name for name, points in contributions.items() if points],
            "categories": {"high": ">=2 points: higher risk of poor outcome (in-hospital death or ICU stay >=3 "
                                   "days) in suspected infection", "low": "0-1 points"},
            "note": "qSOFA prompts further assessment for organ dysfunction (SOFA); it does not define sepsis.",
        },
    )


QSOFA = register(Calculator(
    name="qsofa",
    title="qSOFA (quick SOFA) score, Sepsis-3",
    version="1",
    citation=QSOFA_CITATION,
    params=(
        RESPIRATORY_RATE,
        flag("altered_mentation", "Altered mentation (Glasgow Coma Scale < 15)"),
        SYSTOLIC_BP,
    ),
    compute=qsofa_compute,
    unit=POINTS,
))


# --------------------------------------------------------------------------------------------
# NEWS2

NEWS2_CITATION = (
    "Royal College of Physicians. National Early Warning Score (NEWS) 2: Standardising the assessment of "
    "acute-illness severity in the NHS. Updated report of a working party. London: RCP, 2017. Chart 1 (the "
    "NEWS scoring system) and Chart 2 (NEWS thresholds and triggers: clinical risk)."
)


def _charted(value: float, step: str) -> float:
    """The value as charted on the NEWS2 observation chart: whole numbers (temperature to 0.1 Cel),
    rounded half up. Chart 1's bands are written at that precision (e.g. 9-11, 12-20; 35.1-36.0)."""
    return float(Decimal(str(value)).quantize(Decimal(step), rounding=ROUND_HALF_UP))


def _news2_respiratory_rate(rr: float) -> int:
    if rr <= 8:
        return 3
    if rr <= 11:
        return 1
    if rr <= 20:
        return 0
    if rr <= 24:
        return 2
    return 3


def _news2_spo2_scale1(spo2: float) -> int:
    if spo2 <= 91:
        return 3
    if spo2 <= 93:
        return 2
    if spo2 <= 95:
        return 1
    return 0


def _news2_spo2_scale2(spo2: float, on_oxygen: bool) -> int:
    if spo2 <= 83:
        return 3
    if spo2 <= 85:
        return 2
    if spo2 <= 87:
        return 1
    if spo2 <= 92 or not on_oxygen:  # 88-92, or >=93 on air
        return 0
    if spo2 <= 94:  # 93-94 on oxygen
        return 1
    if spo2 <= 96:  # 95-96 on oxygen
        return 2
    return 3  # >=97 on oxygen


def _news2_systolic_bp(sbp: float) -> int:
    if sbp <= 90:
        return 3
    if sbp <= 100:
        return 2
    if sbp <= 110:
        return 1
    if sbp <= 219:
        return 0
    return 3


def _news2_heart_rate(hr: float) -> int:
    if hr <= 40:
        return 3
    if hr <= 50:
        return 1
    if hr <= 90:
        return 0
    if hr <= 110:
        return 1
    if hr <= 130:
        return 2
    return 3


def _news2_temperature(temp: float) -> int:
    if temp <= 35.0:
        return 3
    if temp <= 36.0:
        return 1
    if temp <= 38.0:
        return 0
    if temp <= 39.0:
        return 1
    return 2


def news2_compute(values: Mapping[str, Any]) -> Result:
    """NEWS2, Royal College of Physicians 2017, Chart 1 (scoring) and Chart 2 (clinical risk).

    Chart 1 points: respiration rate <=8: 3, 9-11: 1, 12-20: 0, 21-24: 2, >=25: 3; SpO2 Scale 1 <=91: 3,
    92-93: 2, 94-95: 1, >=96: 0; SpO2 Scale 2 (prescribed target 88-92 %, e.g. hypercapnic respiratory
    failure; only under a qualified clinician's direction) <=83: 3, 84-85: 2, 86-87: 1, 88-92 or >=93 on air: 0,
    93-94 on oxygen: 1, 95-96 on oxygen: 2, >=97 on oxygen: 3; air 0 / supplemental oxygen 2; systolic BP
    <=90: 3, 91-100: 2, 101-110: 1, 111-219: 0, >=220: 3; pulse <=40: 3, 41-50: 1, 51-90: 0, 91-110: 1,
    111-130: 2, >=131: 3; consciousness Alert 0, new Confusion/Voice/Pain/Unresponsive 3; temperature
    <=35.0: 3, 35.1-36.0: 1, 36.1-38.0: 0, 38.1-39.0: 1, >=39.1: 2.

    The bands are written at charting precision, so each value is first taken as charted: whole numbers
    (temperature to 0.1 Cel), rounded half up; ``details["charted_values"]`` shows what was scored.
    Chart 2 clinical risk: aggregate 0-4 "low", but a score of 3 in any single parameter "low-medium";
    5-6 "medium"; >=7 "high". For adults (16 years and over); not for children or pregnancy.
    Units and valid ranges: respiratory_rate /min 0-80, spo2 % 50-100, systolic_bp mm[Hg] 40-300,
    heart_rate /min 20-250, temperature Cel 25-45, spo2_scale 1 or 2 (default 1).
    """
    scale = int(values["spo2_scale"])
    on_oxygen = bool(values["on_oxygen"])
    charted = {
        "respiratory_rate": _charted(values["respiratory_rate"], "1"),
        "spo2": _charted(values["spo2"], "1"),
        "systolic_bp": _charted(values["systolic_bp"], "1"),
        "heart_rate": _charted(values["heart_rate"], "1"),
        "temperature": _charted(values["temperature"], "0.1"),
    }
    spo2_points = (_news2_spo2_scale2(charted["spo2"], on_oxygen) if scale == 2
                   else _news2_spo2_scale1(charted["spo2"]))
    points = {
        "respiratory_rate": _news2_respiratory_rate(charted["respiratory_rate"]),
        "spo2": spo2_points,
        "on_oxygen": 2 if on_oxygen else 0,
        "systolic_bp": _news2_systolic_bp(charted["systolic_bp"]),
        "heart_rate": _news2_heart_rate(charted["heart_rate"]),
        "consciousness": 0 if values["consciousness"] == "A" else 3,
        "temperature": _news2_temperature(charted["temperature"]),
    }
    total = sum(points.values())
    red = [name for name, p in points.items() if p == 3]
    if total >= 7:
        category = "high"
    elif total >= 5:
        category = "medium"
    elif red:
        category = "low-medium"
    else:
        category = "low"
    return Result(
        value=float(total),
        unit=POINTS,
        category=category,
        contributions={name: float(p) for name, p in points.items()},
        citation=NEWS2_CITATION,
        details={
            "spo2_scale": scale,
            "charted_values": charted,
            "red_score_parameters": red,
            "categories": {"low": "aggregate 0-4", "low-medium": "aggregate 0-4 with a score of 3 in any "
                           "single parameter", "medium": "aggregate 5-6", "high": "aggregate 7 or more"},
            "note": "spo2_scale selects the SpO2 row scored (Scale 2 only for a prescribed target of 88-92 %); "
                    "it carries no points itself. For adults aged 16 and over; not for pregnancy.",
        },
    )


NEWS2 = register(Calculator(
    name="news2",
    title="National Early Warning Score 2 (NEWS2)",
    version="1",
    citation=NEWS2_CITATION,
    params=(
        RESPIRATORY_RATE,
        SPO2,
        Param("spo2_scale", "integer", "SpO2 scale: 1 (default) or 2 (prescribed target 88-92 %, e.g. "
              "hypercapnic respiratory failure)", minimum=1, maximum=2, required=False, default=1),
        flag("on_oxygen", "Receiving supplemental oxygen (false = breathing air)"),
        SYSTOLIC_BP,
        HEART_RATE,
        Param("consciousness", "choice", "ACVPU: A alert; C new confusion; V responds to voice; P to pain; "
              "U unresponsive", choices=("A", "C", "V", "P", "U")),
        TEMPERATURE,
    ),
    compute=news2_compute,
    unit=POINTS,
))


# --------------------------------------------------------------------------------------------
# CURB-65

CURB65_CITATION = (
    "Lim WS, van der Eerden MM, Laing R, Boersma WG, Karalus N, Town GI, Lewis SA, Macfarlane JT. Defining "
    "community acquired pneumonia severity on presentation to hospital: an international derivation and "
    "validation study. Thorax 2003;58(5):377-382 (CURB-65 criteria and 30-day mortality by score)."
)

UREA_THRESHOLD_MMOL_L = 7.0  # Lim 2003: urea > 7 mmol/L
BUN_THRESHOLD_MG_DL = 19.0  # BUN equivalent used with US units: > 19 mg/dL (7 mmol/L urea = 19.6 mg/dL BUN)

# 30-day mortality (%) by CURB-65 score, derivation cohort, Lim 2003 (abstract). The abstract prints score 2
# as "3%"; the paper's figure and every secondary source give 13%, which fits the rising pattern.
CURB65_MORTALITY_PERCENT = {0: 0.7, 1: 3.2, 2: 13.0, 3: 17.0, 4: 41.5, 5: 57.0}


def curb65_compute(values: Mapping[str, Any]) -> Result:
    """CURB-65, Lim WS et al., Thorax 2003;58:377-382.

    One point each for Confusion (new disorientation in person, place or time), Urea > 7 mmol/L (or, in US
    units, BUN > 19 mg/dL), Respiratory rate >= 30 /min, low Blood pressure (systolic < 90 mm[Hg] or diastolic
    <= 60 mm[Hg]), age >= 65 years; range 0-5. Exactly one of ``urea`` (mmol/L) or ``bun`` (mg/dL) is needed;
    when both are given they must give the same point, else the inputs are rejected naming both.
    Categories (Lim 2003 management groups): 0-1 "low", 2 "moderate", 3-5 "high"; per-score 30-day mortality
    in details. Units and valid ranges: urea mmol/L 0.5-100, bun mg/dL 1-280, respiratory_rate /min 0-80,
    systolic_bp mm[Hg] 40-300, diastolic_bp mm[Hg] 20-200, age years 18-120.
    """
    urea, bun = values.get("urea"), values.get("bun")
    if urea is None and bun is None:
        message = "one of urea (mmol/L) or bun (mg/dL) is required"
        raise CalculatorInputError([("urea", message), ("bun", message)])
    urea_point = None if urea is None else _measured(urea) > UREA_THRESHOLD_MMOL_L
    bun_point = None if bun is None else _measured(bun) > BUN_THRESHOLD_MG_DL
    if urea_point is not None and bun_point is not None and urea_point != bun_point:
        message = (f"urea {urea:g} mmol/L ({'>' if urea_point else '<='} 7) and bun {bun:g} mg/dL "
                   f"({'>' if bun_point else '<='} 19) disagree on the urea criterion; give one of them")
        raise CalculatorInputError([("urea", message), ("bun", message)])
    urea_key = "urea" if urea is not None else "bun"
    urea_met = bool(urea_point if urea_point is not None else bun_point)

    sbp_low = _measured(values["systolic_bp"]) < 90
    dbp_low = _measured(values["diastolic_bp"]) <= 60
    contributions = {
        "confusion": 1.0 if values["confusion"] else 0.0,
        urea_key: 1.0 if urea_met else 0.0,
        "respiratory_rate": 1.0 if _measured(values["respiratory_rate"]) >= 30 else 0.0,
        # One point for low blood pressure, credited to systolic_bp when it is < 90, else to diastolic_bp.
        "systolic_bp": 1.0 if sbp_low else 0.0,
        "diastolic_bp": 1.0 if dbp_low and not sbp_low else 0.0,
        "age": 1.0 if _measured(values["age"]) >= 65 else 0.0,
    }
    total = sum(contributions.values())
    score = int(total)
    category = "low" if score <= 1 else "moderate" if score == 2 else "high"
    return Result(
        value=total,
        unit=POINTS,
        category=category,
        contributions=contributions,
        citation=CURB65_CITATION,
        details={
            "urea_criterion": "urea > 7 mmol/L" if urea_key == "urea" else "BUN > 19 mg/dL",
            "blood_pressure_criterion": {"systolic_below_90": sbp_low, "diastolic_at_or_below_60": dbp_low},
            "thirty_day_mortality_percent": CURB65_MORTALITY_PERCENT[score],
            "mortality_source": "Lim 2003 derivation cohort, 30-day mortality by score (abstract prints score 2 "
                                "as 3%; 13% per the paper's figure)",
            "categories": {"low": "0-1 points: likely suitable for home treatment", "moderate": "2 points: "
                           "consider hospital-supervised treatment", "high": "3-5 points: manage in hospital "
                           "as severe pneumonia"},
        },
    )


CURB65 = register(Calculator(
    name="curb65",
    title="CURB-65 severity score for community-acquired pneumonia",
    version="1",
    citation=CURB65_CITATION,
    params=(
        flag("confusion", "New confusion (disorientation in person, place or time)"),
        Param("urea", "quantity", "Serum urea (give urea or bun, not both needed)", dimension="urea",
              minimum=0.5, maximum=100, required=False),
        Param("bun", "quantity", "Blood urea nitrogen (give urea or bun, not both needed)", dimension="bun",
              minimum=1, maximum=280, required=False),
        RESPIRATORY_RATE,
        SYSTOLIC_BP,
        DIASTOLIC_BP,
        age(18, 120),
    ),
    compute=curb65_compute,
    unit=POINTS,
))


# --------------------------------------------------------------------------------------------
# Wells score for pulmonary embolism

WELLS_PE_CITATION = (
    "Wells PS, Anderson DR, Rodger M, Ginsberg JS, Kearon C, Gent M, Turpie AGG, Bormanis J, Weitz J, "
    "Chamberlain M, Bowie D, Barnes D, Hirsh J. Derivation of a simple clinical model to categorize patients "
    "probability of pulmonary embolism: increasing the models utility with the SimpliRED D-dimer. "
    "Thromb Haemost 2000;83(3):416-420 (seven-variable rule; three-tier and two-tier cut points)."
)

WELLS_PE_POINTS = {
    "dvt_signs": 3.0,
    "pe_most_likely": 3.0,
    "heart_rate": 1.5,
    "immobilization_or_surgery": 1.5,
    "previous_dvt_or_pe": 1.5,
    "hemoptysis": 1.0,
    "malignancy": 1.0,
}


def wells_pe_compute(values: Mapping[str, Any]) -> Result:
    """Wells score for pulmonary embolism, Wells PS et al., Thromb Haemost 2000;83:416-420.

    Clinical signs and symptoms of DVT 3.0; PE the most likely diagnosis (no alternative diagnosis as
    likely) 3.0; heart_rate > 100 /min 1.5; immobilization (>= 3 days) or surgery in the previous 4 weeks
    1.5; previous DVT or PE 1.5; hemoptysis 1.0; malignancy (on treatment, treated in the last 6 months, or
    palliative) 1.0; range 0-12.5. The primary category is the paper's two-tier rule: <= 4 "PE unlikely",
    > 4 "PE likely"; the three-tier rule (< 2 low, 2-6 moderate, > 6 high) is in
    ``details["three_tier_category"]``. Units: heart_rate /min (valid 20-250).
    """
    contributions = {
        name: (points if (_measured(values[name]) > 100 if name == "heart_rate" else values[name]) else 0.0)
        for name, points in WELLS_PE_POINTS.items()
    }
    total = sum(contributions.values())
    three_tier = "low" if total < 2 else "moderate" if total <= 6 else "high"
    return Result(
        value=total,
        unit=POINTS,
        category="PE likely" if total > 4 else "PE unlikely",
        contributions=contributions,
        citation=WELLS_PE_CITATION,
        details={
            "primary_category_rule": "two-tier: <=4 PE unlikely, >4 PE likely",
            "three_tier_category": three_tier,
            "three_tier_rule": "<2 low, 2-6 moderate, >6 high",
        },
    )


WELLS_PE = register(Calculator(
    name="wells_pe",
    title="Wells score for pulmonary embolism (two-tier primary; three-tier in details)",
    version="1",
    citation=WELLS_PE_CITATION,
    params=(
        flag("dvt_signs", "Clinical signs and symptoms of DVT (leg swelling and pain on palpation of deep veins)"),
        flag("pe_most_likely", "PE is the most likely diagnosis (an alternative diagnosis is less likely)"),
        HEART_RATE,
        flag("immobilization_or_surgery", "Immobilization (>= 3 days) or surgery in the previous 4 weeks"),
        flag("previous_dvt_or_pe", "Previous DVT or PE"),
        flag("hemoptysis", "Hemoptysis"),
        flag("malignancy", "Malignancy (on treatment, treated in the last 6 months, or palliative)"),
    ),
    compute=wells_pe_compute,
    unit=POINTS,
))
