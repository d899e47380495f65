"""Images held for a patient the record does not have yet (``imaging.models.HeldImage``).

A modality or the PACS often sends a study before the patient reaches this record (the FHIR feed
comes later, or the patient is registered in the emergency department after the radiograph), and
many senders do not send again an image that was refused. So the DICOM listener holds an image
whose PatientID is no MRN of its site, once it has checked that the image can be read (an image
that cannot be, or one stored for another patient already, is refused as before):

- ``held_image_receive``: the file in storage (a name of random hex, in ``imaging/held``) and its
  row, in one transaction; the same image sent again while it waits is a success, held once.
- ``held_images_file``: held images whose PatientID is now the MRN of a patient of their site are
  stored for that patient through the upload's own checks (``images_prepare`` / ``images_store``),
  one by one, and analysed (one job per 64 images and patient); an image the checks refuse is
  marked ``refused`` with the reason and kept for an administrator. The held file is removed once
  the image is stored (the image has its own file then).
- ``held_images_discard``: an administrator's decision (a misidentified image corrected at the
  modality and sent again, a test image), or the end of ``CDSS_IMAGING_HOLD_DAYS``
  (``held_images_expire``): the file is removed; the row stays, with who, when and why.
- ``held_sweep`` (beat, every ``CDSS_IMAGING_SWEEP_EVERY`` seconds): files what can be filed,
  then expires what waited too long.

Decisions: matching is by PatientID = MRN only, as the listener's and the upload's (no matching
by name or birth date, which this system does not read from images); an image with a mistyped
PatientID is corrected where it was made and sent again, not re-labelled here. Nothing of the
file (PatientID included) is written to logs or audit details.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from cdss.audit import audit_record
from patients.models import Patient, Site

from .jobs import remove_files
from .models import HeldImage, ImagingInstance
from .services import (
    FileProblem,
    ImagingUploadError,
    UploadFile,
    _user,
    images_prepare,
    images_store,
    imaging_jobs_queue,
)

log = logging.getLogger("cdss.imaging")

HELD_FOLDER = "imaging/held"  # in storage
SOURCE = "dicom-held"  # the audit target of the images filed: imaging-dicom-held
SWEEP_LIMIT = 500  # images filed per sweep; the rest at the next


def held_image_receive(*, site: Site, data: bytes, calling_ae: str = "", sop_instance_uid: str = "") -> bool:
    """Hold one DICOM file for a PatientID that no patient of ``site`` has: True if held now, False
    if it was held already. Raises ``ImagingUploadError`` (one problem, nothing kept) for a file
    that cannot be read, one without a PatientID, and an image stored for a patient already.
    ``sop_instance_uid`` (the sender's, where it says): an image held already is found without
    decoding it again."""
    if sop_instance_uid and HeldImage.objects.filter(sop_instance_uid=sop_instance_uid,
                                                     status=HeldImage.Status.HELD).exists():
        return False
    prepared, problems = images_prepare([UploadFile("held.dcm", data)], patient=None)
    if problems:
        raise ImagingUploadError(problems)
    meta = prepared[0].meta
    if meta.format != "dicom" or not meta.patient_id.strip():
        raise ImagingUploadError([FileProblem("held.dcm", "no-patient-id",
                                              "no PatientID (0010,0020) to match a patient")])
    if ImagingInstance.objects.filter(sop_instance_uid=meta.sop_instance_uid).exists():
        # its PatientID is not the MRN of the patient it is stored for (or no longer is)
        raise ImagingUploadError([FileProblem("held.dcm", "other-patient",
                                              "this image is already stored for another patient")])
    if HeldImage.objects.filter(sop_instance_uid=meta.sop_instance_uid, status=HeldImage.Status.HELD).exists():
        return False
    name = ""
    try:
        with transaction.atomic():
            name = default_storage.save(f"{HELD_FOLDER}/{uuid.uuid4().hex}.dcm", ContentFile(data))
            HeldImage.objects.create(
                site=site, patient_identifier=meta.patient_id.strip()[:64], sop_instance_uid=meta.sop_instance_uid,
                study_instance_uid=meta.study_instance_uid, accession_number=meta.accession_number[:64],
                modality=meta.modality[:16], study_date=meta.study_date or meta.series_date or meta.content_date,
                calling_ae=calling_ae.strip()[:16], file=name, size_bytes=len(data),
            )
            audit_record(user=None, action="create", target="imaging-held",
                         detail="an image held: no patient of the site has its PatientID yet")
    except IntegrityError:
        remove_files([name], "held image")
        return False  # the same image, held by another association meanwhile
    except BaseException:
        remove_files([name], "held image")
        raise
    return True


@dataclass
class HeldFiling:
    filed: int = 0
    refused: int = 0
    jobs: int = 0
    discarded: int = 0


def held_images_file(*, ids: Iterable[int] | None = None, limit: int = SWEEP_LIMIT, user: Any = None,
                     request: Any = None) -> HeldFiling:
    """File the held images (all, or those of ``ids``) whose PatientID is now the MRN of a patient
    of their site, the oldest first, at most ``limit``; see the module's text."""
    filing = HeldFiling()
    waiting = HeldImage.objects.filter(status=HeldImage.Status.HELD).filter(
        Exists(Patient.objects.filter(site=OuterRef("site"), mrn=OuterRef("patient_identifier"))))
    if ids is not None:
        waiting = waiting.filter(pk__in=list(ids))
    held_images = list(waiting.order_by("received_at", "id")[:limit])
    patients: dict[tuple[int, str], Patient] = {}
    created: dict[int, list[int]] = {}
    for held in held_images:
        key = (held.site_id, held.patient_identifier)
        if key not in patients:
            patients[key] = Patient.objects.get(site_id=held.site_id, mrn=held.patient_identifier)
        patient = patients[key]
        problem, instance, new = _file_one(held, patient, user, request)
        if problem is not None:
            _refuse(held, problem)
            filing.refused += 1
            continue
        assert instance is not None
        with transaction.atomic():
            changed = HeldImage.objects.filter(pk=held.pk, status=HeldImage.Status.HELD).update(
                status=HeldImage.Status.FILED, instance=instance, file="", resolved_at=timezone.now(),
                resolved_by=_user(user))
            if changed:
                name = str(held.file.name)
                transaction.on_commit(partial(remove_files, [name], "held image"))
        filing.filed += changed
        if new:
            created.setdefault(patient.pk, []).append(instance.pk)
    by_pk = {p.pk: p for p in patients.values()}
    for pk, instance_ids in created.items():
        with transaction.atomic():
            filing.jobs += len(imaging_jobs_queue(patient=by_pk[pk], instance_ids=instance_ids, user=user))
    if filing.filed or filing.refused:
        log.info("held images: %s filed, %s could not be filed, %s analysis job(s) queued", filing.filed,
                 filing.refused, filing.jobs)
    return filing


def _file_one(held: HeldImage, patient: Patient, user: Any,
              request: Any) -> tuple[FileProblem | None, ImagingInstance | None, bool]:
    """(problem, None, False), or (None, the image, whether it was stored now)."""
    name = f"{held.external_id.hex}.dcm"
    try:
        with default_storage.open(str(held.file.name), "rb") as fh:
            data = fh.read()
    except Exception:  # noqa: BLE001 - named on the row; the administrator decides
        return FileProblem(name, "storage", "the held file could not be read from storage"), None, False
    prepared, problems = images_prepare([UploadFile(name, data)], patient=patient)
    if problems:
        return problems[0], None, False
    try:
        result = images_store(patient=patient, images=prepared, user=user, request=request, source=SOURCE,
                              queue_jobs=False)
    except ImagingUploadError as exc:
        return exc.problems[0], None, False
    if result.created:
        return None, result.created[0], True
    # stored for this patient meanwhile (an upload, or the same study sent again once the patient existed)
    return None, ImagingInstance.objects.get(sop_instance_uid=prepared[0].meta.sop_instance_uid, patient=patient), False


def _refuse(held: HeldImage, problem: FileProblem) -> None:
    HeldImage.objects.filter(pk=held.pk, status=HeldImage.Status.HELD).update(
        status=HeldImage.Status.REFUSED, detail=f"{problem.code}: {problem.message}"[:200],
        resolved_at=timezone.now())


def held_images_discard(*, ids: Iterable[int], reason: str, user: Any = None, request: Any = None) -> int:
    """Discard held (or refused) images: their files removed once committed, the rows kept with
    ``reason``, who and when. The number discarded (images filed or discarded already are not)."""
    with transaction.atomic():
        rows = list(HeldImage.objects.select_for_update().filter(
            pk__in=list(ids), status__in=[HeldImage.Status.HELD, HeldImage.Status.REFUSED]))
        if not rows:
            return 0
        HeldImage.objects.filter(pk__in=[r.pk for r in rows]).update(
            status=HeldImage.Status.DISCARDED, detail=reason[:200], file="", resolved_at=timezone.now(),
            resolved_by=_user(user))
        audit_record(user=user, action="update", target="imaging-held-discard", request=request,
                     detail=f"{len(rows)} held image(s) discarded")
        names = [str(r.file.name) for r in rows]
        transaction.on_commit(lambda: remove_files(names, "held image"))
    return len(rows)


def held_images_expire(*, older_than: timedelta, limit: int = 1000) -> int:
    """Discard images held (or refused) for longer than ``older_than``."""
    cutoff = timezone.now() - older_than
    ids = list(HeldImage.objects.filter(status__in=[HeldImage.Status.HELD, HeldImage.Status.REFUSED],
                                        received_at__lt=cutoff).values_list("pk", flat=True)[:limit])
    if not ids:
        return 0
    days = older_than.total_seconds() / 86400
    return held_images_discard(ids=ids, reason=f"not filed within {days:g} day(s) (CDSS_IMAGING_HOLD_DAYS)")


def held_sweep() -> HeldFiling:
    """The schedule's sweep: file what can be filed, then expire what waited too long."""
    filing = held_images_file()
    filing.discarded = held_images_expire(older_than=timedelta(days=settings.CDSS_IMAGING_HOLD_DAYS))
    return filing

