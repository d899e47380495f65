"""Architectures, training and Grad-CAM of the imaging CNNs (no database)."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest
import torch

from imaging.ml.architectures import ARCHITECTURES, ArchitectureError, architecture, build_model, default_stem
from imaging.ml.data import DATASETS, DataError, Dataset, Split, load_npz
from imaging.ml.inference import LoadedImagingModel
from imaging.ml.metrics import auc, youden_threshold
from imaging.ml.modelfile import ModelFormatError, build_members
from imaging.ml.train import TrainSettings, _mix, train
from tests.conftest import require_data


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_each_architecture_builds_for_one_channel_and_runs_at_its_input_size(name):
    arch = architecture(name)
    net = build_model(name, 2, init_weights="").eval()
    size = arch.default_input_size
    with torch.no_grad():
        out = net(torch.rand(2, 1, size, size))
    assert out.shape == (2, 2)
    config = {"architecture": name, "labels": ["a", "b"], "thresholds": {"a": 0.5, "b": 0.5}, "input_size": size,
              "normalisation": {"mean": 0.5, "std": 0.25}}
    loaded = LoadedImagingModel(name="x", version="1", model_version_id=1, metrics={}, config=config,
                                state_dicts=[net.state_dict()], device="cpu")
    preds = loaded.predict([np.full((40, 33), 0.3, np.float32), np.random.default_rng(1).random((20, 20)).astype(np.float32)])
    assert [p.heatmaps["b"].shape for p in preds] == [(40, 33), (20, 20)]
    assert all(0.0 <= p.probabilities[k] <= 1.0 for p in preds for k in "ab")
    loaded.close()


def test_an_unknown_architecture_and_a_missing_weights_file_are_named():
    with pytest.raises(ArchitectureError, match="unknown architecture 'vgg'"):
        build_model("vgg", 1)
    with pytest.raises(ArchitectureError, match="does not exist"):
        build_model("resnet18", 1, init_weights="/nonexistent/w.pt")


@pytest.mark.parametrize(("name", "first"), [("resnet18", "conv1"), ("densenet121", "features.conv0")])
def test_the_standard_stem_is_torchvisions_network_for_one_channel(name, first):
    import torchvision

    ours = build_model(name, 2, stem="standard", init_weights="")
    theirs = getattr(torchvision.models, name)(weights=None, num_classes=2)
    assert [type(m) for m in ours.modules()] == [type(m) for m in theirs.modules()]  # the stem's pool kept
    ours_sd, theirs_sd = ours.state_dict(), theirs.state_dict()
    assert list(ours_sd) == list(theirs_sd)
    assert {k: tuple(v.shape) for k, v in ours_sd.items() if k != f"{first}.weight"} == \
        {k: tuple(v.shape) for k, v in theirs_sd.items() if k != f"{first}.weight"}
    conv = ours.get_submodule(first)
    assert (conv.in_channels, conv.kernel_size, conv.stride, conv.padding) == (1, (7, 7), (2, 2), (3, 3))
    small = build_model(name, 2, stem="small", init_weights="")
    assert small.get_submodule(first).kernel_size == (3, 3)


@pytest.mark.parametrize(("name", "small_factor"), [("resnet18", 16), ("densenet121", 8)])
def test_the_standard_stem_takes_a_quarter_of_the_side_before_the_first_stage(name, small_factor):
    """The CAM layer's side: the input's / 32 with the standard stem (7 x 7 at 224 px, as the papers'
    networks), / 16 (ResNet-18's pool kept) or / 8 (DenseNet-121) with the small one."""
    def cam_side(stem: str, size: int) -> int:
        net = build_model(name, 1, stem=stem, init_weights="").eval()
        seen: list[int] = []
        hook = architecture(name).cam_layer(net).register_forward_hook(lambda _m, _i, out: seen.append(out.shape[-1]))
        with torch.no_grad():
            net(torch.rand(1, 1, size, size))
        hook.remove()
        return seen[0]

    assert cam_side("standard", 224) == 7
    assert cam_side("small", 64) == 64 // small_factor


def test_a_new_model_gets_the_standard_stem_from_112_px_and_a_file_naming_none_the_small_one():
    assert [default_stem("resnet18", size) for size in (28, 64, 111, 112, 224)] == \
        ["small", "small", "small", "standard", "standard"]
    assert default_stem("densenet121", 224) == "standard"
    assert default_stem("resnet18_full", 224) == "small"  # the MedMNIST 28 px network: one stem
    assert default_stem("inception_v3", 299) == "standard"  # its own
    with pytest.raises(ArchitectureError, match="resnet18_full has no 'standard' stem"):
        build_model("resnet18_full", 1, stem="standard")
    with pytest.raises(ArchitectureError, match="inception_v3 has no 'small' stem"):
        build_model("inception_v3", 1, stem="small")
    # a config without a stem was built before there was a choice: with the small stem
    small = build_model("resnet18", 1, stem="small", init_weights="").state_dict()
    config = {"architecture": "resnet18", "labels": ["finding"]}
    [net] = build_members(config, [small])
    assert net.conv1.kernel_size == (3, 3)
    with pytest.raises(ModelFormatError, match="the weights do not fit resnet18"):
        build_members({**config, "stem": "standard"}, [small])
    with pytest.raises(ModelFormatError, match="resnet18 has no 'wide' stem"):
        build_members({**config, "stem": "wide"}, [small])


def test_training_at_112_px_builds_and_records_the_standard_stem_and_a_too_small_input_is_named():
    result = train(_square_data(64), TrainSettings(epochs=1, batch_size=32, input_size=112, seed=0))
    assert (result.config["stem"], result.config["input_size"]) == ("standard", 112)
    assert result.metrics["stem"] == "standard"  # kept with the model version in the registry
    assert tuple(result.state_dicts[0]["conv1.weight"].shape) == (64, 1, 7, 7)
    loaded = LoadedImagingModel(name="t", version="1", model_version_id=1, metrics={}, config=result.config,
                                state_dicts=result.state_dicts, device="cpu")
    [pred] = loaded.predict([np.full((50, 60), 0.4, np.float32)])
    assert pred.heatmaps["malignant"].shape == (50, 60)
    loaded.close()
    assert train(_square_data(64), TrainSettings(epochs=1, batch_size=32, seed=0)).config["stem"] == "small"
    with pytest.raises(ValueError, match="with the standard stem needs an input of at least 32 pixels, not 28"):
        train(_square_data(8), TrainSettings(epochs=1, stem="standard"))
    with pytest.raises(ValueError, match="inception_v3 has no 'small' stem"):
        train(_square_data(8), TrainSettings(arch="inception_v3", epochs=1, stem="small"))


def test_local_initial_weights_are_loaded_where_they_fit(tmp_path):
    source = build_model("resnet18", 1, init_weights="")
    torch.save(source.state_dict(), tmp_path / "w.pt")
    target = build_model("resnet18", 3, init_weights=tmp_path / "w.pt")  # a 3-label head: fc stays fresh
    assert torch.equal(target.layer1[0].conv1.weight, source.layer1[0].conv1.weight)
    assert target.fc.weight.shape == (3, 512)


@pytest.mark.parametrize(("y", "s", "expected"), [
    ([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], 1.0),  # perfect separation
    ([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1], 0.0),
    ([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5], 0.5),  # all tied: half credit (mid-ranks)
    ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.75),  # 3 of 4 positive-negative pairs ordered
])
def test_auc_is_the_mann_whitney_statistic(y, s, expected):
    assert auc(y, s) == pytest.approx(expected)


