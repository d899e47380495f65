"""Cross-validation that does not leak: folds of whole groups of near-duplicate sentences.

The NegEx/ConText sentences repeat: the same sentence is annotated once per condition in it, and
report templates recur with one word changed ("RIGHT ATRIAL SIZE IS NORMAL." / "LEFT ATRIAL SIZE
IS NORMAL."). A sentence and its near-twin in different folds would let a model score on what it
trained on, so every fold holds whole groups: sentences are joined when their normalised texts are
equal or their word sets overlap by ``JACCARD`` or more (joined transitively). Folds are
stratified on the label combination (scikit-learn's StratifiedGroupKFold) so rare labels spread
over the folds. Pure Python (no Django).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

JACCARD = 0.6
K_FOLDS = 5


def _normalise(sentence: str) -> str:
    text = re.sub(r"\d", "0", " ".join(sentence.lower().split()))
    return re.sub(r"[^a-z0 ]", "", text)


def near_duplicate_groups(sentences: Sequence[str], *, jaccard: float = JACCARD) -> np.ndarray:
    """A group number per sentence; near-duplicates (see the module docstring) share one."""
    parent = list(range(len(sentences)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    norms = [_normalise(s) for s in sentences]
    words = [frozenset(n.split()) for n in norms]
    for i in range(len(sentences)):
        for j in range(i):
            a, b = words[i], words[j]
            if norms[i] == norms[j] or (a and b and len(a & b) / len(a | b) >= jaccard):
                parent[find(i)] = find(j)
    roots = [find(i) for i in range(len(sentences))]
    numbering: dict[int, int] = {}
    return np.asarray([numbering.setdefault(r, len(numbering)) for r in roots], dtype=np.int64)


def grouped_folds(
    groups: np.ndarray, strata: np.ndarray, *, k: int = K_FOLDS, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` (train, test) index pairs; no group is on both sides of any pair."""
    from sklearn.model_selection import StratifiedGroupKFold

    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    placeholder = np.zeros((len(groups), 1))
    return [(np.asarray(tr), np.asarray(te)) for tr, te in splitter.split(placeholder, strata, groups)]


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    @classmethod
    def of(cls, gold: np.ndarray, predicted: np.ndarray) -> Counts:
        gold, predicted = np.asarray(gold, bool), np.asarray(predicted, bool)
        return cls(
            tp=int((gold & predicted).sum()),
            fp=int((~gold & predicted).sum()),
            fn=int((gold & ~predicted).sum()),
            tn=int((~gold & ~predicted).sum()),
        )

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "tn": self.tn, "precision": round(self.precision, 4),
                "recall": round(self.recall, 4), "f1": round(self.f1, 4)}
