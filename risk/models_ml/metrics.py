"""Discrimination and calibration of a binary classifier's predicted probabilities (numpy only).

- AUC: the Mann-Whitney statistic with mid-ranks for ties. Its 95% CI is DeLong's (DeLong,
  DeLong & Clarke-Pearson, Biometrics 1988) with the fast mid-rank algorithm of Sun & Xu
  (IEEE Signal Processing Letters 2014), clipped to [0, 1].
- Brier score: the mean squared difference between the probability and the 0/1 outcome
  (Brier, Monthly Weather Review 1950).
- Calibration slope and intercept: the logistic recalibration ``logit P(y=1) = a + b * logit(p)``
  fitted by maximum likelihood (Cox, Biometrika 1958); a well-calibrated model has a = 0, b = 1.
  Calibration-in-the-large is ``a`` with ``b`` fixed at 1 (Steyerberg, Clinical Prediction
  Models, 2nd ed. 2019, chapter 15).
- Calibration bins: equal-count groups of patients sorted by prediction, each with its mean
  prediction, the observed fraction and a Wilson 95% interval (Wilson, JASA 1927).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

Z_95 = 1.959963984540054  # the 97.5th percentile of the standard normal distribution
_EPS = 1e-12

FloatArray = npt.NDArray[np.float64]


def _as_arrays(y_true: npt.ArrayLike, p: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    y = np.asarray(y_true, dtype=np.float64).ravel()
    q = np.asarray(p, dtype=np.float64).ravel()
    if y.shape != q.shape:
        raise ValueError(f"{y.size} outcomes but {q.size} predictions")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("outcomes must be 0 or 1")
    if not np.isfinite(q).all():
        raise ValueError("predictions must be finite")
    return y, q


def _midranks(x: FloatArray) -> FloatArray:
    """1-based ranks; tied values share the mean of their ranks."""
    order = np.argsort(x, kind="mergesort")
    ordered = x[order]
    ranks = np.empty(x.size, dtype=np.float64)
    i = 0
    while i < x.size:
        j = i
        while j < x.size and ordered[j] == ordered[i]:
            j += 1
        ranks[order[i:j]] = 0.5 * (i + j - 1) + 1.0
        i = j
    return ranks


def auc_delong(y_true: npt.ArrayLike, score: npt.ArrayLike) -> tuple[float, float, float, float]:
    """(AUC, DeLong standard error, lower and upper 95% limit). Needs both classes."""
    y, s = _as_arrays(y_true, score)
    positives, negatives = s[y == 1], s[y == 0]
    m, n = positives.size, negatives.size
    if m == 0 or n == 0:
        raise ValueError("the AUC needs at least one positive and one negative outcome")
    tx, ty = _midranks(positives), _midranks(negatives)
    tz = _midranks(np.concatenate([positives, negatives]))
    auc = float((tz[:m].sum() - m * (m + 1) / 2) / (m * n))
    v10 = (tz[:m] - tx) / n  # each positive's share of negatives ranked below it
    v01 = 1.0 - (tz[m:] - ty) / m  # each negative's share of positives ranked above it
    s10 = float(np.var(v10, ddof=1)) if m > 1 else 0.0
    s01 = float(np.var(v01, ddof=1)) if n > 1 else 0.0
    se = math.sqrt(s10 / m + s01 / n)
    return auc, se, max(0.0, auc - Z_95 * se), min(1.0, auc + Z_95 * se)


def auc(y_true: npt.ArrayLike, score: npt.ArrayLike) -> float:
    return auc_delong(y_true, score)[0]


def brier_score(y_true: npt.ArrayLike, p: npt.ArrayLike) -> float:
    y, q = _as_arrays(y_true, p)
    return float(np.mean((q - y) ** 2))


def log_loss(y_true: npt.ArrayLike, p: npt.ArrayLike) -> float:
    y, q = _as_arrays(y_true, p)
    q = np.clip(q, _EPS, 1 - _EPS)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))


def logit(p: npt.ArrayLike) -> FloatArray:
    q = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(q / (1 - q))


def _sigmoid(x: FloatArray) -> FloatArray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # the logistic function without overflow


def calibration_slope_intercept(y_true: npt.ArrayLike, p: npt.ArrayLike) -> dict[str, float]:
    """Slope and intercept of ``logit P(y=1) = a + b * logit(p)``, and calibration-in-the-large
    (``a`` with ``b = 1``), by Newton-Raphson. With separable data the estimates diverge: the
    iterations stop after 100 steps and the (large) values are returned as they stand."""
    y, q = _as_arrays(y_true, p)
    lp = logit(q)
    design = np.column_stack([np.ones_like(lp), lp])
    beta = np.array([0.0, 1.0])
    for _ in range(100):
        mu = _sigmoid(design @ beta)
        w = np.clip(mu * (1 - mu), _EPS, None)
        hessian = design.T @ (design * w[:, None])
        try:
            step = np.linalg.solve(hessian, design.T @ (y - mu))
        except np.linalg.LinAlgError:  # all predictions equal: no slope to fit
            break
        beta = beta + step
        if np.max(np.abs(step)) < 1e-10:
            break
    a = 0.0
    for _ in range(100):
        mu = _sigmoid(lp + a)
        shift = float(np.sum(y - mu) / max(float(np.sum(mu * (1 - mu))), _EPS))
        a += shift
        if abs(shift) < 1e-12:
            break
    return {"calibration_intercept": float(beta[0]), "calibration_slope": float(beta[1]),
            "calibration_in_the_large": a}


def wilson_interval(events: int, n: int) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    phat = events / n
    denominator = 1 + Z_95**2 / n
    centre = (phat + Z_95**2 / (2 * n)) / denominator
    half = Z_95 * math.sqrt(phat * (1 - phat) / n + Z_95**2 / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def calibration_bins(y_true: npt.ArrayLike, p: npt.ArrayLike, n_bins: int = 5) -> list[dict[str, float]]:
    """Equal-count bins of the sorted predictions: mean predicted vs observed, for a plot."""
    y, q = _as_arrays(y_true, p)
    order = np.argsort(q, kind="mergesort")
    bins = []
    for rows in np.array_split(order, min(n_bins, q.size)):
        events, n = int(y[rows].sum()), int(rows.size)
        low, high = wilson_interval(events, n)
        bins.append({"n": n, "predicted": float(q[rows].mean()), "observed": events / n,
                     "observed_low": low, "observed_high": high,
                     "p_min": float(q[rows].min()), "p_max": float(q[rows].max())})
    return bins


def binary_metrics(y_true: npt.ArrayLike, p: npt.ArrayLike) -> dict[str, Any]:
    """The registry's per-split figures: n, prevalence, AUC (95% CI), Brier, log loss, calibration."""
    y, q = _as_arrays(y_true, p)
    value, se, low, high = auc_delong(y, q)
    return {
        "n": int(y.size),
        "events": int(y.sum()),
        "prevalence": float(y.mean()),
        "auc": value,
        "auc_se": se,
        "auc_ci95": [low, high],
        "auc_ci_method": "DeLong",
        "brier": brier_score(y, q),
        # The Brier score of always predicting the prevalence: the figure to beat.
        "brier_reference": float(y.mean() * (1 - y.mean())),
        "log_loss": log_loss(y, q),
        **calibration_slope_intercept(y, q),
    }
