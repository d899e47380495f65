"""The calculators' command and API contract (the numbers are tested per calculator)."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

# PREVENT base model, female example (preventr README; Khan et al., Circulation 2024): CVD 14.7 %.
EXAMPLE = {"age": 50, "sex": "female", "total_cholesterol": 200, "hdl_cholesterol": 45, "systolic_bp": 160,
           "bp_treated": True, "statin": False, "diabetes": True, "smoker": False, "egfr": 90}


def test_the_command_prints_one_json_result(capsys):
    call_command("risk_calculate", "prevent_cvd_10y", "--json", json.dumps(EXAMPLE))
    out = json.loads(capsys.readouterr().out)
    assert out["value"] == pytest.approx(14.7, abs=0.05)
    assert out["unit"] == "%"
    assert {"value", "unit", "category", "contributions", "citation"} <= set(out)
    assert "Khan" in out["citation"]


def test_the_command_lists_every_calculator_with_inputs_and_units(capsys):
    call_command("risk_calculate", "--list")
    listing = json.loads(capsys.readouterr().out)
    by_name = {c["name"]: c for c in listing}
    assert "prevent_cvd_10y" in by_name
    inputs = {i["name"]: i for i in by_name["prevent_cvd_10y"]["inputs"]}
    assert inputs["total_cholesterol"]["unit"] == "mg/dL"
    assert "mmol/L" in inputs["total_cholesterol"]["accepted_units"]


def test_the_command_names_the_bad_input(capsys):
    bad = dict(EXAMPLE, total_cholesterol="5 kg")
    with pytest.raises(CommandError, match="total_cholesterol"):
        call_command("risk_calculate", "prevent_cvd_10y", "--json", json.dumps(bad))
    error = json.loads(capsys.readouterr().err)
    assert "total_cholesterol" in error["error"]["details"]


def test_the_command_refuses_bad_json_and_unknown_calculators():
    with pytest.raises(CommandError, match="not valid JSON"):
        call_command("risk_calculate", "prevent_cvd_10y", "--json", "{age: 50")
    with pytest.raises(CommandError, match="no calculator 'nope'"):
        call_command("risk_calculate", "nope", "--json", "{}")


@pytest.mark.django_db
def test_the_api_serves_the_same_result(client_a):
    response = client_a.post("/api/risk/calculate/prevent_cvd_10y/", data=EXAMPLE, content_type="application/json")
    assert response.status_code == 200
    assert response.json()["value"] == pytest.approx(14.7, abs=0.05)


@pytest.mark.django_db
def test_the_api_answers_400_naming_each_bad_input(client_a):
    bad = dict(EXAMPLE, age=12)
    del bad["sex"]
    response = client_a.post("/api/risk/calculate/prevent_cvd_10y/", data=bad, content_type="application/json")
    assert response.status_code == 400
    details = response.json()["error"]["details"]
    assert set(details) == {"age", "sex"}
    assert "below the valid range" in details["age"] and details["sex"] == "is required"


@pytest.mark.django_db
def test_the_api_needs_a_login_and_a_known_calculator(client_a):
    from django.test import Client

    assert Client().post("/api/risk/calculate/prevent_cvd_10y/", data={}, content_type="application/json").status_code == 401
    assert client_a.post("/api/risk/calculate/nope/", data={}, content_type="application/json").status_code == 404
