"""FHIR R4 import: counts, idempotency, atomicity, clear errors."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from cdss.models import AuditEvent
from patients import models as m
from patients.fhir.parse import unit_from_bytes
from patients.services import fhir_import_bundle, fhir_import_paths
from tests.conftest import require_data
from tests.patients.fhir_samples import PATIENT_ID, broken, valid_bundle

ALL_MODELS: tuple[Any, ...] = (m.Organization, m.Practitioner, m.Patient, *m.CLINICAL_MODELS)
BILLING = {"Claim", "ExplanationOfBenefit"}


def table_counts() -> dict[str, int]:
    return {model.__name__: model.objects.count() for model in ALL_MODELS}


def independent_count(folder: Path) -> Counter[str]:
    """Count what the importer should store, straight from the JSON with the standard library."""
    counts: Counter[str] = Counter()
    orgs: set[str] = set()
    practitioners: set[str] = set()
    for path in sorted(folder.glob("*.json")):
        bundle = json.loads(path.read_text())
        for entry in bundle["entry"]:
            res = entry["resource"]
            rtype = res["resourceType"]
            if rtype == "Organization":
                orgs.add(res["id"])
            elif rtype == "Practitioner":
                practitioners.add(res["id"])
            elif rtype in BILLING:
                counts["billing"] += 1
            elif rtype == "Observation":
                counts["Observation"] += 1 + len(res.get("component", []))
            elif rtype in ("Patient", "Encounter", "Condition", "MedicationRequest", "AllergyIntolerance",
                           "Procedure", "Immunization"):
                counts[rtype] += 1
    counts["Organization"] = len(orgs)
    counts["Practitioner"] = len(practitioners)
    return counts


@pytest.mark.django_db
def test_it_imports_the_synthea_folder_with_the_right_counts_and_a_second_import_changes_nothing(site_a):
    folder = require_data("fhir/synthea-r4")
    expected = independent_count(folder)

    summary = fhir_import_paths([folder], site=site_a)

    assert summary.ok, summary.as_dict()["errors"]
    got = table_counts()
    for name in ("Patient", "Encounter", "Condition", "Observation", "MedicationRequest", "AllergyIntolerance",
                 "Procedure", "Immunization", "Organization", "Practitioner"):
        assert got[name] == expected[name], name
    assert sum(v for k, v in summary.skipped().items() if "(billing)" in k) == expected["billing"]
    assert got["Patient"] == 32

    before = {model.__name__: list(model.objects.order_by("pk").values_list("pk", "content_hash", "updated_at"))
              for model in ALL_MODELS}
    again = fhir_import_paths([folder], site=site_a)
    assert again.ok
    totals = again.totals()
    assert sum(c["created"] + c["updated"] for c in totals.values()) == 0
    after = {model.__name__: list(model.objects.order_by("pk").values_list("pk", "content_hash", "updated_at"))
             for model in ALL_MODELS}
    assert after == before


@pytest.mark.django_db
def test_blood_pressure_components_become_rows_of_their_own(site_a):
    summary = fhir_import_bundle(orjson.dumps(valid_bundle()), site=site_a)
    assert summary.ok
    patient = m.Patient.objects.get(fhir_id=PATIENT_ID)
    systolic = m.Observation.objects.get(patient=patient, code="8480-6")
    assert systolic.value_quantity == 142 and systolic.value_unit == "mm[Hg]"
    assert systolic.parent is not None and systolic.parent.code == "85354-9"
    assert systolic.effective_at == systolic.parent.effective_at
    assert patient.mrn == "MRN-T-1" and patient.site == site_a


@pytest.mark.django_db
@pytest.mark.parametrize("kind", ["transaction", "collection"])
def test_it_accepts_transaction_and_collection_bundles_and_skips_billing(site_a, kind):
    summary = fhir_import_bundle(orjson.dumps(valid_bundle(kind)), site=site_a)
    assert summary.ok
    assert summary.skipped()["Claim (billing)"] == 1
    assert summary.totals()["Observation"]["created"] == 2
    assert m.Encounter.objects.get().patient.fhir_id == PATIENT_ID
    assert m.Observation.objects.get(code="2093-3").encounter is not None


@pytest.mark.django_db
def test_a_changed_resource_is_updated_in_place(site_a):
    fhir_import_bundle(orjson.dumps(valid_bundle()), site=site_a)
    bundle = valid_bundle()
    bundle["entry"][2]["resource"]["valueQuantity"]["value"] = 180
    summary = fhir_import_bundle(orjson.dumps(bundle), site=site_a)
    assert summary.ok
    assert summary.totals()["Observation"] == Counter(updated=1, unchanged=1)
    assert m.Observation.objects.get(code="2093-3").value_quantity == 180
    assert m.Observation.objects.filter(code="2093-3").count() == 1


@pytest.mark.django_db
def test_relative_references_resolve_to_rows_imported_earlier(site_a):
    fhir_import_bundle(orjson.dumps(valid_bundle()), site=site_a)
    later = {
        "resourceType": "Bundle", "type": "collection",
        "entry": [{"resource": {
            "resourceType": "Observation", "id": "later-1", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
            "subject": {"reference": f"Patient/{PATIENT_ID}"},
            "effectiveDateTime": "2023-01-01", "valueQuantity": {"value": 7.1, "unit": "%"},
        }}],
    }
    summary = fhir_import_bundle(orjson.dumps(later), site=site_a)
    assert summary.ok, summary.as_dict()["errors"]
    assert m.Observation.objects.get(fhir_id="later-1").patient.fhir_id == PATIENT_ID


@pytest.mark.django_db
def test_an_import_writes_an_audit_row_per_patient(site_a, clinician_a):
    fhir_import_bundle(orjson.dumps(valid_bundle()), site=site_a, user=clinician_a)
    event = AuditEvent.objects.get(action="import")
    assert event.patient.fhir_id == PATIENT_ID and event.user == clinician_a


def _set(path: list[Any], value: Any) -> Any:
    def mutate(bundle: dict[str, Any]) -> None:
        node: Any = bundle
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return mutate


def _delete(path: list[Any]) -> Any:
    def mutate(bundle: dict[str, Any]) -> None:
        node: Any = bundle
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
    return mutate


BROKEN_BUNDLES = [
    # (name, bytes, expected location, words in the message)
    ("bad json", orjson.dumps(valid_bundle())[:-40], "", "not valid JSON"),
    ("unknown reference", orjson.dumps(broken(_set(["entry", 2, "resource", "subject", "reference"],
                                                  "urn:uuid:00000000-0000-0000-0000-000000000000"))),
     "entry[2]", "unknown reference"),
    ("wrong resourceType", orjson.dumps(broken(_set(["entry", 3, "resource", "resourceType"], "Observaton"))),
     "entry[3]", "unknown resourceType 'Observaton'"),
    ("missing required field", orjson.dumps(broken(_delete(["entry", 2, "resource", "code"]))),
     "entry[2]", "Observation.code is required"),
    ("invalid date", orjson.dumps(broken(_set(["entry", 2, "resource", "effectiveDateTime"], "2022-13-45"))),
     "entry[2]", "invalid date '2022-13-45'"),
    ("unit-less quantity", orjson.dumps(broken(_set(["entry", 2, "resource", "valueQuantity"], {"value": 212}))),
     "entry[2]", "has no unit"),
    ("not a bundle", orjson.dumps({"resourceType": "Patient", "id": "x"}), "", "expected resourceType 'Bundle'"),
    ("unsupported bundle type", orjson.dumps(broken(_set(["type"], "document"))), "Bundle.type",
     "unsupported bundle type 'document'"),
    ("delete entry", orjson.dumps(broken(_set(["entry", 4, "request"], {"method": "DELETE", "url": "Condition/x"}))),
     "entry[4]", "DELETE entries are not accepted"),
    ("datetime without zone", orjson.dumps(broken(_set(["entry", 1, "resource", "period", "start"],
                                                       "2022-03-04T09:00:00"))),
     "entry[1]", "must carry a time zone"),
    ("invalid gender", orjson.dumps(broken(_set(["entry", 0, "resource", "gender"], "F"))), "entry[0]",
     "Patient.gender: 'F' is not one of"),
    ("duplicate resource", orjson.dumps(broken(lambda b: b["entry"].append(b["entry"][2]))), "entry[6]",
     "appears twice"),
    ("NUL character", orjson.dumps(broken(_set(["entry", 0, "resource", "name", 0, "family"], "Te\u0000st"))), "",
     "NUL character"),
    ("reference to the wrong type", orjson.dumps(broken(_set(["entry", 2, "resource", "encounter", "reference"],
                                                            f"urn:uuid:{PATIENT_ID}"))),
     "entry[2]", "points to a Patient, expected Encounter"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "data", "location", "message"), BROKEN_BUNDLES, ids=[b[0] for b in BROKEN_BUNDLES])
def test_a_broken_bundle_fails_with_a_clear_message_and_leaves_no_rows(site_a, name, data, location, message):
    summary = fhir_import_bundle(data, site=site_a)

    assert not summary.ok
    errors = summary.as_dict()["errors"]
    assert any(e["location"] == location and message in e["message"] for e in errors), errors
    assert all(n == 0 for n in table_counts().values()), table_counts()
    assert not AuditEvent.objects.exists()


@pytest.mark.django_db
def test_every_error_of_a_bundle_is_reported_not_only_the_first(site_a):
    bundle = broken(_delete(["entry", 2, "resource", "code"]))
    bundle["entry"][3]["resource"]["effectiveDateTime"] = "yesterday"
    summary = fhir_import_bundle(orjson.dumps(bundle), site=site_a)
    locations = {e.location for e in summary.failed[0].errors}
    assert {"entry[2]", "entry[3]"} <= locations


@pytest.mark.django_db
def test_a_dangling_relative_reference_to_an_unknown_patient_is_an_error(site_a, patient_b):
    # patient_b exists, but at another site: a bundle imported into site A may not attach to it.
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {
        "resourceType": "Condition", "id": "c1", "code": {"text": "Asthma"},
        "subject": {"reference": f"Patient/{patient_b.fhir_id}"}}}]}
    summary = fhir_import_bundle(orjson.dumps(bundle), site=site_a)
    assert not summary.ok
    assert "unknown reference" in summary.failed[0].errors[0].message
    assert not m.Condition.objects.exists()


@pytest.mark.django_db
def test_the_command_imports_good_bundles_reports_bad_ones_and_fails(site_a, tmp_path, capsys):
    (tmp_path / "good.json").write_bytes(orjson.dumps(valid_bundle()))
    (tmp_path / "bad.json").write_bytes(orjson.dumps(broken(_delete(["entry", 2, "resource", "code"]))).replace(
        PATIENT_ID.encode(), b"aaaaaaaa-1b7c-4d2e-9f10-5a6b7c8d9e01"))
    with pytest.raises(CommandError, match="1 of 2 file"):
        call_command("import_fhir", str(tmp_path), "--site", "site-a", "--no-progress")
    out = capsys.readouterr().out
    assert "bad.json entry[2]: Observation.code is required" in out
    assert m.Patient.objects.get().fhir_id == PATIENT_ID  # the good bundle landed


@pytest.mark.django_db
def test_the_command_prints_json_counts(site_a, tmp_path, capsys):
    (tmp_path / "b.json").write_bytes(orjson.dumps(valid_bundle()))
    call_command("import_fhir", str(tmp_path / "b.json"), "--site", "site-a", "--json")
    data = json.loads(capsys.readouterr().out)
    assert data["counts"]["Patient"] == {"created": 1}
    assert data["skipped"] == {"Claim (billing)": 1}


@pytest.mark.django_db
def test_it_imports_bulk_ndjson_with_notes_in_dependency_order(site_a):
    folder = require_data("fhir/synthea-bulk-notes")
    patients = sum(1 for line in (folder / "Patient.000.ndjson").read_text().splitlines() if line.strip())
    notes = sum(1 for line in (folder / "DocumentReference.000.ndjson").read_text().splitlines() if line.strip())
    summary = fhir_import_paths([folder], site=site_a)
    assert summary.ok, summary.as_dict()["errors"][:5]
    assert m.Patient.objects.count() == patients
    assert m.ClinicalNote.objects.count() == notes
    note = m.ClinicalNote.objects.exclude(text="").first()
    assert note is not None and len(note.text) > 20 and note.source_type == "DocumentReference"


@pytest.mark.django_db
def test_current_synthea_conditional_references_and_medication_resources(site_a):
    path = require_data("fhir/synthea-recent/sample_complete_patient.json")
    bundle = json.loads(path.read_text())
    summary = fhir_import_paths([path], site=site_a)
    assert summary.ok, summary.as_dict()["errors"][:5]
    docrefs = sum(1 for e in bundle["entry"] if e["resource"]["resourceType"] == "DocumentReference")
    assert m.ClinicalNote.objects.count() == docrefs  # the DiagnosticReport copies are not doubled
    by_reference = [e["resource"] for e in bundle["entry"]
                    if e["resource"]["resourceType"] == "MedicationRequest" and "medicationReference" in e["resource"]]
    for res in by_reference:
        assert m.MedicationRequest.objects.get(fhir_id=res["id"]).code  # code read from the Medication resource


def test_parsing_a_unit_collects_entry_locations():
    unit = unit_from_bytes(orjson.dumps(broken(_set(["entry", 1, "resource"], "nope"))), "x")
    assert [str(e) for e in unit.errors] == ["entry[1]: entry has no 'resource' object"]


@pytest.mark.django_db
def test_pharmacogenomic_results_of_both_fhir_shapes_become_genomic_results(site_a):
    from tests.patients.fhir_samples import GENOMIC_SHAPES, genomic_bundle

    bundle = genomic_bundle("b0000000-0000-4000-8000-000000000001", "MRN-G-1", GENOMIC_SHAPES)
    fhir_import_bundle(orjson.dumps(bundle), site=site_a)
    rows = {(g.gene, g.diplotype, g.phenotype) for g in m.GenomicResult.objects.all()}
    assert rows == {("CYP2C19", "*2/*2", "Poor metabolizer"), ("SLCO1B1", "", "Decreased function"),
                    ("HLA-B*57:01", "", "Positive"), ("CYP2C9", "", "Intermediate metabolizer"),
                    ("CYP2D6", "", "Ultrarapid metabolizer")}
    # each row points at its Observation; a second import changes nothing
    assert all(g.observation.fhir_id for g in m.GenomicResult.objects.select_related("observation"))
    fhir_import_bundle(orjson.dumps(bundle), site=site_a)
    assert m.GenomicResult.objects.count() == 5
