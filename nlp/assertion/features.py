"""Cheap features of a mention beside the encoder's: what the rules said, and the layout around it.

The rules' flags and cue categories (``nlp.pipeline.context_flags``) go in as they are, so a head
learns where to trust them; the section puts the mention under a history or family header; the
layout features see what sentence-level rules miss, e.g. a bare item of a numbered list (past
history lists are cut into one "sentence" per item). Pure Python (no Django).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

from nlp.assertion.encoder import window

CUE_CATEGORIES = ("NEGATED_EXISTENCE", "HISTORICAL", "HYPOTHETICAL", "POSSIBLE_EXISTENCE", "FAMILY", "OTHER_EXPERIENCER")
SECTIONS = ("past_medical_history", "past_surgical_history", "family_history", "social_history",
            "history_of_present_illness", "hospital_course", "medications", "allergies", "observation_and_plan")
_LIST_ITEM = re.compile(r"(?:^|[\n:])\s*(?:\d{1,2}[.)]|[-*\u2022])\s*$")
_WORD_CHARS = re.compile(r"\W")
_HEADER_BEFORE = re.compile(r"[A-Za-z][A-Za-z /&]{2,40}:\s*$")

NAMES: tuple[str, ...] = (
    "rule_negated",
    "rule_historical",
    "rule_hypothetical",
    "rule_uncertain",
    "rule_family",
    "rule_other",
    "rule_historical_section",
    *(f"cue_{c.lower()}" for c in CUE_CATEGORIES),
    *(f"section_{s}" for s in SECTIONS),
    "section_none",
    "list_item",
    "header_before",
    "relative_position",
    "mention_words",
    "window_words",
    "mention_fraction",
)


def rule_features(
    flags: Mapping[str, Any],
    categories: Collection[str],
    section: str | None,
    historical_section: bool,
    text: str,
    start: int,
    end: int,
) -> np.ndarray:
    """One row of ``len(NAMES)`` float32 values (see NAMES for the order). ``text`` is the
    sentence or short passage holding the mention; only the encoder's window of it is read."""
    text, start, end = window(text, start, end)
    before = text[max(0, start - 60) : start]
    sentence_words = len(text.split())
    values = [
        float(bool(flags["negated"])),
        float(bool(flags["historical"])),
        float(bool(flags["hypothetical"])),
        float(bool(flags["uncertain"])),
        float(flags["experiencer"] == "family"),
        float(flags["experiencer"] == "other"),
        float(historical_section),
        *(float(c in categories) for c in CUE_CATEGORIES),
        *(float(section == s) for s in SECTIONS),
        float(section is None),
        float(bool(_LIST_ITEM.search(before))),
        float(bool(_HEADER_BEFORE.search(before))),
        start / max(1, len(text)),
        min(len(text[start:end].split()), 20) / 20.0,
        min(sentence_words, 100) / 100.0,
        # A bare item ("HYPERTENSION.") is most often a line cut from a problem or history list.
        len(_WORD_CHARS.sub("", text[start:end])) / max(1, len(_WORD_CHARS.sub("", text))),
    ]
    return np.asarray(values, dtype=np.float32)
