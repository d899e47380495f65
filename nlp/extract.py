"""Note -> structured facts: concepts from a lexicon, with their section, ConText and codes.

Pure Python on ``nlp.pipeline`` (no Django), so a worker, a management command and a benchmark
call the same code::

    extract(text) -> {"pipeline_version": str, "sections": [Section], "facts": [Fact]}

A fact is one concept mentioned in the note::

    {"kind", "concept_id", "preferred", "text", "start", "end", "section", "codes",
     "negated", "historical", "hypothetical", "uncertain", "experiencer", "family_relation",
     "stage": "lexicon+context" | "lexicon+context+classifier",
     "flag_stages": {"negated": "context" | "classifier", "historical": ..., "hypothetical": ...,
                     "family": ...}}

with ``text == note[start:end]``. Medication facts also carry ``"medication": {"dose", "unit",
"route", "frequency", "as_needed", "status"}`` (status ``current``, ``stopped`` or
``allergy``); a substance named as an allergy (Allergies section, "allergic to", or any
``allergen`` concept) carries ``"allergy": {"substance", "reaction", "no_known_allergies"}``.
"NKDA" / "no known drug allergies" is a fact of its own with ``no_known_allergies`` true.

Concepts are matched by medspaCy's TargetMatcher (one rule per synonym and abbreviation) and
ConText runs once over the whole document with every target, not once per mention. Then the
assertion classifier (``nlp.assertion``: MiniLM features + per-flag heads chosen by
cross-validation) runs on the candidate mentions only (problems, symptoms, findings, procedures),
all of a note's in one batch, and decides the flags whose shipped head is a model; ``flag_stages``
says which stage decided each flag and ``stage`` ends in ``+classifier`` when any flag of the fact
came from it. ``extract(text, assertion=False)`` is the rule path alone.

The heads are the shipped artefact's (``nlp/assertion/artefact``, or ``CDSS_NLP_ASSERTION_HEAD``)
unless ``head`` names another (``nlp.assertion.model.AssertionHead``): the worker passes the model
registry's active version (``nlp.assertion_registry``); the head's version is part of
``pipeline_version``.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import json
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypedDict

import numpy as np
from spacy.attrs import IS_SPACE, LOWER
from spacy.tokens import Doc

from cdss.jobs.registry import load_once
from nlp import pipeline as _pipeline
from nlp.assertion.features import rule_features
from nlp.assertion.model import STAGE_RULES, AssertionHead, head_version
from nlp.pipeline import (
    _relation,
    build_pipeline,
    context_flags,
    section_is_historical,
    without_spaces,
)

# Bump when the extraction rules below change; the lexicon's own hash is part of the version.
RULES_VERSION = "extract-3"  # 2: chunks of a few kB cut at sentence ends; 3: "MEDICAL HISTORY:" headers
LEXICON_PATH = Path(__file__).with_name("lexicon.json")
KINDS = frozenset({"problem", "symptom", "finding", "procedure", "medication", "allergen"})
CODE_SYSTEMS = frozenset(
    {
        "http://snomed.info/sct",
        "http://hl7.org/fhir/sid/icd-10-cm",
        "http://www.nlm.nih.gov/research/umls/rxnorm",
    }
)
NO_KNOWN_ALLERGIES = "no-known-drug-allergies"
STAGE = "lexicon+context"
STAGE_CLASSIFIER = "lexicon+context+classifier"
# Mentions whose context the classifier reads: conditions and what is done about them. A drug's
# status has its own rules (current / stopped / allergy) and allergens are allergies by kind.
CANDIDATE_KINDS = frozenset({"problem", "symptom", "finding", "procedure"})
ASSERTION_VERSION = head_version()

# Abbreviations this short are matched with their exact case ("MI", "CP", "PE", "SOB": "sob",
# "pe" and "cp" are other words); longer ones ("NKDA", "AFib") in any case.
EXACT_CASE_MAX_CHARS = 3

# A note is read in chunks of about 2 kB: spaCy refuses texts over nlp.max_length (1,000,000
# chars), and ConText's cost grows with the square of the mentions in a piece (so did the target
# matcher's until it set doc.ents once per chunk; then, a 200 kB note dense with mentions, 13,510
# facts: 6.3 s in 2 kB chunks, 12.5 s in 5 kB ones, unfinished after 280 s in 100 kB ones). Cuts fall where ConText's scope ends anyway: at a
# blank line, else a line ending a sentence, else a sentence end, else any line end (else any
# space). ConText looks no further than the sentence; a section running across a cut is carried
# into the next chunk. Offsets are those of the whole note.
CHUNK_CHARS = 2_000
_CUTS = (
    re.compile(r"\n[ \t]*\n\s*"),  # a blank line
    re.compile(r"[.!?:;][ \t]*\n\s*"),  # a line that ends a sentence
    re.compile(r"(?<![A-Z][a-z])(?<!\b[A-Za-z])[.!?][ \t]+(?=[A-Z])"),  # ". Next" (not "Dr. X", "e.g. X")
    re.compile(r"\n\s*"),
    re.compile(r"[ \t]+"),
)

# Markup is blanked with spaces of the same length, so offsets stay those of the original note.
_MARKUP = re.compile(r"<[^<>\n]{0,500}>|&(?:[a-zA-Z]{2,8}|#\d{1,6});")


class Section(TypedDict):
    category: str | None
    title: str
    start: int
    end: int


Concept = Mapping[str, Any]


class LexiconError(ValueError):
    """The lexicon is not a list of well-formed concepts."""


# --- lexicon and version --------------------------------------------------------------------


def load_lexicon(path: Path = LEXICON_PATH) -> list[dict[str, Any]]:
    """The concepts of a lexicon file (``{"concepts": [...]}``), validated."""
    with path.open(encoding="utf-8") as fh:
        data = json.load(fh)
    return validate_lexicon(data)


def validate_lexicon(data: Any) -> list[dict[str, Any]]:
    """``data`` (a list of concepts or ``{"concepts": [...]}``) as a list; LexiconError if bad."""
    concepts = data.get("concepts") if isinstance(data, Mapping) else data
    if not isinstance(concepts, Sequence) or isinstance(concepts, str):
        raise LexiconError("a lexicon is a list of concepts or {'concepts': [...]}")
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    for index, concept in enumerate(concepts):
        where = f"concept {index}"
        if not isinstance(concept, Mapping):
            raise LexiconError(f"{where}: not an object")
        cid = concept.get("id")
        if not isinstance(cid, str) or not cid:
            raise LexiconError(f"{where}: id must be a non-empty string")
        if cid in seen:
            raise LexiconError(f"{where}: duplicate id {cid!r}")
        seen.add(cid)
        if concept.get("kind") not in KINDS:
            raise LexiconError(f"{cid}: kind must be one of {sorted(KINDS)}")
        if not isinstance(concept.get("preferred"), str):
            raise LexiconError(f"{cid}: preferred must be a string")
        for key in ("synonyms", "abbreviations"):
            values = concept.get(key, [])
            if not isinstance(values, list) or not all(isinstance(v, str) and v.strip() for v in values):
                raise LexiconError(f"{cid}: {key} must be a list of non-empty strings")
        for code in concept.get("codes", []):
            if not isinstance(code, Mapping) or code.get("system") not in CODE_SYSTEMS or not code.get("code"):
                raise LexiconError(f"{cid}: each code needs a known system and a code")
        out.append(dict(concept))
    return out


def lexicon_hash(concepts: Sequence[Concept]) -> str:
    """A digest of the lexicon's content (not its layout: re-indenting the file changes nothing)."""
    canonical = json.dumps(list(concepts), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]


