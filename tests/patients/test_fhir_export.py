"""FHIR export ($everything) and the round trip back through the importer."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from django.core.management import call_command

from cdss.models import AuditEvent
from patients import models as m
from patients.services import fhir_import_bundle, fhir_import_paths
from tests.conftest import require_data
from tests.factories import ConditionFactory, ObservationFactory
from tests.patients.fhir_samples import PATIENT_ID, valid_bundle

RECORD_MODELS: tuple[Any, ...] = (m.Organization, m.Practitioner, m.Patient, *m.CLINICAL_MODELS)


def snapshot() -> dict[str, list[tuple[object, ...]]]:
    return {model.__name__: list(model.objects.order_by("pk").values_list("pk", "content_hash", "updated_at"))
            for model in RECORD_MODELS}


@pytest.mark.django_db
def test_export_then_reimport_of_a_synthea_patient_is_a_no_op(site_a, clinician_a, client):
    folder = require_data("fhir/synthea-r4")
    path = sorted(folder.glob("*.json"))[0]
    assert fhir_import_paths([path], site=site_a).ok
    patient = m.Patient.objects.get()
    client.force_login(clinician_a)

    response = client.get(f"/api/patients/{patient.external_id}/$everything")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/fhir+json")
    bundle = response.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection"
    types = {e["resource"]["resourceType"] for e in bundle["entry"]}
    assert {"Patient", "Encounter", "Observation", "Condition"} <= types
    source = json.loads(path.read_text())
    stored_types = {"Patient", "Encounter", "Condition", "Observation", "MedicationRequest", "AllergyIntolerance",
                    "Procedure", "Immunization"}
    assert sum(1 for e in bundle["entry"] if e["resource"]["resourceType"] in stored_types) == sum(
        1 for e in source["entry"] if e["resource"]["resourceType"] in stored_types)

    before = snapshot()
    summary = fhir_import_bundle(orjson.dumps(bundle), site=site_a)
    assert summary.ok, summary.as_dict()["errors"][:5]
    assert sum(c["created"] + c["updated"] for c in summary.totals().values()) == 0
    assert snapshot() == before
    assert AuditEvent.objects.filter(action="export", patient=patient, user=clinician_a).count() == 1


@pytest.mark.django_db
def test_rows_made_inside_the_system_export_as_valid_fhir_that_reimports(site_a, patient_a, tmp_path):
    ObservationFactory(patient=patient_a, code="4548-4", value_quantity=7.2, value_unit="%")
    ConditionFactory(patient=patient_a)
    out = tmp_path / "export.json"

    call_command("export_fhir", str(patient_a.external_id), "-o", str(out))
    bundle = json.loads(out.read_text())

    # Into a fresh site: every resource maps and imports (a check of the fallback resources).
    from tests.factories import SiteFactory

    other = SiteFactory(code="copy")
    summary = fhir_import_bundle(out.read_bytes(), site=other)
    assert summary.ok, summary.as_dict()["errors"]
    copy = m.Patient.objects.get(site=other)
    assert copy.fhir_id == patient_a.fhir_id and copy.mrn == patient_a.mrn
    assert m.Observation.objects.get(patient=copy).value_quantity == 7.2
    assert m.Condition.objects.get(patient=copy).clinical_status == "active"
    assert len(bundle["entry"]) == 3


@pytest.mark.django_db
def test_export_of_a_hand_made_bundle_round_trips(site_a):
    assert fhir_import_bundle(orjson.dumps(valid_bundle()), site=site_a).ok
    from patients.fhir.exporter import patient_everything

    before = snapshot()
    bundle = patient_everything(m.Patient.objects.get(fhir_id=PATIENT_ID))
    # components are exported inside their panel, not as Observations of their own
    assert sum(1 for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation") == 2
    summary = fhir_import_bundle(orjson.dumps(bundle), site=site_a)
    assert summary.ok and snapshot() == before
