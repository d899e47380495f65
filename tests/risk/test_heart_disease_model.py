"""The heart-disease model: data loading, preprocessing without leakage, metrics, training on the
real Cleveland file, explanations, the file format, the training command and predictions.

Training runs once per module (a few seconds); database tests register that result or run the
command with one cross-validation repeat.
"""

from __future__ import annotations

import io
import math
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import IntegrityError, transaction

from cdss.jobs import registry as jobs_registry
from cdss.model_registry import ModelFileTampered, model_version_active, model_version_register
from cdss.models import ModelVersion
from risk import predict
from risk.models_ml import heart_disease as hd
from risk.models_ml import metrics
from risk.models_ml.attribution import integrated_gradients
from risk.models_ml.splits import stratified_split
from tests.conftest import require_data

pytestmark = pytest.mark.needs_data

# Row 1 of processed.cleveland.data (num 0).
PATIENT = {"age": 63, "sex": 1, "cp": 1, "trestbps": 145, "chol": 233, "fbs": 1, "restecg": 2, "thalach": 150,
           "exang": 0, "oldpeak": 2.3, "slope": 3, "ca": 0, "thal": 6}


@pytest.fixture(scope="module")
def dataset() -> hd.Dataset:
    return hd.load_cleveland(require_data("risk/cleveland/processed.cleveland.data"))


@pytest.fixture(scope="module")
def trained(dataset) -> hd.TrainingResult:
    return hd.train(dataset, seed=42)


def complete_rows(dataset, rows):
    return [r for r in rows if not np.isnan(dataset.x[r]).any()]


def as_inputs(dataset, row) -> dict[str, float]:
    return dict(zip(hd.INPUT_NAMES, dataset.x[row].tolist(), strict=True))


# --------------------------------------------------------------------------------------------
# Data


def test_the_loader_reads_both_files_alike_and_keeps_missing_values_missing(dataset):
    with_header = hd.load_cleveland(require_data("risk/cleveland/cleveland_with_header.csv"))
    # shared/data/README.md: 303 rows, 164 without and 139 with disease; ca missing in 4, thal in 2.
    assert dataset.n == 303 and int(dataset.y.sum()) == 139
    assert int(np.isnan(dataset.x[:, hd.INPUT_NAMES.index("ca")]).sum()) == 4
    assert int(np.isnan(dataset.x[:, hd.INPUT_NAMES.index("thal")]).sum()) == 2
    assert np.array_equal(dataset.x, with_header.x, equal_nan=True)
    assert np.array_equal(dataset.y, with_header.y)
    assert len(dataset.sha256) == 64


def test_the_loader_refuses_an_undocumented_code_and_names_the_line(tmp_path):
    path = tmp_path / "bad.data"
    path.write_text("63.0,1.0,1.0,145.0,233.0,1.0,2.0,150.0,0.0,2.3,3.0,0.0,6.0,0\n"
                    "67.0,1.0,5.0,160.0,286.0,0.0,2.0,108.0,1.0,1.5,2.0,3.0,3.0,2\n")
    with pytest.raises(hd.DataError, match=r"bad.data:2: cp must be one of 1, 2, 3, 4"):
        hd.load_cleveland(path)


def test_find_data_says_what_it_looked_for(tmp_path):
    with pytest.raises(hd.DataError, match=r"processed\.cleveland\.data"):
        hd.find_data(tmp_path)


# --------------------------------------------------------------------------------------------
# Preprocessing


def test_categorical_inputs_are_one_hot_over_their_documented_codes(dataset, trained):
    pre = trained.model.preprocessor
    names = [c.name for c in pre.columns]
    for code_columns in (["cp=1", "cp=2", "cp=3", "cp=4"], ["restecg=0", "restecg=1", "restecg=2"],
                         ["slope=1", "slope=2", "slope=3"], ["thal=3", "thal=6", "thal=7"]):
        assert set(code_columns) <= set(names)
    assert len(names) == 22  # 5 continuous + ca + 3 binary + 4 + 3 + 3 + 3 indicators
    z = pre.transform(dataset.x)
    raw = z * np.array([c.scale for c in pre.columns]) + np.array([c.mean for c in pre.columns])
    for name in ("cp", "restecg", "slope", "thal"):
        block = [j for j, c in enumerate(pre.columns) if c.input == name]
        assert np.allclose(raw[:, block].sum(axis=1), 1.0)  # exactly one code per patient
        assert set(np.unique(np.round(raw[:, block], 12))) == {0.0, 1.0}
    # Row 1: cp 1, thal 6.
    assert raw[0, names.index("cp=1")] == pytest.approx(1.0) and raw[0, names.index("thal=6")] == pytest.approx(1.0)


