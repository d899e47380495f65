"""The starter rule library: rules with citations and test cases, loaded by
``manage.py load_starter_rules`` (idempotent: an unchanged rule gets no new version) and editable
in the admin afterwards. Value sets come from ``data/starter_value_sets.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.db import transaction

from .engine import RXNORM
from .models import Rule, RuleTestCase, RuleVersion
from .services import (
    VERSION_FIELDS,
    rule_version_activate,
    rule_version_edit,
    value_sets_import,
)

VALUE_SETS_FILE = Path(__file__).resolve().parent / "data" / "starter_value_sets.json"
MG_DL, EGFR = "mg/dL", "mL/min/{1.73_m2}"
CHOLESTEROL_GUIDELINE = (
    "Grundy SM, et al. 2018 AHA/ACC/multisociety Guideline on the Management of Blood Cholesterol. "
    "Circulation 2019;139:e1082-e1143"
)
CHOLESTEROL_URL = "https://doi.org/10.1161/CIR.0000000000000625"
NO_STATIN = {"fact": "medication:statins", "op": "absent"}
START_STATIN = [{"label": "Start a statin", "type": "order", "code": "statins"}]


def _ldl(op: str, value: Any) -> dict[str, Any]:
    return {"fact": "observation:ldl", "op": op, "value": value, "unit": MG_DL, "lookback_days": 730, "name": "ldl"}


def _obs(code: str, value: float, unit: str, days_ago: int) -> dict[str, Any]:
    return {"code": code, "value": value, "unit": unit, "days_ago": days_ago}


def _risk(calculator: str, value: float, unit: str, days_ago: int = 1) -> dict[str, Any]:
    return {"calculator": calculator, "value": value, "unit": unit, "days_ago": days_ago}


def _med(display: str, code: str = "", system: str = RXNORM) -> dict[str, Any]:
    return {"system": system, "code": code, "display": display}


AF = {"system": "http://snomed.info/sct", "code": "49436004", "display": "Atrial fibrillation"}


def _allergy_branch(allergy_set: str, drug_set: str) -> dict[str, Any]:
    """An allergy of one class and a medication (ordered or active) of the same class; the shared
    names let the card say which allergy and which order matched, whichever branch held."""
    return {"all": [{"fact": f"allergy:{allergy_set}", "op": "present", "name": "allergy"},
                    {"fact": f"medication:{drug_set}", "op": "present", "name": "drug"}]}


# An allergy to a drug ingredient and a medication containing it (decision.engine.ingredient_pairs);
# the names match the class branches', so the card names the allergy and the order either way.
SAME_INGREDIENT_BRANCH = {"all": [{"fact": "same-ingredient:allergy", "op": "present", "name": "allergy"},
                                  {"fact": "same-ingredient:medication", "op": "present", "name": "drug"}]}


def _allergy(display: str, code: str = "", system: str = "http://snomed.info/sct") -> dict[str, Any]:
    return {"system": system, "code": code, "display": display}


def _af_branch(sex: str, threshold: int) -> dict[str, Any]:
    return {"all": [{"fact": "condition:atrial-fibrillation", "op": "present", "name": "af"},
                    {"fact": "medication:anticoagulants", "op": "absent"},
                    {"fact": "sex", "op": "=", "value": sex},
                    {"fact": "risk:cha2ds2_vasc", "op": ">=", "value": threshold, "unit": "points",
                     "lookback_days": 365, "name": "cha2ds2_vasc"}]}


def _note_branch(slug: str) -> dict[str, Any]:
    name = slug.replace("-", "_")
    return {"all": [{"fact": f"note:{slug}", "op": "present", "lookback_days": 365, "name": f"{name}_note"},
                    {"fact": f"condition:{slug}", "op": "absent", "name": f"{name}_listed"}]}


RULES: list[dict[str, Any]] = [
    {
        "slug": "statin-primary-prevention", "title": "Statin for primary prevention", "category": "prevention",
        "severity": "warning",
        "conditions": {"all": [
            {"fact": "age", "op": "between", "value": [40, 75], "unit": "a"},
            _ldl("between", [70, 189]),
            {"fact": "risk:pce_ascvd_10y", "op": ">=", "value": 7.5, "unit": "%", "lookback_days": 365,
             "name": "ascvd"},
            NO_STATIN]},
        "summary_template": "Consider a statin: 10-year ASCVD risk {ascvd}, LDL {ldl}, no statin on the list.",
        "rationale": "Adults 40-75 years without diabetes or clinical ASCVD, LDL-C 70-189 mg/dL and a 10-year "
                     "ASCVD risk of 7.5% or more (Pooled Cohort Equations): a moderate-intensity statin after a "
                     "risk discussion (COR I).",
        "citation_source": f"{CHOLESTEROL_GUIDELINE}; section 4.4.1, recommendation 4.4.1-3 and Figure 2.",
        "citation_url": CHOLESTEROL_URL, "suggested_actions": START_STATIN,
        "tests": [
            {"name": "eligible without statin", "expect": "fires", "expected_message": "9.1 %",
             "facts": {"age": 60, "sex": "male", "observations": [_obs("18262-6", 140, MG_DL, 60)],
                       "risks": [_risk("pce_ascvd_10y", 9.1, "%")]}},
            {"name": "already on a statin", "expect": "does-not-fire",
             "facts": {"age": 60, "observations": [_obs("18262-6", 140, MG_DL, 60)],
                       "risks": [_risk("pce_ascvd_10y", 9.1, "%")],
                       "medications": [_med("atorvastatin 20 MG Oral Tablet", "617310")]}},
            {"name": "low risk", "expect": "does-not-fire",
             "facts": {"age": 60, "observations": [_obs("18262-6", 140, MG_DL, 60)],
                       "risks": [_risk("pce_ascvd_10y", 4.0, "%")]}},
            {"name": "no LDL on record", "expect": "does-not-fire",
             "facts": {"age": 60, "risks": [_risk("pce_ascvd_10y", 12.0, "%")]}},
        ],
    },
    {
        "slug": "statin-ldl-190", "title": "Statin for LDL-C of 190 mg/dL or more", "category": "prevention",
        "severity": "warning",
        "conditions": {"all": [{"fact": "age", "op": "between", "value": [20, 75], "unit": "a"}, _ldl(">=", 190),
                               NO_STATIN]},
        "summary_template": "LDL {ldl} ({ldl.date}) with no statin: start a high-intensity statin.",
        "rationale": "Severe primary hypercholesterolemia (LDL-C >= 190 mg/dL), age 20-75: maximally tolerated "
                     "statin without calculating 10-year risk (COR I).",
        "citation_source": f"{CHOLESTEROL_GUIDELINE}; section 4.3, recommendation 4.3-1.",
        "citation_url": CHOLESTEROL_URL, "suggested_actions": START_STATIN,
        "tests": [
            {"name": "LDL 195 mg/dL", "expect": "fires", "expected_message": "LDL 195 mg/dL",
             "facts": {"age": 45, "observations": [_obs("18262-6", 195, MG_DL, 30)]}},
            {"name": "LDL 189 mg/dL", "expect": "does-not-fire",
             "facts": {"age": 45, "observations": [_obs("18262-6", 189, MG_DL, 30)]}},
            {"name": "on simvastatin (by name)", "expect": "does-not-fire",
             "facts": {"age": 45, "observations": [_obs("18262-6", 220, MG_DL, 30)],
                       "medications": [{"display": "Simvastatin 40 mg tablet"}]}},
        ],
    },
    {
        "slug": "af-anticoagulation", "title": "Anticoagulation review in atrial fibrillation",
        "category": "medication-safety", "severity": "warning",
        "conditions": {"any": [_af_branch("male", 2), _af_branch("female", 3)],
                       "show": [{"fact": "risk:has_bled", "name": "has_bled"}]},
        "summary_template": "Atrial fibrillation, CHA2DS2-VASc {cha2ds2_vasc}, no oral anticoagulant: review "
                            "anticoagulation (HAS-BLED {has_bled}).",
        "rationale": "AF with an annual thromboembolic risk of 2% or more (CHA2DS2-VASc >= 2 in men, >= 3 in "
                     "women): oral anticoagulation is recommended; HAS-BLED flags modifiable bleeding risks and is "
                     "not a reason to withhold it.",
        "citation_source": "Joglar JA, et al. 2023 ACC/AHA/ACCP/HRS Guideline for the Diagnosis and Management of "
                           "Atrial Fibrillation. Circulation 2024;149:e1-e156, section 6.3, recommendation 6.3.1-1; "
                           "HAS-BLED: Pisters R, et al. Chest 2010;138:1093-1100, Table 2.",
        "citation_url": "https://doi.org/10.1161/CIR.0000000000001193",
        "suggested_actions": [{"label": "Start an oral anticoagulant (DOAC preferred)", "type": "order"}],
        "tests": [
            {"name": "man, score 2, no anticoagulant", "expect": "fires", "expected_message": "HAS-BLED 1 points",
             "facts": {"sex": "male", "conditions": [AF], "risks": [_risk("cha2ds2_vasc", 2, "points"),
                                                                    _risk("has_bled", 1, "points")]}},
            {"name": "woman, score 2", "expect": "does-not-fire",
             "facts": {"sex": "female", "conditions": [AF], "risks": [_risk("cha2ds2_vasc", 2, "points")]}},
            {"name": "woman, score 3", "expect": "fires",
             "facts": {"sex": "female", "conditions": [AF], "risks": [_risk("cha2ds2_vasc", 3, "points")]}},
            {"name": "on apixaban", "expect": "does-not-fire",
             "facts": {"sex": "male", "conditions": [AF], "risks": [_risk("cha2ds2_vasc", 4, "points")],
                       "medications": [_med("apixaban 5 MG Oral Tablet", "1364445")]}},
        ],
    },
    {
        "slug": "sepsis-screen", "title": "Sepsis screen: qSOFA or NEWS2", "category": "acute-care",
        "severity": "critical",
        "conditions": {"any": [
            {"fact": "risk:qsofa", "op": ">=", "value": 2, "unit": "points", "lookback_days": 1, "name": "qsofa"},
            {"fact": "risk:news2", "op": ">=", "value": 7, "unit": "points", "lookback_days": 1, "name": "news2"}]},
        "summary_template": "Possible sepsis or deterioration: qSOFA {qsofa}, NEWS2 {news2}. Assess now.",
        "rationale": "qSOFA >= 2 (respiratory rate >= 22, altered mentation, systolic BP <= 100) identifies "
                     "infected patients at risk of a poor outcome; NEWS2 >= 7 calls for an emergency response.",
        "citation_source": "Singer M, et al. The Third International Consensus Definitions for Sepsis and Septic "
                           "Shock (Sepsis-3). JAMA 2016;315:801-810, Box 4; Royal College of Physicians. National "
                           "Early Warning Score (NEWS) 2, 2017, Chart 4 (clinical response).",
        "citation_url": "https://doi.org/10.1001/jama.2016.0287",
        "suggested_actions": [{"label": "Sepsis assessment: lactate, blood cultures, senior review",
                               "type": "order"}],
        "tests": [
            {"name": "qSOFA 2", "expect": "fires", "expected_message": "qSOFA 2 points",
             "facts": {"risks": [_risk("qsofa", 2, "points", 0)]}},
            {"name": "NEWS2 7", "expect": "fires", "facts": {"risks": [_risk("news2", 7, "points", 0)]}},
            {"name": "scores from last week", "expect": "does-not-fire",
             "facts": {"risks": [_risk("qsofa", 3, "points", 7)]}},
            {"name": "low scores", "expect": "does-not-fire",
             "facts": {"risks": [_risk("qsofa", 1, "points", 0), _risk("news2", 4, "points", 0)]}},
        ],
    },
    {
        "slug": "metformin-egfr-30", "title": "Metformin with eGFR below 30", "category": "medication-safety",
        "severity": "critical",
        "conditions": {"all": [
            {"fact": "medication:metformin", "op": "present", "name": "metformin"},
            {"fact": "observation:egfr", "op": "<", "value": 30, "unit": EGFR, "lookback_days": 365,
             "name": "egfr"}]},
        "summary_template": "Metformin ({metformin}) with eGFR {egfr} on {egfr.date}: contraindicated below 30; "
                            "stop metformin.",
        "rationale": "Metformin is contraindicated with eGFR < 30 mL/min/1.73 m2 (risk of lactic acidosis).",
        "citation_source": "US FDA Drug Safety Communication, 8 April 2016: metformin and reduced kidney function; "
                           "KDIGO 2022 Clinical Practice Guideline for Diabetes Management in CKD. Kidney Int "
                           "2022;102(5S):S1-S127, recommendation 4.1.1 and Figure 23.",
        "citation_url": "https://www.fda.gov/drugs/drug-safety-and-availability/fda-drug-safety-communication-fda-"
                        "revises-warnings-regarding-use-diabetes-medicine-metformin-certain",
        "suggested_actions": [{"label": "Stop metformin", "type": "discontinue", "code": "metformin"}],
        "tests": [
            {"name": "eGFR 25", "expect": "fires", "expected_message": "eGFR 25",
             "facts": {"medications": [_med("24 HR metformin hydrochloride 500 MG Extended Release Oral Tablet",
                                             "860975")],
                       "observations": [_obs("33914-3", 25, EGFR, 20)]}},
            {"name": "eGFR 35", "expect": "does-not-fire",
             "facts": {"medications": [_med("metformin 500 MG Oral Tablet")],
                       "observations": [_obs("33914-3", 35, EGFR, 20)]}},
            {"name": "not on metformin", "expect": "does-not-fire",
             "facts": {"observations": [_obs("33914-3", 20, EGFR, 20)]}},
        ],
    },
    {
        "slug": "drug-allergy", "title": "Medication the patient is allergic to (same ingredient or class)",
        "category": "medication-safety", "severity": "warning",
        "conditions": {"any": [SAME_INGREDIENT_BRANCH,
                               _allergy_branch("penicillin-allergy", "penicillins"),
                               _allergy_branch("sulfonamide-allergy", "sulfonamide-antibacterials")]},
        "summary_template": "{drug} with a recorded allergy ({allergy}): same ingredient or drug class; choose "
                            "another drug or review the allergy.",
        "rationale": "A medication whose ingredient or drug class matches an allergy on the patient's list (an "
                     "AllergyIntolerance neither refuted, entered in error, inactive nor resolved). Same ingredient: "
                     "an allergy to a drug ingredient (an RxNorm ingredient code, or its name) and a medication that "
                     "contains it (the ingredient's RxNorm code or a product of it in the is-a table, or the name "
                     "in the medication's name). Classes checked: "
                     "penicillins (a penicillin allergy label) and sulfonamide antibacterials (sulfamethoxazole, "
                     "sulfadiazine). Cephalosporins are not flagged for a penicillin allergy, nor non-antibacterial "
                     "sulfonamides (furosemide, thiazides, sulfonylureas) for a sulfonamide antibiotic allergy: "
                     "cross-reactivity is low. Many penicillin allergy labels are wrong; referral for evaluation "
                     "(delabelling) is an alternative to avoidance.",
        "citation_source": "Khan DA, et al. Drug allergy: a 2022 practice parameter update. J Allergy Clin Immunol "
                           "2022;150(6):1333-1393 (penicillin allergy, cephalosporin cross-reactivity, sulfonamide "
                           "antibiotic allergy); Strom BL, et al. Absence of cross-reactivity between sulfonamide "
                           "antibiotics and sulfonamide nonantibiotics. N Engl J Med 2003;349:1628-1635; matching "
                           "of active allergies per HL7 FHIR R4 AllergyIntolerance (clinicalStatus, "
                           "verificationStatus); ingredients per NLM RxNorm (ingredient and clinical drug concepts, "
                           "has_ingredient).",
        "citation_url": "https://doi.org/10.1016/j.jaci.2022.08.028",
        "suggested_actions": [{"label": "Cancel the order; choose a drug of another class", "type": "discontinue"},
                              {"label": "Refer for allergy evaluation (delabelling)", "type": "review"}],
        "tests": [
            {"name": "penicillin allergy, amoxicillin / clavulanate ordered", "expect": "fires",
             "expected_message": "Allergy to penicillin",
             "facts": {"allergies": [_allergy("Allergy to penicillin", "91936005")],
                       "medications": [_med("Amoxicillin 120 MG/ML / clavulanate potassium 8.58 MG/ML Oral "
                                            "Suspension", "617993")]}},
            {"name": "sulfonamide allergy (free text), trimethoprim / sulfamethoxazole", "expect": "fires",
             "expected_message": "sulfamethoxazole 800 MG",
             "facts": {"allergies": [{"display": "Sulfa drugs"}],
                       "medications": [_med("sulfamethoxazole 800 MG / trimethoprim 160 MG Oral Tablet")]}},
            {"name": "penicillin allergy, cephalexin", "expect": "does-not-fire",
             "facts": {"allergies": [_allergy("Allergy to penicillin", "91936005")],
                       "medications": [_med("cephalexin 500 MG Oral Capsule")]}},
            {"name": "penicillin allergy, sulfamethoxazole", "expect": "does-not-fire",
             "facts": {"allergies": [_allergy("Allergy to penicillin", "91936005")],
                       "medications": [_med("sulfamethoxazole 800 MG / trimethoprim 160 MG Oral Tablet")]}},
            {"name": "sulfonamide allergy, furosemide", "expect": "does-not-fire",
             "facts": {"allergies": [_allergy("Allergy to sulfonamide", "91939003")],
                       "medications": [_med("furosemide 40 MG Oral Tablet")]}},
            {"name": "lisinopril allergy (RxNorm ingredient), lisinopril ordered", "expect": "fires",
             "expected_message": "lisinopril 10 MG Oral Tablet with a recorded allergy (lisinopril)",
             "facts": {"allergies": [_allergy("lisinopril", "29046", RXNORM)],
                       "medications": [_med("lisinopril 10 MG Oral Tablet", "314076") | {"ingredients": ["29046"]}]}},
            {"name": "lisinopril allergy (name only), lisinopril / hydrochlorothiazide ordered", "expect": "fires",
             "expected_message": "Allergy to lisinopril",
             "facts": {"allergies": [{"display": "Allergy to lisinopril"}],
                       "medications": [_med("hydrochlorothiazide 12.5 MG / lisinopril 10 MG Oral Tablet")]}},
            {"name": "lisinopril allergy, amlodipine ordered", "expect": "does-not-fire",
             "facts": {"allergies": [_allergy("lisinopril", "29046", RXNORM)],
                       "medications": [_med("amlodipine 5 MG Oral Tablet", "197361") | {"ingredients": ["17767"]}]}},
            {"name": "refuted lisinopril allergy, lisinopril ordered", "expect": "does-not-fire",
             "facts": {"allergies": [_allergy("lisinopril", "29046", RXNORM) | {"status": "refuted"}],
                       "medications": [_med("lisinopril 10 MG Oral Tablet", "314076")]}},
            {"name": "inactive lisinopril allergy, lisinopril ordered", "expect": "does-not-fire",
             "facts": {"allergies": [{"display": "Allergy to lisinopril", "status": "inactive"}],
                       "medications": [_med("lisinopril 10 MG Oral Tablet", "314076")]}},
            {"name": "amoxicillin without an allergy", "expect": "does-not-fire",
             "facts": {"medications": [_med("amoxicillin 500 MG Oral Capsule")]}},
        ],
    },
    {
        "slug": "hba1c-9", "title": "HbA1c 9% or more on treatment", "category": "chronic-disease",
        "severity": "warning",
        "conditions": {"all": [
            {"fact": "observation:hba1c", "op": ">=", "value": 9, "unit": "%", "lookback_days": 180, "name": "hba1c"},
            {"fact": "medication:diabetes-medications", "op": "present", "name": "treatment"}]},
        "summary_template": "HbA1c {hba1c} on {hba1c.date} despite {treatment}: intensify treatment.",
        "rationale": "An HbA1c of 9% or more on glucose-lowering treatment is poor control: review adherence and "
                     "intensify (add an agent, consider insulin above 10%).",
        "citation_source": "American Diabetes Association. Standards of Care in Diabetes-2024, section 9: "
                           "Pharmacologic Approaches to Glycemic Treatment. Diabetes Care 2024;47(Suppl 1):S158-S178, "
                           "Figure 9.3; NCQA HEDIS Glycemic Status > 9.0% (poor control) measure.",
        "citation_url": "https://doi.org/10.2337/dc24-S009",
        "suggested_actions": [{"label": "Intensify glucose-lowering treatment", "type": "review"}],
        "tests": [
            {"name": "HbA1c 9.4 % on metformin", "expect": "fires", "expected_message": "HbA1c 9.4 %",
             "facts": {"observations": [_obs("4548-4", 9.4, "%", 30)],
                       "medications": [_med("metformin 500 MG Oral Tablet", "860975")]}},
            {"name": "HbA1c 8.5 %", "expect": "does-not-fire",
             "facts": {"observations": [_obs("4548-4", 8.5, "%", 30)],
                       "medications": [_med("metformin 500 MG Oral Tablet")]}},
            {"name": "untreated", "expect": "does-not-fire",
             "facts": {"observations": [_obs("4548-4", 10.2, "%", 30)]}},
            {"name": "old result", "expect": "does-not-fire",
             "facts": {"observations": [_obs("4548-4", 10.2, "%", 300)],
                       "medications": [_med("insulin glargine 100 UNT/ML")]}},
        ],
    },
    {
        "slug": "ckd-suspected", "title": "Chronic kidney disease suspected, not diagnosed",
        "category": "diagnosis", "severity": "warning",
        "conditions": {"all": [
            {"fact": "observation:egfr", "op": "<", "value": 60, "unit": EGFR, "lookback_days": 730, "count": 2,
             "min_span_days": 90, "name": "egfr"},
            {"fact": "condition:chronic-kidney-disease", "op": "absent"}]},
        "summary_template": "eGFR below 60 for more than 90 days (latest {egfr}) and no CKD on the problem list: "
                            "assess for chronic kidney disease.",
        "rationale": "CKD is a GFR < 60 mL/min/1.73 m2 present for more than 3 months.",
        "citation_source": "KDIGO 2024 Clinical Practice Guideline for the Evaluation and Management of Chronic "
                           "Kidney Disease. Kidney Int 2024;105(4S):S117-S314, chapter 1, section 1.1 (definition, "
                           "Figure 2).",
        "citation_url": "https://doi.org/10.1016/j.kint.2023.10.018",
        "suggested_actions": [{"label": "Add chronic kidney disease to the problem list", "type": "diagnosis"},
                              {"label": "Urine albumin-creatinine ratio", "type": "order"}],
        "tests": [
            {"name": "two low values 120 days apart", "expect": "fires", "expected_message": "latest 48",
             "facts": {"observations": [_obs("33914-3", 55, EGFR, 150), _obs("33914-3", 48, EGFR, 30)]}},
            {"name": "two low values 30 days apart", "expect": "does-not-fire",
             "facts": {"observations": [_obs("33914-3", 55, EGFR, 60), _obs("33914-3", 48, EGFR, 30)]}},
            {"name": "already diagnosed", "expect": "does-not-fire",
             "facts": {"observations": [_obs("33914-3", 55, EGFR, 150), _obs("33914-3", 48, EGFR, 30)],
                       "conditions": [{"system": "http://snomed.info/sct", "code": "433144002"}]}},
        ],
    },
    {
        "slug": "pgx-cyp2c19-clopidogrel", "title": "CYP2C19 poor or intermediate metabolizer on clopidogrel",
        "category": "pharmacogenomics", "severity": "warning",
        "conditions": {"all": [
            {"fact": "medication:clopidogrel", "op": "present", "name": "clopidogrel"},
            {"fact": "genomic:CYP2C19", "op": "=", "name": "cyp2c19",
             "value": ["Poor metabolizer", "Intermediate metabolizer", "Likely poor metabolizer",
                       "Likely intermediate metabolizer"]}]},
        "summary_template": "CYP2C19 {cyp2c19} on clopidogrel: reduced activation; use prasugrel or ticagrelor if "
                            "not contraindicated.",
        "rationale": "CYP2C19 poor and intermediate metabolizers form less active clopidogrel metabolite and have "
                     "more cardiovascular events after PCI/ACS.",
        "citation_source": "Lee CR, et al. Clinical Pharmacogenetics Implementation Consortium (CPIC) Guideline for "
                           "CYP2C19 Genotype and Clopidogrel Therapy: 2022 Update. Clin Pharmacol Ther "
                           "2022;112:959-967, Table 2.",
        "citation_url": "https://doi.org/10.1002/cpt.2526",
        "suggested_actions": [{"label": "Switch to prasugrel or ticagrelor", "type": "order"}],
        "tests": [
            {"name": "poor metabolizer", "expect": "fires", "expected_message": "Poor metabolizer",
             "facts": {"medications": [_med("clopidogrel 75 MG Oral Tablet", "309362")],
                       "genomics": [{"gene": "CYP2C19", "phenotype": "Poor metabolizer", "diplotype": "*2/*2"}]}},
            {"name": "normal metabolizer", "expect": "does-not-fire",
             "facts": {"medications": [_med("clopidogrel 75 MG Oral Tablet", "309362")],
                       "genomics": [{"gene": "CYP2C19", "phenotype": "Normal metabolizer"}]}},
            {"name": "not on clopidogrel", "expect": "does-not-fire",
             "facts": {"genomics": [{"gene": "CYP2C19", "phenotype": "Poor metabolizer"}]}},
        ],
    },
    {
        "slug": "pgx-hla-b5701-abacavir", "title": "HLA-B*57:01 positive with abacavir",
        "category": "pharmacogenomics", "severity": "critical",
        "conditions": {"all": [
            {"fact": "medication:abacavir", "op": "present", "name": "abacavir"},
            {"fact": "genomic:HLA-B*57:01", "op": "=", "value": ["Positive", "Present", "Detected"],
             "name": "hla_b5701"}]},
        "summary_template": "HLA-B*57:01 {hla_b5701} with {abacavir}: abacavir is contraindicated "
                            "(hypersensitivity).",
        "rationale": "HLA-B*57:01 carriers are at high risk of abacavir hypersensitivity; abacavir is not "
                     "recommended.",
        "citation_source": "Martin MA, et al. CPIC Guidelines for HLA-B Genotype and Abacavir Dosing: 2014 update. "
                           "Clin Pharmacol Ther 2014;95:499-500, Table 1.",
        "citation_url": "https://doi.org/10.1038/clpt.2014.38",
        "suggested_actions": [{"label": "Stop abacavir; choose another antiretroviral", "type": "discontinue"}],
        "tests": [
            {"name": "positive on abacavir", "expect": "fires", "expected_message": "Positive",
             "facts": {"medications": [_med("abacavir 300 MG Oral Tablet")],
                       "genomics": [{"gene": "HLA-B*57:01", "phenotype": "Positive"}]}},
            {"name": "negative", "expect": "does-not-fire",
             "facts": {"medications": [_med("abacavir 300 MG Oral Tablet")],
                       "genomics": [{"gene": "HLA-B*57:01", "phenotype": "Negative"}]}},
        ],
    },
    {
        "slug": "pgx-slco1b1-simvastatin", "title": "SLCO1B1 decreased function with simvastatin 40 mg or more",
        "category": "pharmacogenomics", "severity": "warning",
        "conditions": {"all": [
            {"fact": "medication:simvastatin.dose_mg", "op": ">=", "value": 40, "unit": "mg", "name": "dose"},
            {"fact": "genomic:SLCO1B1", "op": "=", "name": "slco1b1",
             "value": ["Decreased function", "Possible decreased function", "Poor function"]}]},
        "summary_template": "SLCO1B1 {slco1b1} with simvastatin {dose}: myopathy risk; use a lower dose or "
                            "another statin.",
        "rationale": "SLCO1B1 decreased or poor function raises simvastatin exposure and the risk of myopathy; "
                     "avoid 40 mg or more (decreased function) or simvastatin altogether (poor function).",
        "citation_source": "Cooper-DeHoff RM, et al. The Clinical Pharmacogenetics Implementation Consortium "
                           "Guideline for SLCO1B1, ABCG2, and CYP2C9 genotypes and Statin-Associated "
                           "Musculoskeletal Symptoms. Clin Pharmacol Ther 2022;111:1007-1021, Table 2.",
        "citation_url": "https://doi.org/10.1002/cpt.2557",
        "suggested_actions": [{"label": "Switch to rosuvastatin or pravastatin, or lower the dose",
                               "type": "order"}],
        "tests": [
            {"name": "decreased function, 40 mg", "expect": "fires", "expected_message": "40 mg",
             "facts": {"medications": [_med("simvastatin 40 MG Oral Tablet")],
                       "genomics": [{"gene": "SLCO1B1", "phenotype": "Decreased function"}]}},
            {"name": "decreased function, 20 mg", "expect": "does-not-fire",
             "facts": {"medications": [_med("simvastatin 20 MG Oral Tablet", "312961")],
                       "genomics": [{"gene": "SLCO1B1", "phenotype": "Decreased function"}]}},
            {"name": "normal function, 80 mg", "expect": "does-not-fire",
             "facts": {"medications": [_med("simvastatin 80 MG Oral Tablet")],
                       "genomics": [{"gene": "SLCO1B1", "phenotype": "Normal function"}]}},
        ],
    },
    {
        "slug": "note-condition-not-on-problem-list", "title": "Condition in notes, not on the problem list",
        "category": "diagnosis", "severity": "info",
        "conditions": {"any": [_note_branch(s) for s in ("atrial-fibrillation", "heart-failure",
                                                          "diabetes-mellitus", "chronic-kidney-disease", "copd")]},
        "summary_template": "A condition is documented in recent notes but missing from the problem list: review "
                            "the problem list.",
        "rationale": "Problem lists are often incomplete; conditions missing from them are missed by every rule "
                     "that reads the list. The note finding counts only when affirmed (not negated, historical, "
                     "hypothetical, uncertain or about a relative).",
        "citation_source": "Wright A, et al. Problem list completeness in electronic health records: a multi-site "
                           "study and assessment of success factors. Int J Med Inform 2015;84:784-790.",
        "citation_url": "https://doi.org/10.1016/j.ijmedinf.2015.06.011",
        "suggested_actions": [{"label": "Add the condition to the problem list", "type": "diagnosis"}],
        "tests": [
            {"name": "heart failure in a note only", "expect": "fires",
             "facts": {"notes": [{"concept": "heart-failure", "preferred": "Heart failure", "text": "CHF",
                                  "codes": [["http://snomed.info/sct", "84114007"]], "days_ago": 10}]}},
            {"name": "negated in the note", "expect": "does-not-fire",
             "facts": {"notes": [{"concept": "heart-failure", "negated": True, "days_ago": 10}]}},
            {"name": "already listed", "expect": "does-not-fire",
             "facts": {"notes": [{"concept": "heart-failure", "days_ago": 10}],
                       "conditions": [{"system": "http://snomed.info/sct", "code": "84114007"}]}},
        ],
    },
    {
        "slug": "imaging-pneumonia-unreported", "title": "Pneumonia likely on a chest image, no report yet",
        "category": "imaging", "severity": "warning",
        "conditions": {"all": [
            {"fact": "imaging:pneumonia", "op": ">=", "value": 0.8, "unit": "1", "lookback_days": 7,
             "name": "pneumonia"},
            {"fact": "imaging:pneumonia.reported", "op": "=", "value": False, "lookback_days": 7},
            {"fact": "imaging:pneumonia.disputed", "op": "=", "value": False, "lookback_days": 7}]},
        "summary_template": "The image model gives pneumonia a probability of {pneumonia} on {pneumonia.date} and "
                            "no radiology report exists: review the image.",
        "rationale": "A high model probability on an unreported chest radiograph is a prompt to look at the "
                     "image (with its heat map) before the report arrives; it is not a diagnosis. A clinician "
                     "who read the image and disagreed with the finding (in the imaging viewer) ends the prompt; "
                     "one who agreed does not, as the report is still to come.",
        "citation_source": "Rajpurkar P, et al. CheXNet: radiologist-level pneumonia detection on chest X-rays with "
                           "deep learning. arXiv:1711.05225, 2017 (the task); threshold 0.8 chosen for high "
                           "specificity on the model's held-out validation.",
        "citation_url": "https://arxiv.org/abs/1711.05225",
        "suggested_actions": [{"label": "Review the image and its heat map", "type": "review"}],
        "tests": [
            {"name": "0.91 two days ago", "expect": "fires", "expected_message": "0.91",
             "facts": {"imaging": [{"label": "pneumonia", "probability": 0.91, "days_ago": 2}]}},
            {"name": "already reported", "expect": "does-not-fire",
             "facts": {"imaging": [{"label": "pneumonia", "probability": 0.91, "days_ago": 2, "reported": True}]}},
            {"name": "a clinician disagreed with the finding", "expect": "does-not-fire",
             "facts": {"imaging": [{"label": "pneumonia", "probability": 0.91, "days_ago": 2, "disputed": True}]}},
            {"name": "a clinician agreed, no report yet", "expect": "fires", "expected_message": "0.91",
             "facts": {"imaging": [{"label": "pneumonia", "probability": 0.91, "days_ago": 2, "reviewed": True}]}},
            {"name": "ten days ago", "expect": "does-not-fire",
             "facts": {"imaging": [{"label": "pneumonia", "probability": 0.95, "days_ago": 10}]}},
        ],
    },
]


@dataclass
class StarterSummary:
    created: int = 0
    new_versions: int = 0
    unchanged: int = 0


def starter_load(*, user: Any = None) -> StarterSummary:
    """Load the value sets and the rules; a rule whose active version already says the same gets
    no new version (idempotent). Each rule's test cases are replaced by the library's before its
    draft is saved, so the draft is tested against them and activated only if they pass."""
    value_sets_import(json.loads(VALUE_SETS_FILE.read_text(encoding="utf-8")))
    summary = StarterSummary()
    for spec in RULES:
        fields = {name: spec[name] for name in VERSION_FIELDS if name in spec}
        fields.setdefault("detail_template", "")
        with transaction.atomic():
            rule, created = Rule.objects.update_or_create(
                slug=spec["slug"], defaults={"title": spec["title"], "category": spec["category"],
                                             "description": spec.get("rationale", "")})
            for case in spec["tests"]:
                RuleTestCase.objects.update_or_create(
                    rule=rule, name=case["name"],
                    defaults={"facts": case["facts"], "expect": case["expect"],
                              "expected_message": case.get("expected_message", "")})
            rule.test_cases.exclude(name__in=[c["name"] for c in spec["tests"]]).delete()
            active = rule.versions.filter(status=RuleVersion.Status.ACTIVE).first()
            if active is not None and all(getattr(active, k) == v for k, v in fields.items()):
                summary.unchanged += 1
                continue
            draft = rule_version_edit(rule, user=user, change_note="starter library", **fields)
            rule_version_activate(draft, user=user)
            summary.created += created
            summary.new_versions += 1
    return summary
