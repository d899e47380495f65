"""Training and cross-validated evaluation of the assertion heads on the NegEx dev sentences.

``dev_features`` runs the rules (``classify_context``) and the encoder over every row once;
``evaluate`` is the nested, grouped cross-validation (figures on rows neither the heads nor their
choice saw); ``train`` chooses each flag's head by grouped CV on all rows, fits it on all rows and
returns the arrays and metadata ``write_artefact`` stores. Deterministic for a given seed. Pure
Python (no Django).
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nlp.assertion import head as heads
from nlp.assertion.context import rule_row
from nlp.assertion.cv import Counts, near_duplicate_groups
from nlp.assertion.data import Row
from nlp.assertion.encoder import MAX_TOKENS, PARTS, WINDOW_AFTER, WINDOW_BEFORE, Encoder
from nlp.assertion.features import NAMES as RULE_FEATURE_NAMES
from nlp.assertion.model import FLAGS, FORMAT, RULE_FEATURE, sha256_file, write_npz

SEED = 20261125
Progress = Callable[[str], None]


@dataclass
class DevFeatures:
    rows: list[Row]
    encoded: np.ndarray  # (n, encoder dim)
    rules: np.ndarray  # (n, len(RULE_FEATURE_NAMES))
    groups: np.ndarray
    strata: np.ndarray

    def gold(self, flag: str) -> np.ndarray:
        return np.asarray([row.label(flag) for row in self.rows], dtype=bool)

    def rule_flag(self, flag: str) -> np.ndarray:
        return self.rules[:, RULE_FEATURE_NAMES.index(RULE_FEATURE[flag])] > 0.5


def dev_features(rows: Sequence[Row], encoder: Encoder, *, nlp: Any = None) -> DevFeatures:
    from nlp.pipeline import classify_context

    rules = []
    for row in rows:
        result = classify_context(row.sentence, row.start, row.end, nlp=nlp)
        rules.append(rule_row(result, row.sentence, row.start, row.end))
    encoded = encoder.features([(row.sentence, row.start, row.end) for row in rows])
    gold = {flag: np.asarray([row.label(flag) for row in rows], dtype=np.int64) for flag in FLAGS}
    strata = gold["negated"] + 2 * gold["historical"] + 4 * gold["hypothetical"] + 8 * gold["family"]
    return DevFeatures(
        rows=list(rows),
        encoded=encoded,
        rules=np.stack(rules).astype(np.float32),
        groups=near_duplicate_groups([row.sentence for row in rows]),
        strata=strata,
    )


@dataclass
class FlagEvaluation:
    flag: str
    rules: Counts
    combined: Counts
    rules_folds: list[Counts]
    combined_folds: list[Counts]
    choices: list[str]
    result: heads.NestedResult


def evaluate(dev: DevFeatures, *, seed: int = SEED, progress: Progress | None = None) -> dict[str, FlagEvaluation]:
    """Nested grouped CV per flag: rules alone vs rules + classifier, pooled and per outer fold."""
    out = {}
    for flag in FLAGS:
        if progress:
            progress(f"cross-validating {flag}")
        gold = dev.gold(flag)
        result = heads.nested_cv(dev.encoded, dev.rules, dev.rule_flag(flag), gold, dev.groups, dev.strata, seed=seed)
        out[flag] = FlagEvaluation(
            flag=flag,
            rules=Counts.of(gold, result.rules),
            combined=Counts.of(gold, result.combined),
            rules_folds=heads.per_fold(gold, result.rules, result.fold_of),
            combined_folds=heads.per_fold(gold, result.combined, result.fold_of),
            choices=[heads.label(c) for c in result.choices],
            result=result,
        )
    return out


def train(
    dev: DevFeatures,
    encoder: Encoder,
    *,
    data_path: Path,
    seed: int = SEED,
    evaluation: dict[str, FlagEvaluation] | None = None,
    progress: Progress | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The heads' arrays and the metadata (``npz_sha256`` is filled in by ``write_artefact``)."""
    import sklearn

    arrays: dict[str, np.ndarray] = {}
    flags: dict[str, Any] = {}
    for flag in FLAGS:
        if progress:
            progress(f"choosing and fitting the {flag} head on all rows")
        gold = dev.gold(flag)
        choice = heads.select(
            dev.encoded, dev.rules, dev.rule_flag(flag), gold, dev.groups, dev.strata, seed=seed
        )
        spec: dict[str, Any] = {
            "mode": choice.config.mode,
            "config": heads.config_dict(choice.config),
            "label": heads.label(choice.config),
            "positives": int(gold.sum()),
            "inner_cv_f1": {k: round(v, 4) for k, v in sorted(choice.inner_f1.items())},
        }
        if choice.config.mode != "rules":
            fitted = heads.fit_head(dev.encoded, dev.rules, gold, choice.config, seed=seed)
            arrays[f"{flag}_coef"] = np.atleast_2d(fitted.coef).astype(np.float32)
            arrays[f"{flag}_intercept"] = np.atleast_1d(np.asarray(fitted.intercept, dtype=np.float64))
            weights = np.ones(1) if fitted.weights is None else fitted.weights
            arrays[f"{flag}_weights"] = np.asarray(weights, dtype=np.float64)
        if evaluation and flag in evaluation:
            ev = evaluation[flag]
            spec["nested_cv"] = {
                "rules": ev.rules.as_dict(),
                "combined": ev.combined.as_dict(),
                "rules_folds_f1": [round(c.f1, 4) for c in ev.rules_folds],
                "combined_folds_f1": [round(c.f1, 4) for c in ev.combined_folds],
                "outer_choices": ev.choices,
            }
        flags[flag] = spec
    meta: dict[str, Any] = {
        "format": FORMAT,
        "what": "assertion heads (negated, historical, hypothetical, family) over frozen all-MiniLM-L6-v2 "
        "features of a marked mention and the ConText rules', layout and cue-word features; trained on "
        "all rows of the data file (the nested_cv figures are the out-of-fold ones)",
        "data": {
            "file": data_path.name,
            "sha256": sha256_file(data_path),
            "rows": len(dev.rows),
            "groups": len(set(dev.groups.tolist())),
        },
        "seed": seed,
        "cv": {"outer_folds": 5, "inner_folds": 5, "grouping": "near-duplicate sentences (cv.JACCARD)",
               "stratified_on": "label combination"},
        "encoder": {
            "weights_sha256": encoder.info.weights_sha256,
            "parts": list(PARTS),
            "hidden": encoder.info.hidden,
            "max_tokens": MAX_TOKENS,
            "window_chars": [WINDOW_BEFORE, WINDOW_AFTER],
        },
        "rule_features": list(RULE_FEATURE_NAMES),
        "flags": flags,
        "libraries": {"python": platform.python_version(), "numpy": np.__version__, "scikit-learn": sklearn.__version__},
    }
    return arrays, meta


def write_artefact(head_json: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> str:
    """Writes ``<name>.npz`` and ``<name>.json``; returns the npz's sha256."""
    head_json.parent.mkdir(parents=True, exist_ok=True)
    npz_path = head_json.with_suffix(".npz")
    if arrays:
        write_npz(npz_path, arrays)
    else:
        write_npz(npz_path, {"empty": np.zeros(0, np.float32)})
    digest = sha256_file(npz_path)
    head_json.write_text(json.dumps({**meta, "npz_sha256": digest}, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return digest


def evaluation_dict(evaluation: dict[str, FlagEvaluation]) -> dict[str, Any]:
    return {flag: {"rules": asdict(ev.rules), "combined": asdict(ev.combined), "choices": ev.choices}
            for flag, ev in evaluation.items()}
