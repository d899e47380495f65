"""AHA PREVENT base-model 10-year calculators (risk/calculators/prevent.py): worked examples, category
bands, input validation, unit conversion and linear-predictor contributions. Plain functions, no database."""

from __future__ import annotations

import math

import pytest

from risk.calculators import CalculatorInputError, calculate, get
from risk.calculators.prevent import _COEFFICIENTS, ascvd_category, transformed_terms

CVD_ASCVD = ("prevent_cvd_10y", "prevent_ascvd_10y")
ALL = (*CVD_ASCVD, "prevent_hf_10y")

# The worked-example profile of the R package preventr (M. Mayer): README.md "Using {preventr}" and
# tests/testthat/test-prevent_equations.R, "Base model works, female" / "Base model works, male"
# (estimate_risk_partial defaults): age 50, SBP 160 on treatment, TC 200 / HDL 45 mg/dL, no statin,
# diabetes, NON-smoker, eGFR 90, BMI 35. preventr prints risks as proportions rounded to 0.001 (0.1 %).
EXAMPLE = {"age": 50, "systolic_bp": 160, "bp_treated": True, "total_cholesterol": 200, "hdl_cholesterol": 45,
           "statin": False, "diabetes": True, "smoker": False, "egfr": 90, "bmi": 35}

CVD_INPUTS = ("age", "sex", "total_cholesterol", "hdl_cholesterol", "systolic_bp", "bp_treated", "statin", "diabetes",
              "smoker", "egfr")
HF_INPUTS = ("age", "sex", "systolic_bp", "bp_treated", "diabetes", "smoker", "egfr", "bmi")


def inputs_for(name: str, **overrides):
    """The worked-example patient restricted to the calculator's own inputs, with overrides."""
    wanted = HF_INPUTS if name == "prevent_hf_10y" else CVD_INPUTS
    merged = {"sex": "female", **EXAMPLE, **overrides}
    return {k: v for k, v in merged.items() if k in wanted}


def problems(name: str, raw) -> dict[str, str]:
    with pytest.raises(CalculatorInputError) as info:
        calculate(name, raw)
    return info.value.as_dict()


# --------------------------------------------------------------------------------------------
# 1. Worked examples


@pytest.mark.parametrize(("name", "sex", "expected"), [
    # preventr README.md + test-prevent_equations.R "Base model works, female": total_cvd 0.147, ascvd 0.092,
    # heart_failure 0.081
    ("prevent_cvd_10y", "female", 14.7),
    ("prevent_ascvd_10y", "female", 9.2),
    ("prevent_hf_10y", "female", 8.1),
    # preventr test-prevent_equations.R "Base model works, male" (same profile, sex = "male"): total_cvd 0.163,
    # ascvd 0.102, heart_failure 0.106
    ("prevent_cvd_10y", "male", 16.3),
    ("prevent_ascvd_10y", "male", 10.2),
    ("prevent_hf_10y", "male", 10.6),
])
def test_worked_examples(name, sex, expected):
    result = calculate(name, inputs_for(name, sex=sex))
    assert result.unit == "%"
    assert result.value == expected
    # the source rounds to 0.1 %, so the unrounded risk lies within half a step of it
    assert abs(result.details["risk_percent_unrounded"] - expected) <= 0.05


def test_worked_example_ascvd_categories():
    # 2026 ACC/AHA dyslipidemia guideline PREVENT-ASCVD bands: 9.2 % intermediate (5-<10), 10.2 % high (>=10)
    assert calculate("prevent_ascvd_10y", inputs_for("prevent_ascvd_10y", sex="female")).category == "intermediate"
    assert calculate("prevent_ascvd_10y", inputs_for("prevent_ascvd_10y", sex="male")).category == "high"


@pytest.mark.parametrize("name", ["prevent_cvd_10y", "prevent_hf_10y"])
def test_no_sourced_category_for_total_cvd_or_hf(name):
    result = calculate(name, inputs_for(name))
    assert result.category is None
    assert result.details["category_source"].startswith("none")


