"""Probability of angiographic coronary artery disease from the 13 Cleveland inputs.

Data: UCI Heart Disease, Cleveland Clinic Foundation, 303 patients referred for coronary
angiography (Detrano et al., "International application of a new probability algorithm for the
diagnosis of coronary artery disease", Am J Cardiol 1989;64:304-310; attribute documentation in
``heart-disease.names``). Label: ``num > 0``, i.e. > 50% diameter narrowing of at least one major
vessel. The population is a referral population with a 46% prevalence: the probabilities are not
transferable to screening settings.

Pipeline (everything fitted on the training rows only):
- missing values (``ca`` 4 rows, ``thal`` 2 rows in the Cleveland file) are filled with the
  training mode (median for continuous inputs, none of which are missing in this file) -- only
  while training and evaluating; at prediction time every input must be given;
- ``cp``, ``restecg``, ``slope``, ``thal`` are one-hot encoded over their documented codes;
- continuous inputs and ``ca`` are standardised with the training mean and standard deviation;
  0/1 columns are centred on the training mean (scale 1), so the all-zero vector is the average
  training patient: the intercept (linear model) and the integrated-gradients baseline (MLP) are
  that patient's logit.

Two architectures are trained on a stratified 60/20/20 split: L2-penalised logistic regression
(full-batch L-BFGS; the penalty chosen by validation Brier score) and a one-hidden-layer MLP
(dropout, Adam, early stopping on validation log loss). The MLP is kept only if its validation
Brier score is lower beyond the noise of the validation rows (paired bootstrap); otherwise the
logistic model, whose contributions are exact. The test rows are used only for the final figures.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from tqdm import tqdm

from cdss.hashing import file_sha256

from .attribution import integrated_gradients
from .metrics import auc, binary_metrics, brier_score, calibration_bins, log_loss
from .splits import Split, repeated_stratified_kfold, stratified_split

NAME = "heart_disease"
FORMAT = "cdss.heart_disease/1"
LABEL = "num > 0: > 50% diameter narrowing of at least one major coronary vessel at angiography"
DATASET_NAME = "UCI Heart Disease, Cleveland Clinic Foundation (Detrano et al., Am J Cardiol 1989)"
DATA_FILES = ("processed.cleveland.data", "cleveland_with_header.csv")
# The MLP is kept only if it is better calibrated beyond the noise of 61 validation rows: the
# upper end of the paired-bootstrap 95% interval of (Brier MLP - Brier logistic) must be below 0.
# Otherwise the simpler logistic model (exact contributions) is kept.
BOOTSTRAP_RESAMPLES = 2000
L2_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3)
IG_STEPS = 50

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Architecture = Literal["logistic", "mlp"]


@dataclass(frozen=True)
class InputSpec:
    name: str
    label: str
    unit: str  # UCUM; "" for codes
    kind: Literal["numeric", "binary", "categorical"]
    categories: tuple[int, ...] = ()  # the documented codes of a categorical input
    # Values outside are physiologically implausible or undocumented, and are refused.
    valid: tuple[float, float] | None = None
    integer: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label, "unit": self.unit, "kind": self.kind,
                "categories": list(self.categories), "valid": list(self.valid) if self.valid else None,
                "integer": self.integer}


INPUTS: tuple[InputSpec, ...] = (
    InputSpec("age", "Age", "a", "numeric", valid=(18, 110)),
    InputSpec("sex", "Sex (1 = male, 0 = female)", "", "binary"),
    InputSpec("cp", "Chest pain type (1 typical angina, 2 atypical angina, 3 non-anginal pain, 4 asymptomatic)",
              "", "categorical", categories=(1, 2, 3, 4)),
    InputSpec("trestbps", "Resting blood pressure on admission", "mm[Hg]", "numeric", valid=(50, 260)),
    InputSpec("chol", "Serum cholesterol", "mg/dL", "numeric", valid=(50, 800)),
    InputSpec("fbs", "Fasting blood sugar > 120 mg/dL (1 = true)", "", "binary"),
    InputSpec("restecg", "Resting ECG (0 normal, 1 ST-T wave abnormality, 2 left ventricular hypertrophy)",
              "", "categorical", categories=(0, 1, 2)),
    InputSpec("thalach", "Maximum heart rate achieved at exercise testing", "/min", "numeric", valid=(40, 250)),
    InputSpec("exang", "Exercise-induced angina (1 = yes)", "", "binary"),
    InputSpec("oldpeak", "ST depression induced by exercise relative to rest", "mm", "numeric", valid=(-5, 10)),
    InputSpec("slope", "Slope of the peak exercise ST segment (1 upsloping, 2 flat, 3 downsloping)",
              "", "categorical", categories=(1, 2, 3)),
    InputSpec("ca", "Major vessels (0-3) coloured by fluoroscopy", "{vessels}", "numeric", valid=(0, 3),
              integer=True),
    InputSpec("thal", "Thallium scintigraphy (3 normal, 6 fixed defect, 7 reversible defect)",
              "", "categorical", categories=(3, 6, 7)),
)
INPUT_NAMES: tuple[str, ...] = tuple(spec.name for spec in INPUTS)
_SPEC = {spec.name: spec for spec in INPUTS}


class DataError(ValueError):
    pass


class ModelFormatError(ValueError):
    pass


class InputProblems(ValueError):
    """Inputs that are missing or invalid; the model is not applied."""

    def __init__(self, missing: list[str], problems: dict[str, str]) -> None:
        self.missing = missing
        self.problems = problems
        parts = [f"missing: {', '.join(missing)}"] if missing else []
        parts += [f"{name}: {problem}" for name, problem in problems.items()]
        super().__init__("; ".join(parts))


# --------------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True)
class Dataset:
    x: FloatArray  # (n, 13) in INPUT_NAMES order; NaN = missing
    y: IntArray  # 1 = num > 0
    path: Path
    sha256: str

    @property
    def n(self) -> int:
        return int(self.y.size)

    def describe(self, shown_path: str | None = None) -> str:
        missing = {name: int(np.isnan(self.x[:, i]).sum()) for i, name in enumerate(INPUT_NAMES)}
        missing_text = ", ".join(f"{k} {v}" for k, v in missing.items() if v) or "none"
        return (f"{DATASET_NAME}; file {shown_path or self.path}; sha256 {self.sha256}; {self.n} rows, "
                f"{int(self.y.sum())} with num > 0; missing values: {missing_text}")


def find_data(directory: Path) -> Path:
    """The Cleveland file in ``directory`` (the UCI processed file first)."""
    for name in DATA_FILES:
        if (directory / name).is_file():
            return directory / name
    raise DataError(f"no Cleveland data in {directory} (expected one of: {', '.join(DATA_FILES)})")


def load_cleveland(path: Path) -> Dataset:
    """``processed.cleveland.data`` (no header, ``?`` = missing) or ``cleveland_with_header.csv``
    (header, empty = missing). Every value is checked against the documented codes."""
    if not path.is_file():
        raise DataError(f"{path} does not exist")
    with path.open(newline="") as handle:
        rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    if rows and rows[0][0].strip().lower() == "age":
        header = [cell.strip().lower() for cell in rows[0]]
        try:
            positions = [header.index(name) for name in (*INPUT_NAMES, "num")]
        except ValueError as exc:
            raise DataError(f"{path}: header lacks a column ({exc})") from None
        rows, first_line = rows[1:], 2
    else:
        positions, first_line = list(range(14)), 1
    x = np.full((len(rows), len(INPUT_NAMES)), np.nan)
    y = np.zeros(len(rows), dtype=np.int64)
    for r, row in enumerate(rows):
        line = first_line + r
        if len(row) <= max(positions):
            raise DataError(f"{path}:{line}: {len(row)} columns, expected 14")
        cells = [row[p].strip() for p in positions]
        for i, cell in enumerate(cells[:-1]):
            if cell in ("?", ""):
                continue
            try:
                value = float(cell)
            except ValueError:
                raise DataError(f"{path}:{line}: {INPUT_NAMES[i]} is not a number: {cell!r}") from None
            problem = _value_problem(INPUTS[i], value)
            if problem:
                raise DataError(f"{path}:{line}: {INPUT_NAMES[i]} {problem}")
            x[r, i] = value
        try:
            num = int(float(cells[-1]))
        except ValueError:
            raise DataError(f"{path}:{line}: num is not a number: {cells[-1]!r}") from None
        if num not in (0, 1, 2, 3, 4):
            raise DataError(f"{path}:{line}: num must be 0-4, got {num}")
        y[r] = int(num > 0)
    if len(np.unique(y)) < 2:
        raise DataError(f"{path}: both outcomes are needed, found only num {'> 0' if y.any() else '= 0'}")
    return Dataset(x=x, y=y, path=path, sha256=file_sha256(path))


def _value_problem(spec: InputSpec, value: float) -> str | None:
    if not math.isfinite(value):
        return "must be a finite number"
    if spec.kind == "binary" and value not in (0, 1):
        return "must be 0 or 1"
    if spec.kind == "categorical" and value not in spec.categories:
        return f"must be one of {', '.join(str(c) for c in spec.categories)}"
    if spec.valid and not spec.valid[0] <= value <= spec.valid[1]:
        return f"must be between {spec.valid[0]:g} and {spec.valid[1]:g} {spec.unit}".rstrip()
    if spec.integer and value != int(value):
        return "must be a whole number"
    return None


# --------------------------------------------------------------------------------------------
# Preprocessing


@dataclass(frozen=True)
class Column:
    """One encoded column: an input's value (``category`` None) or its indicator for one code."""

    name: str
    input: str
    category: int | None
    mean: float
    scale: float


