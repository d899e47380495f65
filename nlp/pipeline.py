"""The clinical text pipeline: sentences, sections and ConText (negation, history, experiencer).

Pure Python on spaCy + medspaCy (no Django), so a worker, a management command and a benchmark
call the same code. One pipeline is built per process (``get_pipeline``): medspaCy's components
are not safe under spaCy's ``n_process`` (they do not pickle), so each worker process loads its own
copy after the fork.

No model is downloaded: the base is a blank English spaCy pipeline with medspaCy's tokenizer.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import re
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, TypedDict

import numpy as np
from spacy.attrs import IDX, IS_SPACE, ORTH
from spacy.language import Language
from spacy.tokens import Doc, Token

from cdss.jobs.registry import load_once

# PyRuSH (medspaCy's default sentence splitter) logs every sentence it sees at DEBUG through
# loguru, whose default handler writes to stderr: note text (patient data) would end up in the
# worker's logs. Silence it as soon as this module is imported, before any pipeline exists, and
# also the stdlib loggers of the same names in case a release moves back to ``logging``.
try:
    from loguru import logger as _loguru_logger

    _loguru_logger.disable("PyRuSH")
except ImportError:  # pragma: no cover - loguru comes with PyRuSH
    pass
for _name in ("PyRuSH", "PyRuSH.RuSH", "PyRuSH.PyRuSHSentencizer", "medspacy"):
    logging.getLogger(_name).setLevel(logging.WARNING)

PIPELINE_VERSION = "context-1"

Sentencizer = Literal["rule", "pyrush"]
Experiencer = Literal["patient", "family", "other"]

# Section categories (medspaCy's default section rules) that say something about every finding
# under them: a condition under "Family history" is a relative's; under "Past medical/surgical
# history" it is historical.
FAMILY_SECTIONS = frozenset({"family_history"})
# The physicians who labelled the NegEx set call what is under "Social history" (smoking,
# alcohol) historical too. medspaCy files radiology's "CLINICAL HISTORY:" and "HISTORY:" (the
# indication for the exam) under past_medical_history as well, so the title must also say
# past/medical/surgical/social.
HISTORICAL_SECTIONS = frozenset({"past_medical_history", "past_surgical_history", "social_history"})
HISTORICAL_TITLE = re.compile(r"\b(past|pmh|pmhx|psh|mhx|medical|surgical|social)\b|history of chronic", re.IGNORECASE)


_QUALIFIER_END = re.compile(r"\b(past|medical|surgical|social)\s*$", re.IGNORECASE)


def section_is_historical(category: str | None, title: str, before: str) -> bool:
    """Whether a section makes every finding under it historical: a past-history category whose
    header says past / medical / surgical / social history, in the title medspaCy matched or in
    the words just before it on its line, since its rules may match "HISTORY:" alone in "MEDICAL
    HISTORY:" (``before``: the text before the title; no title, no such section)."""
    if category not in HISTORICAL_SECTIONS or not title:
        return False
    qualifier = before.rsplit("\n", 1)[-1][-20:]
    return bool(HISTORICAL_TITLE.search(title)) or bool(_QUALIFIER_END.search(qualifier))


# Longer notes are cut to a window around the target (see classify_context).
MAX_TEXT_CHARS = 100_000
WINDOW_BEFORE = 50_000
WINDOW_AFTER = 10_000


class Cue(TypedDict):
    category: str
    text: str
    start: int
    end: int


class ContextFlags(TypedDict):
    negated: bool
    historical: bool
    hypothetical: bool
    uncertain: bool
    experiencer: Experiencer
    family_relation: str | None


class ContextResult(ContextFlags):
    section: str | None
    historical_section: bool  # the section alone makes it historical (see HISTORICAL_SECTIONS)
    cues: list[Cue]


class SpanError(ValueError):
    """The target span does not locate any text in the note."""


