"""DICOMweb STOW-RS (Store Over the Web): routers, PACS and modalities that speak DICOMweb push
images to ``POST /api/imaging/dicomweb/studies`` (or ``.../studies/{StudyInstanceUID}``) as they
would to any DICOMweb archive, with the REST API's token.

The request is ``multipart/related; type="application/dicom"``, one DICOM Part 10 file per part.
Each file is received as the DICOM listener receives a C-STORE (``imaging.receiving``): filed to
the patient of the user's sites whose MRN is its PatientID, through the upload's checks, or held
for a patient not in the record yet where the user belongs to one site (the site is then
unambiguous); each file on its own (one that is refused does not undo the others). The analysis is
queued once per patient for the request. The answer is the Store Instances Response (DICOM JSON):
each stored (or held, or already stored) instance in the Referenced SOP Sequence, each refused one
in the Failed SOP Sequence with its Failure Reason; HTTP 200 when every instance was stored, 202
when some were not, 409 when none was.

Failure Reasons (PS3.4 B.2.3, as the C-STORE statuses): 0xC000 "cannot understand" (the file
cannot be read or decoded, it has no PatientID or no patient to file it to, it is stored for
another patient), 0xA900 "data set does not match" (its Study Instance UID is not the one the
request's URL names), 0xA700 "out of resources" (a storage or database failure: send it again).

References: DICOM PS3.18 10.5 (Store Transaction: request, response 10.5.3 and its status codes),
PS3.18 8.6.1.2 (multipart/related payloads; RFC 2387, RFC 2046 5.1.1 for the boundaries), PS3.18
F.2 (DICOM JSON), PS3.3 C.4.23 / PS3.18 Table 10.5.3-2 (Store Instances Response attributes).
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

import pydicom
from django.db import transaction
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from patients.models import Patient, Site
from patients.selectors import site_list_for_user

from .receiving import STORED, dicom_receive
from .services import MAX_TOTAL_BYTES, ImagingUploadError, imaging_jobs_queue

log = logging.getLogger("cdss.imaging")

SOURCE = "dicomweb"
DICOM = "application/dicom"
RESPONSE_TYPE = "application/dicom+json"
CANNOT_UNDERSTAND, DOES_NOT_MATCH, OUT_OF_RESOURCES = 0xC000, 0xA900, 0xA700


class StowRequestError(ValueError):
    """A request that is not a STOW-RS payload; ``status`` is the HTTP status (400, 413, 415)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def multipart_parts(content_type: str, body: bytes) -> list[tuple[str, bytes]]:
    """The (media type, content) of each part of a ``multipart/related`` body whose root type is
    ``application/dicom``; ``StowRequestError`` otherwise. Delimiters are recognised only at the
    start of a line (RFC 2046 5.1.1), so a boundary string inside a file's bytes is content."""
    header = Message()
    header["Content-Type"] = content_type or "application/octet-stream"
    if header.get_content_type() != "multipart/related":
        raise StowRequestError(415, 'the request must be multipart/related; type="application/dicom"')
    root = str(header.get_param("type") or DICOM).lower()
    if root != DICOM:
        raise StowRequestError(415, f'only DICOM files (type="{DICOM}") are accepted, not {root}')
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise StowRequestError(400, "the multipart/related request has no boundary")
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    pieces = (b"\r\n" + body).split(delimiter)
    if len(pieces) < 3 or not pieces[-1].startswith(b"--"):
        raise StowRequestError(400, "the multipart body has no parts or no closing boundary")
    parts = []
    for piece in pieces[1:-1]:
        line_end = piece.find(b"\r\n")  # the rest of the delimiter's line: transport padding only
        if line_end < 0 or piece[:line_end].strip():
            raise StowRequestError(400, "a part's boundary line is malformed")
        head, separator, content = piece[line_end + 2:].partition(b"\r\n\r\n")
        if not separator:
            if piece[line_end + 2:line_end + 4] != b"\r\n":
                raise StowRequestError(400, "a part has no blank line after its headers")
            head, content = b"", piece[line_end + 4:]
        part_type = root
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-type":
                part_header = Message()
                part_header["Content-Type"] = value.strip()
                part_type = part_header.get_content_type()
        parts.append((part_type, content))
    return parts