def test_reference_profile_gives_the_intercept_risk():
    # At the centring values (age 55, non-HDL 3.5 mmol/L, HDL 1.3 mmol/L, SBP 130, eGFR 90, BMI 25, no risk
    # factors, untreated) every term is 0 and the risk is logistic(constant) of Table S12.
    ref = {"age": 55, "total_cholesterol": "4.8 mmol/L", "hdl_cholesterol": "1.3 mmol/L", "systolic_bp": 130,
           "bp_treated": False, "statin": False, "diabetes": False, "smoker": False, "egfr": 90, "bmi": 25}
    for name, outcome in zip(ALL, ("cvd", "ascvd", "hf"), strict=True):
        for sex in ("female", "male"):
            result = calculate(name, inputs_for(name, sex=sex, **ref))
            assert all(abs(c) < 1e-9 for c in result.contributions.values())
            constant = _COEFFICIENTS[(outcome, sex)]["constant"]
            assert result.details["risk_percent_unrounded"] == pytest.approx(100 / (1 + math.exp(-constant)))


# --------------------------------------------------------------------------------------------
# 2. Category boundaries (2026 ACC/AHA PREVENT-ASCVD bands)


@pytest.mark.parametrize(("risk", "category"), [
    (0.0, "low"), (2.9, "low"), (2.99, "low"), (3.0, "borderline"), (3.1, "borderline"),
    (4.9, "borderline"), (4.99, "borderline"), (5.0, "intermediate"), (5.1, "intermediate"),
    (9.9, "intermediate"), (9.99, "intermediate"), (10.0, "high"), (10.1, "high"), (100.0, "high"),
])
def test_ascvd_category_bands(risk, category):
    assert ascvd_category(risk) == category


@pytest.mark.parametrize("age", [30, 40, 45, 50, 55, 60, 65, 70, 79])
def test_ascvd_category_follows_reported_value(age):
    # The category is taken from the reported (0.1 %-rounded) value, so value and band always agree.
    result = calculate("prevent_ascvd_10y", inputs_for("prevent_ascvd_10y", age=age))
    assert result.category == ascvd_category(result.value)


# --------------------------------------------------------------------------------------------
# 3. Bad input


@pytest.mark.parametrize(("name", "missing"), [(n, p) for n in CVD_ASCVD for p in CVD_INPUTS]
                         + [("prevent_hf_10y", p) for p in HF_INPUTS])
def test_missing_input_is_named(name, missing):
    raw = inputs_for(name)
    del raw[missing]
    assert set(problems(name, raw)) == {missing}


@pytest.mark.parametrize(("param", "bad"), [
    ("age", 29), ("age", 80), ("age", 29.9), ("age", 79.1),
    ("total_cholesterol", 129), ("total_cholesterol", 321), ("hdl_cholesterol", 19), ("hdl_cholesterol", 101),
    ("systolic_bp", 89), ("systolic_bp", 201), ("egfr", 14), ("egfr", 141),
])
@pytest.mark.parametrize("name", CVD_ASCVD)
def test_out_of_range_cvd_ascvd(name, param, bad):
    found = problems(name, inputs_for(name, **{param: bad}))
    assert set(found) == {param}
    assert "valid range" in found[param]


@pytest.mark.parametrize(("param", "bad"), [
    ("age", 29), ("age", 80), ("systolic_bp", 89), ("systolic_bp", 201), ("egfr", 14), ("egfr", 141),
    ("bmi", 18.4), ("bmi", 40),
])
def test_out_of_range_hf(param, bad):
    found = problems("prevent_hf_10y", inputs_for("prevent_hf_10y", **{param: bad}))
    assert set(found) == {param}
    assert "valid range" in found[param]


