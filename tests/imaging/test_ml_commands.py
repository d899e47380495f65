"""train_imaging_model and imaging_predict, on the shared MedMNIST files and a real database."""

from __future__ import annotations

import csv
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from cdss.models import ModelVersion
from imaging.ml import inference
from imaging.ml.inference import get_loaded_model
from tests.conftest import require_data

pytestmark = [pytest.mark.django_db, pytest.mark.needs_data]


@pytest.fixture
def model_dir(settings, tmp_path):
    settings.CDSS_MODEL_DIR = tmp_path / "models"
    yield settings.CDSS_MODEL_DIR
    for loaded in list(inference._CACHE.values()):
        loaded.close()
    inference._CACHE.clear()


@pytest.fixture
def breast_file(tmp_path):
    """A file shaped like the evaluation one: a ``test`` split (here 40 of the validation images)."""
    with np.load(require_data("imaging/breastmnist.npz")) as npz:
        images, labels = npz["val_images"][:40], npz["val_labels"][:40]
    path = tmp_path / "breast-eval.npz"
    np.savez(path, test_images=images, test_labels=labels)
    return path, labels[:, 0]


def test_training_registers_an_active_model_and_predict_writes_one_row_per_image(model_dir, breast_file, tmp_path):
    out = StringIO()
    call_command("train_imaging_model", "--dataset", "breastmnist", "--epochs", "1", "--members", "1",
                 "--max-train-images", "120", stdout=out)
    text = out.getvalue()
    assert "val (official)" in text and "MedMNIST v2 ResNet-18 (28) test baseline: AUC 0.901" in text
    mv = ModelVersion.objects.get(name="imaging_breastmnist", active=True)
    assert mv.architecture == "resnet18" and mv.features[0]["label"] == "malignant"
    assert mv.metrics["validation"]["n"] == 78 and mv.metrics["test_auc"] is None
    # 28 px: the CPU, GPU or not (the default recipe's figures are the CPU's); the small stem
    assert "resnet18 at 28 px" in text and mv.metrics["training"]["device"] == "cpu" and mv.metrics["stem"] == "small"
    assert "--input-size 28 --stem small" in mv.notes

    path, labels = breast_file
    csv_path = tmp_path / "preds.csv"
    out = StringIO()
    call_command("imaging_predict", "--npz", str(path), "--split", "test", "--dataset", "breastmnist",
                 "--out", str(csv_path), stdout=out)
    with csv_path.open() as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["index", "label", "probability"]
    assert [int(r[0]) for r in rows[1:]] == list(range(40))
    assert [int(r[1]) for r in rows[1:]] == [int(v) for v in labels]
    probs = np.array([float(r[2]) for r in rows[1:]])
    assert ((probs >= 0) & (probs <= 1)).all()
    # probability is of file label 1 (normal/benign): one minus the model's P(malignant)
    loaded = get_loaded_model("imaging_breastmnist")
    with np.load(path) as npz:
        first = npz["test_images"][:5].astype(np.float32) / 255
    malignant = [p.probabilities["malignant"] for p in loaded.predict(list(first), cam=False)]
    assert probs[:5] == pytest.approx(1 - np.array(malignant), abs=2e-6)
    assert "40 rows" in out.getvalue()


def test_predict_without_an_active_model_says_how_to_make_one(model_dir, breast_file, tmp_path):
    path, _ = breast_file
    with pytest.raises(CommandError, match=r"no active version of the imaging model 'imaging_breastmnist'.*"
                                           "train_imaging_model --dataset breastmnist"):
        call_command("imaging_predict", "--npz", str(path), "--split", "test", "--dataset", "breastmnist",
                     "--out", str(tmp_path / "p.csv"))
    assert not (tmp_path / "p.csv").exists()


def test_predict_names_a_missing_split(model_dir, breast_file, tmp_path):
    path, _ = breast_file
    with pytest.raises(CommandError, match=r"no val_images/val_labels arrays \(splits present: test\)"):
        call_command("imaging_predict", "--npz", str(path), "--split", "val", "--dataset", "breastmnist",
                     "--out", str(tmp_path / "p.csv"))


def test_training_says_where_the_data_should_be(model_dir, settings, tmp_path):
    settings.CDSS_DATA_DIR = tmp_path / "nowhere"
    with pytest.raises(CommandError, match=r"breastmnist.npz does not exist. Set CDSS_DATA_DIR"):
        call_command("train_imaging_model", "--dataset", "breastmnist")
    assert not ModelVersion.objects.exists()


def test_training_runs_larger_inputs_on_a_gpu_when_there_is_one_and_says_when_none_is_there(model_dir, monkeypatch):
    from imaging.ml.train import training_device

    assert training_device("auto", 28, True) == "cpu"
    assert [training_device("auto", size, True) for size in (29, 112, 299)] == ["cuda"] * 3
    assert training_device("auto", 224, False) == "cpu"
    assert training_device("cpu", 224, True) == "cpu"
    assert training_device("cuda", 28, True) == "cuda"
    with pytest.raises(ValueError, match="training on cuda was asked for, but torch sees no CUDA device here"):
        training_device("cuda", 224, False)
    with pytest.raises(ValueError, match="auto, cpu or cuda, not 'tpu'"):
        training_device("tpu", 28, True)
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a host without a GPU
    with pytest.raises(CommandError, match="torch sees no CUDA device here"):
        call_command("train_imaging_model", "--dataset", "breastmnist", "--device", "cuda", "--epochs", "1")
    assert not ModelVersion.objects.exists()


def test_training_refuses_too_small_an_input_for_inception(model_dir):
    with pytest.raises(CommandError, match="inception_v3 needs an input of at least 75 pixels"):
        call_command("train_imaging_model", "--dataset", "breastmnist", "--arch", "inception_v3",
                     "--input-size", "28", "--epochs", "1")
    assert not ModelVersion.objects.exists()
    assert not Path(model_dir).exists() or not any(Path(model_dir).rglob("*.pt"))


def test_predict_on_dicom_files_prints_findings_as_json(model_dir, tmp_path):
    import json

    from pydicom.data import get_testdata_file

    from imaging.ml.train import TrainSettings, load_dataset, register_trained, train

    data = load_dataset("pneumoniamnist")
    register_trained(train(data, TrainSettings(epochs=1, max_train_images=60)), data)
    chest = str(get_testdata_file("RG1_UNCR.dcm"))  # CR chest PA, MONOCHROME1
    ct = str(get_testdata_file("CT_small.dcm"))
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"not a dicom file at all")
    out = StringIO()
    call_command("imaging_predict", chest, ct, str(broken), "--overlay-dir", str(tmp_path / "overlays"), stdout=out)
    results = json.loads(out.getvalue())
    assert [r["file"] for r in results] == [chest, ct, str(broken)]
    finding = results[0]["findings"][0]
    assert results[0]["modality"] == "CR"
    assert finding["model"] == "imaging_pneumoniamnist" and finding["label"] == "pneumonia"
    assert 0.0 <= finding["probability"] <= 1.0 and finding["positive"] == (finding["probability"] >= finding["threshold"])
    assert 0 <= finding["heatmap_peak"]["row"] < results[0]["rows"]
    assert Path(finding["overlay"]).is_file()
    assert results[1]["findings"] == [] and "no model applies" in results[1]["note"]
    assert "error" in results[2] and "findings" not in results[2]
