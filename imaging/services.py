"""Writes of the imaging app: storing uploaded images and queuing their analysis.

An upload (DICOM files, a multi-file study, zip archives, PNG or JPEG images) is all or nothing:
every file is read and rendered first; if any cannot be (corrupt, truncated, not an image, a
syntax without a decoder, a PatientID that is not the patient's MRN), the upload is refused with
each file's name and reason and nothing is stored. Otherwise the rows, the files in storage, the
inference jobs and the audit row are written in one transaction; if that fails, the files it had
written are removed from storage.

Decisions:
- The DICOM PatientID (0010,0020) must equal the patient's MRN. A file without a PatientID
  (anonymised exports, secondary captures) is filed under the patient the uploader chose, who is
  named explicitly in the request; the row records that the header named no patient
  (``header_patient_id_present``) and the viewer shows it. ``register_dicom``, which has no chosen
  patient, skips such files.
- Re-uploading a stored instance (same SOP Instance UID; for PNG/JPEG the same content) is a
  no-op reported as "already stored". An instance, series or study stored for another patient
  refuses the upload.
- PNG and JPEG files carry no UIDs or modality: their UIDs are made from their content (and, for
  the study and series, from the upload's set of images and the patient), and the uploader may
  give their modality and body part, which decide which models read them.
- New instances are queued for inference in the same transaction, as one job per batch of up to
  ``JOB_BATCH`` instances of the upload (a GPU worker reads the batch in one forward pass).
"""

from __future__ import annotations

import io
import logging
import os
import uuid
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.utils import timezone

from cdss.audit import audit_record
from patients.models import Patient, Site

from .imagefile import ImageFileError, ImageMeta, uid_from_digest
from .jobs import HEATMAP_FOLDER, remove_files
from .ml.data import model_names_for
from .models import ENTERED_IN_ERROR, ImagingFinding, ImagingInstance, ImagingSeries, ImagingStudy
from .pixels import ANALYSIS_MAX_SIDE, analysis_copy, load_image, preview_png, preview_size, sha256_of, thumbnail_png

log = logging.getLogger("cdss.imaging")

IMAGING_KIND = "imaging"
JOB_BATCH = 64
# Limits of one upload (zip members included); settings may raise them.
MAX_FILES = int(getattr(settings, "CDSS_IMAGING_MAX_FILES", 2000))
MAX_TOTAL_BYTES = int(getattr(settings, "CDSS_IMAGING_MAX_UPLOAD_BYTES", 1024 * 1024 * 1024))
IGNORED_NAMES = {"DICOMDIR", ".DS_Store", "Thumbs.db", "desktop.ini"}


@dataclass(frozen=True)
class UploadFile:
    name: str
    data: bytes


@dataclass(frozen=True)
class FileProblem:
    file: str
    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"file": self.file, "code": self.code, "message": self.message}


class ImagingUploadError(Exception):
    """The upload was refused; nothing was stored. ``problems`` names each file and why."""

    def __init__(self, problems: list[FileProblem]) -> None:
        super().__init__(f"{len(problems)} file(s) refused")
        self.problems = problems


@dataclass
class PreparedImage:
    """One file, read and rendered, ready to store (no pixel arrays kept)."""

    name: str
    data: bytes
    meta: ImageMeta
    sha256: str
    frame_index: int
    preview: bytes
    thumbnail: bytes
    preview_size: tuple[int, int]
    # the image the models read, where it reads faster than the file (``analysis_copy``) and a model
    # reads it (``model_names_for``: a CT series' copies would double its storage for nothing)
    analysis: bytes | None
    # a grey DICOM frame's values after the Modality LUT (the viewer's window control reads them)
    value_range: tuple[float, float] | None = None


@dataclass
class UploadResult:
    patient: Patient
    created: list[ImagingInstance] = field(default_factory=list)
    already_stored: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    job_ids: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "patient": str(self.patient.external_id),
            "created": [
                {"id": str(i.external_id), "sop_instance_uid": i.sop_instance_uid, "format": i.format,
                 "modality": i.modality, "body_part": i.body_part, "frames": i.frames,
                 "study_instance_uid": i.series.study.study_instance_uid,
                 "series_instance_uid": i.series.series_instance_uid}
                for i in self.created
            ],
            "already_stored": self.already_stored,
            "skipped": [{"file": name, "reason": reason} for name, reason in self.skipped],
        }


