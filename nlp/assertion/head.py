"""Per-flag heads over frozen encoder features and the rules' features, chosen by nested CV.

For one flag, a head is ``rules`` (keep what the ConText rules said), ``model``: a
logistic regression (class-balanced) over the standardised encoder features (optionally reduced by
PCA and whitened) and the standardised rule features (weighted by ``rule_weight``), cut at a
``threshold``, or ``or``: the model's positives added to the rules' (a rule cue such as "s/p"
stays decisive). The model's probability is
``blend * p(encoder + rules) + (1 - blend) * p(rules and cue features alone)``: a second, small
logistic regression over the rule and cue features only (``CUES_C``), which the 1,152 encoder
numbers cannot drown; the grid blends the two equally (``BLENDS``; nested CV on the NegEx dev file:
historical F1 0.794 against 0.766 when the grid could also choose 0.7 or the encoder model alone). Standardising, PCA and the regressions are all linear, so each fitted
regression folds into ONE weight vector and intercept over the raw features: the shipped artefact
is a few thousand numbers per flag and prediction is one or two dot products (numpy only).

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
BLENDS = (0.5,)  # weight of the encoder model's probability in the blend (1 would be it alone)
CUES_C = 1.0  # the rules-and-cues-only regression (47 features, little to overfit)
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
    blend: float = 1.0


RULES = Config(mode="rules")


@dataclass
class LinearHead:
    """``sigmoid(features @ coef + intercept) >= threshold`` (features: encoder then rules); with
    ``coef`` of shape (members, dim), ``intercept`` (members,) and ``weights`` (members,), the
    weighted mean of the members' sigmoids is cut at ``threshold``."""

    coef: np.ndarray
    intercept: float | np.ndarray
    threshold: float
    weights: np.ndarray | None = None

    @property
    def dim(self) -> int:
        return int(np.asarray(self.coef).shape[-1])

    def proba(self, features: np.ndarray) -> np.ndarray:
        coef = np.atleast_2d(np.asarray(self.coef, dtype=np.float64))
        intercept = np.atleast_1d(np.asarray(self.intercept, dtype=np.float64))
        weights = np.ones(1) if self.weights is None else np.asarray(self.weights, dtype=np.float64)
        z = np.asarray(features, dtype=np.float64) @ coef.T + intercept
        return (1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0)))) @ weights

    def predict(self, features: np.ndarray) -> np.ndarray:
        return self.proba(features) >= self.threshold


def fit_head(encoded: np.ndarray, rules: np.ndarray, y: np.ndarray, config: Config, *, seed: int) -> LinearHead:
    """The model head of ``config``: ``fit_linear``, blended with the cues-only regression when
    ``config.blend`` < 1."""
    main = fit_linear(encoded, rules, y, config, seed=seed)
    if config.blend >= 1.0:
        return main
    cues = fit_cues(encoded, rules, y, config, seed=seed)
    return LinearHead(
        coef=np.stack([main.coef, cues.coef]),
        intercept=np.asarray([main.intercept, cues.intercept], dtype=np.float64),
        threshold=config.threshold,
        weights=np.asarray([config.blend, 1.0 - config.blend], dtype=np.float64),
    )


def fit_cues(encoded: np.ndarray, rules: np.ndarray, y: np.ndarray, config: Config, *, seed: int) -> LinearHead:
    """A regression over the standardised rule and cue features alone (zero weight on the
    encoder's), folded like ``fit_linear``."""
    from sklearn.linear_model import LogisticRegression

    r = np.asarray(rules, np.float64)
    r_mean, r_scale = r.mean(axis=0), r.std(axis=0)
    r_scale[r_scale < 1e-8] = 1.0
    model = LogisticRegression(C=CUES_C, class_weight="balanced", max_iter=5000, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit((r - r_mean) / r_scale, y.astype(int))
    coef_r = model.coef_[0] / r_scale
    b = float(model.intercept_[0]) - float(r_mean @ coef_r)
    coef = np.concatenate([np.zeros(np.asarray(encoded).shape[1]), coef_r])
    return LinearHead(coef=coef, intercept=b, threshold=config.threshold)


def fit_linear(encoded: np.ndarray, rules: np.ndarray, y: np.ndarray, config: Config, *, seed: int) -> LinearHead:
    """The encoder + rules regression of ``config`` fitted on these rows, folded into one linear
    function."""
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
    blend = f",blend={config.blend:g}" if config.blend < 1.0 else ""
    return f"{config.mode}(pca={config.pca},w={config.rule_weight:g},C={config.c:g}{blend},t={config.threshold:g})"


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
    cues_proba = np.zeros(len(y))
    for tr, te in folds:
        if y[tr].sum() > 0:
            cues_proba[te] = fit_cues(encoded[tr], rules[tr], y[tr], RULES, seed=seed).proba(
                np.hstack([encoded[te], rules[te]])
            )
    for config in _grid():
        main_proba = np.zeros(len(y))
        for tr, te in folds:
            if y[tr].sum() == 0:
                continue
            main_proba[te] = fit_linear(encoded[tr], rules[tr], y[tr], config, seed=seed).proba(
                np.hstack([encoded[te], rules[te]])
            )
        for blend, threshold, mode in itertools.product(BLENDS, THRESHOLDS, ("model", "or")):
            candidate = Config(**{**asdict(config), "threshold": threshold, "mode": mode, "blend": blend})
            proba = blend * main_proba + (1.0 - blend) * cues_proba
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
            head = fit_head(encoded[tr], rules[tr], y[tr], choice.config, seed=seed)
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