def test_imputation_and_scaling_come_from_the_training_rows_only(dataset, trained):
    split = trained.split
    pre = trained.model.preprocessor
    assert pre.n_train == split.train.size
    assert pre.as_dict() == hd.fit_preprocessor(dataset.x[split.train]).as_dict()
    # Fitting on all rows would give other statistics: the comparison above can tell them apart.
    assert pre.as_dict() != hd.fit_preprocessor(dataset.x).as_dict()

    # Whatever the validation and test rows hold, the fitted preprocessing is the same.
    scrambled = dataset.x.copy()
    held_out = np.concatenate([split.validation, split.test])
    scrambled[held_out] = np.nan
    scrambled[held_out, hd.INPUT_NAMES.index("age")] = 99.0
    assert hd.fit_preprocessor(scrambled[split.train]).as_dict() == pre.as_dict()

    ca, thal = hd.INPUT_NAMES.index("ca"), hd.INPUT_NAMES.index("thal")
    train_ca = dataset.x[split.train, ca]
    codes, counts = np.unique(train_ca[~np.isnan(train_ca)], return_counts=True)
    assert pre.imputation["ca"] == codes[np.argmax(counts)]
    train_thal = dataset.x[split.train, thal]
    codes, counts = np.unique(train_thal[~np.isnan(train_thal)], return_counts=True)
    assert pre.imputation["thal"] == codes[np.argmax(counts)]

    # A held-out row with a missing ca is encoded with the training mode.
    missing_ca = [r for r in held_out if np.isnan(dataset.x[r, ca])]
    if missing_ca:
        row = dataset.x[missing_ca[:1]].copy()
        filled = row.copy()
        filled[0, ca] = pre.imputation["ca"]
        if np.isnan(filled[0, thal]):
            filled[0, thal] = pre.imputation["thal"]
        assert np.array_equal(pre.transform(row), pre.encode_raw(filled))


def test_continuous_inputs_are_standardised_with_training_statistics(dataset, trained):
    pre = trained.model.preprocessor
    z = pre.transform(dataset.x[trained.split.train])
    for j, column in enumerate(pre.columns):
        assert z[:, j].mean() == pytest.approx(0.0, abs=1e-9)  # every column is centred on the training mean
        if column.category is None and column.input not in ("sex", "fbs", "exang"):
            assert z[:, j].std() == pytest.approx(1.0)


def test_the_split_is_stratified_disjoint_and_reproducible(dataset, trained):
    split = trained.split
    parts = [split.train, split.validation, split.test]
    assert sum(p.size for p in parts) == dataset.n
    assert len(np.unique(np.concatenate(parts))) == dataset.n
    assert (split.train.size, split.validation.size, split.test.size) == (181, 61, 61)
    for part in parts:
        assert dataset.y[part].mean() == pytest.approx(dataset.y.mean(), abs=0.02)
    again = stratified_split(dataset.y, seed=42)
    assert all(np.array_equal(a, b) for a, b in zip(parts, (again.train, again.validation, again.test), strict=True))


# --------------------------------------------------------------------------------------------
# Metrics (checked against brute-force definitions)


def brute_force_delong(y, s):
    pos, neg = s[y == 1], s[y == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    return psi.mean(), math.sqrt(v10.var(ddof=1) / pos.size + v01.var(ddof=1) / neg.size)


def test_auc_and_its_delong_error_match_the_definitions_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.normal(y * 0.8, 1.0), 1)  # rounding makes ties
    value, se, low, high = metrics.auc_delong(y, s)
    expected_auc, expected_se = brute_force_delong(y, s)
    assert value == pytest.approx(expected_auc, abs=1e-12)
    assert se == pytest.approx(expected_se, abs=1e-12)
    assert low == pytest.approx(value - metrics.Z_95 * se) and high == pytest.approx(value + metrics.Z_95 * se)
    assert metrics.auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert metrics.auc([0, 1], [0.5, 0.5]) == 0.5


