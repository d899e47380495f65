"""Rules + classifier for one marked span: ConText first, then the assertion heads beside it.

``assert_context`` is what ``manage.py nlp_context`` answers with: the ConText result of
``nlp.pipeline.classify_context`` with each flag replaced by the classifier's where the shipped
head for that flag is a model (chosen per flag by cross-validation), and ``stages`` naming which
stage decided each flag. Pure Python (no Django).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cdss.jobs.registry import load_once
from nlp.assertion.encoder import Encoder
from nlp.assertion.features import rule_features
from nlp.assertion.model import AssertionClassifier, FlagDecision, default_head_json
from nlp.pipeline import ContextResult, classify_context


class AssertedContext(ContextResult):
    stages: dict[str, str]  # flag -> "context" (rules) or "classifier"


def get_encoder() -> Encoder:
    """The MiniLM encoder, loaded once per process and shared by every head."""
    return load_once("nlp.assertion.encoder", Encoder)


def get_classifier(head_json: Path | None = None) -> AssertionClassifier:
    """The classifier (encoder + heads) of ``head_json`` (default: the shipped artefact or
    ``CDSS_NLP_ASSERTION_HEAD``), loaded once per process and file."""
    path = Path(head_json) if head_json is not None else default_head_json()
    return load_once(f"nlp.assertion:{path}", lambda: AssertionClassifier(path, encoder=get_encoder()))


def rule_row(result: ContextResult, text: str, start: int, end: int) -> np.ndarray:
    categories = {cue["category"] for cue in result["cues"]}
    return rule_features(result, categories, result["section"], result["historical_section"], text, start, end)


def apply_decisions(flags: dict[str, Any], decisions: dict[str, FlagDecision]) -> dict[str, str]:
    """Writes the decisions into ``flags`` (a ContextFlags dict); returns flag -> stage."""
    for flag in ("negated", "historical", "hypothetical"):
        flags[flag] = decisions[flag].value
    family = decisions["family"]
    if family.stage != "context":
        if family.value:
            flags["experiencer"] = "family"
        elif flags["experiencer"] == "family":
            flags["experiencer"] = "patient"
            flags["family_relation"] = None
    return {flag: decision.stage for flag, decision in decisions.items()}


def assert_contexts(
    items: Sequence[tuple[str, int, int]], *, nlp: Any = None, classifier: AssertionClassifier | None = None
) -> list[AssertedContext]:
    """``assert_context`` for many spans with one batched encoder pass. Raises ``SpanError``
    (from ``classify_context``) for the first bad span."""
    classifier = classifier if classifier is not None else get_classifier()
    results = [classify_context(text, start, end, nlp=nlp) for text, start, end in items]
    rows = np.stack([rule_row(r, *item) for r, item in zip(results, items, strict=True)]) if items else None
    decisions = classifier.classify(list(items), rows) if rows is not None else []
    out: list[AssertedContext] = []
    for result, decided in zip(results, decisions, strict=True):
        merged: dict[str, Any] = dict(result)
        merged["stages"] = apply_decisions(merged, decided)
        out.append(merged)  # type: ignore[arg-type]
    return out


def assert_context(
    text: str, start: int, end: int, *, nlp: Any = None, classifier: AssertionClassifier | None = None
) -> AssertedContext:
    """The context of ``text[start:end]`` by rules + classifier (see the module docstring)."""
    return assert_contexts([(text, start, end)], nlp=nlp, classifier=classifier)[0]
