"""Cheap features of a mention beside the encoder's: what the rules said, and the layout around it.

The rules' flags and cue categories (``nlp.pipeline.context_flags``) go in as they are, so a head
learns where to trust them; the section puts the mention under a history or family header; the
layout features see what sentence-level rules miss, e.g. a bare item of a numbered list (past
history lists are cut into one "sentence" per item); the cue-word features say whether words
that often mark a past, present, social, conditional or relative's condition stand before the
mention, near it, or in it, whatever ConText's scope. Pure Python (no Django).
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

# Cue words the ConText rules do not weigh (or weigh only inside their scope): each is a yes/no
# feature of the words before the mention, after it, or the mention itself, and the heads learn
# how much each counts. Chosen from clinical writing conventions (and the TUNING part's
# historical mentions), never from the held-out 30%.
_I = re.IGNORECASE
CUES_BEFORE: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("history", re.compile(r"\b(?:history|hx|h/o)\b", _I)),
    ("past_history", re.compile(r"\b(?:past|prior)\s+(?:medical\s+|surgical\s+)?history\b|\bmedical\s+history\b|"
                                r"\b(?:pmh|pmhx|psh)\b", _I)),
    ("present_illness", re.compile(r"\bhistory\s+of\s+present\s+illness\b|\bhpi\b", _I)),
    ("social_history", re.compile(r"\bsocial\s+history\b|\bsocial\s*:|\bshx\b", _I)),
    ("significant_for", re.compile(r"\b(?:significant|positive|notable|remarkable)\s+for\b", _I)),
    ("status_post", re.compile(r"\bstatus\s+post\b|\bs/p\b|\bpost-?op", _I)),
    ("prior", re.compile(r"\b(?:previous|previously|prior|remote|old|former|past|known)\b", _I)),
    ("denies", re.compile(r"\b(?:denies|denied|deny|no|without|negative)\b", _I)),
    ("presents", re.compile(r"\b(?:presents?|presenting|presented|admitted|complain\w*|c/o|reports?|now|today|"
                            r"currently|current|acute|new|recent|recently)\b", _I)),
    # Radiology and pathology headers give the reason for the exam: what is under them is current.
    ("indication", re.compile(r"\b(?:clinical\s+history|indications?|referring\s+diagnosis|reason\s+for|"
                              r"pre-?op(?:erative)?\s+diagnosis|diagnosis\s+of|diagnos[ei]s\s*:)", _I)),
    ("if_should", re.compile(r"\b(?:if|should|may|might|could|risk|watch|precautions?|return|call|prevent\w*)\b", _I)),
    ("relative", re.compile(r"\b(?:mother|father|brother|sister|sibling|son|daughter|aunt|uncle|cousin|"
                            r"grand\w+|parents?|family|maternal|paternal)\b", _I)),
)
CUES_AROUND: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("ago_or_date", re.compile(r"\bago\b|\b(?:19|20)\d\d\b|\*\*DATE|\bin\s+the\s+past\b|\byears?\b", _I)),
    ("past_tense", re.compile(r"\b(?:was|were|had|did|underwent|diagnosed|treated|removed|resected|developed|"
                              r"suffered|required|complicated|quit|stopped|used\s+to)\b", _I)),
    ("chronic", re.compile(r"\b(?:chronic|long-?standing|long|longstanding|known|persistent|unchanged|stable)\b", _I)),
)
CUE_MENTION: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("social_mention", re.compile(r"smok|tobacco|cigar|alcohol|etoh|drink|drug|cocaine|heroin|marijuana", _I)),
    ("procedure_mention", re.compile(r"ectomy|otomy|ostomy|plasty|transplant|surgery|surgeries|graft|repair|"
                                     r"resection|replacement|bypass|cabg|amputation|\blift\b", _I)),
)
AROUND_CHARS = 40

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
    *(f"before_{name}" for name, _ in CUES_BEFORE),
    *(f"around_{name}" for name, _ in CUES_AROUND),
    *(name for name, _ in CUE_MENTION),
    "comma_list",
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
    near = f"{text[max(0, start - AROUND_CHARS) : start]} {text[end : end + AROUND_CHARS]}"
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
        *(float(bool(pattern.search(text[:start]))) for _, pattern in CUES_BEFORE),
        *(float(bool(pattern.search(near))) for _, pattern in CUES_AROUND),
        *(float(bool(pattern.search(text[start:end]))) for _, pattern in CUE_MENTION),
        # One item of a comma-separated list ("significant for HTN, DM, CAD and COPD").
        float(text.count(",") >= 2),
    ]
    return np.asarray(values, dtype=np.float32)
