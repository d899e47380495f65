"""Predictions from the active registered model (the Django side of ``risk.models_ml``).

The model file is checked against its registered sha256 and loaded once per process. A model is
applied only when every input it was trained on is given: nothing is imputed at prediction time
(the training-time imputation of ``ca``/``thal`` applies to the training and evaluation rows only).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from cdss.jobs.registry import load_once
from cdss.model_registry import model_file_verify, model_version_active
from cdss.models import ModelVersion

if TYPE_CHECKING:
    from risk.models_ml.heart_disease import HeartDiseaseModel

HEART_DISEASE = "heart_disease"


class ModelNotAvailable(LookupError):
    pass


def heart_disease_model(mv: ModelVersion) -> HeartDiseaseModel:
    """The loaded model of ``mv``, resident for the life of the process after the first call."""

    def loader() -> HeartDiseaseModel:
        from risk.models_ml.heart_disease import load_model  # torch only where a model is used

        return load_model(model_file_verify(mv))

    model: HeartDiseaseModel = load_once(f"model:{mv.name}:{mv.version}", loader)
    return model


def heart_disease_predict(features: Mapping[str, Any], *, mv: ModelVersion | None = None) -> dict[str, Any]:
    """Probability of angiographic coronary disease (``num > 0``) with per-input contributions.

    ``features`` holds the 13 Cleveland inputs in their documented codes and units (see
    ``risk.models_ml.heart_disease.INPUTS``). The answer's ``status`` is ``computed``,
    ``missing-inputs`` (``missing`` lists them) or ``invalid-inputs`` (``problems`` per input).
    Raises ``ModelNotAvailable`` when no version is active, and ``cdss.model_registry.ModelFileError``
    when the active version's file is missing or was altered.
    """
    mv = mv or model_version_active(HEART_DISEASE)  # a batch passes the version it looked up once
    if mv is None:
        raise ModelNotAvailable(f"no active {HEART_DISEASE} model: run `manage.py train_risk_model {HEART_DISEASE}`")
    model = heart_disease_model(mv)
    values, missing, problems = model.check_inputs(features)
    answer: dict[str, Any] = {
        "model": mv.name,
        "version": mv.version,
        "model_external_id": str(mv.external_id),
        "architecture": mv.architecture,
        "inputs": values,
        "missing": missing,
        "problems": problems,
    }
    if missing or problems:
        status = "missing-inputs" if missing else "invalid-inputs"
        return {**answer, "status": status, "probability": None, "contributions": {}}
    return {**answer, "status": "computed", **model.explain(values).as_dict()}