def test_brier_score_and_calibration_of_a_calibrated_model():
    assert metrics.brier_score([0, 1, 1], [0.2, 0.6, 1.0]) == pytest.approx((0.04 + 0.16 + 0.0) / 3)
    rng = np.random.default_rng(1)
    p = rng.uniform(0.05, 0.95, 20000)
    y = (rng.uniform(size=p.size) < p).astype(int)
    figures = metrics.calibration_slope_intercept(y, p)
    assert figures["calibration_slope"] == pytest.approx(1.0, abs=0.06)
    assert figures["calibration_intercept"] == pytest.approx(0.0, abs=0.06)
    # An over-confident model (logits doubled) has a slope near 1/2.
    doubled = 1 / (1 + np.exp(-2 * metrics.logit(p)))
    assert metrics.calibration_slope_intercept(y, doubled)["calibration_slope"] == pytest.approx(0.5, abs=0.04)
    bins = metrics.calibration_bins(y, p, n_bins=10)
    assert sum(b["n"] for b in bins) == p.size
    assert all(b["observed_low"] <= b["observed"] <= b["observed_high"] for b in bins)


# --------------------------------------------------------------------------------------------
# Training on the real file


def test_training_on_cleveland_reaches_the_expected_figures(trained):
    chosen = trained.candidates[trained.chosen].metrics
    assert chosen["test"]["auc"] > 0.8
    assert chosen["test"]["brier"] < 0.2
    assert chosen["test"]["n"] == 61
    for candidate in trained.candidates.values():
        assert candidate.metrics["test"]["auc"] > 0.8 and candidate.metrics["test"]["brier"] < 0.2
        assert candidate.metrics["test"]["auc_ci95"][0] < candidate.metrics["test"]["auc"]
    # Published 10x10-fold cross-validated AUC of logistic regression on these data: about 0.91
    # (shared/data/README.md).
    assert trained.cv["repeats"] == 10 and trained.cv["folds"] == 10
    assert 0.87 < trained.cv["auc_mean"] < 0.95


def test_the_mlp_is_kept_only_when_clearly_better_calibrated(trained):
    low, high = trained.candidates["mlp"].training["validation_brier_difference_vs_logistic_95ci"]
    assert low <= high
    assert trained.chosen == ("mlp" if high < 0 else "logistic")
    brier = {name: c.metrics["validation"]["brier"] for name, c in trained.candidates.items()}
    if trained.chosen == "mlp":
        assert brier["mlp"] < brier["logistic"]
    figures = trained.metrics_json()
    assert figures["chosen"] == trained.chosen
    assert figures["test"] == trained.candidates[trained.chosen].metrics["test"]
    assert set(figures["candidates"]) == {"logistic", "mlp"}


def test_the_paired_bootstrap_interval_sees_a_clear_difference_and_a_tie():
    y = np.array([0, 1] * 50)
    good = np.where(y == 1, 0.9, 0.1)
    bad = np.where(y == 1, 0.6, 0.4)
    low, high = hd.paired_brier_difference_ci(y, good, bad, seed=1)
    assert high < 0  # "good" is better everywhere
    low, high = hd.paired_brier_difference_ci(y, good, good, seed=1)
    assert low == high == 0.0


# --------------------------------------------------------------------------------------------
# Explanations


def test_linear_contributions_sum_exactly_to_the_logit(dataset, trained):
    model = trained.candidates["logistic"].model
    for row in complete_rows(dataset, trained.split.test)[:20]:
        explanation = model.explain(as_inputs(dataset, row))
        assert explanation.completeness_gap == 0.0
        assert explanation.baseline_logit + sum(explanation.contributions.values()) == pytest.approx(
            explanation.logit, abs=1e-9)
        expected_logit = metrics.logit(model.predict_proba(dataset.x[[row]]))[0]
        assert explanation.logit == pytest.approx(expected_logit, abs=1e-9)
        assert set(explanation.contributions) == set(hd.INPUT_NAMES)


