"""Small hand-written FHIR bundles for importer tests."""

from __future__ import annotations

import copy
from typing import Any

PATIENT_ID = "3f0a8a4e-1b7c-4d2e-9f10-5a6b7c8d9e01"
ENCOUNTER_ID = "8b1c2d3e-4f50-4a61-b728-394a5b6c7d02"


def valid_bundle(kind: str = "transaction") -> dict[str, Any]:
    def entry(resource: dict[str, Any]) -> dict[str, Any]:
        e: dict[str, Any] = {"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource}
        if kind == "transaction":
            e["request"] = {"method": "POST", "url": resource["resourceType"]}
        return e

    subject = {"reference": f"urn:uuid:{PATIENT_ID}"}
    return {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [
            entry({
                "resourceType": "Patient", "id": PATIENT_ID, "gender": "female", "birthDate": "1961-04-02",
                "name": [{"use": "official", "family": "Testperson", "given": ["Tess"]}],
                "identifier": [{"type": {"coding": [{"code": "MR"}]}, "value": "MRN-T-1"}],
            }),
            entry({
                "resourceType": "Encounter", "id": ENCOUNTER_ID, "status": "finished",
                "class": {"code": "AMB"}, "subject": subject,
                "period": {"start": "2022-03-04T09:00:00+00:00", "end": "2022-03-04T09:30:00+00:00"},
            }),
            entry({
                "resourceType": "Observation", "id": "0c4f1b8e-51b6-4f2c-8d4e-7a1b2c3d4e03", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "2093-3", "display": "Cholesterol"}]},
                "subject": subject, "encounter": {"reference": f"urn:uuid:{ENCOUNTER_ID}"},
                "effectiveDateTime": "2022-03-04T09:10:00+00:00",
                "valueQuantity": {"value": 212, "unit": "mg/dL", "system": "http://unitsofmeasure.org",
                                  "code": "mg/dL"},
            }),
            entry({
                "resourceType": "Observation", "id": "1d5a2c9f-62c7-4a3d-9e5f-8b2c3d4e5f04", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9", "display": "Blood pressure"}]},
                "subject": subject, "effectiveDateTime": "2022-03-04T09:05:00+00:00",
                "component": [
                    {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                     "valueQuantity": {"value": 142, "unit": "mm[Hg]", "code": "mm[Hg]"}},
                    {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                     "valueQuantity": {"value": 91, "unit": "mm[Hg]", "code": "mm[Hg]"}},
                ],
            }),
            entry({
                "resourceType": "Condition", "id": "2e6b3d0a-73d8-4b4e-8f60-9c3d4e5f6a05",
                "clinicalStatus": {"coding": [{"code": "active"}]},
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "38341003",
                                     "display": "Hypertension"}]},
                "subject": subject, "onsetDateTime": "2019-01-01",
            }),
            entry({
                "resourceType": "Claim", "id": "3f7c4e1b-84e9-4c5f-9071-ad4e5f6a7b06", "status": "active",
                "patient": subject,
            }),
        ],
    }


def broken(mutate: Any) -> dict[str, Any]:
    bundle = copy.deepcopy(valid_bundle())
    mutate(bundle)
    return bundle
