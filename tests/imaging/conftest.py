"""Imaging fixtures: storage in a temporary folder, real DICOM files from pydicom's test data."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path: Path) -> Path:
    """Every imaging test stores its files under its own folder (default_storage follows
    MEDIA_ROOT)."""
    root = tmp_path / "media"
    root.mkdir()
    settings.MEDIA_ROOT = str(root)
    return root


def dicom_bytes(name: str = "CT_small.dcm", *, patient_id: str | None = None, new_instance: bool = False,
                study_uid: str | None = None, series_uid: str | None = None, **changes: object) -> bytes:
    """A real test file with its PatientID (and optionally UIDs and other elements) replaced."""
    ds = pydicom.dcmread(str(get_testdata_file(name)))
    if patient_id is not None:
        ds.PatientID = patient_id
    if new_instance:
        uid = generate_uid()
        ds.SOPInstanceUID = uid
        ds.file_meta.MediaStorageSOPInstanceUID = uid
    if study_uid:
        ds.StudyInstanceUID = study_uid
    if series_uid:
        ds.SeriesInstanceUID = series_uid
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def stored_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())