def pipeline_version(concepts: Sequence[Concept], *, assertion: bool = True, head: AssertionHead | None = None) -> str:
    """The version extractions carry: rules, ConText, the lexicon's hash and (with ``assertion``)
    the head's version (``head``; default the shipped artefact's)."""
    rules = f"{RULES_VERSION}+{_pipeline.PIPELINE_VERSION}+lexicon-{lexicon_hash(concepts)}"
    return _with_head(rules, head) if assertion else rules


def _with_head(rules_version: str, head: AssertionHead | None) -> str:
    return f"{rules_version}+{head.version if head is not None else ASSERTION_VERSION}"


@dataclass(frozen=True)
class PreparedLexicon:
    """A lexicon validated and hashed once (``prepare_lexicon``), for a worker that reads many
    notes with it: ``extract`` then neither validates nor hashes it per note."""

    concepts: tuple[Concept, ...]
    rule_path_version: str  # without the classifier

    def version(self, head: AssertionHead | None = None) -> str:
        """The whole pipeline's version with these concepts and ``head`` (default: the shipped one)."""
        return _with_head(self.rule_path_version, head)


def prepare_lexicon(data: Any) -> PreparedLexicon:
    """``data`` as ``extract`` takes it (a list of concepts or ``{"concepts": [...]}``), checked
    (LexiconError names the problem) and versioned once."""
    concepts = validate_lexicon(data)
    return PreparedLexicon(tuple(concepts), pipeline_version(concepts, assertion=False))


