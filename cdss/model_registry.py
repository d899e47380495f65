"""The model registry: trained model files, what they were measured at, and which one is active.

Every write goes through ``model_version_register`` or ``model_version_activate`` (atomic, with
an audit row); predictions find their model with ``model_version_active`` and check its file
with ``model_file_verify`` before loading it. Files live under ``settings.CDSS_MODEL_DIR``; the
registry stores their path relative to it, so the folder can move between machines.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path, PurePosixPath
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from cdss.hashing import file_sha256

from .audit import audit_record
from .models import AuditEvent, ModelVersion

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ModelFileError(Exception):
    """A registered model's file cannot be used."""


class ModelFileMissing(ModelFileError):
    pass


class ModelFileTampered(ModelFileError):
    pass


def model_dir() -> Path:
    return Path(settings.CDSS_MODEL_DIR)


def _checked_relative(file_path: str) -> str:
    relative = PurePosixPath(file_path)
    if not file_path or relative.is_absolute() or ".." in relative.parts or "\\" in file_path:
        raise ModelFileError(f"model file path {file_path!r} must be relative to CDSS_MODEL_DIR, without '..'")
    return str(relative)


def model_file_path(mv: ModelVersion) -> Path:
    return model_dir() / _checked_relative(mv.file_path)


def model_file_verify(mv: ModelVersion) -> Path:
    """The model's file, after checking that its sha256 is the registered one."""
    path = model_file_path(mv)
    if not path.is_file():
        raise ModelFileMissing(f"model {mv.name} {mv.version}: {path} does not exist (CDSS_MODEL_DIR is {model_dir()})")
    digest = file_sha256(path)
    if digest != mv.file_sha256:
        raise ModelFileTampered(
            f"model {mv.name} {mv.version}: {path} has sha256 {digest}, but {mv.file_sha256} was registered; "
            "the file changed after registration and will not be loaded (restore it or train a new version)"
        )
    return path


def model_version_active(name: str) -> ModelVersion | None:
    return ModelVersion.objects.filter(name=name, active=True).first()


def _next_version(name: str, day: dt.date) -> str:
    prefix = f"{day:%Y.%m.%d}-"
    taken = ModelVersion.objects.filter(name=name, version__startswith=prefix).values_list("version", flat=True)
    numbers = [int(v[len(prefix):]) for v in taken if v[len(prefix):].isdigit()]
    return f"{prefix}{max(numbers, default=0) + 1}"


def _activate_locked(mv: ModelVersion, *, user: Any, verify: bool = True) -> None:
    """Makes ``mv`` the active version of its name; the caller holds the name's row locks."""
    if verify:
        model_file_verify(mv)  # never activate a file that predictions would refuse
    previous = list(
        ModelVersion.objects.filter(name=mv.name, active=True).exclude(pk=mv.pk).values_list("version", flat=True)
    )
    # Deactivate first: the partial unique constraint is checked statement by statement.
    ModelVersion.objects.filter(name=mv.name, active=True).exclude(pk=mv.pk).update(active=False)
    ModelVersion.objects.filter(pk=mv.pk).update(active=True)
    mv.active = True
    replaced = f" (replaces {', '.join(previous)})" if previous else ""
    audit_record(user=user, action=AuditEvent.Action.UPDATE, target="model-registry",
                 detail=f"activated {mv.name} {mv.version}{replaced}")


def _lock_name(name: str) -> None:
    # Serialises registrations and activations of one name; the unique constraints catch the
    # race on the very first version, when there is no row to lock yet.
    list(ModelVersion.objects.select_for_update().filter(name=name).values_list("pk", flat=True))


def model_version_register(
    *,
    name: str,
    kind: str,
    architecture: str,
    dataset: str,
    split: str,
    file_path: str,
    file_sha256: str,
    features: list[Any] | None = None,
    metrics: dict[str, Any] | None = None,
    calibration: dict[str, Any] | None = None,
    trained_at: dt.datetime | None = None,
    training_seconds: float | None = None,
    notes: str = "",
    version: str | None = None,
    activate: bool = True,
    user: Any = None,
) -> ModelVersion:
    """Records a trained model file (which must exist under CDSS_MODEL_DIR with that sha256); with
    ``activate`` it replaces the active version of ``name``. ``version`` defaults to the training
    date and the next sequence number of that day (2026.11.25-1, -2, ...)."""
    if kind not in ModelVersion.Kind.values:
        raise ValueError(f"kind must be one of {', '.join(ModelVersion.Kind.values)}, not {kind!r}")
    if not _SHA256.match(file_sha256):
        raise ValueError("file_sha256 must be 64 lowercase hex digits")
    relative = _checked_relative(file_path)
    trained_at = trained_at or timezone.now()
    with transaction.atomic():
        _lock_name(name)
        mv = ModelVersion(
            name=name,
            version=version or _next_version(name, timezone.localdate(trained_at)),
            kind=kind,
            architecture=architecture,
            dataset=dataset,
            split=split,
            features=features or [],
            metrics=metrics or {},
            calibration=calibration or {},
            file_path=relative,
            file_sha256=file_sha256,
            trained_at=trained_at,
            training_seconds=training_seconds,
            notes=notes,
            active=False,
        )
        model_file_verify(mv)  # the file exists and is the one that was measured
        mv.save()
        audit_record(user=user, action=AuditEvent.Action.CREATE, target="model-registry",
                     detail=f"registered {mv.name} {mv.version} ({mv.architecture})")
        if activate:
            _activate_locked(mv, user=user, verify=False)
    return mv


def model_version_activate(mv: ModelVersion, *, user: Any = None) -> ModelVersion:
    """Makes ``mv`` the one active version of its name (its file must verify)."""
    with transaction.atomic():
        _lock_name(mv.name)
        _activate_locked(mv, user=user)
    return mv