@pytest.mark.parametrize(("name", "param", "edge"), [
    (n, p, e) for n in CVD_ASCVD for p, e in [("age", 30), ("age", 79), ("total_cholesterol", 130),
                                              ("total_cholesterol", 320), ("hdl_cholesterol", 20),
                                              ("hdl_cholesterol", 100), ("systolic_bp", 90), ("systolic_bp", 200),
                                              ("egfr", 15), ("egfr", 140)]
] + [("prevent_hf_10y", "bmi", 18.5), ("prevent_hf_10y", "bmi", 39.9)])
def test_range_edges_are_accepted(name, param, edge):
    result = calculate(name, inputs_for(name, **{param: edge}))
    assert 0 < result.value < 100


@pytest.mark.parametrize(("name", "param", "bad"), [
    ("prevent_cvd_10y", "total_cholesterol", "5 kg"),
    ("prevent_ascvd_10y", "hdl_cholesterol", "45 mg"),
    ("prevent_cvd_10y", "systolic_bp", "160 kg"),
    ("prevent_hf_10y", "bmi", "35 cm"),
    ("prevent_hf_10y", "egfr", "90 mg/dL"),
])
def test_wrong_unit_is_named(name, param, bad):
    found = problems(name, inputs_for(name, **{param: bad}))
    assert set(found) == {param}
    assert "not a unit" in found[param]


@pytest.mark.parametrize(("name", "param", "bad"), [
    *[(n, p, "yes") for n in CVD_ASCVD for p in ("bp_treated", "statin", "diabetes", "smoker")],
    *[("prevent_hf_10y", p, "true") for p in ("bp_treated", "diabetes", "smoker")],
    *[(n, "smoker", 1) for n in ALL],
    *[(n, "age", "fifty") for n in ALL],
    *[(n, "age", True) for n in ALL],
    *[(n, "sex", "F") for n in ALL],
])
def test_wrong_type_is_named(name, param, bad):
    assert set(problems(name, inputs_for(name, **{param: bad}))) == {param}


def test_every_problem_is_reported_at_once():
    raw = inputs_for("prevent_cvd_10y", age=20, statin="no", total_cholesterol="5 kg")
    del raw["egfr"]
    assert set(problems("prevent_cvd_10y", raw)) == {"age", "statin", "total_cholesterol", "egfr"}


@pytest.mark.parametrize("name", CVD_ASCVD)
def test_cvd_and_ascvd_do_not_take_bmi(name):
    # The total-CVD and ASCVD base equations have no BMI term: BMI is not an input there.
    assert "bmi" not in {p["name"] for p in get(name).describe()["inputs"]}
    assert set(problems(name, {**inputs_for(name), "bmi": 35})) == {"bmi"}


def test_hf_takes_exactly_its_equation_inputs():
    # The HF base equation has no cholesterol or statin terms but needs BMI.
    assert [p["name"] for p in get("prevent_hf_10y").describe()["inputs"]] == list(HF_INPUTS)
    assert set(problems("prevent_hf_10y", {**inputs_for("prevent_hf_10y"), "statin": False})) == {"statin"}


# --------------------------------------------------------------------------------------------
# 4. Unit conversion


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("sex", ["female", "male"])
def test_si_units_give_the_same_value(name, sex):
    conventional = calculate(name, inputs_for(name, sex=sex))
    si = calculate(name, inputs_for(
        name, sex=sex,
        total_cholesterol=f"{200 / 38.67!r} mmol/L", hdl_cholesterol=f"{45 / 38.67!r} mmol/L",
        systolic_bp=f"{160 / 7.50062!r} kPa", egfr="90 mL/min/1.73m2", bmi="35 kg/m2", age="50 a"))
    assert si.value == conventional.value
    assert si.details["risk_percent_unrounded"] == pytest.approx(conventional.details["risk_percent_unrounded"],
                                                                 rel=1e-9)


def test_cholesterol_is_converted_with_38_67():
    result = calculate("prevent_ascvd_10y", inputs_for("prevent_ascvd_10y"))
    assert result.details["non_hdl_cholesterol_mmol_l"] == pytest.approx((200 - 45) / 38.67)
    assert result.details["terms"]["hdl_cholesterol"] == pytest.approx((45 / 38.67 - 1.3) / 0.3)


