"""The MedMNIST v2 files (Yang et al., "MedMNIST v2", Sci Data 2023) and what their labels mean.

Each ``<name>.npz`` holds ``{split}_images`` (N, 28, 28) uint8 and ``{split}_labels`` (N, 1) for
the official ``train``, ``val`` and, where present, ``test`` splits. A model's label is the
clinical finding it reports; ``positive_value`` says which file label that finding is:
- PneumoniaMNIST (Kermany et al., Cell 2018, paediatric chest X-rays): 0 = normal,
  1 = pneumonia; the model reports "pneumonia" (file label 1).
- BreastMNIST (Al-Dhabyani et al., Data in Brief 2020, breast ultrasound): 0 = malignant,
  1 = normal or benign; the model reports "malignant" (file label 0).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    registry_name: str
    label: str  # the finding the model reports
    positive_value: int  # the file label that is the finding
    description: str
    hflip: bool  # left-right flips are a sane augmentation (not for chest films: laterality)


DATASETS: dict[str, DatasetSpec] = {
    "pneumoniamnist": DatasetSpec(
        "pneumoniamnist", "imaging_pneumoniamnist", "pneumonia", 1,
        "PneumoniaMNIST (MedMNIST v2; Kermany et al., Cell 2018): paediatric chest X-rays, 28x28", hflip=False),
    "breastmnist": DatasetSpec(
        "breastmnist", "imaging_breastmnist", "malignant", 0,
        "BreastMNIST (MedMNIST v2; Al-Dhabyani et al., Data in Brief 2020): breast ultrasound, 28x28", hflip=True),
}

CHEST_MODALITIES = {"CR", "DX", "DR"}


def model_names_for(modality: str, body_part: str) -> list[str]:
    """Registry names of the models that apply to an image: chest radiographs (CR/DX/DR, body
    part CHEST or empty) -> pneumonia; breast ultrasound (US, BREAST) -> breast malignancy."""
    modality = (modality or "").strip().upper()
    body = (body_part or "").strip().upper()
    if modality in CHEST_MODALITIES and body in ("", "CHEST"):
        return [DATASETS["pneumoniamnist"].registry_name]
    if modality == "US" and body == "BREAST":
        return [DATASETS["breastmnist"].registry_name]
    return []


class DataError(ValueError):
    pass


def dataset_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown data set {name!r}; one of {', '.join(DATASETS)}") from None


@dataclass(frozen=True)
class Split:
    images: npt.NDArray[np.uint8]  # (N, H, W)
    file_labels: npt.NDArray[np.int64]  # (N,) as in the file
    targets: npt.NDArray[np.float32]  # (N,) 1 = the model's finding

    def take(self, index: npt.NDArray[np.int64]) -> Split:
        """The images at ``index``, with their labels."""
        return Split(self.images[index], self.file_labels[index], self.targets[index])


@dataclass(frozen=True)
class Dataset:
    spec: DatasetSpec
    path: Path
    sha256: str
    splits: dict[str, Split]

    def describe(self, shown_path: str) -> str:
        counts = ", ".join(f"{k} {len(v.targets)}" for k, v in self.splits.items())
        return f"{self.spec.description}; file {shown_path} (sha256 {self.sha256}); {counts}"


def load_npz(path: Path, name: str, *, splits: tuple[str, ...] = SPLITS,
             required: tuple[str, ...] = ("train", "val")) -> Dataset:
    """Reads the ``splits`` of ``path`` that are present; those in ``required`` must be."""
    spec = dataset_spec(name)
    if not path.is_file():
        raise DataError(f"{path} does not exist")
    raw = path.read_bytes()
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} is not a readable .npz file ({exc})") from None
    out: dict[str, Split] = {}
    for split in splits:
        images, labels = arrays.get(f"{split}_images"), arrays.get(f"{split}_labels")
        if images is None or labels is None:
            if split in required:
                present = sorted({k.rsplit("_", 1)[0] for k in arrays if k.endswith(("_images", "_labels"))})
                raise DataError(f"{path} has no {split}_images/{split}_labels arrays "
                                f"(splits present: {', '.join(present) or 'none'})")
            continue
        if images.ndim != 3 or labels.reshape(len(labels), -1).shape[1] != 1 or len(images) != len(labels):
            raise DataError(f"{path}: {split} images {images.shape} and labels {labels.shape} do not match "
                            "(expected (N, H, W) grey images and (N, 1) binary labels)")
        file_labels = labels.reshape(-1).astype(np.int64)
        if not np.isin(file_labels, (0, 1)).all():
            raise DataError(f"{path}: {split} labels must be 0 or 1")
        targets = (file_labels == spec.positive_value).astype(np.float32)
        out[split] = Split(images.astype(np.uint8), file_labels, targets)
    return Dataset(spec, path, hashlib.sha256(raw).hexdigest(), out)


def stratified_holdout(targets: npt.NDArray[np.float32], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (fit, held out): ``fraction`` of each class held out, at least one of each."""
    rng = np.random.default_rng(seed)
    fit, held = [], []
    for value in (0.0, 1.0):
        idx = np.flatnonzero(targets == value)
        rng.shuffle(idx)
        k = max(1, round(len(idx) * fraction)) if len(idx) > 1 else 0
        held.append(idx[:k])
        fit.append(idx[k:])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(held))
