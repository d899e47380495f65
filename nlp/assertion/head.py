"""Per-flag heads over frozen encoder features and the rules' features, chosen by nested CV.

For one flag, a head is ``rules`` (keep what the ConText rules said), ``model``: a
logistic regression (class-balanced) over the standardised encoder features (optionally reduced by
PCA and whitened) and the standardised rule features (weighted by ``rule_weight``), cut at a
``threshold``, or ``or``: the model's positives added to the rules' (a rule cue such as "s/p"
stays decisive). Standardising, PCA and the regression are all linear, so a fitted model head folds
into ONE weight vector and intercept over the raw features: the shipped artefact is a few
thousand numbers per flag and prediction is a dot product (numpy only).

Which head, and its settings, is chosen by the F1 of grouped inner cross-validation on the
training rows only (``select``); ``nested_cv`` wraps that in outer folds so every reported figure
comes from rows neither the head nor its choice saw. Pure Python (no Django).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from nlp.assertion.cv import Counts, grouped_folds

# The grid the inner folds choose from (kept small: 1,244 sentences).
PCA_COMPONENTS: tuple[int | None, ...] = (None,)  # PCA(128) scored alike and fitted 15x slower
RULE_WEIGHTS = (1.0, 3.0)
C_VALUES = (0.01, 0.1)
THRESHOLDS = (0.5, 0.6, 0.7)
MIN_POSITIVES = 10  # a flag with fewer positives in the training rows keeps its rules
# A learned head replaces the rules only when its inner-CV F1 beats theirs by this much: a smaller
# gain is within the noise of choosing among the grid (the rules need no fitting).
MIN_GAIN = 0.01


@dataclass(frozen=True)
class Config:
    mode: str  # "rules", "model" or "or" (rules OR model)
    pca: int | None = None
    rule_weight: float = 1.0
    c: float = 0.1
    threshold: float = 0.5


RULES = Config(mode="rules")


@dataclass
class LinearHead:
    """``sigmoid(features @ coef + intercept) >= threshold`` (features: encoder then rules)."""

    coef: np.ndarray
    intercept: float
    threshold: float

    def proba(self, features: np.ndarray) -> np.ndarray:
        z = np.asarray(features, dtype=np.float64) @ self.coef.astype(np.float64) + self.intercept
        return 1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0)))

    def predict(self, features: np.ndarray) -> np.ndarray:
        return self.proba(features) >= self.threshold


def fit_linear(encoded: np.ndarray, rules: np.ndarray, y: np.ndarray, config: Config, *, seed: int) -> LinearHead:
    """The model head of ``config`` fitted on these rows, folded into one linear function."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression

    e = np.asarray(encoded, np.float64)
    r = np.asarray(rules, np.float64)
    e_mean, e_scale = e.mean(axis=0), e.std(axis=0)
    r_mean, r_scale = r.mean(axis=0), r.std(axis=0)
    e_scale[e_scale < 1e-8] = 1.0
    r_scale[r_scale < 1e-8] = 1.0
    ze, zr = (e - e_mean) / e_scale, (r - r_mean) / r_scale
    if config.pca:
        pca = PCA(n_components=min(config.pca, *ze.shape), random_state=seed).fit(ze)
        projected = pca.transform(ze)
        spread = projected.std(axis=0)
        spread[spread < 1e-8] = 1.0
        ze_in = projected / spread
        # projected/spread = (ze - pca.mean_) @ components.T / spread
        e_map = pca.components_.T / spread  # (dim, k)
        e_shift = pca.mean_
    else:
        ze_in = ze
        e_map, e_shift = None, None
    x = np.hstack([ze_in, config.rule_weight * zr])
    model = LogisticRegression(C=config.c, class_weight="balanced", max_iter=5000, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(x, y.astype(int))
    w = model.coef_[0]
    w_e, w_r = w[: ze_in.shape[1]], w[ze_in.shape[1] :] * config.rule_weight
    b = float(model.intercept_[0])
    if e_map is not None:
        assert e_shift is not None
        w_ze = e_map @ w_e
        b -= float(e_shift @ w_ze)
    else:
        w_ze = w_e
    # ze = (e - e_mean) / e_scale and likewise for the rules.
    coef_e, coef_r = w_ze / e_scale, w_r / r_scale
    b -= float(e_mean @ coef_e + r_mean @ coef_r)
    return LinearHead(coef=np.concatenate([coef_e, coef_r]), intercept=b, threshold=config.threshold)


def _grid() -> list[Config]:
    return [
        Config(mode="model", pca=k, rule_weight=w, c=c, threshold=0.5)
        for k, w, c in itertools.product(PCA_COMPONENTS, RULE_WEIGHTS, C_VALUES)
    ]


@dataclass
class Choice:
    config: Config
    inner_f1: dict[str, float] = field(default_factory=dict)  # config label -> inner CV F1


def label(config: Config) -> str:
    if config.mode == "rules":
        return "rules"
    return f"{config.mode}(pca={config.pca},w={config.rule_weight:g},C={config.c:g},t={config.threshold:g})"


def select(
    encoded: np.ndarray,
    rules: np.ndarray,
    rule_flag: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    strata: np.ndarray,
    *,
    seed: int,
    k: int = 5,
) -> Choice:
    """The head with the best grouped inner-CV F1 on these rows; the rules unless it beats them by
    ``MIN_GAIN``."""
    rule_flag, y = np.asarray(rule_flag, bool), np.asarray(y, bool)
    scores: dict[str, float] = {"rules": Counts.of(y, rule_flag).f1}
    best = (scores["rules"] + MIN_GAIN, RULES)
    if y.sum() < MIN_POSITIVES:
        return Choice(config=RULES, inner_f1=scores)
    folds = grouped_folds(groups, strata, k=k, seed=seed)
    for config in _grid():
        proba = np.zeros(len(y))
        for tr, te in folds:
            if y[tr].sum() == 0:
                proba[te] = 0.0
                continue
            proba[te] = fit_linear(encoded[tr], rules[tr], y[tr], config, seed=seed).proba(
                np.hstack([encoded[te], rules[te]])
            )
        for threshold, mode in itertools.product(THRESHOLDS, ("model", "or")):
            candidate = Config(**{**asdict(config), "threshold": threshold, "mode": mode})
            predicted = proba >= threshold
            f1 = Counts.of(y, predicted | rule_flag if mode == "or" else predicted).f1
            scores[label(candidate)] = f1
            if f1 > best[0] + 1e-9:
                best = (f1, candidate)
    return Choice(config=best[1], inner_f1=scores)


@dataclass
class NestedResult:
    rules: np.ndarray  # the rules' prediction per row
    combined: np.ndarray  # the chosen head's out-of-fold prediction per row
    fold_of: np.ndarray  # outer fold number per row
    choices: list[Config]  # per outer fold


def nested_cv(
    encoded: np.ndarray,
    rules: np.ndarray,
    rule_flag: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    strata: np.ndarray,
    *,
    seed: int,
    k: int = 5,
) -> NestedResult:
    """Outer grouped folds; in each, ``select`` on the training rows, fit, predict the test rows."""
    rule_flag = np.asarray(rule_flag, bool)
    combined = np.zeros(len(y), bool)
    fold_of = np.full(len(y), -1)
    choices: list[Config] = []
    for n, (tr, te) in enumerate(grouped_folds(groups, strata, k=k, seed=seed)):
        choice = select(encoded[tr], rules[tr], rule_flag[tr], y[tr], groups[tr], strata[tr], seed=seed + 1 + n, k=k)
        choices.append(choice.config)
        fold_of[te] = n
        if choice.config.mode == "rules":
            combined[te] = rule_flag[te]
        else:
            head = fit_linear(encoded[tr], rules[tr], y[tr], choice.config, seed=seed)
            combined[te] = head.predict(np.hstack([encoded[te], rules[te]]))
            if choice.config.mode == "or":
                combined[te] |= rule_flag[te]
    return NestedResult(rules=rule_flag, combined=combined, fold_of=fold_of, choices=choices)


def per_fold(gold: np.ndarray, predicted: np.ndarray, fold_of: np.ndarray) -> list[Counts]:
    return [Counts.of(gold[fold_of == n], predicted[fold_of == n]) for n in sorted(set(fold_of.tolist()))]


def config_dict(config: Config) -> dict[str, Any]:
    return asdict(config)


def configs_equal(a: Sequence[Config], b: Sequence[Config]) -> bool:
    return list(a) == list(b)
