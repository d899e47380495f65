"""The project's ConText rules on top of medspaCy's defaults, as data.

Each entry of ``EXTRA_RULES`` is the keyword arguments of ``medspacy.context.ConTextRule``
(``literal`` is matched as lower-cased words; ``pattern`` is a spaCy token pattern), plus
``exact``: when true, the words must be adjacent (by default a multi-word cue also matches
across runs of spaces). They were
chosen by reading the errors of the default rules on the TUNING part (70%) of the NegEx dev file
only; the held-out 30% (ids fixed in bench/nlp_eval.py) was never looked at. Each rule says why.

Directions: FORWARD modifies what follows in the sentence, BACKWARD what precedes,
BIDIRECTIONAL both, TERMINATE ends other cues' scope, PSEUDO matches a phrase so that a shorter
cue inside it does not fire (medspaCy keeps only the longest of overlapping matches).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

# Default rules (by literal) that the project drops, and why.
REMOVED_DEFAULTS: dict[str, str] = {
    # "evaluate for DVT": the condition is being looked for, not absent; annotators label it
    # affirmed. Re-added below as POSSIBLE_EXISTENCE.
    "evaluate for": "a test for a condition is not its absence",
    # The default ": no" is BACKWARD only and, being longer, suppresses the forward "no" in
    # "Extremities: No clubbing, cyanosis, or edema" (headers followed by a negated list are
    # common in exam notes). Re-added below as BIDIRECTIONAL.
    ": no": "swallowed the forward 'no' after a header",
}

_DAYS = ["hour", "hours", "day", "days", "week", "weeks"]

EXTRA_RULES: list[dict[str, Any]] = [
    # --- negation -------------------------------------------------------------------------
    {
        "literal": ": no",
        "category": "NEGATED_EXISTENCE",
        "direction": "BIDIRECTIONAL",
        "exact": True,
        # Exact (no run of spaces inside): "IMPRESSION:      NO EVIDENCE OF ..." must keep the
        # longer forward cue "no evidence of".
        "pattern": [{"ORTH": ":"}, {"LOWER": "no"}],
    },
    {
        "literal": "evaluate for",
        "category": "POSSIBLE_EXISTENCE",
        "direction": "FORWARD",
        "pattern": [{"LOWER": {"IN": ["evaluate", "evaluation"]}}, {"LOWER": "for"}],
    },
    {
        "literal": "have resolved",
        "category": "NEGATED_EXISTENCE",
        "direction": "BACKWARD",
        # "her hyponatremia ... appears to have resolved": the default "resolved" only looks forward.
        "pattern": [{"LOWER": {"IN": ["has", "have", "had"]}}, {"LOWER": "resolved"}],
    },
    # Pseudo-negations: the cue word is there but the condition is present.
    {
        "literal": "no interval change",
        "category": "PSEUDO",
        "direction": "PSEUDO",
        # "No interval change in the effusion": the finding persists. Plain "no change in" is left
        # alone: "no change in vision, diplopia or change in hearing" is a negated list.
        "pattern": [
            {"LOWER": {"IN": ["no", "without"]}},
            {"LOWER": "interval"},
            {"LOWER": {"IN": ["change", "changes"]}},
        ],
    },
    {
        "literal": "without change",
        "category": "PSEUDO",
        "direction": "PSEUDO",
        "pattern": [{"LOWER": "without"}, {"LOWER": {"IN": ["change", "changes"]}}],
    },
    {
        "literal": "not changed",
        "category": "PSEUDO",
        "direction": "PSEUDO",
        "pattern": [
            {"LOWER": {"IN": ["not", "n't"]}},
            {"LOWER": {"IN": ["changed", "change", "increased", "decreased"]}},
        ],
    },
    {
        "literal": "no increase",
        "category": "PSEUDO",
        "direction": "PSEUDO",
        "pattern": [{"LOWER": "no"}, {"LOWER": {"IN": ["increase", "increased", "decrease"]}}],
    },
    {
        "literal": "with and without contrast",
        "category": "PSEUDO",
        "direction": "PSEUDO",
        # Radiology headers ("MR BRAIN WITH AND WITHOUT CONTRAST") negate nothing.
        "pattern": [
            {"LOWER": {"IN": ["with", "without"]}},
            {"LOWER": "and", "OP": "?"},
            {"LOWER": "without", "OP": "?"},
            {"LOWER": {"IN": ["contrast", "iv"]}},
        ],
    },
    {
        "literal": "gram negative",
        "category": "PSEUDO",
        "direction": "PSEUDO",
        # "gram negative rods" is an organism, not a negative test.
        "pattern": [{"LOWER": "gram"}, {"ORTH": "-", "OP": "?"}, {"LOWER": {"IN": ["negative", "neg"]}}],
    },
    {"literal": "not only", "category": "PSEUDO", "direction": "PSEUDO"},
    {"literal": "not necessarily", "category": "PSEUDO", "direction": "PSEUDO"},
    {
        "literal": "measurements not obtainable",
        "category": "PSEUDO",
        "direction": "PSEUDO",
        # Echo report boilerplate ("*** Measurements Not Obtainable ***") negates nothing after it.
        "pattern": [
            {"LOWER": {"IN": ["measurement", "measurements"]}},
            {"LOWER": "not"},
            {"LOWER": {"IN": ["obtainable", "obtained"]}},
        ],
    },
    {
        "literal": "positive for",
        "category": "TERMINATE",
        "direction": "TERMINATE",
        # "showed no biliary dilatation and positive for cholecystolithiasis": the negation ends.
        "pattern": [{"LOWER": "positive"}, {"LOWER": "for"}],
    },
    # --- historical -----------------------------------------------------------------------
    # The defaults know only "history", "h/o" and "past (medical) history".
    {
        "literal": "status post",
        "category": "HISTORICAL",
        "direction": "FORWARD",
        "pattern": [{"LOWER": {"IN": ["status", "sp"]}}, {"LOWER": "post"}],
    },
    {"literal": "s/p", "category": "HISTORICAL", "direction": "FORWARD"},  # tokenised as s / p
    {
        "literal": "previous",
        "category": "HISTORICAL",
        "direction": "FORWARD",
        "pattern": [{"LOWER": {"IN": ["previous", "previously", "prior", "remote", "former"]}}],
    },
    {
        "literal": "in the past",
        "category": "HISTORICAL",
        "direction": "BACKWARD",
        "pattern": [{"LOWER": "in"}, {"LOWER": "the"}, {"LOWER": "past"}],
    },
    {
        "literal": "years ago",
        "category": "HISTORICAL",
        "direction": "BACKWARD",
        "pattern": [{"LOWER": {"IN": ["years", "year", "months", "decades"]}}, {"LOWER": "ago"}],
    },
    {
        "literal": "the last time",
        "category": "HISTORICAL",
        "direction": "BACKWARD",
        # "this made her severely nauseated the last time she had it"
        "pattern": [{"LOWER": "the"}, {"LOWER": {"IN": ["last", "previous"]}}, {"LOWER": "time"}],
    },
    {
        "literal": "sequelae of",
        "category": "HISTORICAL",
        "direction": "FORWARD",
        "pattern": [{"LOWER": {"IN": ["sequela", "sequelae"]}}, {"LOWER": "of"}],
    },
    {
        "literal": "was complicated by",
        "category": "HISTORICAL",
        "direction": "FORWARD",
        # A past procedure's complications ("It was complicated by infection and removed").
        "pattern": [{"LOWER": "was"}, {"LOWER": "complicated"}, {"LOWER": "by"}],
    },
    {
        "literal": "presented",
        "category": "HISTORICAL",
        "direction": "TERMINATE",
        # The defaults end a history cue's scope at "present(s/ing)"; "who presented with a
        # several day history of chest pain" and "was admitted with" open the present illness too.
        "pattern": [{"LOWER": {"IN": ["presented", "admitted"]}}],
    },
    # Not historical although they contain "history".
    {
        "literal": "history of present illness",
        "category": "PSEUDO",
        "direction": "PSEUDO",
        "pattern": [{"LOWER": {"IN": ["history", "hx"]}}, {"LOWER": "of"}, {"LOWER": "present"}, {"LOWER": "illness"}],
    },
    {
        "literal": "clinical history",
        "category": "PSEUDO",
        "direction": "PSEUDO",
        # Radiology/pathology "CLINICAL HISTORY:" / "PATIENT HISTORY:" / "HISTORY:" is the indication.
        "pattern": [{"LOWER": {"IN": ["clinical", "patient"]}}, {"LOWER": "history"}],
    },
    {
        "literal": "history:",
        "category": "PSEUDO",
        "direction": "PSEUDO",
        "pattern": [{"LOWER": "history"}, {"ORTH": ":"}],
    },
    {
        "literal": "one-day history of",
        "category": "PSEUDO",
        "direction": "PSEUDO",
        # "presents with a one-day history of chest pressure": duration of the present illness.
        "pattern": [{"LOWER": {"IN": _DAYS}}, {"LOWER": {"IN": ["history", "hx"]}}],
    },
    # --- experiencer ----------------------------------------------------------------------
    {
        "literal": "family history",
        "category": "FAMILY",
        "direction": "FORWARD",
        "pattern": [{"LOWER": {"IN": ["fh", "fhx", "fam"]}}],
    },
    {
        "literal": "maternal grandmother",
        "category": "FAMILY",
        "direction": "FORWARD",
        # Keeps the side of the family in the relation ("maternal aunt", "paternal grandfather").
        "pattern": [
            {"LOWER": {"IN": ["maternal", "paternal"]}},
            {
                "LOWER": {
                    "IN": [
                        "grandmother",
                        "grandfather",
                        "aunt",
                        "uncle",
                        "cousin",
                        "grandparents",
                        "side",
                        "relatives",
                        "relative",
                    ]
                }
            },
        ],
    },
    {
        "literal": "donor",
        "category": "OTHER_EXPERIENCER",
        "direction": "FORWARD",
        # Conditions of a donor or another person named in the note are not the patient's.
        "pattern": [{"LOWER": {"IN": ["donor", "roommate", "coworker", "co-worker", "friend"]}}],
    },
]


def rules() -> list[dict[str, Any]]:
    """Fresh copies (medspaCy keeps references to the pattern lists it is given)."""
    return copy.deepcopy(EXTRA_RULES)


def _alternatives(token: dict[str, Any]) -> list[str] | None:
    """The words one pattern token accepts ("" for an optional token that is left out), or
    ``None`` when it is not a plain word test (``LOWER``/``ORTH`` = word or ``IN`` list, ``OP`` ?)."""
    op = token.get("OP")
    attrs = {k: v for k, v in token.items() if k != "OP"}
    if op not in (None, "?") or len(attrs) != 1:
        return None
    attr, value = next(iter(attrs.items()))
    if attr == "LOWER":
        words = [value] if isinstance(value, str) else value.get("IN") if isinstance(value, dict) else None
        if not isinstance(words, list) or (isinstance(value, dict) and len(value) != 1):
            return None
        words = [w.lower() for w in words]
    elif attr == "ORTH" and isinstance(value, str) and value.lower() == value:
        words = [value]  # punctuation: ORTH and LOWER agree
    else:
        return None
    return words + ([""] if op == "?" else [])


def expand(spec: dict[str, Any], words_of: Callable[[str], list[str]]) -> list[dict[str, Any]]:
    """One rule spec as rules that medspaCy's phrase matcher can take (same matches, same
    category and direction): a token pattern of plain words, ``IN`` lists and optional tokens
    becomes one literal per combination of words. A word the tokenizer would split (``n't``,
    ``co-worker``) only ever matched a single token, so a combination with one stays a token
    pattern of plain words (no ``IN``). A pattern with any other test is kept as it is.
    ``words_of`` gives the lower-cased tokens of a text (no space tokens)."""
    pattern = spec.get("pattern")
    if pattern is None:
        return [dict(spec)]
    options = [_alternatives(token) for token in pattern]
    if any(o is None for o in options):
        return [dict(spec)]
    # Each combination keeps the positions of its words in the pattern: the pipeline joins the
    # words of a multi-word cue with "any run of spaces", so a cue whose first (last) optional
    # token is left out also took in the spaces before (after) it; ``spaces_before`` /
    # ``spaces_after`` tell the pipeline to keep doing so.
    combos: list[list[tuple[int, str]]] = [[]]
    for index, alternatives in enumerate(options):
        assert alternatives is not None
        combos = [[*c, (index, w)] if w else c for c in combos for w in alternatives]
    spaced = len(pattern) > 1 and not spec.get("exact", False)
    out: list[dict[str, Any]] = []
    seen: set[tuple[Any, ...]] = set()
    for combo in combos:
        words = [w for _, w in combo]
        before = spaced and bool(combo) and combo[0][0] > 0
        after = spaced and bool(combo) and combo[-1][0] < len(pattern) - 1
        if not words or (tuple(words), before, after) in seen:
            continue
        seen.add((tuple(words), before, after))
        rule = {k: v for k, v in spec.items() if k != "pattern"}
        rule["spaces_before"], rule["spaces_after"] = before, after
        rule["literal"] = " ".join(words)
        rule["pattern"] = None if words_of(rule["literal"]) == words else [{"LOWER": w} for w in words]
        out.append(rule)
    return out