# --- Reading the upload -----------------------------------------------------------------------


def upload_expand(files: Iterable[UploadFile]) -> tuple[list[UploadFile], list[tuple[str, str]], list[FileProblem]]:
    """Zip archives opened (one level), index and system files set aside; limits checked.
    Returns (files, skipped, problems)."""
    out: list[UploadFile] = []
    skipped: list[tuple[str, str]] = []
    problems: list[FileProblem] = []
    total = 0
    for upload in files:
        if upload.data[:4] == b"PK\x03\x04" or upload.name.lower().endswith(".zip"):
            try:
                members = list(_zip_members(upload))
            except ImageFileError as exc:
                problems.append(FileProblem(upload.name, exc.code, exc.message))
                continue
            for member, reason in members:
                if reason:
                    skipped.append((member.name, reason))
                else:
                    out.append(member)
                    total += len(member.data)
        elif os.path.basename(upload.name) in IGNORED_NAMES:
            skipped.append((upload.name, "a DICOMDIR or system file, not an image"))
        else:
            out.append(upload)
            total += len(upload.data)
        if len(out) > MAX_FILES:
            problems.append(FileProblem(upload.name, "too-large", f"more than {MAX_FILES} files in one upload"))
            break
        if total > MAX_TOTAL_BYTES:
            problems.append(FileProblem(upload.name, "too-large", f"more than {MAX_TOTAL_BYTES} bytes in one upload"))
            break
    return out, skipped, problems


def _zip_members(upload: UploadFile) -> Iterator[tuple[UploadFile, str]]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(upload.data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        raise ImageFileError("corrupt", "not a readable zip archive") from None
    declared = sum(info.file_size for info in infos)
    if declared > MAX_TOTAL_BYTES or len(infos) > MAX_FILES:
        raise ImageFileError("too-large", f"the archive holds {len(infos)} files and {declared} bytes; the limits "
                                          f"are {MAX_FILES} files and {MAX_TOTAL_BYTES} bytes")
    for info in infos:
        if info.is_dir():
            continue
        name = f"{upload.name}/{info.filename}"
        base = os.path.basename(info.filename)
        if info.filename.startswith("__MACOSX/") or base.startswith("._") or base in IGNORED_NAMES:
            yield UploadFile(name, b""), "a DICOMDIR or system file, not an image"
            continue
        if info.flag_bits & 0x1:
            raise ImageFileError("unsupported", f"{info.filename}: encrypted zip members are not read")
        try:
            data = archive.read(info)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, RuntimeError):
            raise ImageFileError("corrupt", f"{info.filename}: the archive member could not be read "
                                            "(corrupt or truncated archive)") from None
        if data[:4] == b"PK\x03\x04":
            raise ImageFileError("unsupported", f"{info.filename}: a zip inside a zip is not read")
        yield UploadFile(name, data), ""


def _technical(meta: ImageMeta, value_range: tuple[float, float] | None) -> dict[str, Any]:
    """The instance's technical JSON: the header's fields, and for a grey DICOM image the range of
    its shown frame's values after the Modality LUT (``value_range``: [lowest, highest], e.g. HU)."""
    technical = meta.technical()
    if value_range is not None:
        technical["value_range"] = [value_range[0], value_range[1]]
    return technical


def image_prepare(upload: UploadFile) -> PreparedImage:
    """Read, render and encode one file (pure work: no database, no storage)."""
    loaded = load_image(upload.data)
    rendering = loaded.rendering
    meta = loaded.meta
    # a DICOM file names its modality and body part; a PNG's or JPEG's are the upload's, known when storing
    analysed = meta.format != "dicom" or bool(model_names_for(meta.modality, meta.body_part))
    return PreparedImage(
        name=upload.name, data=upload.data, meta=meta, sha256=loaded.sha256,
        frame_index=rendering.frame_index, preview=preview_png(rendering), thumbnail=thumbnail_png(rendering),
        preview_size=preview_size(rendering), analysis=analysis_copy(loaded) if analysed else None,
        value_range=rendering.value_range,
    )