DEFAULT_LEXICON: list[dict[str, Any]] = load_lexicon()
PIPELINE_VERSION = pipeline_version(DEFAULT_LEXICON)
_RULE_PATH_VERSION = pipeline_version(DEFAULT_LEXICON, assertion=False)  # once: hashing costs ~0.3 ms a note


# --- the spaCy pipeline ---------------------------------------------------------------------


def _target_rules(nlp: Any, concepts: Sequence[Concept]) -> list[Any]:
    from medspacy.target_matcher import TargetRule

    rules = []
    for concept in concepts:
        phrases = [(s, False) for s in concept.get("synonyms", [])]
        phrases += [(a, len(a.strip()) <= EXACT_CASE_MAX_CHARS) for a in concept.get("abbreviations", [])]
        for phrase, exact in phrases:
            pattern: list[dict[str, Any]] = []
            for token in nlp.make_doc(phrase):
                if token.is_space:
                    continue
                if pattern:  # "chest  pain", "chest\npain": runs of whitespace between words
                    pattern.append({"IS_SPACE": True, "OP": "*"})
                pattern.append({"ORTH": token.text} if exact else {"LOWER": token.lower_})
            rules.append(
                TargetRule(
                    literal=phrase,
                    category=str(concept["kind"]).upper(),
                    pattern=pattern,
                    metadata={"concept_id": concept["id"]},
                )
            )
    return rules


def build_extraction_pipeline(concepts: Sequence[Concept]) -> Any:
    """The project's context pipeline (``nlp.pipeline.build_pipeline``) with a target matcher
    in front of ConText, so ConText sees every mention of the note in one pass."""
    nlp = build_pipeline()
    matcher = nlp.add_pipe("medspacy_target_matcher", before="medspacy_sectionizer")
    matcher.add(_target_rules(nlp, concepts))
    # medspaCy has no hook for this: its TargetMatcher calls its (name-mangled) matcher directly.
    matcher._TargetMatcher__matcher = _PhraseTargetMatcher(nlp.vocab, matcher._TargetMatcher__matcher)
    matcher.__class__ = _entity_targets()  # spaCy has no hook to give a component a subclass
    return nlp


