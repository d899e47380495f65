"""One DICOM instance pushed by a sender, not uploaded by a clinician: the DICOM listener's
C-STORE (``imaging.listener``) and DICOMweb STOW-RS (``imaging.dicomweb``). The patient is the one
whose MRN is the file's PatientID among those the sender may file images to; the image is stored
through the upload's own checks in its own transaction (``images_prepare`` / ``images_store``,
audited as ``imaging-<source>``), its analysis left to the caller (queued once per study or
request, not once per image); an image for a PatientID no such patient has is held
(``imaging.held``) where the caller names the site to hold it for. An image already stored for
the patient is answered without decoding it (a sender may send a study again)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet

from patients.models import Patient, Site

from .held import held_image_receive
from .models import ImagingInstance
from .services import FileProblem, ImagingUploadError, UploadFile, images_prepare, images_store

STORED, ALREADY_STORED, HELD, ALREADY_HELD = "stored", "already-stored", "held", "already-held"


@dataclass(frozen=True)
class Receipt:
    outcome: str  # STORED, ALREADY_STORED, HELD or ALREADY_HELD
    patient: Patient | None = None
    instance_id: int | None = None  # a new image's, for the caller to queue its analysis


def dicom_receive(*, data: bytes, patient_id: str, sop_instance_uid: str, patients: QuerySet[Patient],
                  hold_site: Site | None, source: str, calling_ae: str = "", user: Any = None,
                  request: Any = None) -> Receipt:
    """Store (or hold) one DICOM file whose header says ``patient_id`` and ``sop_instance_uid``;
    ``patients``: those the sender may file to. Raises ``ImagingUploadError`` with one problem
    naming why it was refused (never a value of the file): ``no-patient`` where no patient has the
    PatientID and ``hold_site`` is None, ``ambiguous-patient``, or the upload's own reasons."""
    name = f"{sop_instance_uid or 'instance'}.dcm"
    matches = list(patients.filter(mrn=patient_id)[:2])
    if len(matches) > 1:
        raise ImagingUploadError([FileProblem(name, "ambiguous-patient",
                                              "more than one patient of the sender's sites has this PatientID")])
    if not matches:
        if hold_site is None:
            raise ImagingUploadError([FileProblem(name, "no-patient", "no patient has this PatientID")])
        held = held_image_receive(site=hold_site, data=data, calling_ae=calling_ae, sop_instance_uid=sop_instance_uid)
        return Receipt(HELD if held else ALREADY_HELD)
    patient = matches[0]
    if ImagingInstance.objects.filter(sop_instance_uid=sop_instance_uid, patient=patient).exists():
        return Receipt(ALREADY_STORED, patient)
    prepared, problems = images_prepare([UploadFile(name, data)], patient=patient)
    if problems:
        raise ImagingUploadError(problems[:1])
    result = images_store(patient=patient, images=prepared, user=user, request=request, source=source,
                          queue_jobs=False)
    if result.created:
        return Receipt(STORED, patient, result.created[0].pk)
    return Receipt(ALREADY_STORED, patient)
