"""A finding as a DICOM Structured Report (imaging.results_sr / imaging.results): an Imaging
Measurement Report (TID 1500) read back with highdicom and pydicom, its UIDs, and the viewer's
and the REST API's downloads."""

from __future__ import annotations

import io
from typing import Any

import highdicom as hd
import pydicom
import pytest
from django.test import Client
from django.urls import reverse
from PIL import Image
from pydicom.uid import EnhancedSRStorage

from cdss.models import AuditEvent
from imaging.models import ENTERED_IN_ERROR
from imaging.results import finding_report_dicom
from imaging.results_sr import ReportUnavailable, measurement_report, report_uids
from imaging.services import UploadFile, imaging_upload
from patients import models as m
from tests.api.conftest import token_client
from tests.imaging.test_pages import upload
from tests.imaging.test_results_dicom import facts, real_finding


def _items(items: Any) -> dict[str, Any]:
    """The content items of one level by their concept name's meaning (the last of a name)."""
    return {item.ConceptNameCodeSequence[0].CodeMeaning: item for item in items}


def _group(ds: pydicom.Dataset) -> dict[str, Any]:
    """The report's one measurement group, by concept name; the values of repeated names as lists."""
    measurements = _items(ds.ContentSequence)["Imaging Measurements"]
    [group] = measurements.ContentSequence
    out: dict[str, Any] = {}
    for item in group.ContentSequence:
        out.setdefault(item.ConceptNameCodeSequence[0].CodeMeaning, []).append(item)
    return out


def test_the_report_names_the_image_the_algorithm_the_finding_and_its_figures(monkeypatch) -> None:
    monkeypatch.setattr(pydicom.config.settings, "writing_validation_mode", pydicom.config.RAISE)
    data = measurement_report(facts(), source_series_uid="1.2.3.4.1")
    ds = pydicom.dcmread(io.BytesIO(data))
    assert ds.SOPClassUID == EnhancedSRStorage and ds.Modality == "SR"
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert (str(ds.PatientName), ds.PatientID, ds.PatientBirthDate, ds.PatientSex) == (
        "Ünal^Zoë Anne", "MRN-1", "19500304", "F")  # the record's, in UTF-8
    assert ds.StudyInstanceUID == "1.2.3.4" and ds.AccessionNumber == "ACC1"
    assert ds.SeriesInstanceUID not in ("1.2.3.4", "1.2.3.4.1") and ds.SeriesNumber == 9001
    assert ds.SeriesDescription == "AI report pneumonia 2026.11.25-1"
    assert (ds.CompletionFlag, ds.VerificationFlag) == ("COMPLETE", "UNVERIFIED")
    assert (ds.ContentDate, ds.ContentTime) == ("20261121", "083000")
    assert ds.ConceptNameCodeSequence[0].CodeValue == "126000"  # Imaging Measurement Report
    # the evidence: the source image in its study and series
    [evidence] = ds.CurrentRequestedProcedureEvidenceSequence
    [series] = evidence.ReferencedSeriesSequence
    assert (evidence.StudyInstanceUID, series.SeriesInstanceUID) == ("1.2.3.4", "1.2.3.4.1")
    assert series.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == "1.2.3.4.5"

    group = _group(ds)
    [finding_type] = group["Finding"]
    assert (finding_type.ConceptCodeSequence[0].CodeValue, finding_type.ConceptCodeSequence[0].CodingSchemeDesignator) \
        == ("233604007", "SCT")  # Pneumonia
    [evaluation] = group["Pneumonia"]
    assert evaluation.ConceptCodeSequence[0].CodeMeaning == "Present"
    [probability] = group["Probability"]
    value = probability.MeasuredValueSequence[0]
    assert float(value.NumericValue) == pytest.approx(0.873)
    assert value.MeasurementUnitsCodeSequence[0].CodeValue == "1"
    [threshold] = group["Threshold Value"]
    assert float(threshold.MeasuredValueSequence[0].NumericValue) == pytest.approx(0.5)
    assert [i.TextValue for i in group["Algorithm Name"]] == ["pneumonia"]
    assert [i.TextValue for i in group["Algorithm Version"]] == ["2026.11.25-1"]
    assert [i.TextValue for i in group["Algorithm Parameters"]] == ["architecture resnet18", "threshold 0.5000",
                                                                    "test AUC 0.951"]
    [source] = group["Source of Measurement"]
    assert source.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == "1.2.3.4.5"
    assert "ReferencedFrameNumber" not in source.ReferencedSOPSequence[0]
    # highdicom reads it back as the template it is
    report = hd.sr.srread(io.BytesIO(data))
    assert isinstance(report.content, hd.sr.MeasurementReport)
    [read_group] = report.content.get_image_measurement_groups()
    [read_evaluation] = read_group.get_qualitative_evaluations()
    assert (read_evaluation.name.value, getattr(read_evaluation.value, "value", None)) == (
        "233604007", "52101004")  # Pneumonia: Present
    assert [float(m.value) for m in read_group.get_measurements()] == [pytest.approx(0.873), pytest.approx(0.5)]


