"""Reading DICOM files: the dataset, its metadata, its window presets and one frame's stored values.

Pure code (no Django). Reasons for rejecting a file are ``ImageFileError``s with a short code and a
message that names the problem and never a value from the file beyond UIDs of syntaxes and
classes, so the message can be logged and shown (no patient identifiers, no pixel data).

References: DICOM PS3.3 C.7.6.3 (Image Pixel module), C.11.1 (Modality LUT), C.11.2 (VOI LUT),
C.7.6.16.2 (multi-frame functional groups: Pixel Value Transformation and Frame VOI LUT
macros); PS3.5 B.2 (UIDs derived from a UUID, root ``2.25``); PS3.10 7.1 (the ``DICM`` prefix of
a Part 10 file).
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import re
import warnings
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from .imagefile import (
    CT_STANDARD_WINDOWS,
    MAX_FRAME_PIXELS,
    MONOCHROME,
    PIXEL_KEYWORDS,
    ImageFileError,
    ImageMeta,
    Preset,
    looks_like_part10,
    safe_text,
    uid_from_digest,
)

# pydicom reports invalid element values by logging them; they may be patient identifiers, so
# values are not validated on reading (the fields used here are checked by this module) and the
# library's own log stays quiet below errors.
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
logging.getLogger("pydicom").setLevel(logging.ERROR)


def read_dicom(data: bytes) -> Dataset:
    """The dataset of a DICOM file (Part 10, or a bare dataset in one of the three uncompressed
    transfer syntaxes), or ``ImageFileError``.

    A file that ends before its last element is refused as truncated, whether pydicom stops with
    an error or only warns (an encapsulated pixel data element without its delimiter)."""
    part10 = looks_like_part10(data)
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(io.BytesIO(data), force=not part10)
    except InvalidDicomError:
        raise ImageFileError("not-image", "not a DICOM, PNG or JPEG file") from None
    except EOFError:
        raise ImageFileError("truncated", "the DICOM file ends in the middle of an element (truncated)") from None
    except Exception as exc:  # noqa: BLE001 - any parse failure is a corrupt file
        if not part10:
            raise ImageFileError("not-image", "not a DICOM, PNG or JPEG file") from None
        raise ImageFileError("corrupt", f"the DICOM file could not be parsed ({type(exc).__name__}: "
                                        f"{safe_text(str(exc))})") from None
    for w in caught:
        text = str(w.message)
        if "End of file reached" in text or "truncated" in text.lower():
            raise ImageFileError("truncated", "the DICOM file ends before its last element (truncated)")
    # force=True reads anything; a bare dataset counts only if it holds an image.
    if not part10 and (not any(k in ds for k in PIXEL_KEYWORDS) or "Rows" not in ds):
        if "SOPClassUID" in ds and _uid(ds, "SOPClassUID"):
            raise ImageFileError("not-image", "a DICOM dataset without pixel data: there is no image to store")
        raise ImageFileError("not-image", "not a DICOM, PNG or JPEG file")
    _ensure_transfer_syntax(ds)
    return ds


def _ensure_transfer_syntax(ds: Dataset) -> None:
    """A file without (0002,0010) is decoded in the encoding it was read with (a bare dataset
    can only be one of the three uncompressed syntaxes)."""
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = FileMetaDataset()
        ds.file_meta = meta
    if "TransferSyntaxUID" in meta:
        return
    implicit, little = ds.original_encoding
    if implicit is None:
        implicit, little = True, True
    meta.TransferSyntaxUID = (
        ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    )


def _text(ds: Dataset, keyword: str, limit: int = 64) -> str:
    try:
        value = ds.get(keyword)
    except Exception:  # noqa: BLE001 - a malformed optional element is treated as absent
        return ""
    if value is None:
        return ""
    if isinstance(value, pydicom.multival.MultiValue):
        value = "\\".join(str(v) for v in value)
    return str(value).strip()[:limit]


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return int(value) if value not in (None, "") else None
    except Exception:  # noqa: BLE001 - malformed IS/US
        return None


def _date(ds: Dataset, keyword: str) -> dt.date | None:
    raw = _text(ds, keyword, 32)
    if len(raw) >= 8 and raw[:8].isdigit():
        try:
            return dt.date(int(raw[:4]), int(raw[4:6]), int(raw[6:8]))
        except ValueError:
            return None
    return None


def _uid(ds: Dataset, keyword: str) -> str:
    value = _text(ds, keyword, 200)
    return value if value and len(value) <= 64 and re.fullmatch(r"[0-9.]+", value) else ""


def dicom_meta(ds: Dataset, *, digest: str) -> ImageMeta:
    """Metadata of an image dataset; ``ImageFileError`` for one without pixel data.

    ``digest`` (the file's sha256) gives UIDs to a file that lacks them, so that the same file
    always maps to the same rows."""
    sop_class = _uid(ds, "SOPClassUID") or _uid(getattr(ds, "file_meta", Dataset()), "MediaStorageSOPClassUID")
    class_name = UID(sop_class).name if sop_class else ""
    if not any(k in ds for k in PIXEL_KEYWORDS):
        what = f" ({class_name})" if class_name and class_name != sop_class else ""
        raise ImageFileError("not-image", f"a DICOM object without pixel data{what}: there is no image to store")
    rows, columns = _int(ds, "Rows") or 0, _int(ds, "Columns") or 0
    if rows <= 0 or columns <= 0:
        raise ImageFileError("corrupt", "the DICOM image has no rows or columns (0028,0010/0011)")
    frames = max(_int(ds, "NumberOfFrames") or 1, 1)
    if rows * columns > MAX_FRAME_PIXELS:
        raise ImageFileError("too-large", f"frames of {rows} x {columns} pixels exceed the limit of "
                                          f"{MAX_FRAME_PIXELS} pixels")
    syntax = UID(str(ds.file_meta.TransferSyntaxUID))
    sop_instance = _uid(ds, "SOPInstanceUID")
    study, series = _uid(ds, "StudyInstanceUID"), _uid(ds, "SeriesInstanceUID")
    derived = not (sop_instance and study and series)
    meta = ImageMeta(
        format="dicom",
        sop_instance_uid=sop_instance or uid_from_digest(digest, "instance"),
        study_instance_uid=study or uid_from_digest(digest, "study"),
        series_instance_uid=series or uid_from_digest(digest, "series"),
        sop_class_uid=sop_class,
        sop_class_name=class_name if class_name != sop_class else "",
        patient_id=_text(ds, "PatientID"),
        modality=_text(ds, "Modality", 16).upper(),
        body_part=_text(ds, "BodyPartExamined", 64).upper(),
        view_position=_text(ds, "ViewPosition", 16).upper(),
        laterality=(_text(ds, "ImageLaterality", 16) or _text(ds, "Laterality", 16)).upper(),
        study_date=_date(ds, "StudyDate"),
        series_date=_date(ds, "SeriesDate"),
        content_date=_date(ds, "ContentDate") or _date(ds, "AcquisitionDate"),
        study_description=_text(ds, "StudyDescription", 200),
        series_description=_text(ds, "SeriesDescription", 200),
        accession_number=_text(ds, "AccessionNumber", 64),
        series_number=_int(ds, "SeriesNumber"),
        instance_number=_int(ds, "InstanceNumber"),
        photometric=_text(ds, "PhotometricInterpretation", 32).upper(),
        rows=rows,
        columns=columns,
        frames=frames,
        bits_stored=_int(ds, "BitsStored") or _int(ds, "BitsAllocated") or 8,
        transfer_syntax=str(syntax),
        transfer_syntax_name=syntax.name if syntax.name != str(syntax) else "",
        uids_derived=derived,
    )
    if meta.photometric in MONOCHROME:
        meta.presets = window_presets(frame_view(ds, frames // 2), modality=meta.modality)
    return meta


def frame_view(ds: Dataset, index: int) -> Dataset:
    """A small dataset with the attributes that map frame ``index``'s stored values to grey
    levels: the top-level Modality LUT and VOI LUT modules, overridden by the shared and then the
    per-frame functional groups of an enhanced multi-frame image (PS3.3 C.7.6.16.2.9, .10)."""
    view = Dataset()
    for keyword in ("PhotometricInterpretation", "BitsStored", "BitsAllocated", "PixelRepresentation",
                    "RescaleSlope", "RescaleIntercept", "RescaleType", "ModalityLUTSequence", "WindowCenter",
                    "WindowWidth", "VOILUTFunction", "WindowCenterWidthExplanation", "VOILUTSequence"):
        if keyword in ds:
            view[keyword] = ds[keyword]
    groups: list[Dataset] = []
    for keyword, position in (("SharedFunctionalGroupsSequence", 0), ("PerFrameFunctionalGroupsSequence", index)):
        seq = ds.get(keyword)
        if seq is not None and len(seq) > position:
            groups.append(seq[position])
    for group in groups:
        transform = group.get("PixelValueTransformationSequence")
        if transform:
            for keyword in ("RescaleSlope", "RescaleIntercept", "RescaleType"):
                if keyword in transform[0]:
                    view[keyword] = transform[0][keyword]
        voi = group.get("FrameVOILUTSequence")
        if voi:
            for keyword in ("WindowCenter", "WindowWidth", "VOILUTFunction", "WindowCenterWidthExplanation"):
                if keyword in voi[0]:
                    view[keyword] = voi[0][keyword]
    return view


def _numbers(value: Any) -> list[float]:
    if value is None:
        return []
    items = list(value) if isinstance(value, pydicom.multival.MultiValue | list | tuple) else [value]
    out = []
    for item in items:
        try:
            out.append(float(item))
        except (TypeError, ValueError):
            out.append(float("nan"))
    return out


def window_presets(view: Dataset, *, modality: str = "") -> list[Preset]:
    """The file's VOI LUTs, then its windows (invalid ones left out), then standard CT windows
    for a CT in HU. The first is the default rendering (pydicom's own preference is the LUT)."""
    presets: list[Preset] = []
    for i, item in enumerate(view.get("VOILUTSequence") or []):
        explanation = _text(item, "LUTExplanation", 64)
        presets.append(Preset(name=explanation or f"VOI LUT {i + 1}", kind="lut", index=i))
    centers, widths = _numbers(view.get("WindowCenter")), _numbers(view.get("WindowWidth"))
    explanations = view.get("WindowCenterWidthExplanation")
    if isinstance(explanations, str):
        explanations = [explanations]
    function = _text(view, "VOILUTFunction", 16).upper() or "LINEAR"
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        function = "LINEAR"
    for i, (center, width) in enumerate(zip(centers, widths, strict=False)):
        # PS3.3 C.11.2.1.2.1: LINEAR needs a width of at least 1; LINEAR_EXACT and SIGMOID above 0.
        valid = np.isfinite(center) and np.isfinite(width) and (width >= 1 if function == "LINEAR" else width > 0)
        if not valid:
            continue
        label = str(explanations[i]).strip()[:64] if explanations and i < len(explanations) else ""
        presets.append(Preset(name=label or f"W {width:g} L {center:g}", kind="window", center=center, width=width,
                              function=function, index=i))
    if modality == "CT" and ("RescaleIntercept" in view or "ModalityLUTSequence" not in view):
        for name, center, width in CT_STANDARD_WINDOWS:
            presets.append(Preset(name=name, kind="window", center=center, width=width, source="standard"))
    return presets


_MISSING_DECODER = re.compile(r"missing dependencies|no (?:available )?(?:pixel data )?(?:decoder|plugin)", re.I)


def decode_frame(ds: Dataset, index: int) -> np.ndarray:
    """The stored values of one frame (colour converted to RGB by pydicom), or ``ImageFileError``
    naming why it cannot be decoded."""
    syntax = UID(str(ds.file_meta.TransferSyntaxUID))
    syntax_name = syntax.name if syntax.name != str(syntax) else str(syntax)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. excess padding; the decoded frame is checked below
            arr = pydicom.pixels.pixel_array(ds, index=index)
    except NotImplementedError:
        raise ImageFileError("unsupported", f"pixel data in {syntax_name} cannot be decoded here") from None
    except RuntimeError as exc:
        text = str(exc)
        if _MISSING_DECODER.search(text) or "does not support" in text:
            raise ImageFileError("unsupported", f"pixel data compressed as {syntax_name}: no decoder for it is "
                                                "installed (convert the file to an uncompressed, JPEG baseline, "
                                                "RLE or JPEG 2000 syntax)") from None
        raise ImageFileError("corrupt", f"the {syntax_name} pixel data could not be decoded "
                                        f"({safe_text(text.splitlines()[-1] if text else '')})") from None
    except ValueError as exc:
        text = str(exc)
        if "less than expected" in text or "truncat" in text.lower():
            raise ImageFileError("truncated", "the pixel data is shorter than the image's rows, columns and "
                                              "frames require (truncated)") from None
        raise ImageFileError("corrupt", f"the pixel data could not be read ({safe_text(text)})") from None
    except AttributeError as exc:
        raise ImageFileError("corrupt", f"an element the image needs is missing ({safe_text(str(exc))})") from None
    except (KeyError, TypeError, IndexError, OverflowError, MemoryError) as exc:
        raise ImageFileError("corrupt", f"the pixel data could not be read ({type(exc).__name__})") from None
    if arr.ndim == 3 and arr.shape[-1] not in (3, 4) and arr.shape[0] > 1:
        arr = arr[0]  # a decoder that ignored ``index``
    return arr