def test_the_youden_threshold_separates_separable_scores():
    t = youden_threshold([0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.6, 0.7])
    assert 0.3 < t < 0.6


def test_a_file_without_the_required_split_is_named(tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, train_images=np.zeros((4, 28, 28), np.uint8), train_labels=np.zeros((4, 1), np.uint8))
    with pytest.raises(DataError, match=r"no val_images/val_labels arrays \(splits present: train\)"):
        load_npz(path, "pneumoniamnist")
    with pytest.raises(DataError, match="unknown data set"):
        load_npz(path, "chestmnist")


def test_breast_labels_are_flipped_so_the_finding_is_malignancy():
    path = require_data("imaging/breastmnist.npz")
    data = load_npz(path, "breastmnist")
    train_split = data.splits["train"]
    # README: 0 = malignant, 1 = normal or benign; the model's finding "malignant" is file label 0.
    assert DATASETS["breastmnist"].label == "malignant"
    assert np.array_equal(train_split.targets == 1, train_split.file_labels == 0)


@pytest.mark.needs_data
def test_training_on_a_small_subset_ranks_unseen_validation_images_better_than_chance():
    data = load_npz(require_data("imaging/pneumoniamnist.npz"), "pneumoniamnist")
    result = train(data, TrainSettings(epochs=2, max_train_images=300, batch_size=50, seed=3))
    val = result.metrics["validation"]
    # 524 official validation images never seen in training; chance is 0.5 (SE about 0.025).
    assert val["n"] == 524 and val["auc"] > 0.75
    assert result.metrics["training"]["train_images"] == 300
    assert result.metrics["test_auc"] is None  # the shared file keeps its test split aside


