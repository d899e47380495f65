"""Imaging fixtures: storage in a temporary folder, real DICOM files from pydicom's test data, a real
(tiny) trained pneumonia model registered as the active one."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from cdss.models import ModelVersion
from imaging.ml import inference
from imaging.ml.train import TrainSettings, load_dataset, register_trained, train
from tests.conftest import require_data


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


@pytest.fixture(scope="module")
def trained():
    """A real ResNet-18 trained for one epoch on 60 PneumoniaMNIST training images (seconds),
    shared by the tests; each registers its own copy."""
    require_data("imaging/pneumoniamnist.npz")
    data = load_dataset("pneumoniamnist")
    return data, train(data, TrainSettings(epochs=1, max_train_images=60, seed=0))


@pytest.fixture
def pneumonia_model(trained, settings, tmp_path) -> Iterator[ModelVersion]:
    settings.CDSS_MODEL_DIR = tmp_path / "models"
    data, result = trained
    mv = register_trained(result, data)
    yield mv
    for loaded in list(inference._CACHE.values()):
        loaded.close()
    inference._CACHE.clear()


def chest_image(index: int = 0) -> np.ndarray:
    """A chest X-ray of the official validation split (never trained on): 28 x 28 uint8."""
    return load_dataset("pneumoniamnist").splits["val"].images[index]


def png_bytes(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def chest_png(index: int = 0) -> bytes:
    """``chest_image`` as a PNG upload would be."""
    return png_bytes(chest_image(index))
