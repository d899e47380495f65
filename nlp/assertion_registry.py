"""The assertion classifier in the model registry (``cdss.model_registry``), name ``nlp_assertion``.

Registering an artefact (``assertion_artefact_register``: ``manage.py nlp_assertion_model
register`` for the committed one, ``train_assertion_model`` for a new one) copies its head json and
npz into ``CDSS_MODEL_DIR/nlp/assertion-<first 8 hex of the json's sha256>/`` and records a
``ModelVersion`` of kind ``nlp``: the data file and its sha256, the nested cross-validation, the
per-flag figures, and the json's path and sha256. The json records the npz's sha256, so checking the
json against the registry and the npz against the json covers both files. The same json registered
again is a no-op.

``assertion_head_current`` is the head extraction uses inside Django (the ``nlp`` job, the note
pages): the active version, its files checked once per process and version (a changed file raises
``ModelFileTampered``, never a silent fallback), or the shipped artefact while no version is active.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from django.db import transaction

from cdss.model_registry import (
    ModelFileMissing,
    ModelFileTampered,
    model_dir,
    model_file_path,
    model_file_verify,
    model_version_active,
    model_version_register,
)
from cdss.models import ModelVersion
from nlp.assertion.model import FORMAT, AssertionHead, AssertionModelError, head_label, sha256_file, shipped_head

MODEL_NAME = "nlp_assertion"
ARCHITECTURE = "MiniLM-L6 features + per-flag linear heads"
FOLDER = "nlp"


@dataclass(frozen=True)
class Registration:
    model_version: ModelVersion
    created: bool  # False: this json was registered already (nothing written)

    def describe(self, what: str) -> str:
        """One line for a command's output; ``what`` names the artefact for the no-op case."""
        mv = self.model_version
        state = "active" if mv.active else "not active"
        if self.created:
            return f"registered {mv.name} {mv.version} ({state}): {mv.file_path}"
        return f"{what} is already registered as {mv.name} {mv.version} ({state}); nothing changed"


