"""Discrimination and accuracy of predicted probabilities (numpy only).

- AUC: the Mann-Whitney statistic with mid-ranks for ties (Hanley & McNeil, Radiology 1982).
- Threshold: the one that maximises Youden's J = sensitivity + specificity - 1 (Youden, Cancer
  1950), which does not depend on the prevalence of the rows it is chosen on.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt


def _arrays(y_true: npt.ArrayLike, score: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.float64).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"{y.size} outcomes but {s.size} scores")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("outcomes must be 0 or 1")
    return y, s


def auc(y_true: npt.ArrayLike, score: npt.ArrayLike) -> float:
    """Area under the ROC curve; NaN when only one class is present."""
    y, s = _arrays(y_true, score)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(s.size, dtype=np.float64)
    ordered = s[order]
    # mid-ranks: positions of the first and last of each run of equal scores
    _, first, counts = np.unique(ordered, return_index=True, return_counts=True)
    mid = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(mid, counts)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def youden_threshold(y_true: npt.ArrayLike, score: npt.ArrayLike) -> float:
    """The probability cut-off (positive when ``score >= threshold``) with the largest Youden's J;
    the midpoint between neighbouring scores, so it does not sit on a training score."""
    y, s = _arrays(y_true, score)
    if y.min() == y.max():
        return 0.5
    values = np.unique(s)
    cuts = np.concatenate(([values[0] - 1e-6], (values[1:] + values[:-1]) / 2.0, [values[-1] + 1e-6]))
    pos = y == 1
    sens = np.array([(s[pos] >= c).mean() for c in cuts])
    spec = np.array([(s[~pos] < c).mean() for c in cuts])
    best = int(np.argmax(sens + spec - 1.0))
    return float(np.clip(cuts[best], 0.0, 1.0))


def binary_summary(y_true: npt.ArrayLike, prob: npt.ArrayLike, threshold: float) -> dict[str, Any]:
    """n, prevalence, AUC, and accuracy/sensitivity/specificity at ``threshold`` and at 0.5."""
    y, p = _arrays(y_true, prob)
    out: dict[str, Any] = {"n": int(y.size), "prevalence": round(float(y.mean()), 4), "auc": round(auc(y, p), 4)}
    for key, cut in (("", threshold), ("_at_0_5", 0.5)):
        pred = p >= cut
        out[f"accuracy{key}"] = round(float((pred == (y == 1)).mean()), 4)
        out[f"sensitivity{key}"] = round(float(pred[y == 1].mean()), 4) if (y == 1).any() else None
        out[f"specificity{key}"] = round(float((~pred[y == 0]).mean()), 4) if (y == 0).any() else None
    out["threshold"] = round(float(threshold), 4)
    return out
