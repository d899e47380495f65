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


LOINC = "http://loinc.org"
HGNC = "http://www.genenames.org"


def gene_component(symbol: str, hgnc_id: str) -> dict[str, Any]:
    return {"code": {"coding": [{"system": LOINC, "code": "48018-6", "display": "Gene studied [ID]"}]},
            "valueCodeableConcept": {"coding": [{"system": HGNC, "code": hgnc_id, "display": symbol}]}}


def genomic_bundle(patient_id: str, mrn: str, observations: list[dict[str, Any]],
                   medications: tuple[str, ...] = ()) -> dict[str, Any]:
    """A collection Bundle: a patient, pharmacogenomic Observations (``id``, ``code`` and the
    rest given) and active medication requests by name."""
    subject = {"reference": f"urn:uuid:{patient_id}"}
    entries: list[dict[str, Any]] = [{"fullUrl": f"urn:uuid:{patient_id}", "resource": {
        "resourceType": "Patient", "id": patient_id, "gender": "male", "birthDate": "1958-06-01",
        "name": [{"family": "Genotyped", "given": ["Gene"]}],
        "identifier": [{"type": {"coding": [{"code": "MR"}]}, "value": mrn}]}}]
    for obs in observations:
        entries.append({"fullUrl": f"urn:uuid:{obs['id']}", "resource": {
            "resourceType": "Observation", "status": "final", "subject": subject,
            "category": [{"coding": [{"code": "laboratory"}]}], "effectiveDateTime": "2024-02-01T10:00:00+00:00",
            **obs}})
    for i, name in enumerate(medications):
        rid = f"{patient_id[:-2]}{i + 50:02d}"
        entries.append({"fullUrl": f"urn:uuid:{rid}", "resource": {
            "resourceType": "MedicationRequest", "id": rid, "status": "active", "intent": "order",
            "subject": subject, "authoredOn": "2024-03-01", "medicationCodeableConcept": {"text": name}}})
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


# HL7 Genomics Reporting, both shapes: the gene in a component 48018-6, or in the code itself.
GENOMIC_SHAPES: list[dict[str, Any]] = [
    # shape 1: gene, genotype and phenotype in components
    {"id": "a0000000-0000-4000-8000-000000000001",
     "code": {"coding": [{"system": LOINC, "code": "69548-6", "display": "Genetic variant assessment"}]},
     "component": [gene_component("CYP2C19", "HGNC:2621"),
                   {"code": {"coding": [{"system": LOINC, "code": "84413-4"}]}, "valueString": "*2/*2"},
                   {"code": {"coding": [{"system": LOINC, "code": "53040-2"}]},
                    "valueCodeableConcept": {"text": "Poor metabolizer"}}]},
    # shape 1, the phenotype as the Observation's own value
    {"id": "a0000000-0000-4000-8000-000000000002",
     "code": {"coding": [{"system": LOINC, "code": "53040-2",
                          "display": "Genetic variation's effect on drug metabolism"}]},
     "component": [gene_component("SLCO1B1", "HGNC:10959")],
     "valueCodeableConcept": {"coding": [{"display": "Decreased function"}]}},
    # shape 2: the allele in the code's text, the result a coded value's display
    {"id": "a0000000-0000-4000-8000-000000000003", "code": {"text": "HLA-B*57:01"},
     "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "10828004",
                                          "display": "Positive"}]}},
    # shape 2: an HGNC coding in the code, the result a string
    {"id": "a0000000-0000-4000-8000-000000000004",
     "code": {"coding": [{"system": HGNC, "code": "HGNC:2623", "display": "CYP2C9"}]},
     "valueString": "Intermediate metabolizer"},
    # shape 2: LOINC 53040-2 with the gene in the text
    {"id": "a0000000-0000-4000-8000-000000000005",
     "code": {"coding": [{"system": LOINC, "code": "53040-2"}], "text": "CYP2D6 drug metabolism phenotype"},
     "valueString": "Ultrarapid metabolizer"},
    # not genomic results: a numeric gene score and a coded answer about something else
    {"id": "a0000000-0000-4000-8000-000000000006", "code": {"text": "CYP2D6 activity score"},
     "valueQuantity": {"value": 2.5, "unit": "{score}", "code": "{score}"}},
    {"id": "a0000000-0000-4000-8000-000000000007",
     "code": {"coding": [{"system": LOINC, "code": "72166-2", "display": "Tobacco smoking status"}]},
     "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "266919005",
                                          "display": "Never smoker"}]}},
]