def test_integrated_gradients_are_complete_for_the_mlp(dataset, trained):
    model = trained.candidates["mlp"].model
    for row in complete_rows(dataset, trained.split.test):
        explanation = model.explain(as_inputs(dataset, row))
        difference = explanation.logit - explanation.baseline_logit
        total = sum(explanation.contributions.values())
        # Completeness (Sundararajan et al. 2017) up to the error of a 50-step trapezoidal rule.
        assert total == pytest.approx(difference, abs=0.03 + 0.02 * abs(difference))
        assert explanation.completeness_gap == pytest.approx(total - difference, abs=1e-9)
        assert explanation.probability == pytest.approx(model.predict_proba(dataset.x[[row]])[0], abs=1e-12)


def test_integrated_gradients_of_a_linear_function_are_exact():
    w = torch.tensor([0.5, -2.0, 3.0], dtype=torch.float64)
    x = torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64)
    baseline = torch.tensor([0.5, 0.0, 0.0], dtype=torch.float64)
    result = integrated_gradients(lambda z: z @ w + 1.0, x, baseline, steps=7)
    assert torch.allclose(result.values, w * (x - baseline))
    assert result.completeness_gap == pytest.approx(0.0, abs=1e-12)


def test_the_model_needs_every_input_and_valid_codes(trained):
    model = trained.model
    with pytest.raises(hd.InputProblems) as caught:
        model.explain({**PATIENT, "ca": None, "cp": 5, "chol": "high"})
    assert caught.value.missing == ["ca"]
    assert set(caught.value.problems) == {"cp", "chol"}
    absent = {k: v for k, v in PATIENT.items() if k != "thal"}
    assert model.check_inputs(absent)[1] == ["thal"]
    assert model.explain({**PATIENT, "age": 25}).warnings  # outside the training range: said, not refused


# --------------------------------------------------------------------------------------------
# Files


@pytest.mark.parametrize("architecture", ["logistic", "mlp"])
def test_a_saved_model_reloads_to_identical_predictions(dataset, trained, tmp_path, architecture):
    model = trained.candidates[architecture].model
    saved = hd.save_model(model, tmp_path / "model.pt", dataset_sha256=dataset.sha256)
    assert saved.sidecar.exists() and saved.sha256 == hd.file_sha256(saved.weights)
    payload = torch.load(saved.weights, weights_only=True)  # tensors and plain containers only
    assert set(payload) == {"format", "state_dict", "sidecar_sha256"}
    reloaded = hd.load_model(saved.weights)
    assert reloaded.architecture == architecture
    assert np.array_equal(reloaded.predict_proba(dataset.x), model.predict_proba(dataset.x))
    assert reloaded.explain(PATIENT) == model.explain(PATIENT)


def test_a_sidecar_changed_after_saving_is_refused(trained, tmp_path):
    saved = hd.save_model(trained.model, tmp_path / "model.pt")
    saved.sidecar.write_text(saved.sidecar.read_text().replace('"n_train": 181', '"n_train": 182'))
    with pytest.raises(hd.ModelFormatError, match="does not match the sha256"):
        hd.load_model(saved.weights)


# --------------------------------------------------------------------------------------------
# Registry, command and predictions (database)


@pytest.fixture
def model_dir(settings, tmp_path, monkeypatch):
    settings.CDSS_MODEL_DIR = tmp_path / "models"
    # Versions restart at "<today>-1" in every test database: start with nothing resident.
    monkeypatch.setattr(jobs_registry, "_RESIDENT", {})
    return settings.CDSS_MODEL_DIR


def register(trained, model_dir, architecture="logistic", activate=True) -> ModelVersion:
    model = trained.candidates[architecture].model
    relative = f"heart_disease/{uuid.uuid4().hex}.pt"
    saved = hd.save_model(model, Path(model_dir) / relative)
    return model_version_register(
        name="heart_disease", kind="risk", architecture=architecture, dataset=trained.dataset.describe(),
        split=trained.split_text(), features=trained.features_json(), metrics=trained.metrics_json(),
        calibration=trained.calibration_json(), file_path=relative, file_sha256=saved.sha256,
        training_seconds=trained.seconds, activate=activate,
    )