def build_pipeline(*, extra_rules: bool = True, sentencizer: Sentencizer = "rule", sections: bool = True) -> Any:
    """A fresh pipeline. ``extra_rules=False, sentencizer="pyrush", sections=False`` is plain
    medspaCy (its ``medspacy.load()`` defaults), the baseline the benchmark compares against."""
    import medspacy

    project_config = {"rules": None}  # the defaults are re-added, edited, by _project_rules
    if sentencizer == "pyrush":
        nlp = medspacy.load()  # tokenizer, PyRuSH, target matcher, ConText with default rules
        nlp.remove_pipe("medspacy_target_matcher")  # targets are marked by the caller
        if extra_rules:
            nlp.replace_pipe("medspacy_context", "medspacy_context", config=project_config)
    else:
        # spaCy's punctuation sentencizer is about 5x faster than PyRuSH here and differs from
        # it on one dev sentence per part (one more false positive; bench/nlp_eval.py prints both).
        nlp = medspacy.load(medspacy_enable=["medspacy_tokenizer"])
        nlp.add_pipe("sentencizer")
        nlp.add_pipe("medspacy_context", config=project_config if extra_rules else {})
    if sections:
        sectionizer = nlp.add_pipe("medspacy_sectionizer", before="medspacy_context")
        labelled = _labelled_sections()
        if labelled.applies(sectionizer):
            sectionizer.__class__ = labelled  # spaCy has no hook to give it a subclass
        nlp.add_pipe("cdss_section_sentences", after="medspacy_sectionizer")
    if extra_rules:
        context = nlp.get_pipe("medspacy_context")
        context.add(_project_rules(nlp))
        # medspaCy has no hook for this: its ConText calls its (name-mangled) matcher directly.
        context._ConText__matcher = _SpaceTolerantMatcher(context._ConText__matcher)
    # Read by classify_context: the project ignores cues inside the target's own words.
    nlp.meta["cdss_project_rules"] = extra_rules
    return nlp


def _project_rules(nlp: Any) -> list[Any]:
    """medspaCy's default rules less ``REMOVED_DEFAULTS``, plus ``EXTRA_RULES``, with token
    patterns of words and ``IN`` lists expanded into literals (``context_rules.expand``): medspaCy
    matches literals with spaCy's PhraseMatcher, which costs far less per token than the Matcher.
    Every multi-word cue also matches across runs of spaces (reports keep their column layout:
    "history  of"): ``_SpaceTolerantMatcher`` matches on the note without its space tokens."""
    from medspacy.context import ConTextRule

    from nlp import context_rules

    with _default_rules_path().open(encoding="utf-8") as fh:
        defaults = json.load(fh)["context_rules"]
    specs = [r for r in defaults if r["literal"] not in context_rules.REMOVED_DEFAULTS] + context_rules.rules()

    def words_of(text: str) -> list[str]:
        return [t.lower_ for t in nlp.make_doc(text) if not t.is_space]

    out = []
    seen: set[tuple[Any, ...]] = set()
    for spec in specs:
        for rule in context_rules.expand(spec, words_of):
            exact = rule.pop("exact", False)
            before, after = rule.pop("spaces_before", False), rule.pop("spaces_after", False)
            if rule.get("pattern") is None:
                words = words_of(rule["literal"])
                key: tuple[Any, ...] = (tuple(words), rule["category"], rule["direction"], exact, before, after)
                if key in seen:  # the same cue twice (a default and a project rule) matches once
                    continue
                seen.add(key)
            context_rule = ConTextRule(**rule)
            # Read by _SpaceTolerantMatcher.
            context_rule.cdss_exact = exact  # type: ignore[attr-defined]
            context_rule.cdss_spaces = (before, after)  # type: ignore[attr-defined]
            out.append(context_rule)
    return out