def _read_artefact(head_json: Path) -> dict[str, Any]:
    """The artefact's metadata, after checking its npz against the sha256 it records."""
    npz = head_json.with_suffix(".npz")
    if not head_json.is_file() or not npz.is_file():
        raise AssertionModelError(f"assertion head {head_json} (and its .npz) not found")
    meta: dict[str, Any] = json.loads(head_json.read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT:
        raise AssertionModelError(f"{head_json.name}: format {meta.get('format')!r}, expected {FORMAT}")
    if sha256_file(npz) != meta.get("npz_sha256"):
        raise AssertionModelError(f"{npz} does not have the sha256 {head_json.name} records; it will not be registered")
    try:
        head_label(meta)
    except (KeyError, TypeError, AttributeError) as exc:
        raise AssertionModelError(f"{head_json.name} lacks what its heads need (flags with their mode and "
                                  f"settings, rule features, encoder): {exc!r} missing or malformed") from None
    return meta


def artefact_metrics(meta: dict[str, Any]) -> dict[str, Any]:
    """The json's nested cross-validated figures, per flag: the head chosen, and precision, recall,
    F1 (and counts) of the rules alone and of the rules + classifier."""
    cv = meta.get("cv") or {}
    flags: dict[str, Any] = {}
    evaluated = False
    for flag, spec in meta.get("flags", {}).items():
        entry: dict[str, Any] = {"head": spec.get("label"), "mode": spec.get("mode"), "positives": spec.get("positives")}
        nested = spec.get("nested_cv") or {}
        for stage in ("rules", "combined"):
            counts = nested.get(stage)
            if isinstance(counts, dict):
                evaluated = True
                entry[stage] = {k: counts[k] for k in ("precision", "recall", "f1", "tp", "fp", "fn") if k in counts}
        if nested.get("combined_folds_f1"):
            entry["combined_folds_f1"] = nested["combined_folds_f1"]
        flags[flag] = entry
    how = (f"nested grouped {cv.get('outer_folds')}x{cv.get('inner_folds')}-fold cross-validation, out-of-fold "
           "predictions pooled; rules = ConText alone, combined = rules + classifier"
           if evaluated else "not evaluated (trained with --no-cv)")
    data = meta.get("data", {})
    return {"evaluation": how, "rows": data.get("rows"), "groups": data.get("groups"), "flags": flags}


def _describe(meta: dict[str, Any]) -> dict[str, Any]:
    data, cv = meta.get("data", {}), meta.get("cv", {})
    encoder = meta.get("encoder", {})
    return {
        "dataset": (f"NegEx/ConText dev sentences {data.get('file')} (sha256 {data.get('sha256')}): "
                    f"{data.get('rows')} rows in {data.get('groups')} near-duplicate groups"),
        "split": (f"trained on all {data.get('rows')} rows; figures by nested cross-validation: "
                  f"{cv.get('outer_folds')} outer x {cv.get('inner_folds')} inner folds, grouped by "
                  f"{cv.get('grouping')}, stratified on {cv.get('stratified_on')}; seed {meta.get('seed')}"),
        "features": [{"name": f"all-MiniLM-L6-v2 mean over {part}"} for part in encoder.get("parts", [])]
        + [{"name": name} for name in meta.get("rule_features", [])],
    }


def _copy_checked(source: Path, target: Path, digest: str) -> None:
    """``source`` to ``target`` (written beside it, then renamed); an existing target must hold these bytes."""
    if target.is_file():
        if sha256_file(target) == digest:
            return
        raise ModelFileTampered(f"{target} exists with other content than {source}; it will not be overwritten")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    shutil.copyfile(source, partial)
    os.replace(partial, target)


def assertion_artefact_register(
    head_json: Path,
    *,
    activate: bool = True,
    user: Any = None,
    notes: str = "",
    trained_at: Any = None,
    training_seconds: float | None = None,
) -> Registration:
    """Copies the artefact (``head_json`` and its ``.npz``) under CDSS_MODEL_DIR and registers it as
    a version of ``nlp_assertion`` (made active unless ``activate`` is false). A json registered
    before gives that version back with ``created`` false and changes nothing."""
    head_json = Path(head_json)
    meta = _read_artefact(head_json)
    json_sha = sha256_file(head_json)
    with transaction.atomic():
        # The name's rows are locked, so two registrations of one file cannot both pass the check.
        list(ModelVersion.objects.select_for_update().filter(name=MODEL_NAME).values_list("pk", flat=True))
        existing = ModelVersion.objects.filter(name=MODEL_NAME, file_sha256=json_sha).first()
        if existing is not None:
            return Registration(existing, created=False)
        relative = PurePosixPath(FOLDER) / f"assertion-{json_sha[:8]}" / "assertion-head.json"
        target = model_dir() / relative
        _copy_checked(head_json.with_suffix(".npz"), target.with_suffix(".npz"), meta["npz_sha256"])
        _copy_checked(head_json, target, json_sha)
        described = _describe(meta)
        head = head_label(meta)
        mv = model_version_register(
            name=MODEL_NAME,
            kind=ModelVersion.Kind.NLP,
            architecture=ARCHITECTURE,
            dataset=described["dataset"],
            split=described["split"],
            features=described["features"],
            metrics=artefact_metrics(meta),
            file_path=str(relative),
            file_sha256=json_sha,
            trained_at=trained_at,
            training_seconds=training_seconds,
            notes=" ".join(filter(None, [
                f"Head {head} (part of the extraction pipeline version); weights {relative.with_suffix('.npz')} "
                f"sha256 {meta['npz_sha256']} (recorded in the json); encoder weights sha256 "
                f"{meta.get('encoder', {}).get('weights_sha256')}.", notes])),
            activate=activate,
            user=user,
        )
    return Registration(mv, created=True)


def assertion_head_verify(mv: ModelVersion) -> AssertionHead:
    """The head of a registered version, after checking the json against the registry and the npz
    against the json (``ModelFileMissing`` / ``ModelFileTampered`` otherwise)."""
    path = model_file_verify(mv)
    npz = path.with_suffix(".npz")
    if not npz.is_file():
        raise ModelFileMissing(f"model {mv.name} {mv.version}: {npz} does not exist")
    meta = json.loads(path.read_text(encoding="utf-8"))
    recorded = meta.get("npz_sha256")
    digest = sha256_file(npz)
    if digest != recorded:
        raise ModelFileTampered(
            f"model {mv.name} {mv.version}: {npz} has sha256 {digest}, but its registered {path.name} records "
            f"{recorded}; the weights changed after registration and will not be loaded"
        )
    return AssertionHead(head_json=path, version=head_label(meta), source="registry",
                         registry_version=mv.version)


_lock = threading.Lock()
_cache: dict[str, Any] = {}


def assertion_head_current() -> AssertionHead:
    """The head extraction uses now: the active ``nlp_assertion`` version (checked once per process,
    version and file location: another ``CDSS_MODEL_DIR`` is checked again; one query when nothing
    changed), else the shipped artefact."""
    mv = model_version_active(MODEL_NAME)
    if mv is None:
        return shipped_head()
    key = (mv.pk, mv.file_sha256, str(model_file_path(mv)))
    with _lock:
        cached = _cache.get("head")
        if cached is not None and cached[0] == key:
            return cached[1]  # type: ignore[no-any-return]
    head = assertion_head_verify(mv)
    with _lock:
        _cache["head"] = (key, head)
    return head