@functools.cache
def _entity_targets() -> Any:
    """The ``_EntityTargets`` class (medspaCy is imported when a pipeline is built, not before)."""
    from medspacy.target_matcher import TargetMatcher
    from spacy.tokens import Span

    class _EntityTargets(TargetMatcher):
        """medspaCy's TargetMatcher (1.3.1) setting ``doc.ents`` once, not once per match
        (``doc.ents += (span,)``: its cost grows with the square of the mentions in a chunk). A
        match whose tokens are already an entity's is skipped with medspaCy's warning, as there.
        A doc that already has entities, or another result type, goes through medspaCy's own."""

        def __call__(self, doc: Doc) -> Any:
            if doc.ents or not self.result_type or self.result_type.lower() != "ents":
                return super().__call__(doc)
            matcher = self._TargetMatcher__matcher  # type: ignore[attr-defined]
            taken = bytearray(len(doc))
            ents = []
            for rule_id, start, end in matcher(doc):
                rule = matcher.rule_map[self.nlp.vocab.strings[rule_id]]
                span = Span(doc, start=start, end=end, label=rule.category)
                span._.target_rule = rule
                for attribute, value in (rule.attributes or {}).items():
                    setattr(span._, attribute, value)
                if any(taken[start:end]):
                    warnings.warn(
                        f'The result ""{span}"" conflicts with a pre-existing entity in doc.ents. This result has '
                        f"been skipped.",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                    continue
                taken[start:end] = b"\x01" * (end - start)
                ents.append(span)
            doc.ents = ents
            return doc

    return _EntityTargets


class _PhraseTargetMatcher:
    """The target rules' matches found with spaCy's PhraseMatcher on the note without its space
    tokens, mapped back to the note's tokens (on the note itself when no run of space tokens lies
    between a word that precedes another in a phrase and one that follows another): the same
    matches, in the same order, as the token patterns of ``_target_rules`` (words by ``LOWER``, or
    ``ORTH`` for an exact abbreviation, and ``{"IS_SPACE": true, "OP": "*"}`` between words) give
    through spaCy's Matcher, whose cost grows with the number of patterns times the number of
    tokens. Then overlapping matches are pruned (longest wins) as medspaCy does."""

    def __init__(self, vocab: Any, inner: Any) -> None:
        from spacy.matcher import PhraseMatcher

        self._inner = inner
        self._matchers = {"LOWER": PhraseMatcher(vocab, attr="LOWER"), "ORTH": PhraseMatcher(vocab, attr="ORTH")}
        self._order: dict[int, int] = {}  # match key -> the rule's place (ties keep the Matcher's order)
        self._before: set[int] = set()
        self._after: set[int] = set()
        for index, (rule_id, rule) in enumerate(inner.rule_map.items()):
            words = [token for token in rule.pattern if token != {"IS_SPACE": True, "OP": "*"}]
            attrs = {attr for token in words for attr in token}
            if len(attrs) != 1 or not attrs <= set(self._matchers) or any(len(t) != 1 for t in words):
                raise ValueError(f"target rule {rule.literal!r}: pattern {rule.pattern!r} is not a phrase")
            (attr,) = attrs
            self._matchers[attr].add(rule_id, [Doc(vocab, words=[token[attr] for token in words])])
            self._order[vocab.strings[rule_id]] = index
            # Lower-cased words that come before / after another word in a phrase.
            lowered = [vocab.strings.add(token[attr].lower()) for token in words]
            self._before.update(lowered[:-1])
            self._after.update(lowered[1:])

    def _may_span_spaces(self, doc: Doc) -> bool:
        """Whether a run of space tokens lies between a word that comes before another in some
        phrase and a word that comes after one: only then can a match span space tokens."""
        spaces = doc.to_array(IS_SPACE)
        if not spaces.any():
            return False
        lower = doc.to_array(LOWER).tolist()
        is_space = spaces.tolist()
        for i in np.flatnonzero(spaces).tolist():
            if i == 0 or is_space[i - 1]:
                continue  # not the first space token of a run after a word
            j = i + 1
            while j < len(is_space) and is_space[j]:
                j += 1
            if j < len(is_space) and lower[i - 1] in self._before and lower[j] in self._after:
                return True
        return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __call__(self, doc: Doc) -> list[tuple[int, int, int]]:
        from medspacy.common.util import prune_overlapping_matches

        if self._may_span_spaces(doc):
            keep, compact = without_spaces(doc)
        else:  # no phrase can match across a space token: the note's own tokens will do
            keep, compact = None, doc
        matches = [match for matcher in self._matchers.values() for match in matcher(compact)]
        if keep is not None:
            matches = [(match_id, keep[start], keep[end - 1] + 1) for match_id, start, end in matches]
        matches.sort(key=lambda m: (m[1], m[2], self._order[m[0]]))
        return list(prune_overlapping_matches(matches))


_CUSTOM: dict[str, Any] = {}


def _get_pipeline(concepts: Sequence[Concept], version: str) -> Any:
    """One pipeline per process and lexicon version; a few custom lexicons are kept too."""
    if concepts is DEFAULT_LEXICON:
        return load_once(f"nlp.extract:{version}", lambda: build_extraction_pipeline(concepts))
    if version not in _CUSTOM:
        if len(_CUSTOM) >= 4:
            _CUSTOM.pop(next(iter(_CUSTOM)))
        _CUSTOM[version] = build_extraction_pipeline(concepts)
    return _CUSTOM[version]


# --- medications and allergies: every pattern in one place ----------------------------------

_UNITS = (
    r"mg|mcg|µg|micrograms?|milligrams?|grams?|gm|g|units?|iu|u|ml|meq|puffs?|tabs?|tablets?|caps?|capsules?|drops?|%"
)
MED_DOSE = re.compile(rf"(?<![\w.])(?P<value>\d+(?:\.\d+)?)\s*(?P<unit>{_UNITS})(?![\w])", re.IGNORECASE)
_UNIT_NAMES = {
    "µg": "mcg",
    "microgram": "mcg",
    "micrograms": "mcg",
    "milligram": "mg",
    "milligrams": "mg",
    "gram": "g",
    "grams": "g",
    "gm": "g",
    "unit": "units",
    "u": "units",
    "iu": "units",
    "meq": "mEq",
    "ml": "mL",
    "puff": "puffs",
    "tab": "tablets",
    "tabs": "tablets",
    "tablet": "tablets",
    "cap": "capsules",
    "caps": "capsules",
    "capsule": "capsules",
    "drop": "drops",
}
MED_ROUTES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\b(?:p\.o\.|po|by mouth|orally|oral)(?![\w])", re.IGNORECASE), "oral"),
    (re.compile(r"\b(?:iv|intravenous(?:ly)?)\b", re.IGNORECASE), "intravenous"),
    (re.compile(r"\b(?:IM|intramuscular(?:ly)?)\b"), "intramuscular"),
    (re.compile(r"\b(?:sc|sq|subq|subcut|subcutaneous(?:ly)?)\b", re.IGNORECASE), "subcutaneous"),
    (re.compile(r"\b(?:SL|sublingual(?:ly)?)\b"), "sublingual"),
    (re.compile(r"\b(?:inhaled|inhalation|inh|via inhaler|nebuli[sz]ed|neb)\b", re.IGNORECASE), "inhalation"),
    (re.compile(r"\b(?:topical(?:ly)?)\b", re.IGNORECASE), "topical"),
    (re.compile(r"\b(?:PR|per rectum|rectal(?:ly)?)\b"), "rectal"),
    (re.compile(r"\b(?:transdermal(?:ly)?)\b", re.IGNORECASE), "transdermal"),
]
MED_FREQUENCIES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\b(?:bid|b\.i\.d\.?|twice (?:a|per) day|twice daily)(?![\w])", re.IGNORECASE), "twice daily"),
    (
        re.compile(r"\b(?:tid|t\.i\.d\.?|three times (?:a|per) day|three times daily)(?![\w])", re.IGNORECASE),
        "three times daily",
    ),
    (
        re.compile(r"\b(?:qid|q\.i\.d\.?|four times (?:a|per) day|four times daily)(?![\w])", re.IGNORECASE),
        "four times daily",
    ),
    (re.compile(r"\b(?:qhs|q\.h\.s\.?|at bedtime|nightly|every night)(?![\w])", re.IGNORECASE), "at bedtime"),
    (re.compile(r"\b(?:qam|every morning|in the morning)(?![\w])", re.IGNORECASE), "every morning"),
    (re.compile(r"\b(?:weekly|once (?:a|per) week|every week)\b", re.IGNORECASE), "weekly"),
    (
        re.compile(
            r"\b(?:daily|qd|q\.d\.?|once (?:a|per) day|once daily|every day|per day|a day)(?![\w])", re.IGNORECASE
        ),
        "daily",
    ),
]
# "q6h", "q 6 hours", "every 6 hours", "q4-6h"
MED_EVERY_HOURS = re.compile(r"\b(?:q\s*|every\s+)(\d+(?:\s*-\s*\d+)?)\s*(?:h|hr|hrs|hours?)\b", re.IGNORECASE)
MED_AS_NEEDED = re.compile(r"\b(?:prn|p\.r\.n\.?|as needed)(?![\w])", re.IGNORECASE)
# Cues that a drug was stopped, before or after its name in the same clause.
MED_STOPPED = re.compile(
    r"\b(?:discontinued|discontinue|stopped|stop|d/c'?d|d/c|dc'd|held|hold|holding|ceased)(?![\w])", re.IGNORECASE
)
ALLERGY_CUE = re.compile(r"\b(?:allergic|allergy|allergies|intolerant|intolerance)\b(?:\s*(?:to|:))?", re.IGNORECASE)
ALLERGY_SECTIONS = frozenset({"allergies", "allergy"})
REACTIONS = re.compile(
    r"\b(?:anaphylaxis|anaphylactic(?: shock| reaction)?|hives|urticaria|rash(?:es)?|"
    r"(?:throat |lip |facial |tongue )?swelling|angioedema|nausea|vomiting|itching|itch|pruritus|"
    r"shortness of breath|wheezing|diarrhea|gi upset|upset stomach|dizziness|cough)\b",
    re.IGNORECASE,
)
# How far around a mention its dose, status or reaction is looked for (characters, same line).
AFTER_CHARS = 80
BEFORE_CHARS = 60