def _square_task(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """Noise images; positives carry a bright 7x7 square inside one quadrant, chosen at random
    (the ResNet-18 default's last block is 2x2 at 28x28: Grad-CAM there resolves quadrants)."""
    rng = np.random.default_rng(seed)
    images = (rng.random((n, 28, 28)) * 120).astype(np.uint8)
    labels = (np.arange(n) % 2).astype(np.int64)
    corners = []
    for i in range(n):
        r, c = (int(rng.choice([1, 2, 3, 4, 5, 15, 16, 17, 18, 19])) for _ in range(2))
        corners.append((r, c))
        if labels[i]:
            images[i, r:r + 7, c:c + 7] = 255
    return images, labels, corners


@pytest.mark.parametrize("input_size", [28, 112])  # the small stem (2 x 2 CAM), the standard one (4 x 4)
def test_grad_cam_points_at_the_planted_square(input_size):
    images, labels, _ = _square_task(200, seed=0)
    spec = DATASETS["pneumoniamnist"]
    split = Split(images, labels, (labels == 1).astype(np.float32))
    data = Dataset(spec, Path("synthetic"), "0" * 64, {"train": split, "val": split})
    result = train(data, TrainSettings(epochs=3, batch_size=32, lr=2e-3, seed=0, input_size=input_size))
    assert result.config["stem"] == ("small" if input_size == 28 else "standard")
    loaded = LoadedImagingModel(name="t", version="1", model_version_id=1, metrics={}, config=result.config,
                                state_dicts=result.state_dicts, device="cpu")
    test_images, test_labels, corners = _square_task(40, seed=1)
    preds = loaded.predict([im.astype(np.float32) / 255 for im in test_images])
    probs = np.array([p.probabilities["pneumonia"] for p in preds])
    assert auc(test_labels, probs) > 0.9
    inside_wins = 0
    positives = [i for i in range(40) if test_labels[i]]
    for i in positives:
        heat = preds[i].heatmaps["pneumonia"]
        r, c = corners[i]
        mask = np.zeros_like(heat, dtype=bool)
        mask[r:r + 7, c:c + 7] = True
        inside_wins += heat[mask].mean() > heat[~mask].mean()
    assert inside_wins >= 0.8 * len(positives)
    loaded.close()


def test_grad_cam_keeps_one_hook_and_no_tensors_across_many_calls():
    config = {"architecture": "resnet18", "labels": ["x"], "thresholds": {"x": 0.5}, "input_size": 28,
              "normalisation": {"mean": 0.5, "std": 0.25}}
    net = build_model("resnet18", 1, init_weights="")
    loaded = LoadedImagingModel(name="x", version="1", model_version_id=1, metrics={}, config=config,
                                state_dicts=[net.state_dict()], device="cpu")
    layer = loaded.members[0].layer4
    images = [np.random.default_rng(i).random((28, 28)).astype(np.float32) for i in range(8)]

    def tensors() -> int:
        gc.collect()
        # type() does not dereference weak proxies left by other tests (isinstance would raise).
        return sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor))

    loaded.predict(images)
    before = tensors()
    for _ in range(30):
        loaded.predict(images, batch_size=3)
    assert len(layer._forward_hooks) == 1
    assert tensors() <= before + 2
    loaded.close()
    assert len(layer._forward_hooks) == 0


