"""Exporting a patient's record as a FHIR R4 collection Bundle ($everything).

Each row's stored ``raw`` resource is emitted as imported (references already in ``Type/id``
form), so importing the export again into the same site changes nothing. Rows created inside
the system without a FHIR original get a minimal resource built from their columns.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from django.db import models
from django.utils import timezone

from .. import models as m

EXPORTED: tuple[tuple[type[m.ClinicalFact], str], ...] = (
    (m.Encounter, "Encounter"),
    (m.Condition, "Condition"),
    (m.Observation, "Observation"),
    (m.MedicationRequest, "MedicationRequest"),
    (m.AllergyIntolerance, "AllergyIntolerance"),
    (m.Procedure, "Procedure"),
    (m.Immunization, "Immunization"),
    (m.ClinicalNote, "DocumentReference"),
)


def _full_url(fhir_id: str) -> str | None:
    """urn:uuid for UUID ids; none otherwise (references use the relative Type/id form)."""
    try:
        return f"urn:uuid:{fhir_id}" if str(uuid.UUID(fhir_id)) == fhir_id else None
    except ValueError:
        return None


def _coding(system: str, code: str, display: str) -> dict[str, Any]:
    concept: dict[str, Any] = {}
    coding = {k: v for k, v in (("system", system), ("code", code), ("display", display)) if v}
    if coding:
        concept["coding"] = [coding]
    if display:
        concept["text"] = display
    return concept


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _fallback(row: models.Model, rtype: str, patient_id: str) -> dict[str, Any]:
    """A minimal FHIR resource for a row that was not imported from FHIR."""
    res: dict[str, Any] = {"resourceType": rtype, "id": row.fhir_id}  # type: ignore[attr-defined]
    subject_key = "patient" if rtype in ("AllergyIntolerance", "Immunization") else "subject"
    res[subject_key] = {"reference": f"Patient/{patient_id}"}
    code = _coding(getattr(row, "code_system", ""), getattr(row, "code", ""), getattr(row, "display", ""))
    status = getattr(row, "status", "")
    if rtype == "Observation":
        res.update(status=status or "final", code=code, effectiveDateTime=_iso(row.effective_at))  # type: ignore[attr-defined]
        if row.category:  # type: ignore[attr-defined]
            res["category"] = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                            "code": row.category}]}]  # type: ignore[attr-defined]
        if row.value_quantity is not None:  # type: ignore[attr-defined]
            res["valueQuantity"] = {"value": row.value_quantity, "unit": row.value_unit,  # type: ignore[attr-defined]
                                    "system": "http://unitsofmeasure.org", "code": row.value_unit}  # type: ignore[attr-defined]
        elif row.value_code or row.value_display:  # type: ignore[attr-defined]
            res["valueCodeableConcept"] = _coding(row.value_code_system, row.value_code, row.value_display)  # type: ignore[attr-defined]
        elif row.value_string:  # type: ignore[attr-defined]
            res["valueString"] = row.value_string  # type: ignore[attr-defined]
    elif rtype == "Condition":
        res.update(code=code, onsetDateTime=_iso(row.onset_at),  # type: ignore[attr-defined]
                   clinicalStatus=_coding("http://terminology.hl7.org/CodeSystem/condition-clinical",
                                          row.clinical_status, ""),  # type: ignore[attr-defined]
                   verificationStatus=_coding("http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                              status, ""))
    elif rtype == "MedicationRequest":
        res.update(status=status or "active", intent=row.intent or "order", medicationCodeableConcept=code,  # type: ignore[attr-defined]
                   authoredOn=_iso(row.authored_at))  # type: ignore[attr-defined]
        if row.dosage_text:  # type: ignore[attr-defined]
            res["dosageInstruction"] = [{"text": row.dosage_text}]  # type: ignore[attr-defined]
    elif rtype == "AllergyIntolerance":
        res.update(code=code,
                   clinicalStatus=_coding("http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                                          row.clinical_status, ""),  # type: ignore[attr-defined]
                   verificationStatus=_coding("http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
                                              status, ""))
    elif rtype == "Encounter":
        res.update(status=status or "finished", type=[code] if code else None,
                   period={"start": _iso(row.period_start), "end": _iso(row.period_end)},  # type: ignore[attr-defined]
                   **{"class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                "code": row.class_code or "AMB"}})  # type: ignore[attr-defined]
    elif rtype == "Procedure":
        res.update(status=status or "completed", code=code, performedDateTime=_iso(row.performed_start))  # type: ignore[attr-defined]
    elif rtype == "Immunization":
        res.update(status=status or "completed", vaccineCode=code, occurrenceDateTime=_iso(row.occurrence_at))  # type: ignore[attr-defined]
    elif rtype == "DocumentReference":
        import base64

        data = base64.b64encode(row.text.encode()).decode()  # type: ignore[attr-defined]
        res.update(status=status or "current", type=code, date=_iso(row.written_at),  # type: ignore[attr-defined]
                   content=[{"attachment": {"contentType": "text/plain; charset=utf-8", "data": data}}])
    encounter_id = getattr(row, "encounter_id", None)
    if encounter_id and rtype not in ("Encounter", "AllergyIntolerance", "DocumentReference"):
        enc = getattr(row, "encounter", None)
        if enc is not None:
            res["encounter"] = {"reference": f"Encounter/{enc.fhir_id}"}
    return {k: v for k, v in res.items() if v not in (None, "", [], {})}


# Apps above the record add their own resources to the export (in their AppConfig.ready): each
# provider returns (resource type, id, resource) for one patient, references in Type/id form.
ExportProvider = Callable[[m.Patient], list[tuple[str, str, dict[str, Any]]]]
_PROVIDERS: list[ExportProvider] = []


def export_provider(provider: ExportProvider) -> None:
    if provider not in _PROVIDERS:
        _PROVIDERS.append(provider)


def patient_everything(patient: m.Patient) -> dict[str, Any]:
    """The patient's whole record as a FHIR R4 collection Bundle, with what the apps above it add
    (``export_provider``: the imaging studies and their models' findings)."""
    entries: list[dict[str, Any]] = []

    def add(rtype: str, fhir_id: str, resource: dict[str, Any]) -> None:
        full_url = _full_url(fhir_id)
        entries.append({"fullUrl": full_url, "resource": resource} if full_url else {"resource": resource})

    patient_res = dict(patient.raw) if patient.raw else {
        "resourceType": "Patient",
        "id": patient.fhir_id,
        "identifier": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                             "code": "MR"}]}, "value": patient.mrn}],
        "name": [{"use": "official", "family": patient.family_name, "given": patient.given_names.split()}],
        "gender": patient.sex,
        **({"birthDate": patient.birth_date.isoformat()} if patient.birth_date else {}),
        **({"deceasedDateTime": patient.deceased_at.isoformat()} if patient.deceased_at else {}),
    }
    add("Patient", patient.fhir_id, patient_res)

    org_ids: set[int] = set()
    practitioner_ids: set[int] = set()
    body: list[tuple[str, str, dict[str, Any]]] = []
    for model, rtype in EXPORTED:
        qs: Any = model.objects.filter(patient=patient).order_by("pk")
        if model is m.Observation:
            qs = qs.filter(parent__isnull=True)
        if model not in (m.AllergyIntolerance, m.Encounter):
            qs = qs.select_related("encounter")
        for row in qs:
            for col, bucket in (("service_provider_id", org_ids), ("practitioner_id", practitioner_ids),
                                ("requester_id", practitioner_ids), ("author_id", practitioner_ids)):
                value = getattr(row, col, None)
                if value:
                    bucket.add(value)
            row_type = str(row.raw.get("resourceType")) if row.raw else rtype
            resource = dict(row.raw) if row.raw else _fallback(row, rtype, patient.fhir_id)
            body.append((row_type, row.fhir_id, resource))
    for org in m.Organization.objects.filter(pk__in=org_ids).order_by("pk"):
        add("Organization", org.fhir_id, org.raw or {"resourceType": "Organization", "id": org.fhir_id,
                                                     "name": org.name})
    for prac in m.Practitioner.objects.filter(pk__in=practitioner_ids).order_by("pk"):
        add("Practitioner", prac.fhir_id, prac.raw or {"resourceType": "Practitioner", "id": prac.fhir_id})
    for provider in _PROVIDERS:
        body.extend(provider(patient))
    for rtype, fhir_id, resource in body:
        add(rtype, fhir_id, resource)
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": "collection",
        "timestamp": timezone.now().isoformat(),
        "total": len(entries),
        "entry": entries,
    }