class _SpaceTolerantMatcher:
    """ConText's matcher run on the note without its space tokens (runs of spaces, newlines),
    matches mapped back to the note's tokens: a multi-word cue matches whatever whitespace
    separates its words, as the token patterns with ``{"IS_SPACE": true, "OP": "*"}`` between
    words did, but through the PhraseMatcher. Matches of exact rules (``cdss_exact``) that
    spanned space tokens are dropped; a rule's ``cdss_spaces`` (before, after) also takes in the
    space tokens just before / after its match (see ``context_rules.expand``: a left-out optional
    first / last word left its "any run of spaces" there). Overlapping matches are then pruned
    (longest wins) on the note's own tokens, as medspaCy does."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        inner._prune = False  # pruned below, on the note's token offsets

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __call__(self, doc: Doc) -> list[tuple[int, int, int]]:
        from medspacy.common.util import prune_overlapping_matches

        keep, compact = without_spaces(doc)
        if keep is None:
            return list(prune_overlapping_matches(list(self._inner(doc))))
        rule_map = self._inner.rule_map
        matches = []
        for match_id, start, end in self._inner(compact):
            first, stop = keep[start], keep[end - 1] + 1
            rule = rule_map[doc.vocab.strings[match_id]]
            if stop - first != end - start and getattr(rule, "cdss_exact", False):
                continue
            before, after = getattr(rule, "cdss_spaces", (False, False))
            if before:
                while first > 0 and doc[first - 1].is_space:
                    first -= 1
            if after:
                while stop < len(doc) and doc[stop].is_space:
                    stop += 1
            matches.append((match_id, first, stop))
        return list(prune_overlapping_matches(matches))


def without_spaces(doc: Doc) -> tuple[list[int] | None, Doc]:
    """The indices of ``doc``'s tokens that are not space tokens (runs of spaces, newlines) and a
    Doc of those tokens alone; ``(None, doc)`` when it has no space token. The last answer is
    kept: the target matcher and ConText ask for the same doc in turn (no component between them
    changes its tokens)."""
    last = _WITHOUT_SPACES[0]  # one read: another thread may replace it meanwhile
    if last is not None and last[0] is doc and last[1] == len(doc):
        return last[2]
    spaces = doc.to_array(IS_SPACE)
    if not spaces.any():
        result: tuple[list[int] | None, Doc] = (None, doc)
    else:
        keep = np.flatnonzero(spaces == 0)
        strings = doc.vocab.strings
        words = [strings[orth] for orth in doc.to_array(ORTH)[keep].tolist()]
        result = (keep.tolist(), Doc(doc.vocab, words=words))
    _WITHOUT_SPACES[0] = (doc, len(doc), result)
    return result


_WITHOUT_SPACES: list[tuple[Doc, int, tuple[list[int] | None, Doc]] | None] = [None]


def _default_rules_path() -> Path:
    from medspacy.context import ConText

    return Path(inspect.getfile(ConText)).resolve().parents[2] / "resources" / "en" / "context_rules.json"


@functools.cache
def _labelled_sections() -> Any:
    """The ``_LabelledSections`` class (medspaCy is imported when a pipeline is built, not before)."""
    from medspacy.section_detection.section import Section
    from medspacy.section_detection.sectionizer import Sectionizer

    class _LabelledSections(Sectionizer):
        """medspaCy's Sectionizer (1.3.1) whose ``__call__`` labels each token with its section
        (``token._.section``) by writing the value where spaCy keeps it, ``doc.user_data``, instead
        of through a Token and an ``Underscore`` object per token (that loop was nine tenths of the
        sectioniser's time on MTSamples notes). Sections, token labels and the entities' section
        attributes are those of medspaCy's (tested). Used where the sectioniser is configured as this
        project does (no parent sections, no start/end-of-line filter, no sentence boundaries set)
        and the token extension is a plain value."""

        @staticmethod
        def applies(sectionizer: Any) -> bool:
            default, method, getter, setter = Token.get_extension("section") or (None, None, None, None)
            return (
                type(sectionizer) is Sectionizer
                and not (sectionizer.require_start_line or sectionizer.require_end_line)
                and not sectionizer._parent_sections
                and not sectionizer._apply_sentence_boundary
                and default is None
                and method is getter is setter is None
            )

        def __call__(self, doc: Doc) -> Doc:
            matcher = self._Sectionizer__matcher  # type: ignore[attr-defined]
            matches = matcher(doc)
            doc._.sections = []
            if len(matches) == 0:
                doc._.sections.append(Section(None, 0, 0, 0, len(doc)))
                return doc
            section_list = []
            if matches[0][1] != 0:
                section_list.append(Section(None, 0, 0, 0, matches[0][1]))
            for i, (match_id, start, end) in enumerate(matches):
                rule = matcher.rule_map[self.nlp.vocab.strings[match_id]]
                if i == len(matches) - 1:
                    stop = len(doc)
                    limit = len(doc)  # medspaCy: doc[-1].i + 1
                else:
                    stop = limit = matches[i + 1][1]
                if self.max_section_length is not None or rule.max_scope is not None:
                    scope = rule.max_scope if rule.max_scope is not None else self.max_section_length
                    stop = min(end + scope, limit)
                section_list.append(Section(rule.category, start, end, end, stop, None, rule))

            user_data: dict[Any, Any] = doc.user_data
            token_starts = doc.to_array(IDX).tolist()
            for section in section_list:
                doc._.sections.append(section)
                start, end = section.section_span
                # Underscore's key for a token's extension: ("._.", name, token.idx, None).
                user_data.update((("._.", "section", idx, None), section) for idx in token_starts[start:end])

            if self.assertion_attributes_mapping:
                if self._input_span_type.lower() == "ents":
                    self.set_assertion_attributes(doc.ents)
                elif self._input_span_type.lower() == "group":
                    self.set_assertion_attributes(doc.spans[self._span_group_name])
            return doc

    return _LabelledSections


@Language.component("cdss_section_sentences")
def section_sentences(doc: Doc) -> Doc:
    """A section title starts a sentence, and so does its body: ConText's scope is the sentence,
    and without this "*** Measurements Not Obtainable *** REFERRING DIAGNOSIS: chest pain"
    negates the chest pain."""
    for section in getattr(doc._, "sections", None) or []:
        for index in (section.title_start, section.title_end):
            if index is not None and 0 < index < len(doc):
                doc[index].is_sent_start = True
    return doc


def get_pipeline() -> Any:
    """The project's pipeline, built once per process."""
    return load_once(f"nlp.pipeline:{PIPELINE_VERSION}", build_pipeline)


def _relation(cue_text: str) -> str:
    """'Mother's' -> 'mother', 'paternal grandfather' -> 'paternal grandfather'."""
    text = re.sub(r"['\u2019]s?$", "", cue_text.strip().lower())
    text = re.sub(r"\s+", " ", text)
    return text


def classify_context(text: str, start: int, end: int, *, nlp: Any = None) -> ContextResult:
    """The context of the condition at ``text[start:end]`` (character offsets).

    Raises ``SpanError`` when the span is out of range or covers no token (empty or blank).
    ``nlp`` defaults to the project's pipeline; the benchmark passes the baseline.
    """
    if not isinstance(text, str):
        raise TypeError("text must be a str")
    if not (0 <= start < end <= len(text)):
        raise SpanError(f"span {start}:{end} is out of range for a text of {len(text)} characters")
    if not text[start:end].strip():
        raise SpanError(f"span {start}:{end} covers only whitespace")
    nlp = nlp if nlp is not None else get_pipeline()
    offset = 0
    if len(text) > MAX_TEXT_CHARS:
        # ConText looks no further than the sentence and the sectioniser no further than the
        # last header, so a window around the target gives the same answer as the whole note
        # at a bounded cost (spaCy also refuses texts over nlp.max_length, 1,000,000 chars).
        offset = max(0, start - WINDOW_BEFORE)
        if offset > 0:  # begin at a line start, so a header is not cut in half
            newline = text.find("\n", offset, start)
            offset = newline + 1 if newline >= 0 else offset
        stop = min(len(text), end + WINDOW_AFTER)
        text, start, end = text[offset:stop], start - offset, end - offset
    doc = nlp.make_doc(text)
    target = doc.char_span(start, end, label="TARGET", alignment_mode="expand")
    if target is None or len(target) == 0:
        raise SpanError(f"span {start}:{end} covers no token")
    doc.ents = [target]
    with warnings.catch_warnings():
        # The sectioniser's rules are all phrases, so its token matcher is empty and spaCy
        # warns (W036) on every note.
        warnings.filterwarnings("ignore", message=r"\[W036\]")
        for _name, component in nlp.pipeline:
            doc = component(doc)
    target = doc.ents[0]

    section: str | None = None
    historical_section = False
    for candidate in getattr(doc._, "sections", None) or []:
        body_start = candidate.body_start if candidate.body_start is not None else candidate.title_start
        if body_start <= target.start < candidate.body_end:
            section = candidate.category or None
            title = doc[candidate.title_start : candidate.title_end].text if candidate.title_end else ""
            at = doc[candidate.title_start].idx
            before = text[max(0, at - 40) : at] if title else ""  # the line's words before the title
            historical_section = section_is_historical(section, title, before)

    project_rules = bool(nlp.meta.get("cdss_project_rules"))
    cues: list[Cue] = []
    categories: set[str] = set()
    relation: str | None = None
    for modifier in target._.modifiers:
        m_start, m_end = modifier.modifier_span
        if project_rules and m_start < target.end and target.start < m_end:
            # A cue inside the condition's own words ("pharynx is pink without exudates",
            # "no acute disease" as a whole finding) is part of its name, not its context.
            continue
        span = doc[m_start:m_end]
        category = modifier.category.upper()
        categories.add(category)
        cues.append(
            {"category": category, "text": span.text, "start": span.start_char + offset, "end": span.end_char + offset}
        )
        if category == "FAMILY" and relation is None:
            relation = _relation(span.text)
    cues.sort(key=lambda c: (c["start"], c["end"]))

    flags = context_flags(categories, relation, section, historical_section)
    return ContextResult(**flags, section=section, historical_section=historical_section, cues=cues)


def context_flags(
    categories: set[str], relation: str | None, section: str | None, historical_section: bool
) -> ContextFlags:
    """A mention's context from its ConText cue categories, the first family cue's relation and
    its section (one rule for classify_context and for whole-note extraction)."""
    family = "FAMILY" in categories or section in FAMILY_SECTIONS
    other = "OTHER_EXPERIENCER" in categories
    experiencer: Experiencer = "family" if family else "other" if other else "patient"
    if relation in {"family", "fam", "families", "family history", "fh", "fhx"}:
        relation = None  # "family history of ..." says it is a relative's, not which
    return {
        "negated": "NEGATED_EXISTENCE" in categories,
        "historical": "HISTORICAL" in categories or historical_section,
        "hypothetical": "HYPOTHETICAL" in categories,
        "uncertain": "POSSIBLE_EXISTENCE" in categories,
        "experiencer": experiencer,
        "family_relation": relation if experiencer == "family" else None,
    }


def sentences(text: str, *, nlp: Any = None) -> Iterable[tuple[int, int]]:
    """Character spans of the sentences the pipeline sees (for tests and the benchmark)."""
    nlp = nlp if nlp is not None else get_pipeline()
    doc = nlp(text)
    return [(s.start_char, s.end_char) for s in doc.sents]