def images_prepare(files: list[UploadFile], *, patient: Patient | None) -> tuple[list[PreparedImage], list[FileProblem]]:
    """Every file read; problems for those that cannot become images or name another patient."""
    prepared: list[PreparedImage] = []
    problems: list[FileProblem] = []
    for upload in files:
        try:
            image = image_prepare(upload)
        except ImageFileError as exc:
            problems.append(FileProblem(upload.name, exc.code, exc.message))
            continue
        if patient is not None and image.meta.patient_id and image.meta.patient_id.strip() != patient.mrn.strip():
            # Neither identifier is repeated in the message: it is shown and may be logged.
            problems.append(FileProblem(upload.name, "patient-mismatch",
                                        "the file's PatientID (0010,0020) is not this patient's MRN"))
            continue
        prepared.append(image)
    return prepared, problems


def _bitmap_uids(images: list[PreparedImage], patient: Patient, modality: str, body_part: str) -> None:
    """PNG/JPEG images of one upload: one study and one series, with UIDs made from the patient
    and the images' content (the same upload again maps to the same rows)."""
    bitmaps = [i for i in images if i.meta.format in ("png", "jpeg")]
    if not bitmaps:
        return
    key = f"{patient.external_id}:" + ",".join(sorted(i.sha256 for i in bitmaps))
    digest = sha256_of(key.encode())
    for image in bitmaps:
        image.meta.study_instance_uid = uid_from_digest(digest, "study")
        image.meta.series_instance_uid = uid_from_digest(digest, "series")
        image.meta.modality = modality.strip().upper()[:16]
        image.meta.body_part = body_part.strip().upper()[:64]


# --- Storing ----------------------------------------------------------------------------------


def imaging_upload(
    *, patient: Patient, files: Iterable[UploadFile], user: Any = None, request: Any = None, modality: str = "",
    body_part: str = "", source: str = "upload",
) -> UploadResult:
    """Store the images of one upload for ``patient`` (the caller checked access), or raise
    ``ImagingUploadError`` with every problem; nothing is stored then."""
    expanded, skipped, problems = upload_expand(files)
    if not expanded and not problems:
        problems.append(FileProblem("(upload)", "not-image", "no image files in the upload"))
    if problems:
        raise ImagingUploadError(problems)
    prepared, problems = images_prepare(expanded, patient=patient)
    if problems:
        raise ImagingUploadError(problems)
    _bitmap_uids(prepared, patient, modality, body_part)
    result = images_store(patient=patient, images=prepared, user=user, request=request, source=source)
    result.skipped[:0] = skipped
    return result


def images_store(
    *, patient: Patient, images: list[PreparedImage], user: Any = None, request: Any = None, source: str = "upload",
    queue_jobs: bool = True,
) -> UploadResult:
    """Rows, files, jobs and the audit row in one transaction; files removed again if it fails.
    ``queue_jobs=False``: no analysis queued (a caller receiving a study image by image queues it
    for the whole study with ``imaging_jobs_queue``)."""
    written: list[str] = []
    try:
        with transaction.atomic():
            result = _store_locked(patient, images, user, written, queue_jobs)
            audit_record(user=user, action="create", target=f"imaging-{source}", patient=patient, request=request,
                         detail=f"{len(result.created)} new image(s), {len(result.already_stored)} already stored")
    except IntegrityError:
        remove_files(written, "uploaded")
        raise ImagingUploadError([FileProblem("(upload)", "conflict", "an image of this upload was stored at the "
                                              "same time for another patient; nothing was stored")]) from None
    except BaseException:
        remove_files(written, "uploaded")
        raise
    log.info("imaging upload: %s new instance(s), %s already stored, %s job(s)", len(result.created),
             len(result.already_stored), len(result.job_ids))
    return result