@dataclass(frozen=True)
class Preprocessor:
    imputation: dict[str, float]  # training mode (codes, counts) or median (continuous)
    columns: tuple[Column, ...]
    ranges: dict[str, tuple[float, float]]  # training range of each numeric input
    n_train: int

    def encode_raw(self, x: FloatArray) -> FloatArray:
        """(n, 13) raw values, no missing -> (n, columns) standardised design matrix."""
        out = np.empty((x.shape[0], len(self.columns)))
        for j, column in enumerate(self.columns):
            values = x[:, INPUT_NAMES.index(column.input)]
            if column.category is not None:
                values = (values == column.category).astype(np.float64)
            out[:, j] = (values - column.mean) / column.scale
        return out

    def transform(self, x: FloatArray) -> FloatArray:
        """Training and evaluation rows: missing values take the training imputation values."""
        filled = x.copy()
        for i, name in enumerate(INPUT_NAMES):
            filled[np.isnan(filled[:, i]), i] = self.imputation[name]
        return self.encode_raw(filled)

    def input_of_column(self) -> list[int]:
        return [INPUT_NAMES.index(c.input) for c in self.columns]

    def as_dict(self) -> dict[str, Any]:
        return {
            "imputation": self.imputation,
            "columns": [{"name": c.name, "input": c.input, "category": c.category, "mean": c.mean, "scale": c.scale}
                        for c in self.columns],
            "ranges": {k: list(v) for k, v in self.ranges.items()},
            "n_train": self.n_train,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessor:
        return cls(
            imputation={k: float(v) for k, v in data["imputation"].items()},
            columns=tuple(Column(name=c["name"], input=c["input"], category=c["category"], mean=float(c["mean"]),
                                 scale=float(c["scale"])) for c in data["columns"]),
            ranges={k: (float(v[0]), float(v[1])) for k, v in data["ranges"].items()},
            n_train=int(data["n_train"]),
        )


def _mode(values: FloatArray) -> float:
    codes, counts = np.unique(values, return_counts=True)
    return float(codes[np.argmax(counts)])  # ties: the smallest code


def fit_preprocessor(x_train: FloatArray) -> Preprocessor:
    """Imputation values, encodings and scales from the training rows alone."""
    imputation: dict[str, float] = {}
    for i, spec in enumerate(INPUTS):
        observed = x_train[~np.isnan(x_train[:, i]), i]
        if observed.size == 0:
            raise DataError(f"{spec.name} has no observed value in the training rows")
        continuous = spec.kind == "numeric" and not spec.integer
        imputation[spec.name] = float(np.median(observed)) if continuous else _mode(observed)
    filled = x_train.copy()
    for i, name in enumerate(INPUT_NAMES):
        filled[np.isnan(filled[:, i]), i] = imputation[name]
    columns: list[Column] = []
    ranges: dict[str, tuple[float, float]] = {}
    for i, spec in enumerate(INPUTS):
        values = filled[:, i]
        if spec.kind == "categorical":
            for code in spec.categories:
                indicator = (values == code).astype(np.float64)
                columns.append(Column(f"{spec.name}={code}", spec.name, code, float(indicator.mean()), 1.0))
        elif spec.kind == "binary":
            columns.append(Column(spec.name, spec.name, None, float(values.mean()), 1.0))
        else:
            sd = float(values.std())
            columns.append(Column(spec.name, spec.name, None, float(values.mean()), sd if sd > 0 else 1.0))
            ranges[spec.name] = (float(values.min()), float(values.max()))
    return Preprocessor(imputation=imputation, columns=tuple(columns), ranges=ranges, n_train=int(x_train.shape[0]))


# --------------------------------------------------------------------------------------------
# Networks (float64 throughout: the data are tiny, and exact reloads and attributions matter more)


class LogisticRegression(nn.Module):
    def __init__(self, n_columns: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_columns, 1, dtype=torch.float64)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.linear(z).squeeze(-1)


class MLP(nn.Module):
    def __init__(self, n_columns: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.hidden = nn.Linear(n_columns, hidden, dtype=torch.float64)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, 1, dtype=torch.float64)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(torch.relu(self.hidden(z)))).squeeze(-1)