# --------------------------------------------------------------------------------------------
# 5. Contributions


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("overrides", [
    {}, {"sex": "male"}, {"systolic_bp": 100, "bp_treated": False}, {"egfr": 30, "age": 70},
    {"statin": True, "smoker": True, "age": 35}, {"bmi": 22, "diabetes": False}, {"egfr": 120, "bmi": 39.9},
])
def test_contributions_sum_to_the_linear_predictor(name, overrides):
    result = calculate(name, inputs_for(name, **overrides))
    details = result.details
    assert details["intercept"] + sum(result.contributions.values()) == pytest.approx(details["linear_predictor"])
    assert 100 / (1 + math.exp(-details["linear_predictor"])) == pytest.approx(details["risk_percent_unrounded"])
    assert result.value == round(details["risk_percent_unrounded"], 1)
    assert "linear predictor" in details["contribution_scale"]
    outcome = {"prevent_cvd_10y": "cvd", "prevent_ascvd_10y": "ascvd", "prevent_hf_10y": "hf"}[name]
    coefficients = _COEFFICIENTS[(outcome, result.inputs["sex"])]
    assert set(result.contributions) == set(coefficients) - {"constant"}
    for term, contribution in result.contributions.items():
        assert contribution == pytest.approx(coefficients[term] * details["terms"][term])


def test_hf_has_no_cholesterol_terms_and_cvd_no_bmi_terms():
    hf = calculate("prevent_hf_10y", inputs_for("prevent_hf_10y")).contributions
    cvd = calculate("prevent_cvd_10y", inputs_for("prevent_cvd_10y")).contributions
    assert not any("cholesterol" in t or "statin" in t for t in hf)
    assert {"bmi_lt_30", "bmi_ge_30", "age:bmi_ge_30"} <= set(hf)
    assert not any("bmi" in t for t in cvd)


@pytest.mark.parametrize(("values", "expected"), [
    # spline terms (Khan 2024 Table S12 footnotes): knots at SBP 110, eGFR 60, BMI 30
    ({"systolic_bp": 100, "egfr": 45, "bmi": 20}, {"systolic_bp_lt_110": -0.5, "systolic_bp_ge_110": -1.0,
                                                   "egfr_lt_60": 1.0, "egfr_ge_60": 2.0, "bmi_lt_30": -1.0,
                                                   "bmi_ge_30": 0.0}),
    ({"systolic_bp": 170, "egfr": 120, "bmi": 35}, {"systolic_bp_lt_110": 0.0, "systolic_bp_ge_110": 2.0,
                                                    "egfr_lt_60": 0.0, "egfr_ge_60": -2.0, "bmi_lt_30": 1.0,
                                                    "bmi_ge_30": 1.0}),
])
def test_spline_terms(values, expected):
    base = {"age": 65, "bp_treated": True, "diabetes": True, "smoker": False}
    terms = transformed_terms({**base, **values})
    for term, value in expected.items():
        assert terms[term] == pytest.approx(value)
    assert terms["age"] == pytest.approx(1.0)
    assert terms["bp_treated:systolic_bp_ge_110"] == pytest.approx(expected["systolic_bp_ge_110"])
    assert terms["age:egfr_lt_60"] == pytest.approx(expected["egfr_lt_60"])


@pytest.mark.parametrize("name", ALL)
def test_risk_rises_with_known_risk_factors(name):
    base = calculate(name, inputs_for(name, diabetes=False, smoker=False)).details["risk_percent_unrounded"]
    for worse in ({"diabetes": True}, {"smoker": True}, {"egfr": 40}, {"age": 65}, {"systolic_bp": 180}):
        raw = inputs_for(name, **{"diabetes": False, "smoker": False, **worse})
        risk = calculate(name, raw).details["risk_percent_unrounded"]
        assert risk > base, worse


def test_registered_with_citation_and_version():
    for name in ALL:
        calc = get(name)
        assert "Khan SS" in calc.citation and "Table S12" in calc.citation
        assert calc.version.startswith("1")
        assert calc.unit == "%"
        result = calculate(name, inputs_for(name))
        assert result.calculator == name
        assert result.citation == calc.citation
