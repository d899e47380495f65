"""bench/imaging_gpu_search.py --cv: the folds cover the train split once, disjoint, stratified."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.imaging_gpu_search import ensemble_curve, parse_recipe, stratified_folds


def test_folds_cover_every_image_once_with_each_class_spread_evenly() -> None:
    targets = np.r_[np.zeros(399), np.ones(147)].astype(np.float32)  # BreastMNIST's train split shape
    folds = stratified_folds(targets, 5, seed=3)
    joined = np.concatenate(folds)
    assert len(folds) == 5 and len(joined) == len(targets) and len(np.unique(joined)) == len(targets)
    sizes = [len(f) for f in folds]
    positives = [int(targets[f].sum()) for f in folds]
    assert max(sizes) - min(sizes) <= 1 and max(positives) - min(positives) <= 1
    assert [f.tolist() for f in stratified_folds(targets, 5, seed=3)] == [f.tolist() for f in folds]
    assert [f.tolist() for f in stratified_folds(targets, 5, seed=4)] != [f.tolist() for f in folds]


def test_a_recipe_takes_text_settings_and_names_a_bad_key() -> None:
    from imaging.ml.train import DEFAULTS

    recipe = parse_recipe("select=last,ema=0.98,members=5", DEFAULTS["breastmnist"])
    assert (recipe.select, recipe.ema, recipe.members, recipe.epochs) == ("last", 0.98, 5, 40)
    with pytest.raises(ValueError, match="'colour=red' is not key=value"):
        parse_recipe("colour=red", DEFAULTS["breastmnist"])


def test_the_ensemble_curve_ends_at_the_ensembles_own_auc() -> None:
    from imaging.ml.data import DATASETS, Dataset, Split
    from imaging.ml.train import TrainSettings, train

    rng = np.random.default_rng(0)
    images = (rng.random((80, 28, 28)) * 100).astype(np.uint8)
    labels = (np.arange(80) % 2).astype(np.int64)
    images[labels == 1, 10:18, 10:18] += 120  # a bright centre marks the positives
    split = Split(images, labels, labels.astype(np.float32))
    data = Dataset(DATASETS["breastmnist"], Path("synthetic"), "0" * 64, {"train": split, "val": split})
    result = train(data, TrainSettings(epochs=2, members=2, batch_size=20, seed=0))
    curve = ensemble_curve(result, split, hflip=True, device="cpu")
    assert set(curve) == {"plain", "flip_mean"} and all(len(v) == 2 for v in curve.values())
    assert abs(curve["plain"][-1] - result.metrics["validation"]["auc"]) < 1e-3
    assert ensemble_curve(result, split, hflip=False, device="cpu").keys() == {"plain"}
