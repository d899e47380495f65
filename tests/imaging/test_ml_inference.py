"""The imaging model registry round trip and batched prediction with heat maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cdss.model_registry import ModelFileTampered, model_version_activate
from imaging.ml import inference
from imaging.ml.inference import (
    ImagePrediction,
    NoActiveModel,
    get_loaded_model,
    model_names_for,
    require_loaded_model,
)
from imaging.ml.train import TrainSettings, load_dataset, register_trained, train, train_and_register
from tests.conftest import require_data

pytestmark = [pytest.mark.django_db, pytest.mark.needs_data]


@pytest.fixture(scope="module")
def trained():
    """One quick training shared by the tests (each registers its own copy of the file)."""
    require_data("imaging/pneumoniamnist.npz")
    data = load_dataset("pneumoniamnist")
    return data, [train(data, TrainSettings(epochs=1, max_train_images=120, seed=s)) for s in (0, 1)]


@pytest.fixture
def model_dir(settings, tmp_path):
    settings.CDSS_MODEL_DIR = tmp_path / "models"
    yield settings.CDSS_MODEL_DIR
    for loaded in list(inference._CACHE.values()):
        loaded.close()
    inference._CACHE.clear()


@pytest.fixture
def quick(trained, model_dir):
    data, results = trained

    def register(seed: int = 0):
        return register_trained(results[seed], data)

    return register


def test_train_and_register_trains_a_small_model_in_seconds_and_activates_it(model_dir):
    require_data("imaging/pneumoniamnist.npz")
    mv = train_and_register("pneumoniamnist", epochs=1, max_train_images=60)
    assert mv.active and mv.kind == "imaging" and mv.name == "imaging_pneumoniamnist"
    assert mv.metrics["training"]["train_images"] == 60
    assert get_loaded_model("imaging_pneumoniamnist").model_version_id == mv.pk


def test_a_quick_model_is_registered_active_with_its_config(quick, model_dir):
    mv = quick()
    assert mv.active and mv.kind == "imaging" and mv.name == "imaging_pneumoniamnist"
    assert mv.architecture == "resnet18"
    assert mv.features[0]["label"] == "pneumonia" and 0.0 <= mv.features[0]["threshold"] <= 1.0
    assert mv.metrics["input_size"] == 28 and mv.metrics["normalisation"]["std"] > 0
    assert 0.0 <= mv.metrics["validation"]["auc"] <= 1.0 and mv.metrics["validation"]["n"] == 524
    assert "test_auc" in mv.metrics  # None where the file holds no test split
    assert (Path(model_dir) / mv.file_path).is_file()


def test_predict_returns_probabilities_flags_and_heat_maps_of_each_image_size(quick, model_dir):
    quick()
    loaded = get_loaded_model("imaging_pneumoniamnist")
    assert loaded is not None and loaded.labels == ["pneumonia"] and loaded.input_size == 28
    rng = np.random.default_rng(0)
    images = [rng.random((28, 28), dtype=np.float32), rng.random((300, 240), dtype=np.float32),
              rng.random((17, 90), dtype=np.float32)]
    preds = loaded.predict(images, batch_size=2)
    assert len(preds) == 3 and all(isinstance(p, ImagePrediction) for p in preds)
    for image, pred in zip(images, preds, strict=True):
        prob = pred.probabilities["pneumonia"]
        assert 0.0 <= prob <= 1.0
        assert pred.positive["pneumonia"] == (prob >= loaded.thresholds["pneumonia"])
        heat = pred.heatmaps["pneumonia"]
        assert heat.shape == image.shape and heat.dtype == np.float32
        assert heat.min() >= 0.0 and heat.max() <= 1.0
    without = loaded.predict(images, cam=False)
    assert all(p.heatmaps == {} for p in without)
    # The same probabilities with and without the heat map, whatever the batch size.
    for a, b in zip(preds, without, strict=True):
        assert a.probabilities["pneumonia"] == pytest.approx(b.probabilities["pneumonia"], abs=1e-5)


def test_predict_names_the_bad_image(quick, model_dir):
    quick()
    loaded = get_loaded_model("imaging_pneumoniamnist")
    ok = np.zeros((28, 28), np.float32)
    with pytest.raises(ValueError, match=r"image 1: expected a 2-D grey array"):
        loaded.predict([ok, np.zeros((3, 28, 28), np.float32)])
    with pytest.raises(ValueError, match=r"image 2: values must lie in \[0, 1\]"):
        loaded.predict([ok, ok, ok * 255 + 3])


def test_the_model_is_cached_and_reloaded_when_the_active_version_changes(quick, model_dir):
    first = quick()
    a = get_loaded_model("imaging_pneumoniamnist")
    assert a is get_loaded_model("imaging_pneumoniamnist")
    second = quick(seed=1)
    b = get_loaded_model("imaging_pneumoniamnist")
    assert b is not a and b.model_version_id == second.pk and b.version == second.version
    model_version_activate(first)
    assert get_loaded_model("imaging_pneumoniamnist").model_version_id == first.pk


def test_a_tampered_file_is_refused(quick, model_dir):
    mv = quick()
    path = Path(model_dir) / mv.file_path
    path.write_bytes(path.read_bytes() + b"x")
    with pytest.raises(ModelFileTampered, match="sha256"):
        get_loaded_model("imaging_pneumoniamnist")


def test_no_active_model_is_none_or_a_clear_error(model_dir):
    assert get_loaded_model("imaging_breastmnist") is None
    with pytest.raises(NoActiveModel, match="train_imaging_model --dataset breastmnist"):
        require_loaded_model("imaging_breastmnist")


@pytest.mark.parametrize(("modality", "body_part", "names"), [
    ("CR", "CHEST", ["imaging_pneumoniamnist"]),
    ("DX", "", ["imaging_pneumoniamnist"]),
    ("dr", "chest", ["imaging_pneumoniamnist"]),
    ("CR", "KNEE", []),
    ("US", "BREAST", ["imaging_breastmnist"]),
    ("US", "ABDOMEN", []),
    ("MR", "BREAST", []),
    ("CT", "CHEST", []),
])
def test_model_names_for_the_modality_and_body_part(modality, body_part, names):
    assert model_names_for(modality, body_part) == names