def parse_medication(after: str) -> dict[str, Any]:
    """Dose, unit, route, frequency and as-needed from the text just after a drug's name."""
    dose = MED_DOSE.search(after)
    unit = None
    if dose:
        raw_unit = dose.group("unit")
        unit = _UNIT_NAMES.get(raw_unit.lower(), raw_unit.lower() if raw_unit != "%" else "%")
    route = next((name for pattern, name in MED_ROUTES if pattern.search(after)), None)
    frequency = None
    every = MED_EVERY_HOURS.search(after)
    if every:
        hours = re.sub(r"\s+", "", every.group(1))
        frequency = f"every {hours} hours"
    else:
        frequency = next((name for pattern, name in MED_FREQUENCIES if pattern.search(after)), None)
    return {
        "dose": float(dose.group("value")) if dose else None,
        "unit": unit,
        "route": route,
        "frequency": frequency,
        "as_needed": bool(MED_AS_NEEDED.search(after)),
    }


# --- extraction -----------------------------------------------------------------------------


def _mask_markup(text: str) -> str:
    return _MARKUP.sub(lambda m: " " * len(m.group(0)), text)


def _chunks(text: str) -> list[tuple[int, int]]:
    """(start, end) of consecutive pieces of at most CHUNK_CHARS, each cut at the best place of
    ``_CUTS`` in its second half (the cut's whitespace stays with the piece before)."""
    out = []
    pos = 0
    while pos < len(text):
        stop = min(len(text), pos + CHUNK_CHARS)
        if stop < len(text):
            low = pos + CHUNK_CHARS // 2
            for cut in _CUTS:
                ends = [match.end() for match in cut.finditer(text, low, stop)]
                if ends:
                    stop = ends[-1]
                    break
        out.append((pos, stop))
        pos = stop
    return out


