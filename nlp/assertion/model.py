"""The shipped assertion classifier: per-flag heads (``nlp.assertion.head``) over MiniLM features.

Artefact: ``nlp/assertion/artefact/assertion-head.npz`` (the weights) and ``assertion-head.json``
(how they were made: data file and its sha256, seed, encoder weights' sha256, feature names, the
head chosen per flag, cross-validated figures, and the npz's sha256). Both are committed, so a fresh
checkout classifies without a training step; ``python manage.py train_assertion_model`` rewrites
them (byte-identical for the same data, seed and libraries). ``CDSS_NLP_ASSERTION_HEAD`` may point
at another ``.json`` (its ``.npz`` beside it), e.g. one trained for another encoder folder. Inside
Django, the model registry's active ``nlp_assertion`` version replaces both
(``nlp.assertion_registry``); the worker passes its head to ``extract()`` as an ``AssertionHead``.

Loading checks the npz against the recorded sha256 and the encoder's weights against the ones the
heads were trained on, and refuses (``AssertionModelError``) on a mismatch: heads fitted on one
encoder's features mean nothing on another's. Pure Python (no Django).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nlp.assertion.encoder import Encoder
from nlp.assertion.features import NAMES as RULE_FEATURE_NAMES
from nlp.assertion.head import LinearHead

ARTEFACT_DIR = Path(__file__).with_name("artefact")
HEAD_JSON = ARTEFACT_DIR / "assertion-head.json"
HEAD_ENV = "CDSS_NLP_ASSERTION_HEAD"
FORMAT = 2  # 2: a head may blend several linear members (coef (m, dim), weights (m,))
FLAGS = ("negated", "historical", "hypothetical", "family")
RULE_FEATURE = {"negated": "rule_negated", "historical": "rule_historical", "hypothetical": "rule_hypothetical",
                "family": "rule_family"}
STAGE_RULES = "context"
STAGE_CLASSIFIER = "classifier"


class AssertionModelError(RuntimeError):
    """The artefact is missing, altered, or was trained for other features."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """``np.savez`` with fixed member dates and order, so the same arrays give the same bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue())
    path.write_bytes(buffer.getvalue())


def default_head_json() -> Path:
    configured = os.environ.get(HEAD_ENV)
    return Path(configured) if configured else HEAD_JSON


def head_label(meta: Mapping[str, Any]) -> str:
    """``assertion-<8 hex>``: a digest of all that decides the heads' answers, from a head json's
    metadata: the weights' sha256 (``npz_sha256``), each flag's mode and settings (threshold,
    blend...), the rule features' names and the encoder (weights and window). Two heads that
    answer alike share it; a changed threshold alone changes it. The cross-validated figures
    and other descriptions do not enter it. KeyError / TypeError if the metadata lacks a part."""
    decisive = {
        "npz_sha256": str(meta["npz_sha256"]),
        "flags": {flag: {"mode": spec["mode"], "config": spec.get("config")} for flag, spec in meta["flags"].items()},
        "rule_features": meta["rule_features"],
        "encoder": meta["encoder"],
    }
    digest = hashlib.sha256(json.dumps(decisive, sort_keys=True).encode()).hexdigest()
    return f"assertion-{digest[:8]}"


