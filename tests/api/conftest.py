"""Fixtures of the API tests: token clients and a small record per site (one patient each)."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from decision.models import Recommendation
from decision.services import patients_evaluate, rule_create, rule_version_activate, value_sets_import
from patients.models import ClinicalNote, Patient
from risk.models import RiskAssessment
from tests.factories import (
    AllergyFactory,
    ConditionFactory,
    MedicationRequestFactory,
    ObservationFactory,
    UserFactory,
)

STARTER = Path(__file__).resolve().parents[2] / "decision" / "data" / "starter_value_sets.json"
LDL_190 = {"all": [{"fact": "observation:ldl", "op": ">=", "value": 190, "unit": "mg/dL", "lookback_days": 730}]}


def token_client(user: Any) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def api_a(clinician_a) -> APIClient:
    return token_client(clinician_a)


@dataclass
class Record:
    patient: Patient
    note: ClinicalNote
    recommendation: Recommendation


def ldl_rule(user: Any, *, severity: str = "warning") -> None:
    value_sets_import(json.loads(STARTER.read_text()))
    version = rule_create(slug="ldl-high", title="LDL high", user=user, severity=severity, conditions=LDL_190,
                          summary_template="LDL {ldl}", citation_source="test")
    rule_version_activate(version, user=user)


def make_record(patient: Patient) -> Record:
    """Conditions, observations, a medication, an allergy, a note, a risk result and (with the
    LDL rule active) a recommendation."""
    now = timezone.now()
    ConditionFactory(patient=patient)
    ConditionFactory(patient=patient, code="44054006", display="Diabetes", clinical_status="resolved")
    ConditionFactory(patient=patient, code="195662009", display="Pharyngitis", status="entered-in-error")
    for days, value in ((400, 150.0), (30, 180.0), (5, 200.0)):
        ObservationFactory(patient=patient, code="18262-6", display="LDL", value_quantity=value, value_unit="mg/dL",
                           effective_at=now - dt.timedelta(days=days))
    ObservationFactory(patient=patient, code="8480-6", display="Systolic blood pressure", category="vital-signs",
                       value_quantity=142.0, value_unit="mm[Hg]", effective_at=now - dt.timedelta(days=5))
    MedicationRequestFactory(patient=patient)
    AllergyFactory(patient=patient)
    note = ClinicalNote.objects.create(patient=patient, fhir_id=f"note-{patient.pk}", status="current",
                                       source_type=ClinicalNote.Source.TYPED, display="Clinic note",
                                       written_at=now - dt.timedelta(days=2), text="Assessment: hypertension.")
    RiskAssessment.objects.create(
        patient=patient, calculator="egfr_ckd_epi_2021", calculator_version="2021", status="computed", value=72.0,
        unit="mL/min/1.73m2", category="G2", contributions={"creatinine": -0.4}, inputs={"creatinine": 1.1},
        inputs_hash="a" * 64, as_of=now, citation="Inker 2021")
    patients_evaluate([patient.pk])
    rec = Recommendation.objects.get(patient=patient)
    return Record(patient=patient, note=note, recommendation=rec)


@pytest.fixture
def rules_admin(db) -> Any:
    return UserFactory(username="rules-admin")


@pytest.fixture
def record_a(patient_a, rules_admin) -> Record:
    ldl_rule(rules_admin)
    return make_record(patient_a)


@pytest.fixture
def record_b(patient_b, record_a) -> Record:
    return make_record(patient_b)