def _store_locked(patient: Patient, images: list[PreparedImage], user: Any, written: list[str],
                  queue_jobs: bool) -> UploadResult:
    # One upload per patient at a time: the existence checks below then hold until commit.
    Patient.objects.select_for_update().filter(pk=patient.pk).first()
    result = UploadResult(patient=patient)
    seen: set[str] = set()
    unique: list[PreparedImage] = []
    for image in images:
        if image.meta.sop_instance_uid in seen:
            result.already_stored.append(image.name)  # the same image twice in one upload
            continue
        seen.add(image.meta.sop_instance_uid)
        unique.append(image)
    stored = dict(ImagingInstance.objects.filter(sop_instance_uid__in=seen).values_list("sop_instance_uid",
                                                                                        "patient_id"))
    studies = {s.study_instance_uid: s for s in ImagingStudy.objects.filter(
        study_instance_uid__in={i.meta.study_instance_uid for i in unique})}
    series = {s.series_instance_uid: s for s in ImagingSeries.objects.select_related("study").filter(
        series_instance_uid__in={i.meta.series_instance_uid for i in unique})}
    problems = []
    for image in unique:
        if stored.get(image.meta.sop_instance_uid, patient.pk) != patient.pk:
            problems.append(FileProblem(image.name, "other-patient", "this image is already stored for another patient"))
        elif (study := studies.get(image.meta.study_instance_uid)) is not None and study.patient_id != patient.pk:
            problems.append(FileProblem(image.name, "other-patient", "its study is already stored for another patient"))
        elif (one := series.get(image.meta.series_instance_uid)) is not None and (
            one.patient_id != patient.pk or one.study.study_instance_uid != image.meta.study_instance_uid
        ):
            problems.append(FileProblem(image.name, "other-patient",
                                        "its series is already stored under another patient or study"))
    if problems:
        raise ImagingUploadError(problems)
    for image in unique:
        meta = image.meta
        if meta.sop_instance_uid in stored:
            result.already_stored.append(image.name)
            continue
        study = studies.get(meta.study_instance_uid)
        if study is None:
            study = studies[meta.study_instance_uid] = ImagingStudy.objects.create(
                patient=patient, study_instance_uid=meta.study_instance_uid, accession_number=meta.accession_number,
                description=meta.study_description, study_date=meta.study_date or meta.series_date or meta.content_date,
                created_by=_user(user),
            )
        one = series.get(meta.series_instance_uid)
        if one is None:
            one = series[meta.series_instance_uid] = ImagingSeries.objects.create(
                study=study, patient=patient, series_instance_uid=meta.series_instance_uid, modality=meta.modality,
                body_part=meta.body_part, series_number=meta.series_number, description=meta.series_description,
                series_date=meta.series_date,
            )
        instance = ImagingInstance(
            series=one, patient=patient, sop_instance_uid=meta.sop_instance_uid, sop_class_uid=meta.sop_class_uid,
            format=meta.format, instance_number=meta.instance_number, modality=meta.modality or one.modality,
            body_part=meta.body_part or one.body_part, view_position=meta.view_position, laterality=meta.laterality,
            content_date=meta.content_date, photometric=meta.photometric, rows=meta.rows, columns=meta.columns,
            frames=meta.frames, frame_index=image.frame_index, transfer_syntax=meta.transfer_syntax,
            presets=[p.as_dict() for p in meta.presets], technical=_technical(meta, image.value_range),
            header_patient_id_present=bool(meta.patient_id), preview_width=image.preview_size[0],
            preview_height=image.preview_size[1], sha256=image.sha256, size_bytes=len(image.data),
            created_by=_user(user),
        )
        folder = _instance_folder(instance.external_id)
        extension = {"dicom": "dcm", "png": "png", "jpeg": "jpg"}[meta.format]
        instance.file.name = _save(f"{folder}/original.{extension}", image.data, written)
        instance.preview.name = _save(f"{folder}/preview.png", image.preview, written)
        instance.thumbnail.name = _save(f"{folder}/thumbnail.png", image.thumbnail, written)
        if image.analysis is not None and model_names_for(instance.modality, instance.body_part):
            instance.analysis.name = _save(f"{folder}/{ANALYSIS_FILE}", image.analysis, written)
        instance.save(force_insert=True)
        result.created.append(instance)
    if queue_jobs:
        result.job_ids = imaging_jobs_queue(patient=patient, instance_ids=[i.pk for i in result.created], user=user)
    return result


