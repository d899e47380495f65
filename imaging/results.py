"""A finding's result as a DICOM object (``results_dicom``) from the record and storage: what the
viewer's download, the REST API and the PACS sender all hand out."""

from __future__ import annotations

import io
from dataclasses import dataclass

from django.http import HttpResponse
from django.utils import timezone
from PIL import Image

from .models import ENTERED_IN_ERROR, ImagingFinding
from .results_dicom import ResultFacts, result_uids, secondary_capture
from .results_sr import ReportUnavailable, measurement_report, report_uids
from .selectors import heatmap_png, model_auc


class ResultUnavailable(Exception):
    """Why a finding has no DICOM result; the message names the reason (no patient data)."""


@dataclass(frozen=True)
class ResultFile:
    name: str  # a file name for a download: the SOP Instance UID
    data: bytes
    sop_instance_uid: str


def result_facts(finding: ImagingFinding) -> ResultFacts:
    instance = finding.instance
    series = instance.series
    study = series.study
    patient = finding.patient
    mv = finding.model_version
    auc, split = model_auc(mv)
    return ResultFacts(
        patient_id=patient.mrn, family_name=patient.family_name, given_names=patient.given_names,
        birth_date=patient.birth_date, sex=patient.sex,
        study_instance_uid=study.study_instance_uid, study_date=study.study_date,
        accession_number=study.accession_number, study_description=study.description,
        modality=instance.modality or series.modality,
        sop_class_uid=instance.sop_class_uid if instance.format == "dicom" else "",
        sop_instance_uid=instance.sop_instance_uid,
        frame_number=instance.frame_index + 1 if instance.frames > 1 else None,
        finding_id=str(finding.external_id), label=finding.label, probability=finding.probability,
        threshold=finding.threshold, positive=finding.positive, model_name=mv.name, model_version=mv.version,
        architecture=mv.architecture, auc=auc, auc_split=split, created_at=timezone.localtime(finding.created_at),
    )


def finding_result_dicom(finding: ImagingFinding) -> ResultFile:
    """The finding's Secondary Capture (the analysed frame's stored preview with the heat map over
    it and its caption), or ``ResultUnavailable``: no heat map, an image entered in error, a file
    gone from storage."""
    instance = finding.instance
    if instance.status == ENTERED_IN_ERROR:
        raise ResultUnavailable("The image was entered in error.")
    if not finding.heatmap:
        raise ResultUnavailable("This finding has no heat map.")
    try:
        heat = heatmap_png(finding)
        with instance.preview.open("rb") as fh:
            frame = Image.open(io.BytesIO(fh.read()))
            frame.load()
    except (OSError, ValueError):
        raise ResultUnavailable("The image or its heat map could not be read from storage.") from None
    facts = result_facts(finding)
    data = secondary_capture(facts, frame, heat, now=timezone.localtime())
    _series, sop_uid = result_uids(facts)
    return ResultFile(name=f"{sop_uid}.dcm", data=data, sop_instance_uid=sop_uid)


def finding_report_dicom(finding: ImagingFinding) -> ResultFile:
    """The finding's Imaging Measurement Report (DICOM SR, ``results_sr``), or ``ResultUnavailable``:
    an image entered in error, or one that is no DICOM instance. Needs no file from storage."""
    if finding.instance.status == ENTERED_IN_ERROR:
        raise ResultUnavailable("The image was entered in error.")
    facts = result_facts(finding)
    try:
        data = measurement_report(facts, source_series_uid=finding.instance.series.series_instance_uid)
    except ReportUnavailable as exc:
        raise ResultUnavailable(str(exc)) from None
    _series, sop_uid = report_uids(facts)
    return ResultFile(name=f"{sop_uid}.dcm", data=data, sop_instance_uid=sop_uid)


def private_file(data: bytes, content_type: str, filename: str = "") -> HttpResponse:
    """A patient's file as a response: kept by no cache, its type not guessed by the browser, and
    with ``filename`` a download."""
    response = HttpResponse(data, content_type=content_type)
    if filename:
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "private, no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response
