"""Small FHIR R4 resources and hook requests for the CDS Hooks tests."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SNOMED = "http://snomed.info/sct"
EGFR = "33914-3"  # LOINC eGFR (MDRD) /1.73 m2
LDL = "18262-6"  # LOINC LDL-C, direct


def days_ago(n: float) -> str:
    return (dt.datetime.now(dt.UTC) - dt.timedelta(days=n)).isoformat()


def bundle(*resources: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}


def patient(pid: str, *, gender: str = "male", birth: str = "1950-03-01") -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "gender": gender, "birthDate": birth}


def observation(pid: str, oid: str, code: str, value: float, unit: str, when: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "code": {"coding": [{"system": LOINC, "code": code}]}, "subject": {"reference": f"Patient/{pid}"},
            "effectiveDateTime": when, "valueQuantity": {"value": value, "unit": unit, "code": unit,
                                                         "system": "http://unitsofmeasure.org"}}


def genotype(pid: str, oid: str, gene: str, phenotype: str, diplotype: str = "") -> dict[str, Any]:
    """HL7 Genomics Reporting shape: gene studied (48018-6) and phenotype (53040-2) components."""
    components = [
        {"code": {"coding": [{"system": LOINC, "code": "48018-6", "display": "Gene studied [ID]"}]},
         "valueCodeableConcept": {"coding": [{"system": "http://www.genenames.org", "code": gene, "display": gene}]}},
        {"code": {"coding": [{"system": LOINC, "code": "53040-2", "display": "Genetic variation's effect on drug "
                                                                             "metabolism"}]},
         "valueCodeableConcept": {"text": phenotype}},
    ]
    if diplotype:
        components.append({"code": {"coding": [{"system": LOINC, "code": "84413-4"}]}, "valueString": diplotype})
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "69548-6", "display": "Genetic variant assessment"}]},
            "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": days_ago(400), "component": components}


def medication_request(pid: str, mid: str, rxnorm: str, display: str, *, status: str = "active") -> dict[str, Any]:
    return {"resourceType": "MedicationRequest", "id": mid, "status": status, "intent": "order",
            "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": rxnorm, "display": display}]},
            "subject": {"reference": f"Patient/{pid}"}, "authoredOn": days_ago(1)}


def condition(pid: str, cid: str, code: str, display: str) -> dict[str, Any]:
    return {"resourceType": "Condition", "id": cid,
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": "active"}]},
            "code": {"coding": [{"system": SNOMED, "code": code, "display": display}]},
            "subject": {"reference": f"Patient/{pid}"}}


def patient_view(pid: str, prefetch: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()),
                            "context": {"userId": "PractitionerRole/123", "patientId": pid}}
    if prefetch is not None:
        body["prefetch"] = prefetch
    body.update(extra)
    return body


def empty_prefetch(pid: str, **values: Any) -> dict[str, Any]:
    """Every key of the patient-view templates, null (no data) unless given."""
    out: dict[str, Any] = {"patient": patient(pid), "observations": None, "genomics": None, "conditions": None,
                           "medications": None, "allergies": None}
    out.update(values)
    return out


def order_select(pid: str, orders: list[dict[str, Any]], selected: list[str] | None = None,
                 prefetch: dict[str, Any] | None = None, hook: str = "order-select") -> dict[str, Any]:
    context: dict[str, Any] = {"userId": "Practitioner/7", "patientId": pid,
                               "draftOrders": {"resourceType": "Bundle", "type": "collection",
                                               "entry": [{"resource": o} for o in orders]}}
    if hook == "order-select":
        context["selections"] = selected if selected is not None else [f"MedicationRequest/{o['id']}" for o in orders]
    body: dict[str, Any] = {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context}
    if prefetch is not None:
        body["prefetch"] = prefetch
    return body


def allergy(pid: str, aid: str, code: str, display: str, *, system: str = SNOMED,
            verification: str = "confirmed", clinical: str = "active") -> dict[str, Any]:
    return {"resourceType": "AllergyIntolerance", "id": aid,
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                     "allergyintolerance-clinical", "code": clinical}]},
            "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                         "allergyintolerance-verification", "code": verification}]},
            "code": {"coding": [{"system": system, "code": code, "display": display}]},
            "patient": {"reference": f"Patient/{pid}"}}