def test_a_negative_finding_is_absent_an_unknown_label_private_and_a_frame_named() -> None:
    ds = pydicom.dcmread(io.BytesIO(measurement_report(
        facts(label="nodule", positive=False, probability=0.12, frame_number=3, auc=None),
        source_series_uid="1.2.3.4.1")))
    group = _group(ds)
    [evaluation] = group["nodule"]
    assert evaluation.ConceptNameCodeSequence[0].CodingSchemeDesignator == "99CDSS"
    assert evaluation.ConceptCodeSequence[0].CodeMeaning == "Absent"
    assert [i.TextValue for i in group["Algorithm Parameters"]] == ["architecture resnet18", "threshold 0.5000"]
    [source] = group["Source of Measurement"]
    assert source.ReferencedSOPSequence[0].ReferencedFrameNumber == 3


def test_the_same_finding_gets_the_same_report_uids_and_a_png_none() -> None:
    assert report_uids(facts()) == report_uids(facts(probability=0.2))
    assert report_uids(facts())[1] != report_uids(facts(finding_id="another"))[1]
    assert report_uids(facts())[0] == report_uids(facts(finding_id="another"))[0]  # one series per study and model
    ds = pydicom.dcmread(io.BytesIO(measurement_report(facts(), source_series_uid="1.2.3.4.1")))
    assert ds.SOPInstanceUID == report_uids(facts())[1]
    with pytest.raises(ReportUnavailable, match="not a DICOM instance"):
        measurement_report(facts(sop_class_uid=""), source_series_uid="1.2.3.4.1")


pytestmark_db = pytest.mark.django_db


def report_url(finding: Any) -> str:
    return reverse("imaging-report-dicom", args=[finding.patient.external_id, finding.external_id])


@pytestmark_db
def test_the_viewer_and_the_api_give_a_findings_report_audited(
    client_a: Client, patient_a: m.Patient, patient_b: m.Patient, clinician_a
) -> None:
    [instance] = upload(patient_a)
    finding = real_finding(instance, p=0.91)
    viewer = client_a.get(reverse("imaging-viewer", args=[patient_a.external_id, instance.external_id]))
    assert report_url(finding) in viewer.content.decode()
    response = client_a.get(report_url(finding))
    assert response.status_code == 200 and response["Content-Type"] == "application/dicom"
    ds = pydicom.dcmread(io.BytesIO(response.content))
    assert ds.StudyInstanceUID == instance.series.study.study_instance_uid and ds.PatientID == patient_a.mrn
    assert _group(ds)["Source of Measurement"][0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == \
        instance.sop_instance_uid
    assert float(_group(ds)["Probability"][0].MeasuredValueSequence[0].NumericValue) == pytest.approx(0.91)
    assert response["Content-Disposition"] == f'attachment; filename="{ds.SOPInstanceUID}.dcm"'
    assert AuditEvent.objects.get(target="imaging-report").patient == patient_a

    api = token_client(clinician_a)
    answer = api.get(reverse("api-imaging-finding-report", args=[finding.external_id]), HTTP_ACCEPT="application/dicom")
    assert answer.status_code == 200
    assert pydicom.dcmread(io.BytesIO(answer.content)).SOPInstanceUID == finding_report_dicom(finding).sop_instance_uid
    assert AuditEvent.objects.filter(target="api:imaging-report", action="export", patient=patient_a).count() == 1
    [theirs] = upload(patient_b)
    missing = api.get(reverse("api-imaging-finding-report", args=[real_finding(theirs).external_id]))
    assert missing.status_code == 404 and missing.json()["error"]["message"] == "No such finding."

    # a PNG upload has no report (nothing to reference); nor has an image entered in error
    png = io.BytesIO()
    Image.new("L", (32, 32), 50).save(png, format="PNG")
    [bitmap] = imaging_upload(patient=patient_a, files=[UploadFile("x.png", png.getvalue())]).created
    bitmap_finding = real_finding(bitmap)
    page = client_a.get(reverse("imaging-viewer", args=[patient_a.external_id, bitmap.external_id])).content.decode()
    assert report_url(bitmap_finding) not in page
    response = client_a.get(report_url(bitmap_finding))
    assert response.status_code == 404 and b"not a DICOM instance" in response.content
    instance.status = ENTERED_IN_ERROR
    instance.save(update_fields=["status"])
    assert b"entered in error" in client_a.get(report_url(finding)).content
    assert AuditEvent.objects.filter(target="imaging-report").count() == 1
