"""The model registry service and its admin, with plain files standing in for model weights."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pytest
from django.urls import reverse

from cdss.model_registry import (
    ModelFileError,
    ModelFileMissing,
    ModelFileTampered,
    model_file_path,
    model_file_verify,
    model_version_activate,
    model_version_active,
    model_version_register,
)
from cdss.models import AuditEvent, ModelVersion

pytestmark = pytest.mark.django_db

METRICS = {
    "test": {"n": 61, "prevalence": 0.46, "auc": 0.912, "auc_ci95": [0.84, 0.98], "brier": 0.121,
             "calibration_slope": 0.9, "calibration_intercept": -0.1},
    "validation": {"n": 61, "prevalence": 0.46, "auc": 0.95, "auc_ci95": [0.9, 1.0], "brier": 0.08,
                   "calibration_slope": 1.2, "calibration_intercept": 0.1},
}
CALIBRATION = {"bins": {"test": [{"n": 12, "predicted": 0.1, "observed": 0.08, "observed_low": 0.01,
                                  "observed_high": 0.35},
                                 {"n": 12, "predicted": 0.8, "observed": 0.83, "observed_low": 0.55,
                                  "observed_high": 0.95}]},
               "method": "equal-count bins"}


@pytest.fixture
def model_dir(settings, tmp_path):
    settings.CDSS_MODEL_DIR = tmp_path
    return tmp_path


def model_file(model_dir: Path, content: bytes = b"weights") -> tuple[str, str]:
    relative = f"demo/{uuid.uuid4().hex}.bin"
    path = model_dir / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return relative, hashlib.sha256(content).hexdigest()


def register(model_dir: Path, name: str = "demo", **kwargs) -> ModelVersion:
    relative, digest = model_file(model_dir, kwargs.pop("content", uuid.uuid4().bytes))
    return model_version_register(
        name=name, kind="risk", architecture="logistic", dataset="demo data, sha256 0", split="60/20/20",
        file_path=relative, file_sha256=digest, metrics=METRICS, calibration=CALIBRATION, **kwargs,
    )


def test_registering_activates_and_replaces_the_previous_version(model_dir):
    first = register(model_dir)
    assert first.active and model_version_active("demo") == first
    second = register(model_dir)
    first.refresh_from_db()
    assert not first.active and second.active
    assert model_version_active("demo") == second
    # Versions: the training date, then a sequence number per name.
    assert first.version.endswith("-1") and second.version.endswith("-2")
    assert first.version.split("-")[0] == second.version.split("-")[0]
    details = list(AuditEvent.objects.filter(target="model-registry").order_by("pk").values_list("detail", flat=True))
    assert details[-1] == f"activated demo {second.version} (replaces {first.version})"


def test_registering_without_activation_keeps_the_active_version(model_dir):
    first = register(model_dir)
    candidate = register(model_dir, activate=False)
    assert not candidate.active and model_version_active("demo") == first
    model_version_activate(candidate)
    first.refresh_from_db()
    assert not first.active and model_version_active("demo") == candidate
    model_version_activate(first)  # and back
    assert model_version_active("demo") == first


def test_each_name_has_its_own_active_version(model_dir):
    a = register(model_dir, name="demo")
    b = register(model_dir, name="other")
    assert model_version_active("demo") == a and model_version_active("other") == b
    assert b.version.endswith("-1")
    assert model_version_active("unknown") is None


def test_the_file_is_verified_by_its_sha256(model_dir):
    mv = register(model_dir)
    assert model_file_verify(mv) == model_file_path(mv) == model_dir / mv.file_path
    (model_dir / mv.file_path).write_bytes(b"something else")
    with pytest.raises(ModelFileTampered, match=f"{mv.file_sha256} was registered"):
        model_file_verify(mv)
    (model_dir / mv.file_path).unlink()
    with pytest.raises(ModelFileMissing, match="does not exist"):
        model_file_verify(mv)


def test_a_tampered_file_is_never_activated(model_dir):
    good = register(model_dir)
    bad = register(model_dir, activate=False)
    (model_dir / bad.file_path).write_bytes(b"changed")
    with pytest.raises(ModelFileTampered):
        model_version_activate(bad)
    bad.refresh_from_db()
    assert not bad.active and model_version_active("demo") == good


def test_registration_refuses_a_file_that_is_not_the_one_measured(model_dir):
    relative, _ = model_file(model_dir)
    with pytest.raises(ModelFileTampered):
        model_version_register(name="demo", kind="risk", architecture="mlp", dataset="-", split="-",
                               file_path=relative, file_sha256="0" * 64)
    with pytest.raises(ModelFileMissing):
        model_version_register(name="demo", kind="risk", architecture="mlp", dataset="-", split="-",
                               file_path="demo/absent.bin", file_sha256="0" * 64)
    assert not ModelVersion.objects.exists()


@pytest.mark.parametrize("file_path", ["/etc/passwd", "../outside.bin", "demo/../../outside.bin", ""])
def test_paths_outside_the_model_folder_are_refused(model_dir, file_path):
    with pytest.raises(ModelFileError, match="relative to CDSS_MODEL_DIR"):
        model_version_register(name="demo", kind="risk", architecture="mlp", dataset="-", split="-",
                               file_path=file_path, file_sha256="0" * 64)


def test_an_unknown_kind_or_malformed_hash_is_refused(model_dir):
    relative, digest = model_file(model_dir)
    with pytest.raises(ValueError, match="kind"):
        model_version_register(name="demo", kind="genomics", architecture="mlp", dataset="-", split="-",
                               file_path=relative, file_sha256=digest)
    with pytest.raises(ValueError, match="64 lowercase hex"):
        model_version_register(name="demo", kind="risk", architecture="mlp", dataset="-", split="-",
                               file_path=relative, file_sha256=digest.upper())


# --------------------------------------------------------------------------------------------
# Admin


def test_the_admin_list_shows_the_key_test_figures(admin_client, model_dir):
    register(model_dir)
    response = admin_client.get(reverse("admin:cdss_modelversion_changelist"))
    assert response.status_code == 200
    assert b"0.912 (0.840-0.980)" in response.content and b"0.121" in response.content


def test_the_admin_page_draws_the_calibration_plot_from_json(admin_client, model_dir):
    mv = register(model_dir)
    response = admin_client.get(reverse("admin:cdss_modelversion_change", args=[mv.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="calibration-data"' in html and "vendor/plotly/plotly.min.js" in html
    assert response.context["calibration_plot"]["traces"][0]["observed"] == [0.08, 0.83]
    assert "calibration slope" in html  # the metrics table
    assert 'name="_save"' not in html  # read-only


def test_the_admin_activate_action_switches_versions(admin_client, model_dir):
    first = register(model_dir)
    second = register(model_dir, activate=False)
    url = reverse("admin:cdss_modelversion_changelist")
    response = admin_client.post(url, {"action": "activate", "_selected_action": [second.pk]}, follow=True)
    assert response.status_code == 200
    assert model_version_active("demo") == second
    first.refresh_from_db()
    assert not first.active

    response = admin_client.post(url, {"action": "activate", "_selected_action": [first.pk, second.pk]},
                                 follow=True)
    assert b"at most one version per model name" in response.content
    assert model_version_active("demo") == second