# Components whose work only the mentions read: sentences (ConText's scope, a mention's sentence)
# and ConText itself. A chunk without any mention skips them; its sections are still read.
_FOR_MENTIONS = frozenset({"sentencizer", "cdss_section_sentences", "medspacy_context"})
_TARGETS = "medspacy_target_matcher"


def _process(nlp: Any, text: str) -> Any:
    """``nlp(text)``, the target matcher first (it reads tokens only, not sentences), then the other
    components in their order, less those of ``_FOR_MENTIONS`` when it found nothing."""
    doc = nlp.get_pipe(_TARGETS)(nlp.make_doc(text))
    for name, component in nlp.pipeline:
        if name != _TARGETS and (doc.ents or name not in _FOR_MENTIONS):
            doc = component(doc)
    return doc


class _Mention(TypedDict):
    concept: Concept
    start: int
    end: int
    sent_start: int
    sent_end: int
    cues: list[tuple[str, str]]  # (category, cue text)


def extract(
    text: str,
    *,
    lexicon: Sequence[Concept] | Mapping[str, Any] | PreparedLexicon | None = None,
    assertion: bool = True,
    head: AssertionHead | None = None,
) -> dict[str, Any]:
    """The sections and facts of a note (see the module docstring).

    ``lexicon`` defaults to ``nlp/lexicon.json``; another one (a list of concepts, e.g. edited in
    the admin) gives another ``pipeline_version``. ``assertion=False`` leaves the classifier out
    (the rule path; another ``pipeline_version`` too); a ``PreparedLexicon`` is taken as it was
    checked. ``head`` names the assertion heads (default: the shipped artefact); its version is
    part of ``pipeline_version``. Raises TypeError for a non-str note and LexiconError for a
    malformed lexicon.
    """
    read = _read(text, lexicon=lexicon, assertion=assertion, head=head)
    _classify(read.pending, head.head_json if head is not None else None)
    return read.result


def extract_batch(
    texts: Sequence[str],
    *,
    lexicon: Sequence[Concept] | Mapping[str, Any] | PreparedLexicon | None = None,
    assertion: bool = True,
    head: AssertionHead | None = None,
    reraise: tuple[type[BaseException], ...] = (),
) -> list[dict[str, Any] | Exception]:
    """``extract`` for several notes, their candidate mentions classified together (one encoder
    pass per ``nlp.assertion.encoder`` batch of mentions of all the notes, not one per note: the
    transformer stage's fixed cost per call is shared, which a GPU needs most), in calls of at
    most ``JOINT_MENTIONS`` mentions (a note with more is classified alone). Per note, in
    order, its result or the exception that stopped it (one unreadable note does not stop the
    others; a failure of the joint classification is retried note by note, so it is pinned on the
    note that causes it). The flags are those ``extract`` gives each note alone, up to the
    encoder's arithmetic on differently padded batches (a probability may move in its last
    digits). A malformed ``lexicon`` raises at once (LexiconError), before any note; so do the
    exceptions of ``reraise`` (a worker's time limit)."""
    if lexicon is not None and not isinstance(lexicon, PreparedLexicon):
        lexicon = prepare_lexicon(lexicon)
    head_json = head.head_json if head is not None else None
    out: list[dict[str, Any] | Exception] = []
    group: list[tuple[int, _Read]] = []  # (place in out, read) waiting for the classifier

    def classify_group() -> None:
        try:
            _classify([c for _, read in group for c in read.pending], head_json)
        except reraise:
            raise
        except Exception:  # noqa: BLE001 - find the note it belongs to
            for place, read in group:
                try:
                    _classify(read.pending, head_json)
                except reraise:
                    raise
                except Exception as exc:  # noqa: BLE001
                    out[place] = exc
        group.clear()

    waiting = 0
    for text in texts:
        try:
            read = _read(text, lexicon=lexicon, assertion=assertion, head=head)
        except reraise:
            raise
        except Exception as exc:  # noqa: BLE001 - handed back in the note's place
            out.append(exc)
            continue
        if group and waiting + len(read.pending) > JOINT_MENTIONS:
            classify_group()  # memory stays bounded, however many notes and mentions
            waiting = 0
        group.append((len(out), read))
        waiting += len(read.pending)
        out.append(read.result)
    if group:
        classify_group()
    return out