def _build(architecture: str, n_columns: int, hyperparameters: Mapping[str, Any]) -> nn.Module:
    if architecture == "logistic":
        return LogisticRegression(n_columns)
    if architecture == "mlp":
        return MLP(n_columns, int(hyperparameters["hidden"]), float(hyperparameters["dropout"]))
    raise ModelFormatError(f"unknown architecture {architecture!r}")


# --------------------------------------------------------------------------------------------
# The model and its explanations


@dataclass(frozen=True)
class Explanation:
    probability: float
    logit: float
    # The logit of the average training patient: the linear model's intercept, the MLP's f(0).
    baseline_logit: float
    contributions: dict[str, float]  # log-odds per input; they sum to logit - baseline_logit
    method: str
    completeness_gap: float  # sum(contributions) - (logit - baseline_logit): 0 for the linear model
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"probability": self.probability, "logit": self.logit, "baseline_logit": self.baseline_logit,
                "contributions": self.contributions, "contribution_unit": "log-odds", "method": self.method,
                "completeness_gap": self.completeness_gap, "warnings": self.warnings}


@dataclass
class HeartDiseaseModel:
    architecture: Architecture
    module: nn.Module
    preprocessor: Preprocessor
    hyperparameters: dict[str, Any]

    def logits(self, z: FloatArray) -> FloatArray:
        self.module.eval()
        with torch.no_grad():
            return self.module(torch.from_numpy(np.ascontiguousarray(z, dtype=np.float64))).numpy()

    def predict_proba(self, x: FloatArray) -> FloatArray:
        """Probabilities for raw (n, 13) rows, imputed as in training (evaluation only)."""
        return 1.0 / (1.0 + np.exp(-self.logits(self.preprocessor.transform(x))))

    def check_inputs(self, values: Mapping[str, Any]) -> tuple[dict[str, float], list[str], dict[str, str]]:
        """(parsed values, missing inputs, problems). Nothing is imputed: None counts as missing."""
        parsed: dict[str, float] = {}
        missing: list[str] = []
        problems: dict[str, str] = {}
        for spec in INPUTS:
            raw = values.get(spec.name)
            if raw is None or (isinstance(raw, float) and math.isnan(raw)):
                missing.append(spec.name)
                continue
            if not isinstance(raw, int | float):  # bool is an int: True/False for 0/1 inputs
                problems[spec.name] = "must be a number"
                continue
            problem = _value_problem(spec, float(raw))
            if problem:
                problems[spec.name] = problem
            else:
                parsed[spec.name] = float(raw)
        return parsed, missing, problems

    def explain(self, values: Mapping[str, Any]) -> Explanation:
        """The probability for one patient, with each input's contribution on the log-odds scale.

        Linear model: exact (coefficient x standardised value, summed over an input's columns).
        MLP: integrated gradients from the average training patient (z = 0), 50 steps.
        """
        parsed, missing, problems = self.check_inputs(values)
        if missing or problems:
            raise InputProblems(missing, problems)
        x = np.array([[parsed[name] for name in INPUT_NAMES]])
        z = torch.from_numpy(self.preprocessor.encode_raw(x)[0])
        owner = self.preprocessor.input_of_column()
        self.module.eval()
        if isinstance(self.module, LogisticRegression):
            weight = self.module.linear.weight.detach()[0]
            per_column = (weight * z).numpy()
            baseline = float(self.module.linear.bias.detach()[0])
            logit_value = baseline + float(per_column.sum())
            method, gap = "exact (linear)", 0.0
        else:
            attribution = integrated_gradients(self.module, z, torch.zeros_like(z), steps=IG_STEPS)
            per_column = attribution.values.numpy()
            baseline, logit_value = attribution.baseline_output, attribution.output
            method, gap = f"integrated gradients ({IG_STEPS} steps, baseline = average training patient)", \
                attribution.completeness_gap
        contributions = {name: 0.0 for name in INPUT_NAMES}
        for j, value in enumerate(per_column):
            contributions[INPUT_NAMES[owner[j]]] += float(value)
        warnings = [
            f"{name} {parsed[name]:g} is outside the training data's range ({low:g}-{high:g})"
            for name, (low, high) in self.preprocessor.ranges.items()
            if not low <= parsed[name] <= high
        ]
        return Explanation(probability=1.0 / (1.0 + math.exp(-logit_value)), logit=logit_value,
                           baseline_logit=baseline, contributions=contributions, method=method,
                           completeness_gap=gap, warnings=warnings)


