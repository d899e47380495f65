"""A finding as a DICOM object a PACS can store and show beside its image: a Secondary Capture
image (the analysed frame with its Grad-CAM heat map blended over it and a caption band below it
that says what it is), in the source image's study, in a series of the model's own.

Pure code (no Django): the caller gives the facts (``ResultFacts``), the rendered frame and the
heat map PNG; ``secondary_capture`` gives the Part 10 file's bytes.

References: DICOM PS3.3 A.8.1 (Secondary Capture Image IOD and its modules: Patient C.7.1.1,
General Study C.7.2.1, General Series C.7.3.1, SC Equipment C.8.6.1, General Image C.7.6.1 with
Image Type, Derivation Description, Source Image Sequence and Burned In Annotation, Image Pixel
C.7.6.3, SOP Common C.12.1); PS3.4 B.5 (SOP Class UID 1.2.840.10008.5.1.4.1.1.7); PS3.5 B.2
(UIDs under ``2.25``); PS3.5 6.2 (PN, DA, TM, LO lengths); PS3.10 7.1 (the File Meta Information).

The UIDs are derived from the finding's identity, so exporting or sending the same finding again
gives the same object (a PACS replaces it instead of storing a second copy); one series per
source study and model version.
"""

from __future__ import annotations

import datetime as dt
import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont, features
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from .imagefile import uid_from_digest

# DICOM's own code for "Workstation" conversion (SC Equipment module, Conversion Type).
CONVERSION_TYPE = "WSD"
MANUFACTURER = "CDSS"
HEATMAP_OPACITY = 0.75  # scales the overlay's own alpha (at most 200/255), as the viewer's default
CAPTION_NOTICE = "AI RESULT - NOT A DIAGNOSIS - to be read by a clinician beside the original image"
MIN_WIDTH = 512  # a smaller frame (an MR of 256 px) is magnified, so the caption stays legible beside it
SERIES_NUMBER = 9000  # high, so the series sorts after the modality's own in a PACS viewer


@dataclass(frozen=True)
class ResultFacts:
    """What the Secondary Capture says, all from the record (never read back from the file)."""

    # patient (the record: PatientID is the MRN, which the source header's PatientID matched on upload)
    patient_id: str
    family_name: str
    given_names: str
    birth_date: dt.date | None
    sex: str  # the record's female/male/other/unknown
    # the source image
    study_instance_uid: str
    study_date: dt.date | None
    accession_number: str
    study_description: str
    modality: str
    sop_class_uid: str  # blank for a PNG/JPEG upload (no DICOM source to reference)
    sop_instance_uid: str
    frame_number: int | None  # 1-based, for a multi-frame source
    # the finding
    finding_id: str
    label: str
    probability: float
    threshold: float
    positive: bool
    model_name: str
    model_version: str
    architecture: str
    auc: float | None
    auc_split: str
    created_at: dt.datetime


def result_uids(facts: ResultFacts) -> tuple[str, str]:
    """(Series Instance UID, SOP Instance UID): the same finding always gives the same two."""
    series = uid_from_digest(f"{facts.study_instance_uid}|{facts.model_name}|{facts.model_version}",
                             salt="cdss-result-series")
    instance = uid_from_digest(facts.finding_id, salt="cdss-result-instance")
    return series, instance


def caption_lines(facts: ResultFacts) -> list[str]:
    verdict = "FLAGGED" if facts.positive else "not flagged"
    auc = (f"{facts.auc_split} AUC {facts.auc:.3f}" if facts.auc is not None else "no measured AUC")
    return [
        CAPTION_NOTICE,
        f"{facts.label}: probability {facts.probability:.3f}, threshold {facts.threshold:.3f}: {verdict}",
        f"Model {facts.model_name} {facts.model_version} ({facts.architecture}), {auc}",
        "Heat map: Grad-CAM, the regions that most raised this probability",
    ]


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    if features.check("freetype2"):
        return ImageFont.load_default(size=size)
    return ImageFont.load_default()  # Pillow's bitmap font (about 11 px) where FreeType is missing


def magnification(width: int) -> int:
    """The whole factor a frame narrower than ``MIN_WIDTH`` is magnified by (1: none)."""
    return max(1, math.ceil(MIN_WIDTH / max(width, 1)))