def head_version(head_json: Path | None = None) -> str:
    """``head_label`` of a head json, without loading anything heavy (part of the extraction
    pipeline's version); ``assertion-missing`` if absent or unreadable."""
    path = head_json if head_json is not None else default_head_json()
    try:
        return head_label(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return "assertion-missing"


@dataclass(frozen=True)
class AssertionHead:
    """Which head json a pipeline reads, and its version (``head_label``: weights and settings, part
    of the extraction pipeline's version). ``source``: ``shipped`` (the committed artefact or
    ``CDSS_NLP_ASSERTION_HEAD``) or ``registry`` (the model registry's active version, see
    ``nlp.assertion_registry``; ``registry_version`` names it)."""

    head_json: Path
    version: str
    source: str = "shipped"
    registry_version: str = ""


def shipped_head() -> AssertionHead:
    """The head read without the model registry: the committed artefact or ``CDSS_NLP_ASSERTION_HEAD``."""
    path = default_head_json()
    return AssertionHead(head_json=path, version=head_version(path))


@dataclass(frozen=True)
class FlagDecision:
    value: bool
    stage: str  # STAGE_RULES or STAGE_CLASSIFIER


class AssertionClassifier:
    """Per-flag decisions for mentions, from their rule features and (where a flag's head is a
    model) the encoder's features. ``classify`` is batched: one encoder pass for all mentions."""

    def __init__(self, head_json: Path | None = None, *, encoder: Encoder | None = None) -> None:
        head_json = Path(head_json) if head_json is not None else default_head_json()
        npz_path = head_json.with_suffix(".npz")
        if not head_json.is_file() or not npz_path.is_file():
            raise AssertionModelError(f"assertion head {head_json} (and its .npz) not found")
        meta = json.loads(head_json.read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT:
            raise AssertionModelError(f"{head_json.name}: format {meta.get('format')!r}, expected {FORMAT}")
        digest = sha256_file(npz_path)
        if digest != meta.get("npz_sha256"):
            raise AssertionModelError(
                f"{npz_path.name} has sha256 {digest}, but {head_json.name} records {meta.get('npz_sha256')}; "
                "the weights changed after training (restore them or run manage.py train_assertion_model)"
            )
        if list(meta.get("rule_features", [])) != list(RULE_FEATURE_NAMES):
            raise AssertionModelError(f"{head_json.name} was trained on other rule features; retrain it")
        self.meta: dict[str, Any] = meta
        self.sha256 = digest
        self.heads: dict[str, LinearHead] = {}
        self.modes: dict[str, str] = {}
        with np.load(npz_path, allow_pickle=False) as arrays:
            for flag, spec in meta["flags"].items():
                self.modes[flag] = spec["mode"]
                if spec["mode"] in ("model", "or"):
                    coef = np.atleast_2d(arrays[f"{flag}_coef"].astype(np.float64))
                    self.heads[flag] = LinearHead(
                        coef=coef,
                        intercept=arrays[f"{flag}_intercept"].astype(np.float64).reshape(len(coef)),
                        threshold=float(spec["config"]["threshold"]),
                        weights=arrays[f"{flag}_weights"].astype(np.float64).reshape(len(coef)),
                    )
        self._encoder = encoder
        if self.heads:
            enc = self.encoder
            expected = meta["encoder"]["weights_sha256"]
            if enc.info.weights_sha256 != expected:
                raise AssertionModelError(
                    f"the encoder at {enc.info.path} is not the one the assertion heads were trained on "
                    f"(weights sha256 {enc.info.weights_sha256[:12]}..., expected {expected[:12]}...); "
                    "run manage.py train_assertion_model for it"
                )
            dim = enc.dim + len(RULE_FEATURE_NAMES)
            for flag, head in self.heads.items():
                if head.dim != dim:
                    raise AssertionModelError(f"{flag} head has {head.dim} weights, features have {dim}")

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            self._encoder = Encoder()
        return self._encoder

    @property
    def version(self) -> str:
        """``head_label`` of the loaded metadata (weights and settings), as in the pipeline version."""
        return head_label(self.meta)

    def mode(self, flag: str) -> str:
        """``rules``, ``model`` or ``or`` (see ``nlp.assertion.head``)."""
        return self.modes.get(flag, "rules")

    def classify(
        self, mentions: Sequence[tuple[str, int, int]], rule_rows: np.ndarray
    ) -> list[dict[str, FlagDecision]]:
        """One decision per flag and mention. ``rule_rows``: ``nlp.assertion.features.rule_features``
        of each mention (same order)."""
        rule_rows = np.asarray(rule_rows, dtype=np.float32).reshape(len(mentions), len(RULE_FEATURE_NAMES))
        out: list[dict[str, FlagDecision]] = [{} for _ in mentions]
        for flag in FLAGS:
            column = RULE_FEATURE_NAMES.index(RULE_FEATURE[flag])
            for i in range(len(mentions)):
                out[i][flag] = FlagDecision(bool(rule_rows[i, column] > 0.5), STAGE_RULES)
        # The encoder runs only for mentions some learned head still has to decide: under "or",
        # a rule's positive stands without it.
        needed = [
            i
            for i in range(len(mentions))
            if any(self.modes[flag] == "model" or not out[i][flag].value for flag in self.heads)
        ]
        if not needed:
            return out
        unique = sorted({mentions[i] for i in needed})  # a note may repeat a sentence and a mention
        encoded = dict(zip(unique, self.encoder.features(unique), strict=True))
        features = np.hstack([np.stack([encoded[mentions[i]] for i in needed]), rule_rows[needed]])
        for flag, head in self.heads.items():
            either = self.modes[flag] == "or"
            for i, value in zip(needed, head.predict(features), strict=True):
                if either and out[i][flag].value:
                    continue  # "or": a rule's positive stands, decided by the rules
                out[i][flag] = FlagDecision(bool(value), STAGE_CLASSIFIER)
        return out