# Mentions of several notes classified in one call at most (their encoder features are 1,152 floats
# each); a note with more is classified alone, as ``extract`` does.
JOINT_MENTIONS = 1024


class _Pending(NamedTuple):
    """A candidate mention waiting for the classifier: its fact, (sentence, start, end) and rule
    features."""

    fact: dict[str, Any]
    mention: tuple[str, int, int]
    rule_row: np.ndarray


class _Read(NamedTuple):
    result: dict[str, Any]  # extract()'s answer, its candidates' flags still the rules'
    pending: list[_Pending]


def _read(
    text: str,
    *,
    lexicon: Sequence[Concept] | Mapping[str, Any] | PreparedLexicon | None = None,
    assertion: bool = True,
    head: AssertionHead | None = None,
) -> _Read:
    """The rule path of ``extract``: its result, with the candidate mentions the classifier is
    still to decide (none without ``assertion``)."""
    if not isinstance(text, str):
        raise TypeError(f"extract() needs the note as str, not {type(text).__name__} (decode bytes as UTF-8 first)")
    concepts: Sequence[Concept]
    if lexicon is None:
        concepts, rules_version = DEFAULT_LEXICON, _RULE_PATH_VERSION
    elif isinstance(lexicon, PreparedLexicon):
        concepts, rules_version = lexicon.concepts, lexicon.rule_path_version
    else:
        concepts = validate_lexicon(lexicon)
        rules_version = pipeline_version(concepts, assertion=False)
    version = _with_head(rules_version, head) if assertion else rules_version
    if not text.strip():
        return _Read({"pipeline_version": version, "sections": [], "facts": []}, [])
    by_id = {c["id"]: c for c in concepts}
    # One spaCy pipeline per rules + lexicon version, whichever assertion head reads its mentions.
    nlp = _get_pipeline(concepts, rules_version)
    masked = _mask_markup(text)
    pieces = _chunks(masked)

    sections: list[Section] = []
    historical_flags: list[bool] = []
    mentions: list[_Mention] = []
    project_rules = bool(nlp.meta.get("cdss_project_rules"))
    with warnings.catch_warnings():
        # W036: the sectioniser's token matcher is empty (all its rules are phrases).
        warnings.filterwarnings("ignore", message=r"\[W036\]")
        for offset, chunk_end in pieces:
            doc = _process(nlp, masked[offset:chunk_end])
            for sec in getattr(doc._, "sections", None) or []:
                body_end = doc[sec.body_end - 1].idx + len(doc[sec.body_end - 1]) if sec.body_end else 0
                end = offset + body_end if sec.body_end < len(doc) else chunk_end
                start = offset + (doc[sec.title_start].idx if sec.title_start < len(doc) else 0)
                if sec.category is None and sections and sec.title_start == 0:
                    # Text before the chunk's first header continues the previous chunk's section.
                    sections[-1]["end"] = end
                    continue
                title = doc[sec.title_start : sec.title_end].text if sec.title_end else ""
                sections.append({"category": sec.category or None, "title": title, "start": start, "end": end})
                historical_flags.append(section_is_historical(sec.category, title, masked[max(0, start - 40):start]))
            for ent in doc.ents:
                rule = ent._.target_rule
                concept = by_id.get((rule.metadata or {}).get("concept_id")) if rule is not None else None
                if concept is None:
                    continue
                cues = []
                for modifier in ent._.modifiers:
                    m_start, m_end = modifier.modifier_span
                    if project_rules and m_start < ent.end and ent.start < m_end:
                        continue  # a cue inside the mention's own words ("no known allergies")
                    cues.append((modifier.category.upper(), doc[m_start:m_end].text))
                mentions.append(
                    {
                        "concept": concept,
                        "start": offset + ent.start_char,
                        "end": offset + ent.end_char,
                        "sent_start": offset + ent.sent.start_char,
                        "sent_end": offset + ent.sent.end_char,
                        "cues": cues,
                    }
                )
    facts, pending = _facts(text, mentions, sections, historical_flags, masked if assertion else None)
    return _Read({"pipeline_version": version, "sections": sections, "facts": facts}, pending)


def _section_index(starts: list[int], sections: list[Section], position: int) -> int | None:
    """The section holding ``position`` (sections are in note order and do not overlap)."""
    index = bisect.bisect_right(starts, position) - 1
    return index if index >= 0 and position < sections[index]["end"] else None


