"""Imaging in the record's FHIR export: an ImagingStudy per study and an Observation per model
finding (AI-asserted), which the importer leaves out, so the export imported again changes nothing."""

from __future__ import annotations

import io

import numpy as np
import orjson
import pytest
from PIL import Image

from imaging.models import ENTERED_IN_ERROR
from imaging.services import UploadFile, imaging_upload
from patients import models as m
from patients.fhir.exporter import patient_everything
from patients.services import fhir_import_bundle
from tests.imaging.test_pages import finding_for, model_version, upload
from tests.patients.test_fhir_export import snapshot

pytestmark = pytest.mark.django_db


def resources(bundle: dict, rtype: str) -> list[dict]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype]


def test_studies_and_findings_are_exported_and_reimporting_changes_nothing(patient_a: m.Patient, site_a) -> None:
    [ct] = upload(patient_a)
    mv = model_version(auc=0.951)
    flagged = finding_for(ct, mv, p=0.91)
    finding_for(ct, mv, label="nodule", p=0.1, positive=False)
    gone = upload(patient_a)[0]
    gone.status = ENTERED_IN_ERROR
    gone.save()
    out = io.BytesIO()
    Image.fromarray(np.full((32, 32), 90, dtype=np.uint8)).save(out, format="PNG")
    [png] = imaging_upload(patient=patient_a, files=[UploadFile("x.png", out.getvalue())], modality="CR",
                           body_part="CHEST").created

    bundle = patient_everything(patient_a)
    studies = {s["id"]: s for s in resources(bundle, "ImagingStudy")}
    assert set(studies) == {str(ct.series.study.external_id), str(png.series.study.external_id)}
    study = studies[str(ct.series.study.external_id)]
    assert study["status"] == "available" and study["subject"] == {"reference": f"Patient/{patient_a.fhir_id}"}
    assert study["identifier"][0] == {"system": "urn:dicom:uid", "value": f"urn:oid:{ct.series.study.study_instance_uid}"}
    [series] = study["series"]  # the image entered in error is left out of its series
    assert series["uid"] == ct.series.series_instance_uid and series["modality"]["code"] == "CT"
    assert series["instance"] == [{"uid": ct.sop_instance_uid, "sopClass": {
        "system": "urn:ietf:rfc:3986", "code": f"urn:oid:{ct.sop_class_uid}"}, "number": ct.instance_number}]
    assert study["numberOfSeries"] == 1 and study["numberOfInstances"] == 1
    bitmap = studies[str(png.series.study.external_id)]["series"][0]
    assert bitmap["modality"]["code"] == "CR" and bitmap["bodySite"] == {"display": "CHEST"}
    assert bitmap["instance"][0]["sopClass"]["code"] == "urn:oid:1.2.840.10008.5.1.4.1.1.7"  # secondary capture

    observations = {o["id"]: o for o in resources(bundle, "Observation")}
    assert len(observations) == 2
    obs = observations[str(flagged.external_id)]
    assert obs["status"] == "preliminary" and obs["category"][0]["coding"][0]["code"] == "imaging"
    assert obs["meta"]["security"][0]["code"] == "AIAST"
    assert obs["code"]["coding"][0]["code"] == "pneumonia"
    assert obs["valueQuantity"] == {"value": 0.91, "unit": "probability", "system": "http://unitsofmeasure.org",
                                    "code": "1"}
    assert obs["interpretation"][0]["coding"][0]["code"] == "POS"
    assert obs["derivedFrom"] == [{"reference": f"ImagingStudy/{ct.series.study.external_id}"}]
    assert obs["device"]["display"] == "pneumonia 2026.11.25-1 (resnet18)"
    assert "0.500" in obs["note"][0]["text"] and "AUC 0.951" in obs["note"][0]["text"]
    assert observations[str(ct.findings.get(label="nodule").external_id)]["interpretation"][0]["coding"][0]["code"] == "NEG"
    assert all(e.get("fullUrl", "").startswith("urn:uuid:") for e in bundle["entry"]
               if e["resource"]["resourceType"] in ("ImagingStudy", "Observation"))

    summary = fhir_import_bundle(orjson.dumps(bundle), site=site_a)  # the factory's patient gets its FHIR hash
    assert summary.ok, summary.as_dict()["errors"][:3]
    assert not m.Observation.objects.exists()  # no AI finding became an observation of the record
    skipped = summary.as_dict()["skipped"]
    assert skipped.get("Observation (asserted by an AI model)") == 2 and skipped.get("ImagingStudy (not stored)") == 2
    before = snapshot()
    assert fhir_import_bundle(orjson.dumps(patient_everything(patient_a)), site=site_a).ok
    assert snapshot() == before  # imported again: nothing changes
