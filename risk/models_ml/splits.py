"""Stratified splits with a fixed seed: the same seed and labels give the same rows every time."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Split:
    """Row indices of the training, validation and test parts (disjoint, sorted)."""

    train: IntArray
    validation: IntArray
    test: IntArray
    seed: int

    def describe(self) -> str:
        return (f"stratified train/validation/test {self.train.size}/{self.validation.size}/{self.test.size} "
                f"rows, seed {self.seed}")


def stratified_split(y: npt.ArrayLike, *, validation: float = 0.2, test: float = 0.2, seed: int = 42) -> Split:
    """Each class is shuffled and cut in the same proportions, so every part keeps the prevalence."""
    labels = np.asarray(y).ravel()
    if not 0 < validation < 1 or not 0 < test < 1 or validation + test >= 1:
        raise ValueError("validation and test must be fractions with validation + test < 1")
    rng = np.random.default_rng(seed)
    parts: dict[str, list[int]] = {"train": [], "validation": [], "test": []}
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        n_test = round(rows.size * test)
        n_validation = round(rows.size * validation)
        parts["test"].extend(rows[:n_test].tolist())
        parts["validation"].extend(rows[n_test:n_test + n_validation].tolist())
        parts["train"].extend(rows[n_test + n_validation:].tolist())
    train, validation_rows, test_rows = (np.array(sorted(parts[k]), dtype=np.int64)
                                         for k in ("train", "validation", "test"))
    return Split(train=train, validation=validation_rows, test=test_rows, seed=seed)


def stratified_kfold(y: npt.ArrayLike, *, folds: int, seed: int) -> Iterator[tuple[IntArray, IntArray]]:
    """(training rows, held-out rows) for each of ``folds`` stratified folds."""
    labels = np.asarray(y).ravel()
    rng = np.random.default_rng(seed)
    fold_of = np.empty(labels.size, dtype=np.int64)
    offset = 0
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        # Continue the round-robin across classes so fold sizes differ by at most one.
        fold_of[rows] = (np.arange(rows.size) + offset) % folds
        offset += rows.size
    for k in range(folds):
        yield np.flatnonzero(fold_of != k), np.flatnonzero(fold_of == k)


def repeated_stratified_kfold(
    y: npt.ArrayLike, *, folds: int = 10, repeats: int = 10, seed: int = 42
) -> Iterator[tuple[int, IntArray, IntArray]]:
    """(repeat, training rows, held-out rows); each repeat reshuffles with its own seed."""
    for repeat in range(repeats):
        for train, held_out in stratified_kfold(y, folds=folds, seed=seed * 1000 + repeat):
            yield repeat, train, held_out