def composite(frame: Image.Image, heatmap_png: bytes, lines: list[str]) -> np.ndarray:
    """RGB pixels: the frame (magnified by a whole factor, each pixel a block, where it is
    narrower than ``MIN_WIDTH``: no value made up) with the heat map (an RGBA or
    palette-with-transparency PNG of any size, stretched bilinearly to the frame) blended over it,
    and a black band below with the caption in white. ``ValueError`` if the heat map is not an
    image."""
    base = frame.convert("RGB")
    factor = magnification(base.width)
    if factor > 1:
        base = base.resize((base.width * factor, base.height * factor), Image.Resampling.NEAREST)
    try:
        opened = Image.open(io.BytesIO(heatmap_png))
        opened.load()
    except Exception as exc:  # noqa: BLE001 - Pillow raises several kinds for a broken file
        raise ValueError(f"the heat map is not a readable image ({type(exc).__name__})") from None
    heat = opened.convert("RGBA").resize(base.size, Image.Resampling.BILINEAR)
    alpha = np.asarray(heat.getchannel("A"), dtype=np.float32) * (HEATMAP_OPACITY / 255.0)
    blended = (np.asarray(base, dtype=np.float32) * (1.0 - alpha[..., None])
               + np.asarray(heat.convert("RGB"), dtype=np.float32) * alpha[..., None])
    image = Image.fromarray(np.clip(blended + 0.5, 0, 255).astype(np.uint8), "RGB")

    width = image.width
    font = _font(max(11, min(28, width // 56)))
    draw = ImageDraw.Draw(image)
    line_height = int(draw.textbbox((0, 0), "Ag", font=font)[3]) + 4
    rows = [row for line in lines for row in _wrap(line, lambda text: draw.textlength(text, font=font), width - 12)]
    band = Image.new("RGB", (width, line_height * len(rows) + 8), (0, 0, 0))
    pen = ImageDraw.Draw(band)
    for i, row in enumerate(rows):
        pen.text((6, 4 + i * line_height), row, fill=(255, 255, 255), font=font)
    out = Image.new("RGB", (width, image.height + band.height))
    out.paste(image, (0, 0))
    out.paste(band, (0, image.height))
    return np.asarray(out, dtype=np.uint8)


def _wrap(line: str, length: Callable[[str], float], room: float) -> list[str]:
    """The line in rows of whole words that fit ``room`` (a word longer than that: a row of its own)."""
    rows: list[str] = []
    for word in line.split():
        if rows and length(f"{rows[-1]} {word}") <= room:
            rows[-1] = f"{rows[-1]} {word}"
        else:
            rows.append(word)
    return rows or [""]


def person_name(family: str, given: str) -> str:
    name = "^".join(part.replace("^", " ").replace("\\", " ").strip() for part in (family, given)).rstrip("^")
    return name[:64]


SEX_CODES = {"female": "F", "male": "M", "other": "O"}


def secondary_capture(facts: ResultFacts, frame: Image.Image, heatmap_png: bytes, *,
                      now: dt.datetime) -> bytes:
    """The Part 10 file (Explicit VR Little Endian) of the finding's Secondary Capture image."""
    pixels = composite(frame, heatmap_png, caption_lines(facts))
    series_uid, instance_uid = result_uids(facts)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = UID(instance_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(uid_from_digest("implementation", salt="cdss"))
    meta.ImplementationVersionName = "CDSS"

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: names from the record may be any script
    # SOP Common
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = instance_uid
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")
    # Patient
    ds.PatientName = person_name(facts.family_name, facts.given_names)
    ds.PatientID = facts.patient_id[:64]
    ds.PatientBirthDate = facts.birth_date.strftime("%Y%m%d") if facts.birth_date else ""
    ds.PatientSex = SEX_CODES.get(facts.sex, "")
    # General Study: the source's study, so the PACS files the result beside the image
    ds.StudyInstanceUID = facts.study_instance_uid
    ds.StudyDate = facts.study_date.strftime("%Y%m%d") if facts.study_date else ""
    ds.StudyTime = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = ""
    ds.AccessionNumber = facts.accession_number[:16]
    if facts.study_description:
        ds.StudyDescription = facts.study_description[:64]
    # General Series
    ds.Modality = facts.modality or "OT"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = SERIES_NUMBER
    ds.SeriesDescription = f"AI {facts.model_name} {facts.model_version}"[:64]
    # General Equipment and SC Equipment
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = facts.model_name[:64]
    ds.SoftwareVersions = facts.model_version[:64]
    ds.ConversionType = CONVERSION_TYPE
    # General Image
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.ContentDate = facts.created_at.strftime("%Y%m%d")
    ds.ContentTime = facts.created_at.strftime("%H%M%S")
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.DerivationDescription = (f"Grad-CAM heat map of {facts.label} over the analysed frame; "
                                f"probability {facts.probability:.3f} (threshold {facts.threshold:.3f})")[:1024]
    ds.ImageComments = " | ".join(caption_lines(facts))[:10240]
    ds.BurnedInAnnotation = "YES"
    ds.LossyImageCompression = "00"
    if facts.sop_class_uid:
        source = Dataset()
        source.ReferencedSOPClassUID = facts.sop_class_uid
        source.ReferencedSOPInstanceUID = facts.sop_instance_uid
        if facts.frame_number is not None:
            source.ReferencedFrameNumber = facts.frame_number
        ds.SourceImageSequence = Sequence([source])
    # Image Pixel
    rows, columns = pixels.shape[:2]
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()

    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()