def _facts(
    text: str,
    mentions: list[_Mention],
    sections: list[Section],
    historical_flags: list[bool],
    masked: str | None,
) -> tuple[list[dict[str, Any]], list[_Pending]]:
    """Facts from the mentions, with the rules' flags; with ``masked`` (the note with markup
    blanked), also the candidate mentions whose flags the classifier is to decide (``_classify``)."""
    substances = [i for i, m in enumerate(mentions) if m["concept"]["kind"] in {"medication", "allergen"}]
    facts: list[dict[str, Any]] = []
    candidates: list[tuple[int, tuple[str, int, int]]] = []  # (fact index, (sentence, start, end))
    rule_rows: list[np.ndarray] = []
    reaction_spans: list[tuple[int, int]] = []
    starts = [section["start"] for section in sections]
    for mention in mentions:
        concept, start, end = mention["concept"], mention["start"], mention["end"]
        section_index = _section_index(starts, sections, start)
        section = sections[section_index]["category"] if section_index is not None else None
        historical_section = historical_flags[section_index] if section_index is not None else False
        categories = {category for category, _ in mention["cues"]}
        relation = next((_relation(cue) for category, cue in mention["cues"] if category == "FAMILY"), None)
        flags = context_flags(categories, relation, section, historical_section)
        if masked is not None and concept["kind"] in CANDIDATE_KINDS:
            sentence = masked[mention["sent_start"] : mention["sent_end"]]
            local = (start - mention["sent_start"], end - mention["sent_start"])
            candidates.append((len(facts), (sentence, *local)))
            rule_rows.append(
                rule_features(flags, categories, section, historical_section, sentence, local[0], local[1])
            )
        fact: dict[str, Any] = {
            "kind": concept["kind"],
            "concept_id": concept["id"],
            "preferred": concept["preferred"],
            "text": text[start:end],
            "start": start,
            "end": end,
            "section": section,
            "codes": [dict(code) for code in concept.get("codes", [])],
            **flags,
            "stage": STAGE,
            "flag_stages": dict.fromkeys(("negated", "historical", "hypothetical", "family"), STAGE_RULES),
        }
        if concept["kind"] in {"medication", "allergen"}:
            line_start = text.rfind("\n", 0, start) + 1
            line_end = text.find("\n", end)
            line_end = len(text) if line_end < 0 else line_end
            following = [mentions[i]["start"] for i in substances if mentions[i]["start"] >= end]
            stop = min([line_end, end + AFTER_CHARS, *following[:1]])
            after = text[end:stop]
            before = text[max(line_start, mention["sent_start"], start - BEFORE_CHARS) : start]
            allergy_context = (
                concept["kind"] == "allergen" or section in ALLERGY_SECTIONS or bool(ALLERGY_CUE.search(before))
            )
            if allergy_context:
                no_known = concept["id"] == NO_KNOWN_ALLERGIES
                reaction = None if no_known else REACTIONS.search(after)
                if reaction:
                    reaction_spans.append((end + reaction.start(), end + reaction.end()))
                fact["allergy"] = {
                    "substance": None if no_known else concept["preferred"],
                    "reaction": reaction.group(0).lower() if reaction else None,
                    "no_known_allergies": no_known,
                }
            if concept["kind"] == "medication":
                medication = parse_medication(after.split(";")[0])
                if allergy_context:
                    status = "allergy"
                elif MED_STOPPED.search(before) or MED_STOPPED.search(after[:40]):
                    status = "stopped"
                else:
                    status = "current"
                fact["medication"] = {**medication, "status": status}
        facts.append(fact)
    # "penicillin (nausea)": the nausea is the allergy's reaction, not a symptom of the patient's.
    kept = [
        f
        for f in facts
        if f["kind"] not in {"symptom", "finding"}
        or not any(a <= f["start"] and f["end"] <= b for a, b in reaction_spans)
    ]
    kept_ids = {id(f) for f in kept}
    pending = [
        _Pending(facts[index], mention, row)
        for (index, mention), row in zip(candidates, rule_rows, strict=True)
        if id(facts[index]) in kept_ids
    ]
    return kept, pending


def _classify(pending: Sequence[_Pending], head_json: Path | None = None) -> None:
    """The classifier's flags for the candidate facts, in one call (batched by the encoder)."""
    if not pending:
        return
    from nlp.assertion.context import apply_decisions, get_classifier

    decisions = get_classifier(head_json).classify([p.mention for p in pending], np.stack([p.rule_row for p in pending]))
    for item, decided in zip(pending, decisions, strict=True):
        fact = item.fact
        stages = apply_decisions(fact, decided)
        fact["flag_stages"] = stages
        if any(stage != STAGE_RULES for stage in stages.values()):
            fact["stage"] = STAGE_CLASSIFIER