def _square_data(n: int = 200) -> Dataset:
    images, labels, _ = _square_task(n, seed=0)
    split = Split(images, labels, (labels == 1).astype(np.float32))
    return Dataset(DATASETS["breastmnist"], Path("synthetic"), "0" * 64, {"train": split, "val": split})


def test_select_last_keeps_the_final_epoch_and_a_vanishing_average_is_the_trained_weights():
    data = _square_data()
    plain = train(data, TrainSettings(epochs=3, batch_size=32, seed=1, select="last", patience=1))
    assert [h["best_epoch"] for h in plain.history if "best_epoch" in h] == [3]
    assert len([h for h in plain.history if "epoch" in h]) == 3  # patience does not stop "last"
    # An average that forgets at once is the trained weights, buffers included.
    tiny = train(data, TrainSettings(epochs=3, batch_size=32, seed=1, select="last", ema=1e-12))
    for key, value in plain.state_dicts[0].items():
        assert torch.allclose(value.float(), tiny.state_dicts[0][key].float(), atol=1e-5), key
    # A real average keeps other weights, and they still learn the task.
    averaged = train(data, TrainSettings(epochs=4, batch_size=32, seed=1, select="last", ema=0.9))
    weight = "fc.weight" if "fc.weight" in plain.state_dicts[0] else next(iter(plain.state_dicts[0]))
    assert not torch.allclose(plain.state_dicts[0][weight], averaged.state_dicts[0][weight])
    assert averaged.metrics["validation"]["auc"] > 0.8


@pytest.mark.parametrize("change, message", [({"select": "first"}, "select must be"), ({"ema": 1.0}, "ema is a decay"),
                                             ({"mixup": -0.2}, "mixup is a Beta")])
def test_a_bad_selection_or_average_is_named(change, message):
    with pytest.raises(ValueError, match=message):
        train(_square_data(8), TrainSettings(epochs=1, **change))


def test_mixup_mixes_images_and_labels_by_one_weight_and_a_seed_repeats_it():
    x = torch.arange(6 * 4, dtype=torch.float32).reshape(6, 1, 2, 2)
    y = torch.tensor([[0.0], [1.0], [0.0], [1.0], [1.0], [0.0]])
    xm, ym = _mix(x, y, torch.Generator().manual_seed(5), 0.4)
    again = _mix(x, y, torch.Generator().manual_seed(5), 0.4)
    assert torch.equal(xm, again[0]) and torch.equal(ym, again[1])
    # Each mixed image is w * x_i + (1 - w) * x_order[i], one w for the batch, labels alike.
    gen = torch.Generator().manual_seed(5)
    w = float(np.random.default_rng(int(torch.randint(2**31 - 1, (1,), generator=gen))).beta(0.4, 0.4))
    order = torch.randperm(6, generator=gen)
    assert 0.0 < w < 1.0 and not torch.equal(order, torch.arange(6))
    assert torch.allclose(xm, w * x + (1 - w) * x[order], atol=1e-5)
    assert torch.allclose(ym, w * y + (1 - w) * y[order], atol=1e-6)
    assert ym.min() >= 0 and ym.max() <= 1


def test_training_with_mixup_still_learns_the_task():
    result = train(_square_data(), TrainSettings(epochs=4, batch_size=32, seed=2, mixup=0.4))
    assert result.metrics["validation"]["auc"] > 0.8
