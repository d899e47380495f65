"""What a stored image is, independent of its format: the metadata kept of it, its window presets,
UIDs made from content, and ``ImageFileError``. Pure code (numpy-free, no Django, no pydicom), so
the PNG/JPEG path and the model's input path run where pydicom is not installed.

References: DICOM PS3.5 B.2 (UIDs derived from a UUID, root ``2.25``); PS3.10 7.1 (the ``DICM``
prefix of a Part 10 file).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

# Largest frame decoded (pixels): a 4k x 4k mammogram is 16.8 M; anything far beyond is refused
# rather than risking the worker's memory.
MAX_FRAME_PIXELS = 64 * 1024 * 1024

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
MONOCHROME = ("MONOCHROME1", "MONOCHROME2")


class ImageFileError(ValueError):
    """A file that cannot become an image, with the reason.

    ``code`` is one of: ``not-image`` (not DICOM, PNG or JPEG, or a DICOM object without pixel
    data), ``truncated``, ``corrupt``, ``unsupported`` (a valid file this installation cannot
    decode, e.g. a compressed transfer syntax without a decoder), ``too-large``.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message


def safe_text(text: str, limit: int = 200) -> str:
    """A library's error message without the quoted values it may echo from the file."""
    return re.sub(r"'[^']*'", "'…'", " ".join(text.split()))[:limit]


@dataclass(frozen=True)
class Preset:
    """One way to map stored values to grey levels: a VOI LUT of the file (``kind="lut"``,
    ``index`` into its VOI LUT Sequence) or a window (centre/width in output units of the modality
    LUT, e.g. HU on CT) with its VOI LUT function."""

    name: str
    kind: str  # "lut" | "window"
    center: float | None = None
    width: float | None = None
    function: str = "LINEAR"
    index: int = 0
    source: str = "file"  # "file" | "standard"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preset:
        return cls(**{k: data[k] for k in ("name", "kind", "center", "width", "function", "index", "source") if k in data})


# Typical CT windows (width / level in HU), offered for CT beside the file's own presets.
# Source: Radiopaedia, "Windowing (CT)" (Murphy A, Baba Y et al.), typical values: brain W:80
# L:40; soft tissues W:350-400 L:20-60; lung W:1500 L:-600; bone W:1800 L:400.
CT_STANDARD_WINDOWS: tuple[tuple[str, float, float], ...] = (
    ("Soft tissue (W 400 L 40)", 40.0, 400.0),
    ("Lung (W 1500 L -600)", -600.0, 1500.0),
    ("Bone (W 1800 L 400)", 400.0, 1800.0),
    ("Brain (W 80 L 40)", 40.0, 80.0),
)


@dataclass
class ImageMeta:
    """What the record keeps about one image. Free-text fields that could identify the patient
    (names, birth dates, institution) are not read at all; ``patient_id`` is read only to compare
    it with the patient the image is filed under."""

    format: str  # "dicom" | "png" | "jpeg"
    sop_instance_uid: str
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    sop_class_uid: str = ""
    sop_class_name: str = ""
    patient_id: str = ""
    modality: str = ""
    body_part: str = ""
    view_position: str = ""
    laterality: str = ""
    study_date: dt.date | None = None
    series_date: dt.date | None = None
    content_date: dt.date | None = None
    study_description: str = ""
    series_description: str = ""
    accession_number: str = ""
    series_number: int | None = None
    instance_number: int | None = None
    photometric: str = ""
    rows: int = 0
    columns: int = 0
    frames: int = 1
    bits_stored: int = 8
    transfer_syntax: str = ""
    transfer_syntax_name: str = ""
    presets: list[Preset] = field(default_factory=list)
    uids_derived: bool = False  # UIDs made from the content (PNG/JPEG, or a DICOM file without them)

    def technical(self) -> dict[str, Any]:
        """The JSON kept on the instance: technical fields only."""
        return {
            "sop_class_uid": self.sop_class_uid, "sop_class_name": self.sop_class_name,
            "photometric": self.photometric, "bits_stored": self.bits_stored,
            "transfer_syntax": self.transfer_syntax, "transfer_syntax_name": self.transfer_syntax_name,
            "uids_derived": self.uids_derived,
        }


def uid_from_digest(digest: str, salt: str = "") -> str:
    """A UID under the ``2.25`` root (PS3.5 B.2) from a hex digest: the same content always gives
    the same UID, so a re-upload finds the stored instance."""
    value = uuid.UUID(hashlib.sha256(f"{salt}:{digest}".encode()).hexdigest()[:32]).int
    return f"2.25.{value}"


def looks_like_part10(data: bytes) -> bool:
    return len(data) >= 132 and data[128:132] == b"DICM"