@dataclass
class StowResult:
    stored: list[tuple[str, str]] = field(default_factory=list)  # (SOP Class UID, SOP Instance UID)
    failed: list[tuple[str, str, int]] = field(default_factory=list)  # and the Failure Reason
    new_images: int = 0
    held: int = 0
    jobs: int = 0

    @property
    def http_status(self) -> int:
        if not self.failed:
            return 200
        return 202 if self.stored else 409

    def response(self) -> dict[str, Any]:
        """The Store Instances Response as DICOM JSON."""
        ds = Dataset()
        if self.stored:
            ds.ReferencedSOPSequence = Sequence([_reference(c, i) for c, i in self.stored])
        if self.failed:
            ds.FailedSOPSequence = Sequence([_reference(c, i, reason) for c, i, reason in self.failed])
        return ds.to_json_dict()


def _reference(sop_class: str, sop_instance: str, reason: int | None = None) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    if reason is not None:
        item.FailureReason = reason
    return item


def stow_store(*, user: Any, parts: list[tuple[str, bytes]], study_uid: str = "", request: Any = None) -> StowResult:
    """Receive each part (see the module's text); the result for the response."""
    result = StowResult()
    patients = Patient.objects.filter(site__in=site_list_for_user(user))
    sites = list(site_list_for_user(user)[:2])
    hold_site: Site | None = sites[0] if len(sites) == 1 else None
    new_images: dict[int, tuple[Patient, list[int]]] = {}
    for part_type, data in parts:
        header = _header(data) if part_type == DICOM else None
        if header is None:
            result.failed.append(("", "", CANNOT_UNDERSTAND))
            continue
        sop_class, sop_instance = str(header.get("SOPClassUID", "")), str(header.get("SOPInstanceUID", ""))
        if study_uid and str(header.get("StudyInstanceUID", "")) != study_uid:
            result.failed.append((sop_class, sop_instance, DOES_NOT_MATCH))
            continue
        patient_id = str(header.get("PatientID") or "").strip()
        if not patient_id or not sop_instance or len(data) > MAX_TOTAL_BYTES:
            result.failed.append((sop_class, sop_instance, CANNOT_UNDERSTAND))
            continue
        try:
            receipt = dicom_receive(data=data, patient_id=patient_id, sop_instance_uid=sop_instance,
                                    patients=patients, hold_site=hold_site, source=SOURCE, user=user,
                                    request=request)
        except ImagingUploadError:
            result.failed.append((sop_class, sop_instance, CANNOT_UNDERSTAND))
            continue
        except Exception as exc:  # noqa: BLE001 - this one fails; the others go on, nothing is half-stored
            log.error("dicomweb: an image could not be stored (%s)", type(exc).__name__)
            result.failed.append((sop_class, sop_instance, OUT_OF_RESOURCES))
            continue
        result.stored.append((sop_class, sop_instance))
        if receipt.outcome == STORED and receipt.patient is not None and receipt.instance_id is not None:
            new_images.setdefault(receipt.patient.pk, (receipt.patient, []))[1].append(receipt.instance_id)
            result.new_images += 1
        elif receipt.patient is None:
            result.held += 1
    with transaction.atomic():
        for patient, ids in new_images.values():
            result.jobs += len(imaging_jobs_queue(patient=patient, instance_ids=ids, user=user))
    log.info("dicomweb: %s image(s) stored, %s held, %s already kept, %s refused; %s analysis job(s) queued",
             result.new_images, result.held, len(result.stored) - result.new_images - result.held,
             len(result.failed), result.jobs)
    return result


def _header(data: bytes) -> Dataset | None:
    """The file's data set without its pixel data, or None where it is no DICOM Part 10 file."""
    try:
        return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - any reading error: not a DICOM file
        return None