# --------------------------------------------------------------------------------------------
# Training


def _tensor(a: npt.ArrayLike) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float64))


def fit_logistic(z: FloatArray, y: IntArray, *, l2: float) -> LogisticRegression:
    """Mean log loss + l2/2 * |w|^2 (intercept not penalised), full-batch L-BFGS from zero."""
    module = LogisticRegression(z.shape[1])
    nn.init.zeros_(module.linear.weight)
    nn.init.zeros_(module.linear.bias)
    zt, yt = _tensor(z), _tensor(y)
    optimiser = torch.optim.LBFGS(module.parameters(), lr=1.0, max_iter=500, tolerance_grad=1e-10,
                                  tolerance_change=1e-14, history_size=20, line_search_fn="strong_wolfe")
    loss_fn = nn.BCEWithLogitsLoss()

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = loss_fn(module(zt), yt) + 0.5 * l2 * module.linear.weight.pow(2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)  # type: ignore[arg-type]
    return module


@dataclass(frozen=True)
class MLPSettings:
    hidden: int = 16
    dropout: float = 0.3
    lr: float = 0.005
    weight_decay: float = 1e-3
    batch_size: int = 32
    max_epochs: int = 400
    patience: int = 40


def fit_mlp(
    z_train: FloatArray, y_train: IntArray, z_val: FloatArray, y_val: IntArray, *, seed: int,
    settings: MLPSettings = MLPSettings(), progress: bool = False,
) -> tuple[MLP, dict[str, Any]]:
    """Adam on mini-batches; stops when the validation log loss has not improved for ``patience``
    epochs and keeps the best epoch's weights."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    module = MLP(z_train.shape[1], settings.hidden, settings.dropout)
    optimiser = torch.optim.Adam(module.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    zt, yt, zv = _tensor(z_train), _tensor(y_train), _tensor(z_val)
    best_loss, best_epoch, best_state = math.inf, 0, copy.deepcopy(module.state_dict())
    bar = tqdm(range(1, settings.max_epochs + 1), desc="MLP epochs", unit="epoch", disable=not progress,
               leave=False)
    for epoch in bar:
        module.train()
        order = torch.randperm(zt.shape[0], generator=generator)
        for start in range(0, zt.shape[0], settings.batch_size):
            batch = order[start:start + settings.batch_size]
            optimiser.zero_grad()
            loss_fn(module(zt[batch]), yt[batch]).backward()
            optimiser.step()
        module.eval()
        with torch.no_grad():
            p_val = torch.sigmoid(module(zv)).numpy()
        val_loss = log_loss(y_val, p_val)
        if val_loss < best_loss - 1e-6:
            best_loss, best_epoch, best_state = val_loss, epoch, copy.deepcopy(module.state_dict())
        bar.set_postfix(val_loss=f"{val_loss:.4f}", best=best_epoch)
        if epoch - best_epoch >= settings.patience:
            break
    bar.close()
    module.load_state_dict(best_state)
    module.eval()
    return module, {"best_epoch": best_epoch, "epochs_run": epoch, "best_validation_log_loss": best_loss}


@dataclass
class Candidate:
    model: HeartDiseaseModel
    metrics: dict[str, dict[str, Any]]  # split -> binary_metrics
    calibration: dict[str, list[dict[str, float]]]  # split -> bins
    training: dict[str, Any]  # what was tuned, epochs run


@dataclass
class TrainingResult:
    dataset: Dataset
    split: Split
    seed: int
    chosen: Architecture
    candidates: dict[str, Candidate]
    cv: dict[str, Any]
    seconds: float

    @property
    def model(self) -> HeartDiseaseModel:
        return self.candidates[self.chosen].model

    def split_text(self) -> str:
        return (f"{self.split.describe()}; the test rows were used for nothing but the reported test figures. "
                f"Architecture: the MLP only if its validation Brier score is lower than the logistic model's beyond the paired-bootstrap 95% interval; otherwise logistic. "
                f"{self.cv['description']}")

    def metrics_json(self) -> dict[str, Any]:
        chosen = self.candidates[self.chosen]
        return {
            **chosen.metrics,
            "chosen": self.chosen,
            "selection": "MLP only if its validation Brier is lower with the paired-bootstrap 95% interval below 0; else logistic",
            "candidates": {name: {**c.metrics, "training": c.training} for name, c in self.candidates.items()},
            "cv": self.cv,
        }

    def calibration_json(self) -> dict[str, Any]:
        return {"architecture": self.chosen, "bins": self.candidates[self.chosen].calibration,
                "method": "equal-count bins of sorted predictions; observed fraction with Wilson 95% interval"}

    def features_json(self) -> list[dict[str, Any]]:
        pre = self.model.preprocessor
        return [
            {**_SPEC[c.input].as_dict(), "column": c.name, "category": c.category, "mean": c.mean, "scale": c.scale,
             "imputation_in_training": pre.imputation[c.input]}
            for c in pre.columns
        ]


def _evaluate(model: HeartDiseaseModel, dataset: Dataset, split: Split) -> tuple[dict[str, Any], dict[str, Any]]:
    metrics, calibration = {}, {}
    for part in ("train", "validation", "test"):
        rows = getattr(split, part)
        p = model.predict_proba(dataset.x[rows])
        metrics[part] = binary_metrics(dataset.y[rows], p)
        calibration[part] = calibration_bins(dataset.y[rows], p, n_bins=10 if part == "train" else 5)
    return metrics, calibration


def cross_validate_logistic(
    dataset: Dataset, *, l2: float, folds: int = 10, repeats: int = 10, seed: int = 42, progress: bool = False
) -> dict[str, Any]:
    """Repeated stratified k-fold AUC of the logistic model; every fold fits its own preprocessing."""
    fold_aucs: list[float] = []
    pooled = np.zeros((repeats, dataset.n))
    splits = repeated_stratified_kfold(dataset.y, folds=folds, repeats=repeats, seed=seed)
    for repeat, train, held_out in tqdm(splits, total=folds * repeats, desc="CV folds", unit="fold",
                                        disable=not progress, leave=False):
        pre = fit_preprocessor(dataset.x[train])
        module = fit_logistic(pre.transform(dataset.x[train]), dataset.y[train], l2=l2)
        model = HeartDiseaseModel("logistic", module, pre, {"l2": l2})
        p = model.predict_proba(dataset.x[held_out])
        pooled[repeat, held_out] = p
        fold_aucs.append(auc(dataset.y[held_out], p))
    repeat_aucs = [auc(dataset.y, pooled[r]) for r in range(repeats)]
    return {
        "description": f"{repeats}x repeated stratified {folds}-fold cross-validation of the logistic model "
                       f"(L2 {l2:g}) on all {dataset.n} rows, preprocessing refitted in every fold",
        "folds": folds, "repeats": repeats, "l2": l2,
        "auc_mean": float(np.mean(fold_aucs)), "auc_sd": float(np.std(fold_aucs, ddof=1)),
        "auc_min": float(np.min(fold_aucs)), "auc_max": float(np.max(fold_aucs)),
        "pooled_auc_mean": float(np.mean(repeat_aucs)),
        "brier_pooled_mean": float(np.mean([brier_score(dataset.y, pooled[r]) for r in range(repeats)])),
    }


def paired_brier_difference_ci(y: IntArray, p_a: FloatArray, p_b: FloatArray, *, seed: int,
                               resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, float]:
    """95% percentile interval of Brier(a) - Brier(b) over paired bootstrap resamples of the rows."""
    rng = np.random.default_rng(seed)
    loss = (p_a - y) ** 2 - (p_b - y) ** 2
    idx = rng.integers(0, len(y), size=(resamples, len(y)))
    diffs = loss[idx].mean(axis=1)
    return float(np.quantile(diffs, 0.025)), float(np.quantile(diffs, 0.975))


def train(
    dataset: Dataset, *, seed: int = 42, cv_folds: int = 10, cv_repeats: int = 10, progress: bool = False,
    mlp_settings: MLPSettings = MLPSettings(),
) -> TrainingResult:
    """Both architectures on one fixed split, the choice, and the cross-validated logistic AUC."""
    started = time.perf_counter()
    split = stratified_split(dataset.y, validation=0.2, test=0.2, seed=seed)
    pre = fit_preprocessor(dataset.x[split.train])
    z_train, z_val = pre.transform(dataset.x[split.train]), pre.transform(dataset.x[split.validation])
    y_train, y_val = dataset.y[split.train], dataset.y[split.validation]

    grid: dict[str, float] = {}
    best: tuple[float, float, LogisticRegression] | None = None
    for l2 in L2_GRID:
        module = fit_logistic(z_train, y_train, l2=l2)
        with torch.no_grad():
            brier = brier_score(y_val, torch.sigmoid(module(_tensor(z_val))).numpy())
        grid[f"{l2:g}"] = brier
        if best is None or brier < best[0] - 1e-12:
            best = (brier, l2, module)
    assert best is not None
    logistic = HeartDiseaseModel("logistic", best[2], pre, {"l2": best[1]})

    mlp_module, mlp_training = fit_mlp(z_train, y_train, z_val, y_val, seed=seed, settings=mlp_settings,
                                       progress=progress)
    mlp = HeartDiseaseModel("mlp", mlp_module, pre, {
        "hidden": mlp_settings.hidden, "dropout": mlp_settings.dropout, "lr": mlp_settings.lr,
        "weight_decay": mlp_settings.weight_decay, "batch_size": mlp_settings.batch_size,
        "best_epoch": mlp_training["best_epoch"],
    })

    candidates: dict[str, Candidate] = {}
    for name, model, training in (
        ("logistic", logistic, {"l2": best[1], "validation_brier_by_l2": grid, "optimiser": "L-BFGS, full batch"}),
        ("mlp", mlp, {**mlp_training, "optimiser": "Adam, mini-batches"}),
    ):
        metrics, calibration = _evaluate(model, dataset, split)
        candidates[name] = Candidate(model=model, metrics=metrics, calibration=calibration, training=training)
    p_logistic = logistic.predict_proba(dataset.x[split.validation])
    p_mlp = mlp.predict_proba(dataset.x[split.validation])
    low, high = paired_brier_difference_ci(y_val, p_mlp, p_logistic, seed=seed)
    chosen: Architecture = "mlp" if high < 0 else "logistic"
    candidates["mlp"].training["validation_brier_difference_vs_logistic_95ci"] = [low, high]
    cv = cross_validate_logistic(dataset, l2=best[1], folds=cv_folds, repeats=cv_repeats, seed=seed,
                                 progress=progress)
    return TrainingResult(dataset=dataset, split=split, seed=seed, chosen=chosen, candidates=candidates, cv=cv,
                          seconds=time.perf_counter() - started)


# --------------------------------------------------------------------------------------------
# Files: a torch state dict (weights_only loading) and a JSON sidecar with the preprocessing.


@dataclass(frozen=True)
class SavedModel:
    weights: Path
    sidecar: Path
    sha256: str  # of the weights file, which records the sidecar's own hash


def sidecar_path(weights: Path) -> Path:
    return weights.with_suffix(".json")


def save_model(model: HeartDiseaseModel, weights: Path, *, dataset_sha256: str = "") -> SavedModel:
    """Writes ``weights`` (.pt) and its sidecar (.json). The weights file holds the sidecar's
    sha256, so the one hash the registry keeps covers both files."""
    weights.parent.mkdir(parents=True, exist_ok=True)
    sidecar = {
        "format": FORMAT,
        "name": NAME,
        "architecture": model.architecture,
        "hyperparameters": model.hyperparameters,
        "inputs": [spec.as_dict() for spec in INPUTS],
        "preprocessing": model.preprocessor.as_dict(),
        "label": LABEL,
        "dataset": {"name": DATASET_NAME, "sha256": dataset_sha256},
        "torch_version": torch.__version__,
        "notes": "Imputation values are used only for training and evaluation rows; predictions need every input.",
    }
    sidecar_bytes = (json.dumps(sidecar, indent=2, sort_keys=True) + "\n").encode()
    sidecar_file = sidecar_path(weights)
    sidecar_file.write_bytes(sidecar_bytes)
    payload = {
        "format": FORMAT,
        "state_dict": {k: v.detach().clone() for k, v in model.module.state_dict().items()},
        "sidecar_sha256": hashlib.sha256(sidecar_bytes).hexdigest(),
    }
    torch.save(payload, weights)
    return SavedModel(weights=weights, sidecar=sidecar_file, sha256=file_sha256(weights))


def load_model(weights: Path) -> HeartDiseaseModel:
    """Loads with ``weights_only=True`` (tensors and plain containers, no arbitrary objects) and
    refuses a sidecar whose hash differs from the one recorded in the weights file."""
    payload = torch.load(weights, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFormatError(f"{weights} is not a {FORMAT} file")
    sidecar_file = sidecar_path(weights)
    try:
        sidecar_bytes = sidecar_file.read_bytes()
    except FileNotFoundError:
        raise ModelFormatError(f"{sidecar_file} is missing (the model's preprocessing)") from None
    if hashlib.sha256(sidecar_bytes).hexdigest() != payload["sidecar_sha256"]:
        raise ModelFormatError(f"{sidecar_file} does not match the sha256 recorded in {weights.name}")
    sidecar = json.loads(sidecar_bytes)
    if [spec["name"] for spec in sidecar["inputs"]] != list(INPUT_NAMES):
        raise ModelFormatError(f"{sidecar_file}: inputs differ from this code's ({', '.join(INPUT_NAMES)})")
    preprocessor = Preprocessor.from_dict(sidecar["preprocessing"])
    architecture = sidecar["architecture"]
    module = _build(architecture, len(preprocessor.columns), sidecar["hyperparameters"])
    try:
        module.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:  # missing, unexpected or mis-shaped tensors
        raise ModelFormatError(f"{weights}: the weights do not fit the sidecar's architecture ({exc})") from None
    module.eval()
    return HeartDiseaseModel(architecture, module, preprocessor, dict(sidecar["hyperparameters"]))


def metrics_table(result: TrainingResult) -> list[Sequence[str]]:
    """Rows for a console table: architecture, split, n, AUC (95% CI), Brier, slope, intercept."""
    rows: list[Sequence[str]] = [("model", "split", "n", "AUC (95% CI)", "Brier", "cal. slope", "cal. intercept")]
    for name, candidate in result.candidates.items():
        label = f"{name}{' (chosen)' if name == result.chosen else ''}"
        for part in ("validation", "test"):
            m = candidate.metrics[part]
            rows.append((label, part, str(m["n"]), f"{m['auc']:.3f} ({m['auc_ci95'][0]:.3f}-{m['auc_ci95'][1]:.3f})",
                         f"{m['brier']:.3f}", f"{m['calibration_slope']:.2f}", f"{m['calibration_intercept']:.2f}"))
    return rows