def imaging_jobs_queue(*, patient: Patient, instance_ids: list[int], user: Any = None) -> list[int]:
    """The analysis of these images of the patient, ``JOB_BATCH`` to a job, in the caller's
    transaction; the jobs' ids. Images whose analysis was queued already (by the sweep, while a
    long study was still arriving) are left out; each image queued is marked so."""
    from cdss.jobs.runner import job_enqueue

    waiting = ImagingInstance.objects.select_for_update().filter(pk__in=instance_ids, patient=patient,
                                                                  analysis_queued_at__isnull=True)
    ids = sorted(waiting.values_list("pk", flat=True))
    if not ids:
        return []
    ImagingInstance.objects.filter(pk__in=ids).update(analysis_queued_at=timezone.now())
    return [job_enqueue(kind=IMAGING_KIND, patient=patient, params={"instance_ids": ids[start:start + JOB_BATCH]},
                        user=user).pk
            for start in range(0, len(ids), JOB_BATCH)]


BACKLOG_AFTER = timedelta(minutes=10)  # a study still arriving is queued by its receiver when it ends


def analysis_backlog_queue(*, older_than: timedelta = BACKLOG_AFTER, limit: int = 2000) -> int:
    """Queue the analysis of images stored longer than ``older_than`` ago whose analysis was never
    queued: what a DICOM listener or a STOW-RS request stored image by image and did not live to
    queue at its end (a killed process, a web worker's timeout). One job per patient and 64
    images; the number of jobs."""
    cutoff = timezone.now() - older_than
    pending = (ImagingInstance.objects.filter(analysis_queued_at__isnull=True, created_at__lt=cutoff)
               .exclude(status=ENTERED_IN_ERROR).order_by("created_at").values_list("patient_id", "pk")[:limit])
    by_patient: dict[int, list[int]] = {}
    for patient_id, pk in pending:
        by_patient.setdefault(patient_id, []).append(pk)
    jobs = 0
    for patient in Patient.objects.filter(pk__in=list(by_patient)):
        with transaction.atomic():
            jobs += len(imaging_jobs_queue(patient=patient, instance_ids=by_patient[patient.pk]))
    if jobs:
        log.info("imaging: %s analysis job(s) queued for images stored without one", jobs)
    return jobs


def _user(user: Any) -> Any:
    return user if getattr(user, "is_authenticated", False) else None


ANALYSIS_FILE = "analysis.npy"  # beside the original, the preview and the thumbnail


def _instance_folder(external_id: uuid.UUID) -> str:
    """An image's folder in storage, named by its external id only (no identifier in the path)."""
    return f"imaging/{external_id.hex}"


def _save(name: str, data: bytes, written: list[str]) -> str:
    saved = default_storage.save(name, ContentFile(data))
    written.append(saved)
    return saved


# --- A folder of DICOM files ------------------------------------------------------------------


@dataclass
class FolderSummary:
    files: int = 0
    created: int = 0
    already_stored: int = 0
    patients: int = 0
    jobs: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"files": self.files, "created": self.created, "already_stored": self.already_stored,
                "patients": self.patients, "jobs": self.jobs,
                "skipped": [{"file": f, "reason": r} for f, r in self.skipped],
                "failed": [{"file": f, "reason": r} for f, r in self.failed]}