@pytest.mark.django_db
def test_the_command_registers_and_activates_and_a_second_run_replaces_it(model_dir):
    out = io.StringIO()
    call_command("train_risk_model", "heart_disease", "--cv-repeats", "1", stdout=out)
    text = out.getvalue()
    assert "logistic" in text and "mlp" in text and "validation" in text and "test" in text
    assert "CV AUC" in text and "Registered heart_disease" in text
    first = ModelVersion.objects.get()
    assert first.active and first.kind == "risk" and first.architecture in ("logistic", "mlp")
    assert first.metrics["test"]["auc"] > 0.8 and first.metrics["test"]["brier"] < 0.2
    assert first.metrics["test"]["n"] == 61 and 0.4 < first.metrics["test"]["prevalence"] < 0.5
    assert "sha256" in first.dataset and first.calibration["bins"]["test"]
    assert (Path(model_dir) / first.file_path).is_file()
    assert (Path(model_dir) / first.file_path).with_suffix(".json").is_file()

    call_command("train_risk_model", "heart_disease", "--cv-repeats", "1", "--seed", "7", stdout=io.StringIO())
    first.refresh_from_db()
    second = ModelVersion.objects.exclude(pk=first.pk).get()
    assert not first.active and second.active
    assert model_version_active("heart_disease") == second
    assert second.version.endswith("-2") and "seed 7" in second.split

    call_command("train_risk_model", "heart_disease", "--cv-repeats", "1", "--no-activate", stdout=io.StringIO())
    assert model_version_active("heart_disease") == second
    assert ModelVersion.objects.count() == 3


@pytest.mark.django_db
def test_the_command_says_where_the_data_should_be(model_dir, settings, tmp_path):
    settings.CDSS_DATA_DIR = tmp_path / "nowhere"
    with pytest.raises(CommandError, match=r"no Cleveland data in .*nowhere/risk/cleveland.*CDSS_DATA_DIR"):
        call_command("train_risk_model", "heart_disease", stdout=io.StringIO())
    assert not ModelVersion.objects.exists()


@pytest.mark.django_db
def test_the_database_refuses_two_active_versions_of_one_name(trained, model_dir):
    active = register(trained, model_dir)
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelVersion.objects.create(
            name="heart_disease", version="manual-1", kind="risk", architecture="logistic", dataset="-", split="-",
            file_path=active.file_path, file_sha256=active.file_sha256, trained_at=active.trained_at, active=True,
        )
    assert ModelVersion.objects.filter(name="heart_disease", active=True).count() == 1


@pytest.mark.django_db
def test_predictions_use_the_active_version_and_list_missing_inputs(trained, model_dir, monkeypatch):
    with pytest.raises(predict.ModelNotAvailable, match="train_risk_model heart_disease"):
        predict.heart_disease_predict(PATIENT)
    mv = register(trained, model_dir, architecture="logistic")
    loads = []
    real_load = hd.load_model
    monkeypatch.setattr(hd, "load_model", lambda path: loads.append(path) or real_load(path))

    answer = predict.heart_disease_predict(PATIENT)
    expected = trained.candidates["logistic"].model.explain(PATIENT)
    assert answer["status"] == "computed" and answer["version"] == mv.version
    assert answer["probability"] == pytest.approx(expected.probability, abs=1e-12)
    assert answer["contributions"] == pytest.approx(expected.contributions, abs=1e-12)
    assert answer["baseline_logit"] + sum(answer["contributions"].values()) == pytest.approx(answer["logit"])

    missing = predict.heart_disease_predict({k: v for k, v in PATIENT.items() if k not in ("ca", "thal")})
    assert missing["status"] == "missing-inputs" and missing["missing"] == ["ca", "thal"]
    assert missing["probability"] is None and missing["contributions"] == {}
    invalid = predict.heart_disease_predict({**PATIENT, "thal": 4})
    assert invalid["status"] == "invalid-inputs" and set(invalid["problems"]) == {"thal"}
    assert len(loads) == 1  # loaded once per process and version

    newer = register(trained, model_dir, architecture="mlp")
    assert predict.heart_disease_predict(PATIENT)["version"] == newer.version
    assert len(loads) == 2


@pytest.mark.django_db
def test_a_tampered_model_file_is_refused_by_hash(trained, model_dir):
    mv = register(trained, model_dir)
    path = Path(model_dir) / mv.file_path
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ModelFileTampered, match="sha256"):
        predict.heart_disease_predict(PATIENT)
