"""bench/imaging_gpu_search.py --cv: the folds cover the train split once, disjoint, stratified."""

from __future__ import annotations

import numpy as np

from bench.imaging_gpu_search import stratified_folds


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
