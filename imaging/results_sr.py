"""A finding as a DICOM Structured Report that a PACS, a reporting system or another program can
read without looking at pixels: an Imaging Measurement Report (TID 1500) whose one measurement
group (TID 1501) names the source image (and frame), the algorithm (TID 4019: model name and
version, its architecture, threshold and measured AUC as parameters), the finding as a coded
qualitative evaluation (present or absent at the model's threshold), and the model's probability
and threshold as measurements. The Secondary Capture (``results_dicom``) is the picture for people;
this is the same result as data, as the IHE AI Results (AIR) profile asks of AI results.

Pure code (no Django): the caller gives ``ResultFacts`` (from the record) and the source image's
Series Instance UID; ``measurement_report`` gives the Part 10 file's bytes. Built with highdicom,
which checks the template's structure and the attributes' value representations.

References: DICOM PS3.16 TID 1500 (Measurement Report), TID 1501 (Measurement and Qualitative
Evaluation Group), TID 4019 (Algorithm Identification), TID 1001/1004 (Observation Context,
Device Observer); PS3.3 A.35.2 (Enhanced SR IOD); IHE Radiology AI Results (AIR) Rev. 1.1, 2020.
Codes: DCM 122157 "Probability", DCM 122411 "Threshold Value", SCT 52101004 "Present", SCT
272519000 "Absent", SCT 363679005 "Imaging procedure"; UCUM "1" (no units). A label without a
SNOMED CT concept here is coded in this system's private scheme ``99CDSS``.

UIDs are derived from the finding, as the Secondary Capture's: sending the same finding again
gives the same object; one series per source study and model version (its own: an SR series holds
SR objects only).
"""

from __future__ import annotations

import io
import logging

from highdicom.sr import (
    AlgorithmIdentification,
    CodedConcept,
    DeviceObserverIdentifyingAttributes,
    EnhancedSR,
    Measurement,
    MeasurementReport,
    MeasurementsAndQualitativeEvaluations,
    ObservationContext,
    ObserverContext,
    QualitativeEvaluation,
    SourceImageForMeasurementGroup,
    TrackingIdentifier,
)
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from .imagefile import uid_from_digest
from .results_dicom import MANUFACTURER, SERIES_NUMBER, SEX_CODES, ResultFacts, person_name

logging.getLogger("highdicom").setLevel(logging.WARNING)  # its INFO lines name the datasets it copies from

PRIVATE_SCHEME = "99CDSS"
# The findings the models of this system report (imaging.ml.data), as SNOMED CT concepts.
FINDING_CODES = {
    "pneumonia": CodedConcept("233604007", "SCT", "Pneumonia"),
    "malignant": CodedConcept("254837009", "SCT", "Malignant neoplasm of breast"),
}
SR_SERIES_NUMBER = SERIES_NUMBER + 1  # beside the Secondary Captures' series


class ReportUnavailable(ValueError):
    """Why no report can be made (the message names the reason, no patient data)."""


def finding_code(label: str) -> CodedConcept:
    known = FINDING_CODES.get(label.strip().lower())
    if known is not None:
        return known
    return CodedConcept(label.strip()[:16] or "finding", PRIVATE_SCHEME, label.strip()[:64] or "finding")


def report_uids(facts: ResultFacts) -> tuple[str, str]:
    """(Series Instance UID, SOP Instance UID) of the finding's report: always the same two."""
    series = uid_from_digest(f"{facts.study_instance_uid}|{facts.model_name}|{facts.model_version}",
                             salt="cdss-report-series")
    return series, uid_from_digest(facts.finding_id, salt="cdss-report")


def _source(facts: ResultFacts, source_series_uid: str) -> Dataset:
    """The source image as highdicom's evidence: its identity, the record's patient and study."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = facts.sop_class_uid
    ds.SOPInstanceUID = facts.sop_instance_uid
    ds.StudyInstanceUID = facts.study_instance_uid
    ds.SeriesInstanceUID = source_series_uid
    ds.PatientID = facts.patient_id[:64]
    ds.PatientName = person_name(facts.family_name, facts.given_names)
    ds.PatientBirthDate = facts.birth_date.strftime("%Y%m%d") if facts.birth_date else ""
    ds.PatientSex = SEX_CODES.get(facts.sex, "")
    ds.StudyDate = facts.study_date.strftime("%Y%m%d") if facts.study_date else ""
    ds.StudyTime = ""
    ds.StudyID = ""
    ds.AccessionNumber = facts.accession_number[:16]
    ds.ReferringPhysicianName = ""
    return ds


def measurement_report(facts: ResultFacts, *, source_series_uid: str) -> bytes:
    """The finding's Imaging Measurement Report as a DICOM Part 10 file (Enhanced SR, explicit VR
    little endian), or ``ReportUnavailable`` for an image that is no DICOM instance (a PNG or
    JPEG upload: nothing a report could reference)."""
    if not facts.sop_class_uid:
        raise ReportUnavailable("The image is not a DICOM instance (a PNG or JPEG upload): a report needs one.")
    label = finding_code(facts.label)
    algorithm = AlgorithmIdentification(
        name=facts.model_name[:64], version=facts.model_version[:64],
        parameters=[p for p in (f"architecture {facts.architecture}"[:64], f"threshold {facts.threshold:.4f}",
                                f"{facts.auc_split} AUC {facts.auc:.3f}"[:64] if facts.auc is not None else "")
                    if p],
        manufacturer=MANUFACTURER,
    )
    unitless = CodedConcept("1", "UCUM", "no units")
    group = MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=uid_from_digest(facts.finding_id, salt="cdss-report-group"),
                                               identifier=f"{facts.label} by {facts.model_name}"[:64]),
        finding_type=label,
        algorithm_id=algorithm,
        source_images=[SourceImageForMeasurementGroup(
            referenced_sop_class_uid=facts.sop_class_uid, referenced_sop_instance_uid=facts.sop_instance_uid,
            referenced_frame_numbers=[facts.frame_number] if facts.frame_number else None)],
        qualitative_evaluations=[QualitativeEvaluation(name=label,
                                                       value=codes.SCT.Present if facts.positive else codes.SCT.Absent)],
        measurements=[
            Measurement(name=codes.DCM.Probability, value=round(facts.probability, 6), unit=unitless),
            Measurement(name=codes.DCM.ThresholdValue, value=round(facts.threshold, 6), unit=unitless),
        ],
    )
    device = ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=uid_from_digest(f"{facts.model_name}|{facts.model_version}", salt="cdss-device"),
            name=f"{facts.model_name} {facts.model_version}"[:64], manufacturer_name=MANUFACTURER,
            model_name=facts.architecture[:64] or None),
    )
    report = MeasurementReport(
        observation_context=ObservationContext(observer_device_context=device),
        procedure_reported=codes.SCT.ImagingProcedure,
        imaging_measurements=[group],
    )
    series_uid, sop_uid = report_uids(facts)
    sr = EnhancedSR(
        evidence=[_source(facts, source_series_uid)], content=report, series_instance_uid=series_uid,
        series_number=SR_SERIES_NUMBER, sop_instance_uid=sop_uid, instance_number=1, manufacturer=MANUFACTURER,
        is_complete=True, is_final=False, is_verified=False,
        series_description=f"AI report {facts.model_name} {facts.model_version}"[:64],
        content_date=facts.created_at.date(), content_time=facts.created_at.time().replace(microsecond=0),
    )
    sr.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: the record's names as they are
    out = io.BytesIO()
    sr.save_as(out, enforce_file_format=True)
    return out.getvalue()