def _header_patient_id(path: Path) -> tuple[str, str]:
    """(PatientID, problem) from the header only, without reading pixel data."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID"], force=False)
    except Exception:  # noqa: BLE001 - decided by the full read later
        return "", "not a DICOM file"
    return str(ds.get("PatientID") or "").strip(), ""


def imaging_register_folder(
    folder: Path, *, site: Site, user: Any = None, progress: Callable[[str], None] | None = None,
) -> FolderSummary:
    """Register the DICOM files under ``folder`` (recursively) with the patients of ``site`` whose
    MRN is the file's PatientID. Files are grouped per patient; each patient's files are stored
    as one upload (all or nothing); a file that cannot be read fails alone."""
    summary = FolderSummary()
    groups: dict[str, list[Path]] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        summary.files += 1
        if path.name in IGNORED_NAMES:
            summary.skipped.append((str(path), "a DICOMDIR or system file, not an image"))
            continue
        patient_id, problem = _header_patient_id(path)
        if problem:
            summary.skipped.append((str(path), problem))
        elif not patient_id:
            summary.skipped.append((str(path), "no PatientID (0010,0020) to match a patient"))
        else:
            groups.setdefault(patient_id, []).append(path)
    patients = {p.mrn: p for p in Patient.objects.filter(site=site, mrn__in=list(groups))}
    for patient_id, paths in groups.items():
        patient = patients.get(patient_id)
        if patient is None:
            summary.skipped += [(str(p), f"no patient at site {site.code} has the file's PatientID as MRN")
                                for p in paths]
            continue
        uploads = [UploadFile(str(p), p.read_bytes()) for p in paths]
        prepared, problems = images_prepare(uploads, patient=patient)
        summary.failed += [(p.file, f"{p.code}: {p.message}") for p in problems]
        if prepared:
            try:
                result = images_store(patient=patient, images=prepared, user=user, source="register-dicom")
            except ImagingUploadError as exc:
                summary.failed += [(p.file, f"{p.code}: {p.message}") for p in exc.problems]
                continue
            summary.patients += 1
            summary.created += len(result.created)
            summary.already_stored += len(result.already_stored)
            summary.jobs += len(result.job_ids)
        if progress is not None:
            progress(f"{len(paths)} file(s)")
    return summary


# --- Feedback on a finding --------------------------------------------------------------------


def finding_feedback_record(
    *, finding: Any, patient: Patient, user: Any, verdict: str, comment: str = "", request: Any = None,
) -> Any:
    """A clinician's agreement or disagreement with a finding, audited in the same transaction;
    the rules that read findings' review state are evaluated again for the patient (a job queued
    in the same transaction, ``cdss.jobs.triggers.facts_changed``)."""
    from cdss.jobs.triggers import facts_changed

    from .models import FindingFeedback

    if verdict not in FindingFeedback.Verdict.values:
        raise ValueError(f"verdict must be one of {', '.join(FindingFeedback.Verdict.values)}")
    with transaction.atomic():
        row = FindingFeedback.objects.create(finding=finding, user=user, verdict=verdict, comment=comment.strip()[:2000])
        audit_record(user=user, action="create", target="imaging-feedback", patient=patient, request=request,
                     detail=f"{verdict} on finding {finding.external_id}")
        facts_changed(patient.pk, user=user, reason="imaging-verdict", ref=f"FindingFeedback:{row.pk}")
    return row


@dataclass
class OrphanSweep:
    files: int  # heat map files no finding names, older than the cut-off
    bytes: int
    removed: int
    young: int  # unnamed files newer than the cut-off (a running job's), left alone


def heatmap_orphans_sweep(*, older_than: timedelta, delete: bool = False, chunk: int = 1000) -> OrphanSweep:
    """Heat map files in storage that no finding names: what a worker killed in the middle of an
    imaging job leaves (its handler had written them; its result was never stored). Files newer
    than ``older_than`` are never counted as orphans, since a running job's files have no rows yet
    (a job's time limit is 30 minutes). Works through the storage API (a local folder or an object
    store), one of its 256 folders at a time; names are compared with the findings' in chunks."""
    cutoff = timezone.now() - older_than
    sweep = OrphanSweep(0, 0, 0, 0)
    try:
        folders, loose = default_storage.listdir(HEATMAP_FOLDER)
    except FileNotFoundError:
        return sweep
    groups: list[tuple[str, list[str] | None]] = [(HEATMAP_FOLDER, loose)]  # None: listed when reached
    groups += [(f"{HEATMAP_FOLDER}/{folder}", None) for folder in sorted(folders)]
    for folder, files in groups:  # one folder listed at a time
        if files is None:
            files = default_storage.listdir(folder)[1]
        names = [f"{folder}/{name}" for name in files]
        for start in range(0, len(names), chunk):
            part = names[start:start + chunk]
            named = set(ImagingFinding.objects.filter(heatmap__in=part).values_list("heatmap", flat=True))
            for name in part:
                if name in named:
                    continue
                if default_storage.get_modified_time(name) > cutoff:
                    sweep.young += 1
                    continue
                sweep.files += 1
                sweep.bytes += default_storage.size(name)
                if delete:
                    default_storage.delete(name)
                    sweep.removed += 1
    return sweep


