"""The patient's images and their models' findings as FHIR R4 resources, for the record's export
(``$everything``, ``export_fhir``; registered by ``ImagingConfig.ready``).

- One ``ImagingStudy`` per study (its DICOM Study Instance UID as the identifier ``urn:dicom:uid``,
  PS3.18 / FHIR R4 ImagingStudy), with its series (modality and body part) and instances (SOP
  Instance and Class UIDs). Studies and images entered in error are left out.
- One ``Observation`` per finding (every model version's): category ``imaging``, the label as a
  code of this system, the probability as ``valueQuantity`` (UCUM ``1``), ``interpretation`` POS
  (flagged: at or above the threshold) or NEG (HL7 v3 ObservationInterpretation), status
  ``preliminary`` (a model's output, not a clinician's reading), ``derivedFrom`` its study, the
  model as ``device`` (a display), the threshold and the model's measured AUC as a note, and the
  security label AIAST (HL7 v3 ObservationValue, "Artificial Intelligence asserted"), which the
  importer reads to leave such observations out of the record (an export imported again changes
  nothing).
"""

from __future__ import annotations

from typing import Any

from patients.fhir.mapping import AI_ASSERTED, V3_OBSERVATION_VALUE
from patients.models import Patient

from .models import ImagingFinding, ImagingInstance, ImagingStudy
from .selectors import imaging_study_list, model_auc

DICOM_UID = "urn:dicom:uid"
DCM = "http://dicom.nema.org/resources/ontology/DCM"  # DICOM modality codes (PS3.16 CID 29)
URI = "urn:ietf:rfc:3986"
FINDING_SYSTEM = "urn:cdss:imaging-finding"  # the labels of this system's imaging models
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
UCUM = "http://unitsofmeasure.org"
# Secondary Capture Image Storage (PS3.4 B.5): the SOP class of a PNG or JPEG upload.
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def _modality(code: str) -> dict[str, Any]:
    return {"system": DCM, "code": code or "OT"}  # OT: other


def _instance(instance: ImagingInstance) -> dict[str, Any]:
    out: dict[str, Any] = {"uid": instance.sop_instance_uid,
                           "sopClass": {"system": URI, "code": f"urn:oid:{instance.sop_class_uid or SECONDARY_CAPTURE}"}}
    if instance.instance_number is not None:
        out["number"] = instance.instance_number
    return out


def _study(study: ImagingStudy, patient: Patient) -> dict[str, Any] | None:
    series_out = []
    modalities: list[str] = []
    for series in study.series.all():
        instances = list(series.instances.all())
        if not instances:
            continue
        modality = series.modality or instances[0].modality
        if modality not in modalities:
            modalities.append(modality)
        one: dict[str, Any] = {"uid": series.series_instance_uid, "modality": _modality(modality),
                               "numberOfInstances": len(instances), "instance": [_instance(i) for i in instances]}
        if series.series_number is not None:
            one["number"] = series.series_number
        if series.description:
            one["description"] = series.description
        body_part = series.body_part or instances[0].body_part
        if body_part:
            one["bodySite"] = {"display": body_part}
        series_out.append(one)
    if not series_out:
        return None
    resource: dict[str, Any] = {
        "resourceType": "ImagingStudy", "id": str(study.external_id), "status": "available",
        "identifier": [{"system": DICOM_UID, "value": f"urn:oid:{study.study_instance_uid}"}],
        "subject": {"reference": f"Patient/{patient.fhir_id}"},
        "modality": [_modality(m) for m in modalities],
        "numberOfSeries": len(series_out), "numberOfInstances": sum(s["numberOfInstances"] for s in series_out),
        "series": series_out,
    }
    if study.study_date:
        resource["started"] = study.study_date.isoformat()
    if study.description:
        resource["description"] = study.description
    if study.accession_number:
        resource["identifier"].append({"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                                             "code": "ACSN"}]}, "value": study.accession_number})
    return resource


def _finding(finding: ImagingFinding, study: ImagingStudy, patient: Patient) -> dict[str, Any]:
    mv = finding.model_version
    auc, split = model_auc(mv)
    measured = f"; measured AUC {auc:.3f} on held-out data ({split} split)" if auc is not None else ""
    resource: dict[str, Any] = {
        "resourceType": "Observation", "id": str(finding.external_id), "status": "preliminary",
        "meta": {"security": [{"system": V3_OBSERVATION_VALUE, "code": AI_ASSERTED,
                               "display": "Artificial Intelligence asserted"}]},
        "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": "imaging", "display": "Imaging"}]}],
        "code": {"coding": [{"system": FINDING_SYSTEM, "code": finding.label, "display": finding.label}],
                 "text": f"{finding.label}: probability from the image model {mv.name}"},
        "subject": {"reference": f"Patient/{patient.fhir_id}"},
        "issued": finding.created_at.isoformat(),
        "valueQuantity": {"value": round(finding.probability, 6), "unit": "probability", "system": UCUM, "code": "1"},
        "interpretation": [{"coding": [{"system": INTERPRETATION, "code": "POS" if finding.positive else "NEG"}],
                            "text": "flagged" if finding.positive else "not flagged"}],
        "derivedFrom": [{"reference": f"ImagingStudy/{study.external_id}"}],
        "device": {"display": f"{mv.name} {mv.version} ({mv.architecture})"},
        "note": [{"text": f"Flagged at a probability of {finding.threshold:.3f} or more{measured}. "
                          "A model's output, not a diagnosis."}],
    }
    if study.study_date:
        resource["effectiveDateTime"] = study.study_date.isoformat()
    return resource


def imaging_fhir_resources(patient: Patient) -> list[tuple[str, str, dict[str, Any]]]:
    """The patient's imaging studies and findings (four queries)."""
    out: list[tuple[str, str, dict[str, Any]]] = []
    for study in imaging_study_list(patient=patient):
        resource = _study(study, patient)
        if resource is None:
            continue
        out.append(("ImagingStudy", resource["id"], resource))
        for series in study.series.all():
            for instance in series.instances.all():
                for finding in instance.findings.all():
                    observation = _finding(finding, study, patient)
                    out.append(("Observation", observation["id"], observation))
    return out
