"""The pure engine: every operator, look-back windows, all/any nesting, units, missing data."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from decision.engine import RuleDefinitionError, compile_rule, evaluate
from decision.facts import Facts
from decision.valuesets import Members

NOW = dt.datetime(2026, 1, 15, 12, tzinfo=dt.UTC)
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SNOMED = "http://snomed.info/sct"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"

VALUE_SETS = {
    "ldl": Members("ldl", "observation", "cholesterol", codes={LOINC: frozenset({"18262-6", "13457-7"})}),
    "egfr": Members("egfr", "observation", "egfr", codes={LOINC: frozenset({"33914-3"})}),
    "hba1c": Members("hba1c", "observation", "hba1c", codes={LOINC: frozenset({"4548-4", "59261-8"})}),
    "potassium-raw": Members("potassium-raw", "observation", "", codes={LOINC: frozenset({"6298-4"})}),
    "statins": Members("statins", "medication", codes={RXNORM: frozenset({"36567", "312961"})},
                       names=("atorvastatin", "simvastatin")),
    "simvastatin": Members("simvastatin", "medication", codes={RXNORM: frozenset({"36567"})}, names=("simvastatin",)),
    "atrial-fibrillation": Members("atrial-fibrillation", "condition", codes={SNOMED: frozenset({"49436004"})},
                                   prefixes={ICD: ("I48",)}),
}


def rule(conditions: dict[str, Any], summary: str = "fired", **kw: Any):
    return compile_rule(slug=kw.pop("slug", "r"), version=1, severity=kw.pop("severity", "warning"),
                        conditions=conditions, summary_template=summary, value_sets=VALUE_SETS, **kw)


def facts(**data: Any) -> Facts:
    return Facts.from_json(data, as_of=NOW)


def fires(conditions: dict[str, Any], f: Facts) -> bool:
    return evaluate([rule(conditions)], f)[0].fired


LDL = {"fact": "observation:ldl", "unit": "mg/dL", "lookback_days": 365}


def ldl(value: float, days_ago: int = 10, unit: str = "mg/dL", code: str = "18262-6") -> dict[str, Any]:
    return {"code": code, "value": value, "unit": unit, "days_ago": days_ago, "source": f"Observation:{value}"}


@pytest.mark.parametrize("op,threshold,value,expected", [
    ("<", 190, 189.9, True), ("<", 190, 190, False),
    ("<=", 190, 190, True), ("<=", 190, 190.1, False),
    (">", 190, 190.1, True), (">", 190, 190, False),
    (">=", 190, 190, True), (">=", 190, 189.9, False),
    ("=", 190, 190, True), ("=", 190, 191, False),
    ("!=", 190, 191, True), ("!=", 190, 190, False),
    ("between", [70, 189], 70, True), ("between", [70, 189], 189, True), ("between", [70, 189], 189.5, False),
    ("between", [70, 189], 69, False),
])
def test_every_comparison_operator(op, threshold, value, expected):
    f = facts(observations=[ldl(value)])
    assert fires({"all": [{**LDL, "op": op, "value": threshold}]}, f) is expected


def test_present_and_absent_for_observations_medications_and_conditions():
    f = facts(observations=[ldl(150)], medications=[{"system": RXNORM, "code": "312961",
                                                     "display": "simvastatin 20 MG Oral Tablet"}])
    assert fires({"all": [{**LDL, "op": "present"}]}, f)
    assert not fires({"all": [{**LDL, "op": "absent"}]}, f)
    assert fires({"all": [{"fact": "medication:statins", "op": "present"}]}, f)
    assert fires({"all": [{"fact": "condition:atrial-fibrillation", "op": "absent"}]}, f)


def test_the_latest_value_in_the_window_is_used_and_older_ones_are_ignored():
    f = facts(observations=[ldl(200, days_ago=400), ldl(120, days_ago=30)])
    assert not fires({"all": [{**LDL, "op": ">=", "value": 190}]}, f)  # latest is 120
    old_only = facts(observations=[ldl(200, days_ago=400)])
    result = evaluate([rule({"all": [{**LDL, "op": ">=", "value": 190}]})], old_only)[0]
    assert not result.fired
    assert result.trace[0]["missing"] is True and "365 days" in result.trace[0]["problem"]
    assert fires({"all": [{**LDL, "lookback_days": 500, "op": ">=", "value": 190}]}, old_only)


def test_a_value_in_mmol_per_litre_is_compared_in_mg_per_decilitre():
    # 5.0 mmol/L x 38.67 = 193.35 mg/dL (cholesterol, MW 386.65 g/mol); facts carry canonical units
    # when loaded from the database; here the threshold is written in mmol/L instead.
    f = facts(observations=[ldl(193.35)])
    assert fires({"all": [{**LDL, "unit": "mmol/L", "op": ">=", "value": 4.9}]}, f)
    assert not fires({"all": [{**LDL, "unit": "mmol/L", "op": ">=", "value": 5.1}]}, f)


def test_hba1c_in_mmol_per_mol_threshold_converts_through_the_ifcc_equation():
    # 75 mmol/mol -> 0.09148 x 75 + 2.152 = 9.01 % (Hoelzel 2004)
    f = facts(observations=[{"code": "4548-4", "value": 9.05, "unit": "%", "days_ago": 5}])
    assert fires({"all": [{"fact": "observation:hba1c", "op": ">=", "value": 75, "unit": "mmol/mol"}]}, f)
    assert not fires({"all": [{"fact": "observation:hba1c", "op": ">=", "value": 76, "unit": "mmol/mol"}]}, f)


def test_a_wrong_unit_is_refused_when_the_rule_is_compiled():
    with pytest.raises(RuleDefinitionError) as err:
        rule({"all": [{"fact": "observation:egfr", "op": "<", "value": 30, "unit": "mg/dL"}]})
    assert "conditions.all[0] (observation:egfr)" in str(err.value)
    assert "mL/min/{1.73_m2}" in str(err.value)


def test_a_record_unit_that_cannot_be_compared_is_reported_not_silently_used():
    f = facts(observations=[{"code": "6298-4", "value": 5.9, "unit": "mg/dL", "days_ago": 1}])
    result = evaluate([rule({"all": [{"fact": "observation:potassium-raw", "op": ">", "value": 5.5,
                                      "unit": "mmol/L"}]})], f)[0]
    assert not result.fired
    assert "differs" in result.trace[0]["problem"]


def test_definition_problems_are_all_listed():
    with pytest.raises(RuleDefinitionError) as err:
        rule({"all": [{"fact": "observation:nope", "op": ">", "value": 1, "unit": "1"},
                      {"fact": "condition:atrial-fibrillation", "op": ">", "value": 1},
                      {"fact": "age", "op": "~", "value": 1},
                      {"fact": "age", "op": "between", "value": [80, 40]}]}, summary="x {missing}")
    text = str(err.value)
    assert "no value set 'nope'" in text
    assert "only 'present' or 'absent'" in text
    assert "operator '~'" in text
    assert "low <= high" in text
    assert "{missing} is not the name of a condition" in text


def test_groups_nest_one_level_and_no_deeper():
    nested = {"any": [{"all": [{"fact": "age", "op": ">=", "value": 40},
                               {"fact": "sex", "op": "=", "value": "male"}]},
                      {"all": [{"fact": "age", "op": ">=", "value": 50},
                               {"fact": "sex", "op": "=", "value": "female"}]}]}
    assert fires(nested, facts(age=45, sex="male"))
    assert not fires(nested, facts(age=45, sex="female"))
    assert fires(nested, facts(age=55, sex="female"))
    with pytest.raises(RuleDefinitionError, match="nest one level only"):
        rule({"all": [{"any": [{"all": [{"fact": "age", "op": ">", "value": 1}]}]}]})


def test_all_needs_every_condition_and_any_needs_one():
    f = facts(age=50, sex="female")
    a = {"fact": "age", "op": ">=", "value": 40}
    b = {"fact": "sex", "op": "=", "value": "male"}
    assert not fires({"all": [a, b]}, f)
    assert fires({"any": [a, b]}, f)


def test_missing_data_does_not_fire_a_comparison_and_the_trace_says_so():
    result = evaluate([rule({"all": [{**LDL, "op": "<", "value": 100}]})], facts())[0]
    assert not result.fired
    entry = result.trace[0]
    assert entry["missing"] is True and entry["held"] is False and entry["value"] is None
    # "absent" of a missing value holds
    assert fires({"all": [{**LDL, "op": "absent"}]}, facts())
    # age unknown
    assert not fires({"all": [{"fact": "age", "op": ">=", "value": 40}]}, facts())


def test_changed_by_compares_the_latest_with_the_oldest_value_in_the_window():
    series = [{"code": "33914-3", "value": v, "unit": "mL/min/{1.73_m2}", "days_ago": d}
              for v, d in ((62, 300), (55, 150), (45, 10))]
    f = facts(observations=series)
    fell = {"fact": "observation:egfr", "op": "changed by", "unit": "mL/min/{1.73_m2}", "lookback_days": 365}
    assert fires({"all": [{**fell, "value": -15}]}, f)  # 45 - 62 = -17
    assert not fires({"all": [{**fell, "value": -20}]}, f)
    assert fires({"all": [{**fell, "value": -25, "relative": True}]}, f)  # -27.4 %
    assert not fires({"all": [{**fell, "value": 5}]}, f)
    assert not fires({"all": [{**fell, "value": -15, "lookback_days": 100}]}, f)  # one value only
    result = evaluate([rule({"all": [{**fell, "value": -15}]})], f)[0]
    assert result.trace[0]["change"] == -17 and result.trace[0]["from"]["value"] == 62


def test_two_values_at_least_ninety_days_apart():
    cond = {"fact": "observation:egfr", "op": "<", "value": 60, "unit": "mL/min/{1.73_m2}", "lookback_days": 730,
            "count": 2, "min_span_days": 90}

    def egfr(*pairs: tuple[float, int]) -> Facts:
        return facts(observations=[{"code": "33914-3", "value": v, "unit": "mL/min/{1.73_m2}", "days_ago": d}
                                   for v, d in pairs])

    assert fires({"all": [cond]}, egfr((55, 200), (52, 20)))
    assert not fires({"all": [cond]}, egfr((55, 80), (52, 20)))  # 60 days apart
    assert not fires({"all": [cond]}, egfr((55, 200)))  # one value
    assert not fires({"all": [cond]}, egfr((75, 200), (52, 20)))  # the older one is normal


def test_medication_dose_and_name_matching():
    f = facts(medications=[{"system": "", "code": "", "display": "Simvastatin 40 MG Oral Tablet"}])
    assert fires({"all": [{"fact": "medication:simvastatin", "op": "present"}]}, f)  # by name
    dose = {"fact": "medication:simvastatin.dose_mg", "unit": "mg"}
    assert fires({"all": [{**dose, "op": ">=", "value": 40}]}, f)
    assert not fires({"all": [{**dose, "op": ">=", "value": 80}]}, f)
    # a word inside another word is not a match
    assert not fires({"all": [{"fact": "medication:statins", "op": "present"}]},
                     facts(medications=[{"display": "nystatin oral suspension"}]))


def test_condition_matching_by_icd_prefix():
    f = facts(conditions=[{"system": ICD, "code": "I48.91", "display": "Unspecified AF"}])
    assert fires({"all": [{"fact": "condition:atrial-fibrillation", "op": "present"}]}, f)


def test_genomic_phenotypes_accept_a_list_case_insensitively():
    cond = {"fact": "genomic:CYP2C19", "op": "=", "value": ["Poor metabolizer", "Intermediate metabolizer"]}
    assert fires({"all": [cond]}, facts(genomics=[{"gene": "CYP2C19", "phenotype": "poor metabolizer"}]))
    assert not fires({"all": [cond]}, facts(genomics=[{"gene": "CYP2C19", "phenotype": "Normal metabolizer"}]))
    assert not fires({"all": [cond]}, facts())


def test_risk_values_carry_their_explanation_and_unit():
    f = facts(risks=[{"calculator": "pce_ascvd_10y", "value": 9.2, "unit": "%", "category": "intermediate",
                      "contributions": {"age": 3.1}, "source": "RiskAssessment:7"}])
    result = evaluate([rule({"all": [{"fact": "risk:pce_ascvd_10y", "op": ">=", "value": 7.5, "unit": "%"}]},
                            summary="ASCVD {pce_ascvd_10y}")], f)[0]
    assert result.fired and result.summary == "ASCVD 9.2 %"
    assert result.trace[0]["explanation"]["contributions"] == {"age": 3.1}
    assert result.trace[0]["source"] == "RiskAssessment:7"
    with pytest.raises(RuleDefinitionError, match="is in '%'"):
        rule({"all": [{"fact": "risk:pce_ascvd_10y", "op": ">=", "value": 0.075, "unit": "1"}]},
             known_risks={"pce_ascvd_10y": "%"})
    with pytest.raises(RuleDefinitionError, match="no calculator or model 'nope'"):
        rule({"all": [{"fact": "risk:nope", "op": ">=", "value": 1, "unit": "points"}]},
             known_risks={"pce_ascvd_10y": "%"})


def test_imaging_probability_in_a_window_with_its_heat_map():
    cond = [{"fact": "imaging:pneumonia", "op": ">=", "value": 0.8, "lookback_days": 7},
            {"fact": "imaging:pneumonia.reported", "op": "=", "value": False, "lookback_days": 7}]
    finding = {"label": "pneumonia", "probability": 0.91, "days_ago": 2, "heatmap_url": "/imaging/h/1.png"}
    result = evaluate([rule({"all": cond})], facts(imaging=[finding]))[0]
    assert result.fired and result.trace[0]["explanation"]["heatmap_url"] == "/imaging/h/1.png"
    assert not fires({"all": cond}, facts(imaging=[{**finding, "days_ago": 9}]))
    assert not fires({"all": cond}, facts(imaging=[{**finding, "reported": True}]))
    assert not fires({"all": cond}, facts(imaging=[{**finding, "probability": 0.5}]))


def test_note_findings_count_only_when_affirmed_and_show_their_span():
    vs = {"fact": "note:atrial-fibrillation", "op": "present"}
    note = {"concept": "atrial-fibrillation", "codes": [[SNOMED, "49436004"]], "text": "atrial fibrillation",
            "start": 10, "end": 29, "note_id": "n1"}
    result = evaluate([rule({"all": [vs]})], facts(notes=[note]))[0]
    assert result.fired and result.trace[0]["explanation"]["start"] == 10
    for flag in ("negated", "historical", "hypothetical", "uncertain", "family"):
        assert not fires({"all": [vs]}, facts(notes=[{**note, flag: True}])), flag


def test_the_summary_shows_fact_values_and_shown_facts_are_traced():
    f = facts(age=70, observations=[ldl(201.44)],
              risks=[{"calculator": "has_bled", "value": 3, "unit": "points"}])
    r = rule({"all": [{**LDL, "op": ">=", "value": 190, "name": "ldl"}],
              "show": [{"fact": "risk:has_bled", "name": "has_bled"}]},
             summary="LDL {ldl} on {ldl.date}, age {age}; HAS-BLED {has_bled.value}")
    result = evaluate([r], f)[0]
    assert result.summary == f"LDL 201.44 mg/dL on {(NOW - dt.timedelta(days=10)).date()}, age 70; HAS-BLED 3"
    assert result.trace[-1]["kind"] == "shown" and result.trace[-1]["value"] == 3


def test_a_placeholder_shared_by_any_branches_shows_the_branch_that_held():
    """Drug-allergy style: each branch pairs an allergy class with a drug class under the same
    names; the text and the trace name the allergy and the order that matched."""
    sets = {**VALUE_SETS,
            "pen-allergy": Members("pen-allergy", "allergy", codes={SNOMED: frozenset({"91936005"})}),
            "penicillins": Members("penicillins", "medication", names=("amoxicillin",)),
            "sulfa-allergy": Members("sulfa-allergy", "allergy", names=("sulfonamide",)),
            "sulfas": Members("sulfas", "medication", names=("sulfamethoxazole",))}

    def branch(allergy: str, drug: str) -> dict[str, Any]:
        return {"all": [{"fact": f"allergy:{allergy}", "op": "present", "name": "allergy"},
                        {"fact": f"medication:{drug}", "op": "present", "name": "drug"}]}

    r = compile_rule(slug="r", version=1, severity="warning", value_sets=sets,
                     conditions={"any": [branch("pen-allergy", "penicillins"), branch("sulfa-allergy", "sulfas")]},
                     summary_template="{drug} / {allergy}")
    f = facts(allergies=[{"system": SNOMED, "code": "91936005", "display": "Allergy to penicillin",
                          "source": "AllergyIntolerance/a1"}],
              medications=[{"display": "amoxicillin 500 MG Oral Capsule", "source": "MedicationRequest/d1"},
                           {"display": "sulfamethoxazole 800 MG Oral Tablet", "source": "MedicationRequest/m2"}])
    result = evaluate([r], f)[0]
    assert result.fired and result.summary == "amoxicillin 500 MG Oral Capsule / Allergy to penicillin"
    held = [g for g in result.trace if g["held"]]
    assert len(held) == 1 and [c["source"] for c in held[0]["items"]] == ["AllergyIntolerance/a1",
                                                                          "MedicationRequest/d1"]
    only_sulfa = facts(allergies=[{"display": "Allergy to sulfonamide"}],
                       medications=[{"display": "amoxicillin 500 MG Oral Capsule"},
                                    {"display": "sulfamethoxazole 800 MG Oral Tablet"}])
    assert evaluate([r], only_sulfa)[0].summary == "sulfamethoxazole 800 MG Oral Tablet / Allergy to sulfonamide"
    assert not evaluate([r], facts(medications=[{"display": "amoxicillin 500 MG Oral Capsule"}]))[0].fired


def test_the_trace_names_value_unit_date_source_threshold_and_outcome():
    result = evaluate([rule({"all": [{**LDL, "op": ">=", "value": 190}]})], facts(observations=[ldl(195)]))[0]
    entry = result.trace[0]
    assert entry["fact"] == "observation:ldl" and entry["op"] == ">=" and entry["threshold"] == 190
    assert entry["unit"] == "mg/dL" and entry["value"] == 195 and entry["value_unit"] == "mg/dL"
    assert entry["source"] == "Observation:195" and entry["at"].startswith("2026-01-05") and entry["held"] is True
    assert entry["lookback_days"] == 365


def test_bad_test_case_facts_are_named():
    with pytest.raises(ValueError, match=r"observations\[0\]: 'value' must be a number"):
        Facts.from_json({"observations": [{"code": "x", "value": "high", "days_ago": 1}]}, as_of=NOW)


# --------------------------------------------------------------------------------------------
# Same ingredient: an allergy to a drug ingredient and a medication containing it

SAME = {"all": [{"fact": "same-ingredient:allergy", "op": "present", "name": "allergy"},
                {"fact": "same-ingredient:medication", "op": "present", "name": "drug"}]}


@pytest.mark.parametrize("display,name", [
    ("Allergy to lisinopril", "lisinopril"), ("Lisinopril", "lisinopril"), ("Penicillin (substance)", "penicillin"),
    ("Adverse reaction to aspirin", "aspirin"), ("Drug allergy", ""), ("No known allergies", ""), ("NKDA", ""),
])
def test_the_substance_an_allergy_names(display, name):
    from decision.engine import allergen_name

    assert allergen_name(display) == name


def test_same_ingredient_by_rxnorm_code_through_the_ingredients_of_the_product():
    allergy = {"system": RXNORM, "code": "29046", "display": "", "source": "AllergyIntolerance:1"}
    order = {"system": RXNORM, "code": "314076", "display": "Zestril", "ingredients": ["29046"],
             "source": "MedicationRequest:2"}
    result = evaluate([rule(SAME, "{drug} / {allergy}")], facts(allergies=[allergy], medications=[order]))[0]
    assert result.fired and result.summary == "Zestril / 29046"
    drug = result.trace[1]
    assert drug["source"] == "MedicationRequest:2"
    assert drug["explanation"]["matched_by"] == "RxNorm code 29046 in both"
    assert drug["explanation"]["allergy_source"] == "AllergyIntolerance:1"
    # without the product's ingredients (no is-a row) and without the name, nothing matches
    bare = {**order, "ingredients": []}
    assert not fires(SAME, facts(allergies=[allergy], medications=[bare]))


def test_same_ingredient_by_name_is_a_whole_word_and_skips_allergies_no_longer_held():
    allergy = {"display": "Allergy to lisinopril"}
    assert fires(SAME, facts(allergies=[allergy], medications=[{"display": "lisinopril 20 MG Oral Tablet"}]))
    assert not fires(SAME, facts(allergies=[allergy], medications=[{"display": "amlodipine 5 MG Oral Tablet"}]))
    assert not fires(SAME, facts(allergies=[{"display": "Allergy to penicillin"}],
                                 medications=[{"display": "amoxicillin 500 MG Oral Capsule"}]))  # a class, not this
    for status in ("refuted", "inactive", "resolved", "entered-in-error"):
        held_not = {**allergy, "status": status}
        assert not fires(SAME, facts(allergies=[held_not], medications=[{"display": "lisinopril 20 MG"}])), status


def test_same_ingredient_names_the_order_listed_first_and_every_match():
    allergy = {"display": "lisinopril", "source": "AllergyIntolerance:9"}
    meds = [{"display": "lisinopril 10 MG Oral Tablet", "source": "MedicationRequest/draft"},
            {"display": "lisinopril 20 MG Oral Tablet", "source": "MedicationRequest:5"}]
    drug = evaluate([rule(SAME)], facts(allergies=[allergy], medications=meds))[0].trace[1]
    assert drug["source"] == "MedicationRequest/draft"
    assert drug["explanation"]["matches"] == ["MedicationRequest/draft", "MedicationRequest:5"]


def test_same_ingredient_takes_only_its_two_arguments_and_presence():
    with pytest.raises(RuleDefinitionError, match="same-ingredient:medication"):
        rule({"all": [{"fact": "same-ingredient:drug", "op": "present"}]})
    with pytest.raises(RuleDefinitionError, match="only 'present' or 'absent'"):
        rule({"all": [{"fact": "same-ingredient:medication", "op": ">", "value": 1}]})