@dataclass
class ValueRangeBackfill:
    recorded: int  # images whose range of values is now recorded
    no_values: int  # frames without a finite value (nothing to record)
    unreadable: int  # originals missing from storage or no longer readable


def value_ranges_backfill(*, limit: int | None = None,
                          progress: Callable[[int], None] | None = None) -> ValueRangeBackfill:
    """Records the range of the shown frame's values after the Modality LUT
    (``technical["value_range"]``, what the viewer's window inputs and Shift + drag work in) of
    every grey-scale DICOM image stored before it was recorded at upload, oldest first, at most
    ``limit``. Run again, it records nothing new. ``progress`` gets the count of images looked at.
    Nothing here names a patient."""
    from .imagefile import MONOCHROME

    out = ValueRangeBackfill(0, 0, 0)
    todo = (ImagingInstance.objects.filter(format="dicom", photometric__in=MONOCHROME)
            .exclude(status=ENTERED_IN_ERROR).exclude(technical__has_key="value_range")
            .order_by("pk").values_list("pk", "file", "frame_index", "technical"))
    rows = todo[:limit] if limit is not None else todo.iterator(chunk_size=200)
    for seen, (pk, name, frame, technical) in enumerate(rows, start=1):
        if progress is not None:
            progress(seen)
        try:
            with default_storage.open(name, "rb") as fh:
                value_range = load_image(fh.read(), frame=frame).rendering.value_range
        except (OSError, ImageFileError):
            out.unreadable += 1
            continue
        if value_range is None:
            out.no_values += 1
            continue
        ImagingInstance.objects.filter(pk=pk).update(technical={**(technical or {}),
                                                                "value_range": [value_range[0], value_range[1]]})
        out.recorded += 1
    return out


@dataclass
class AnalysisBackfill:
    made: int  # analysis copies written
    no_model: int  # images no model reads (``model_names_for``): no copy needed
    unreadable: int  # originals missing from storage or no longer readable
    bytes: int  # of the copies written


def analysis_copies_backfill(*, limit: int | None = None,
                             progress: Callable[[int], None] | None = None) -> AnalysisBackfill:
    """Writes the analysis copy (``imaging.pixels.analysis_copy``) of every available image that
    has none, oldest first, at most ``limit``: the images stored before there were copies, which the
    imaging job otherwise decodes from their originals every time. Each copy is saved, then named on
    its row only if the row still has none (a second run at the same time keeps the first copy and
    removes its own). Grey PNG and JPEG files of at most ``ANALYSIS_MAX_SIDE`` a side are left out
    unread (their rows say so; at upload the 8-bit ones get no copy, and a 16-bit one among them
    stays read from its original); images no model reads (a CT, an MR) are counted, not copied.
    ``progress`` gets the count of images looked at. Nothing here names a patient."""
    out = AnalysisBackfill(0, 0, 0, 0)
    todo = (ImagingInstance.objects.filter(status="available", analysis="")
            .exclude(format__in=["png", "jpeg"], photometric="MONOCHROME2", rows__lte=ANALYSIS_MAX_SIDE,
                     columns__lte=ANALYSIS_MAX_SIDE)
            .order_by("pk").values_list("pk", "external_id", "file", "frame_index", "modality", "body_part"))
    rows = todo[:limit] if limit is not None else todo.iterator(chunk_size=200)
    for seen, (pk, external_id, name, frame, modality, body_part) in enumerate(rows, start=1):
        if progress is not None:
            progress(seen)
        if not model_names_for(modality, body_part):
            out.no_model += 1
            continue
        try:
            with default_storage.open(name, "rb") as fh:
                data = fh.read()
            copy = analysis_copy(load_image(data, frame=frame))
        except (OSError, ImageFileError):
            out.unreadable += 1
            copy = None
        if copy is not None:
            saved = default_storage.save(f"{_instance_folder(external_id)}/{ANALYSIS_FILE}", ContentFile(copy))
            if ImagingInstance.objects.filter(pk=pk, analysis="").update(analysis=saved):
                out.made += 1
                out.bytes += len(copy)
            else:
                default_storage.delete(saved)
    return out
