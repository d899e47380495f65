"""Note -> facts: nlp.extract.extract, the lexicon, and the nlp_extract command.

Expected context values follow the NegEx/ConText annotation conventions (Chapman et al. 2007/2009)
as in test_context.py. Expected codes are those of nlp/lexicon.json: the RxNorm ingredient codes
and the SNOMED CT / ICD-10-CM pairs named in the NLP issue's brief (not re-checked here against a
terminology server).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import sys
import warnings
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from nlp import extract as extract_module
from nlp.extract import (
    DEFAULT_LEXICON,
    PIPELINE_VERSION,
    LexiconError,
    extract,
    load_lexicon,
    parse_medication,
    pipeline_version,
    prepare_lexicon,
)
from tests.conftest import require_data

SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


def facts_of(text: str, **kwargs) -> list[dict]:
    facts = extract(text, **kwargs)["facts"]
    for fact in facts:  # every fact, in every test: its span locates its text
        assert text[fact["start"] : fact["end"]] == fact["text"]
        # Every fact keeps the stage that produced it, per flag too.
        stages = fact["flag_stages"]
        assert set(stages) == {"negated", "historical", "hypothetical", "family"}
        assert set(stages.values()) <= {"context", "classifier"}
        from_classifier = "classifier" in stages.values()
        assert fact["stage"] == ("lexicon+context+classifier" if from_classifier else "lexicon+context")
        if fact["kind"] in {"medication", "allergen"}:
            assert not from_classifier  # only conditions and procedures are candidates
    return facts


def only(text: str, concept_id: str) -> dict:
    matches = [f for f in facts_of(text) if f["concept_id"] == concept_id]
    assert len(matches) == 1, (concept_id, [f["concept_id"] for f in facts_of(text)])
    return matches[0]


# --- concepts and abbreviations -------------------------------------------------------------

ABBREVIATIONS = [
    # (note, surface, concept id)
    ("Presents with SOB on exertion.", "SOB", "dyspnea"),
    ("Complains of CP radiating to the left arm.", "CP", "chest-pain"),
    ("Known DM2, diet controlled.", "DM2", "type-2-diabetes"),
    ("HTN, well controlled.", "HTN", "hypertension"),
    ("Admitted with an acute MI.", "MI", "myocardial-infarction"),
    ("Worsening CHF with edema.", "CHF", "heart-failure"),
    ("Rate-controlled AFib.", "AFib", "atrial-fibrillation"),
    ("Shortness of breath at night.", "Shortness of breath", "dyspnea"),
    ("Type 2 diabetes mellitus.", "Type 2 diabetes mellitus", "type-2-diabetes"),  # longest match wins
    ("Ruled in for pulmonary embolism.", "pulmonary embolism", "pulmonary-embolism"),
]


@pytest.mark.parametrize(("text", "surface", "concept_id"), ABBREVIATIONS)
def test_it_matches_synonyms_and_abbreviations(text, surface, concept_id):
    fact = only(text, concept_id)
    assert fact["text"] == surface
    assert fact["start"] == text.index(surface)


@pytest.mark.parametrize(
    "text",
    [
        "Please cp the report to the chart.",  # "cp": short abbreviations are case-sensitive
        "He likes to mi amor.",
        "Physical exam: pe deferred.",
        "She began to sob.",
    ],
)
def test_short_abbreviations_do_not_match_lower_case_words(text):
    assert facts_of(text) == []


def test_a_fact_carries_its_codes():
    fact = only("History of hypertension.", "hypertension")
    # SNOMED CT 38341003 "Hypertensive disorder"; ICD-10-CM I10 "Essential (primary) hypertension".
    assert {"system": SNOMED, "code": "38341003", "display": "Hypertensive disorder"} in fact["codes"]
    assert {c["code"] for c in fact["codes"] if c["system"] == ICD10} == {"I10"}
    assert fact["kind"] == "problem"
    assert fact["preferred"] == "Hypertension"


@pytest.mark.parametrize(
    ("text", "concept_id", "system", "code"),
    [
        ("Atrial fibrillation.", "atrial-fibrillation", ICD10, "I48.91"),
        ("Type 2 diabetes.", "type-2-diabetes", SNOMED, "44054006"),
        ("Metformin daily.", "metformin", RXNORM, "6809"),  # RxNorm ingredient metformin
        ("Apixaban daily.", "apixaban", RXNORM, "1364430"),
        ("Chest pain.", "chest-pain", ICD10, "R07.9"),
    ],
)
def test_codes_come_from_the_lexicon(text, concept_id, system, code):
    fact = only(text, concept_id)
    assert code in {c["code"] for c in fact["codes"] if c["system"] == system}


# --- context ---------------------------------------------------------------------------------

CONTEXT = [
    # (note, concept id, expected subset of the fact)
    ("Patient denies chest pain.", "chest-pain", {"negated": True, "experiencer": "patient"}),
    ("No fever or cough.", "cough", {"negated": True}),
    ("She has a productive cough.", "cough", {"negated": False}),
    (
        "PAST MEDICAL HISTORY: Hypertension and asthma.",
        "asthma",
        {"historical": True, "section": "past_medical_history"},
    ),
    (
        "Family History: Mother with breast cancer.",
        "breast-cancer",
        {"experiencer": "family", "family_relation": "mother", "section": "family_history"},
    ),
    ("FAMILY HISTORY: CAD.", "coronary-artery-disease", {"experiencer": "family", "family_relation": None}),
    ("Return if chest pain recurs.", "chest-pain", {"hypothetical": True}),
    ("Pulmonary embolism has not been ruled out.", "pulmonary-embolism", {"uncertain": True, "negated": False}),
    ("He is s/p CABG.", "cabg", {"historical": True, "kind": "procedure"}),
]


@pytest.mark.parametrize(("text", "concept_id", "expected"), CONTEXT)
def test_it_reads_the_context_of_each_fact(text, concept_id, expected):
    fact = only(text, concept_id)
    assert {k: fact[k] for k in expected} == expected


def test_a_medical_history_header_makes_its_list_historical_by_the_rules_alone():
    """medspaCy's header rules match "HISTORY:" alone in "MEDICAL HISTORY:"; the word before it
    says the section is the past history (a radiology "CLINICAL HISTORY:" is the indication)."""
    text = "CHIEF COMPLAINT: Cough.\n\nMEDICAL HISTORY:  Hypertension, diabetes mellitus and CHF.\n"
    facts = extract(text, assertion=False)["facts"]
    by_id = {f["concept_id"]: f for f in facts}
    assert {f["section"] for f in facts if f["concept_id"] != "cough"} == {"past_medical_history"}
    assert [by_id[c]["historical"] for c in ("hypertension", "heart-failure")] == [True, True]
    assert by_id["cough"]["historical"] is False
    indication = extract("HOURS    CLINICAL HISTORY:  Cough.\n", assertion=False)["facts"]
    assert [f["historical"] for f in indication] == [False]


def test_context_is_read_per_mention_in_one_document():
    text = (
        "HISTORY OF PRESENT ILLNESS: Denies CP. Reports SOB.\n"
        "PAST MEDICAL HISTORY: MI.\n"
        "FAMILY HISTORY: Father with colon cancer.\n"
    )
    by_id = {f["concept_id"]: f for f in facts_of(text)}
    assert by_id["chest-pain"]["negated"] is True
    assert by_id["dyspnea"]["negated"] is False
    assert by_id["myocardial-infarction"]["historical"] is True
    assert by_id["colon-cancer"]["experiencer"] == "family"
    assert by_id["colon-cancer"]["family_relation"] == "father"
    sections = extract(text)["sections"]
    assert [s["category"] for s in sections] == ["history_of_present_illness", "past_medical_history", "family_history"]
    for section in sections:
        assert text[section["start"] :].startswith(section["title"])


# --- medications ----------------------------------------------------------------------------

MEDICATIONS = [
    # (note, concept id, dose, unit, route, frequency)
    ("metformin 500 mg PO BID", "metformin", 500.0, "mg", "oral", "twice daily"),
    ("lisinopril 10mg daily", "lisinopril", 10.0, "mg", None, "daily"),
    ("aspirin 81 mg by mouth once a day", "aspirin", 81.0, "mg", "oral", "daily"),
    ("Insulin 10 units subcutaneously at bedtime", "insulin", 10.0, "units", "subcutaneous", "at bedtime"),
    ("Albuterol 2 puffs inhaled q4h", "albuterol", 2.0, "puffs", "inhalation", "every 4 hours"),
    ("Furosemide 40 mg IV twice daily", "furosemide", 40.0, "mg", "intravenous", "twice daily"),
    ("levothyroxine 0.075 mg p.o. daily", "levothyroxine", 0.075, "mg", "oral", "daily"),
    ("Lipitor", "atorvastatin", None, None, None, None),  # a brand name, nothing else stated
]


@pytest.mark.parametrize(("text", "concept_id", "dose", "unit", "route", "frequency"), MEDICATIONS)
def test_it_reads_dose_route_and_frequency(text, concept_id, dose, unit, route, frequency):
    med = only(text, concept_id)["medication"]
    assert (med["dose"], med["unit"], med["route"], med["frequency"], med["status"]) == (
        dose,
        unit,
        route,
        frequency,
        "current",
    )


def test_each_drug_on_a_line_gets_its_own_dose():
    text = "MEDICATIONS: metformin 500 mg PO BID, lisinopril 20 mg daily, aspirin 81 mg."
    doses = {f["concept_id"]: f["medication"]["dose"] for f in facts_of(text)}
    assert doses == {"metformin": 500.0, "lisinopril": 20.0, "aspirin": 81.0}


def test_as_needed_is_kept():
    assert parse_medication(" 650 mg PO q6h prn pain")["as_needed"] is True
    assert parse_medication(" 650 mg PO q6h prn pain")["frequency"] == "every 6 hours"


@pytest.mark.parametrize(
    "text",
    [
        "Warfarin was discontinued.",
        "Lisinopril held for hypotension.",
        "Stopped simvastatin last month.",
        "Metoprolol d/c'd.",
    ],
)
def test_a_stopped_drug_has_status_stopped(text):
    (fact,) = [f for f in facts_of(text) if f["kind"] == "medication"]
    assert fact["medication"]["status"] == "stopped"


# --- allergies ------------------------------------------------------------------------------

ALLERGIES = [
    # (note, concept id, reaction)
    ("ALLERGIES: penicillin (rash).", "penicillin", "rash"),
    ("She is allergic to sulfa - hives.", "sulfonamides", "hives"),
    ("Allergies: PCN - anaphylaxis", "penicillin", "anaphylaxis"),
    ("Allergic to amoxicillin.", "amoxicillin", None),
    ("ALLERGIES: Penicillin (rash), ibuprofen (nausea).", "ibuprofen", "nausea"),
]


@pytest.mark.parametrize(("text", "concept_id", "reaction"), ALLERGIES)
def test_it_reads_allergies_and_their_reactions(text, concept_id, reaction):
    fact = only(text, concept_id)
    assert fact["allergy"]["reaction"] == reaction
    assert fact["allergy"]["substance"] == fact["preferred"]
    if fact["kind"] == "medication":
        assert fact["medication"]["status"] == "allergy"


def test_a_reaction_is_not_also_a_symptom_of_the_patient():
    facts = facts_of("ALLERGIES: Penicillin (rash), ibuprofen (nausea).")
    assert "nausea" not in {f["concept_id"] for f in facts}


@pytest.mark.parametrize("text", ["ALLERGIES: NKDA.", "Allergies: No known drug allergies.", "No known allergies."])
def test_no_known_allergies_is_an_explicit_fact(text):
    fact = only(text, "no-known-drug-allergies")
    assert fact["allergy"] == {"substance": None, "reaction": None, "no_known_allergies": True}
    assert fact["negated"] is False  # the "no" is part of the phrase, not a negation of it
    # SNOMED CT 409137002 "No known drug allergy".
    assert "409137002" in {c["code"] for c in fact["codes"]}


def test_a_drug_outside_an_allergy_context_has_no_allergy():
    fact = only("MEDICATIONS: amoxicillin 500 mg PO TID.", "amoxicillin")
    assert "allergy" not in fact
    assert fact["medication"]["status"] == "current"


# --- robustness -----------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "   \n\t "])
def test_an_empty_note_gives_no_facts(text):
    assert extract(text) == {"pipeline_version": PIPELINE_VERSION, "sections": [], "facts": []}


@pytest.mark.parametrize("value", [b"chest pain", None, 42, ["chest pain"]])
def test_it_refuses_anything_but_text(value):
    with pytest.raises(TypeError, match="needs the note as str"):
        extract(value)


def test_markup_is_tolerated_and_spans_stay_in_the_original():
    text = "<p>Patient <b>denies</b> <i>chest pain</i>.</p>&nbsp;<br/>History of <b>HTN</b>."
    by_id = {f["concept_id"]: f for f in facts_of(text)}
    assert by_id["chest-pain"]["negated"] is True
    assert by_id["hypertension"]["text"] == "HTN"


@pytest.mark.parametrize(
    "text",
    [
        "Pas de fièvre, pas de toux.",  # another language: no facts, no crash
        "No fever \U0001f912 today.",
        "No fever\x00 today.",
        "\ufeffHTN.",
    ],
)
def test_it_gives_a_result_for_odd_text(text):
    facts_of(text)


def test_a_one_megabyte_note_is_processed_whole_with_offsets_in_the_note():
    # Its speed is measured in bench/nlp_throughput.py (--long), not here.
    filler = "The patient is comfortable. Vital signs are stable.\n" * 10_500  # 1.1 MB in all
    text = "PAST MEDICAL HISTORY: HTN.\n" + filler + "Denies chest pain.\n" + filler + "Metformin 500 mg PO BID.\n"
    facts = facts_of(text)
    by_id = {f["concept_id"]: f for f in facts}
    assert set(by_id) == {"hypertension", "chest-pain", "metformin"}
    assert len(text) > 1_000_000
    assert by_id["chest-pain"]["start"] > 500_000
    assert by_id["chest-pain"]["negated"] is True
    assert by_id["metformin"]["start"] > 1_000_000
    assert by_id["metformin"]["medication"]["dose"] == 500.0


def mtsamples_note(min_chars: int) -> str:
    """Real transcriptions (MTSamples) one after another, blank lines between them, the longest
    ones too (no line breaks inside them: chunks must be cut at sentence ends there)."""
    csv.field_size_limit(10**9)
    with require_data("nlp/mtsamples.csv").open(encoding="utf-8", newline="") as fh:
        texts = [row["transcription"] for row in csv.DictReader(fh) if row["transcription"]]
    longest = sorted(texts, key=len)[-12:]
    parts: list[str] = []
    for text in longest + texts:
        parts.append(text)
        if sum(map(len, parts)) > min_chars:
            break
    return "\n\n".join(parts)


@pytest.mark.needs_data
def test_a_note_read_in_chunks_gives_the_facts_and_sections_of_the_whole_note(monkeypatch):
    text = mtsamples_note(30_000)
    pieces = extract_module._chunks(text)
    assert len(pieces) >= 10
    assert pieces[0][0] == 0 and pieces[-1][1] == len(text)
    assert all(a < b <= a + extract_module.CHUNK_CHARS for a, b in pieces)
    assert all(prev[1] == nxt[0] for prev, nxt in itertools.pairwise(pieces))
    # Some cuts fall inside one transcription (no line break there): at a sentence end.
    assert any("\n" not in text[b - 20 : b + 20] for _, b in pieces[:-1])
    chunked = extract(text, assertion=False)
    monkeypatch.setattr(extract_module, "CHUNK_CHARS", len(text) + 1)
    assert len(extract_module._chunks(text)) == 1
    whole = extract(text, assertion=False)
    assert len(whole["facts"]) > 50 and len(whole["sections"]) > 10
    assert chunked["facts"] == whole["facts"]
    assert chunked["sections"] == whole["sections"]
    for fact in chunked["facts"]:
        assert text[fact["start"] : fact["end"]] == fact["text"]
    for section in chunked["sections"]:
        assert text[section["start"] : section["start"] + len(section["title"])] == section["title"]


def test_chunks_are_cut_at_a_blank_line_before_a_sentence_end(monkeypatch):
    monkeypatch.setattr(extract_module, "CHUNK_CHARS", 100)
    text = "Denies chest pain. " * 3 + "\n\n" + "She has a cough. Dr. Smith saw her. " * 3
    first, *rest = extract_module._chunks(text)
    assert text[first[0] : first[1]].endswith("\n\n")
    # The last sentence end in the second half of the window, and never after "Dr.".
    cut = rest[0][1]
    assert text[:cut].endswith("cough. ") and len(rest) == 2
    monkeypatch.setattr(extract_module, "CHUNK_CHARS", 40)
    assert not any(text[:b].endswith("Dr. ") for _, b in extract_module._chunks(text))


def test_a_section_carries_across_a_chunk_boundary(monkeypatch):
    monkeypatch.setattr(extract_module, "CHUNK_CHARS", 200)
    text = "FAMILY HISTORY:\n" + "Unremarkable otherwise.\n" * 20 + "Mother with breast cancer.\n"
    fact = only(text, "breast-cancer")
    assert fact["section"] == "family_history"
    assert fact["experiencer"] == "family"


# Whitespace and case the target rules must handle: runs of spaces and line breaks inside a
# phrase, exact-case short abbreviations beside their lower-case homographs, overlapping phrases.
ODD_TARGET_TEXTS = [
    "Chest  pain and chest\n\n  pain; CHEST PAIN. shortness of   breath, Shortness\tof breath.",
    "MI mi Mi, HTN htn Htn, sob SOB Sob, cp CP, pe PE; NKDA nkda. Known  drug allergies: none.",
    "Hx of CAD s/p MI. Type 2  diabetes mellitus, diabetes. Atrial\nfibrillation on warfarin 5 mg.",
    "   \n\n  ",
    "",
]


def _mtsamples_texts(count: int) -> list[str]:
    path: Path = require_data("nlp/mtsamples.csv")
    csv.field_size_limit(10**8)
    with path.open(encoding="utf-8", newline="") as fh:
        return [row["transcription"] for row in csv.DictReader(fh) if row["transcription"].strip()][:count]


@pytest.mark.needs_data
def test_the_phrase_target_matcher_finds_what_the_token_patterns_find():
    """The target rules keep their token patterns; the extraction pipeline matches them with
    spaCy's PhraseMatcher on the note without its space tokens. medspaCy's own matcher (spaCy's
    Matcher over the patterns) must give the same pruned matches, in the same order."""
    nlp = extract_module._get_pipeline(DEFAULT_LEXICON, PIPELINE_VERSION)
    phrase = nlp.get_pipe("medspacy_target_matcher")._TargetMatcher__matcher
    assert isinstance(phrase, extract_module._PhraseTargetMatcher)
    matched = direct = 0
    for text in ODD_TARGET_TEXTS + _mtsamples_texts(300):
        doc = nlp.make_doc(text)
        expected = list(phrase._inner(doc))
        assert phrase(doc) == expected, text[:80]
        matched += len(expected)
        direct += not phrase._may_span_spaces(doc)
    assert matched > 300
    # Both ways were taken: on the note itself, and on the note without its space tokens.
    assert direct > 100
    assert all(phrase._may_span_spaces(nlp.make_doc(text)) for text in ODD_TARGET_TEXTS[:3])
    # Concepts sharing a phrase: of the same span, the first rule's match is kept, as the Matcher
    # lists them in the rules' order.
    shared = [
        {"id": "a", "kind": "symptom", "preferred": "A", "synonyms": ["chest pain", "pain"]},
        {"id": "b", "kind": "problem", "preferred": "B", "synonyms": ["chest  pain", "pain"], "abbreviations": ["CP"]},
        {"id": "c", "kind": "finding", "preferred": "C", "synonyms": ["pain", "chest pain"], "abbreviations": ["cp"]},
    ]
    nlp = extract_module.build_extraction_pipeline(shared)
    phrase = nlp.get_pipe("medspacy_target_matcher")._TargetMatcher__matcher
    for text in ["chest pain", "Chest \n pain, CP cp Cp pain", "pain chest pain"]:
        doc = nlp.make_doc(text)
        assert phrase(doc) == list(phrase._inner(doc)), text
    assert [f["concept_id"] for f in extract("Chest  pain. Pain. cp.", lexicon=shared, assertion=False)["facts"]] == [
        "a",
        "a",
        "c",
    ]


@pytest.mark.needs_data
def test_skipping_sentences_and_context_where_nothing_matched_changes_nothing():
    """``_process`` runs the target matcher first and leaves the sentence and ConText components
    out for a text without any mention: entities, their sentences and modifiers, and sections are
    those of the whole pipeline run in its order."""
    nlp = extract_module._get_pipeline(DEFAULT_LEXICON, PIPELINE_VERSION)

    def summary(doc):
        return (
            [(e.start, e.end, e.label_, e.sent.start, e.sent.end) for e in doc.ents],
            [[(m.category, m.modifier_span) for m in e._.modifiers] for e in doc.ents],
            [(s.category, s.title_start, s.title_end, s.body_start, s.body_end) for s in doc._.sections],
        )

    skipped = 0
    for text in ODD_TARGET_TEXTS[:3] + _mtsamples_texts(60):
        text = text[: extract_module.CHUNK_CHARS]
        doc = extract_module._process(nlp, text)
        skipped += not doc.ents
        assert summary(doc) == summary(nlp(text)), text[:80]
    assert skipped > 5  # both paths were taken


@pytest.mark.needs_data
def test_the_sectioniser_labels_what_medspacys_labels():
    """The project's sectioniser (``pipeline._labelled_sections``) gives medspaCy's sections, token
    labels (``token._.section``) and entity section attributes."""
    nlp = extract_module.build_extraction_pipeline(DEFAULT_LEXICON)
    labelled = nlp.get_pipe("medspacy_sectionizer")
    assert type(labelled).__name__ == "_LabelledSections"
    plain = nlp.add_pipe("medspacy_sectionizer", name="plain_sectionizer", last=True)
    assert type(plain).__name__ == "Sectionizer"
    targets = nlp.get_pipe("medspacy_target_matcher")
    attributes = sorted({name for attrs in plain.assertion_attributes_mapping.values() for name in attrs})
    assert attributes

    def summary(doc):
        def section(s):
            return None if s is None else (s.category, s.title_start, s.title_end, s.body_start, s.body_end, s.parent,
                                           s.rule.literal if s.rule else None)

        return (
            [section(s) for s in doc._.sections],
            [section(token._.section) for token in doc],
            [[getattr(ent._, name) for name in attributes] for ent in doc.ents],
        )

    headers = sections = flagged = 0
    texts = ["", "   ", "FAMILY HISTORY: Mother with breast cancer.\nPAST MEDICAL HISTORY: HTN.\nPlan: aspirin."]
    for text in texts + _mtsamples_texts(80):
        docs = [targets(nlp.make_doc(text)) for _ in range(2)]
        ours, theirs = summary(labelled(docs[0])), summary(plain(docs[1]))
        assert ours == theirs, text[:80]
        headers += sum(s is not None and s[0] is not None for s in ours[0])
        sections += sum(s is not None for s in ours[1])
        flagged += sum(any(values) for values in ours[2])
    assert headers > 100 and sections > 10_000 and flagged > 5


def test_the_target_matcher_sets_the_entities_medspacy_sets(monkeypatch):
    """The extraction pipeline's target matcher sets ``doc.ents`` once; medspaCy's adds one match
    at a time and skips (with a warning) a match overlapping an entity already set."""
    from medspacy.target_matcher import TargetMatcher

    lexicon = [
        *DEFAULT_LEXICON,
        {"id": "x-a", "kind": "finding", "preferred": "A", "synonyms": ["alpha beta gamma"]},
        {"id": "x-b", "kind": "finding", "preferred": "B", "synonyms": ["beta"]},
        {"id": "x-c", "kind": "finding", "preferred": "C", "synonyms": ["gamma delta"]},
    ]
    nlp = extract_module.build_extraction_pipeline(lexicon)
    targets = nlp.get_pipe("medspacy_target_matcher")
    assert type(targets).__name__ == "_EntityTargets"
    dense = "Denies chest pain. History of HTN, DM and CAD. Mother had breast cancer. " * 30
    texts = [*ODD_TARGET_TEXTS, dense, "Alpha beta gamma delta. Then HTN."]

    def both(text):
        out = []
        for call in (targets, lambda doc: TargetMatcher.__call__(targets, doc)):
            with warnings.catch_warnings(record=True) as warned:
                warnings.simplefilter("always")
                doc = call(nlp.make_doc(text))
            out.append(([(e.start, e.end, e.label_, e._.target_rule) for e in doc.ents], [str(w.message) for w in warned]))
        assert out[0] == out[1], text[:80]
        return out[0]

    assert [len(both(text)[0]) for text in texts][-2:] == [150, 2]
    # Matches left overlapping (medspaCy's pruning leaves none; its matcher unpruned here): the
    # first one is kept, the others are skipped with medspaCy's warning.
    phrase = targets._TargetMatcher__matcher

    class Unpruned:
        rule_map = phrase.rule_map

        def __call__(self, doc):
            return phrase._inner._MedspacyMatcher__matcher(doc)  # spaCy's Matcher, unpruned

    monkeypatch.setattr(targets, "_TargetMatcher__matcher", Unpruned())
    ents, warned = both("Alpha beta gamma delta. Then HTN.")
    # "beta" came first: "alpha beta gamma" is skipped, "gamma delta" kept.
    assert [(start, end) for start, end, *_ in ents] == [(1, 2), (2, 4), (6, 7)]
    assert len(warned) == 1 and '""Alpha beta gamma"" conflicts with a pre-existing entity' in warned[0]

# --- lexicon and version --------------------------------------------------------------------


def test_the_lexicon_is_well_formed_and_covers_the_required_concepts():
    ids = {c["id"] for c in DEFAULT_LEXICON}
    required = {
        "dyspnea", "chest-pain", "type-2-diabetes", "hypertension", "myocardial-infarction", "heart-failure",
        "atrial-fibrillation", "coronary-artery-disease", "chronic-kidney-disease", "copd", "asthma", "stroke",
        "transient-ischemic-attack", "pneumonia", "pulmonary-embolism", "deep-vein-thrombosis", "breast-cancer",
        "lung-cancer", "colon-cancer", "hyperlipidemia", "obesity", "depression", "fever", "cough", "nausea",
        "vomiting", "headache", "syncope", "edema", "palpitations", "cabg", "pci", "appendectomy", "cholecystectomy",
    }  # fmt: skip
    assert required <= ids
    # RxNorm ingredient codes as listed in the NLP issue's brief.
    rxnorm = {c["id"]: c["codes"][0]["code"] for c in DEFAULT_LEXICON if c["kind"] == "medication"}
    assert rxnorm["aspirin"] == "1191"
    assert rxnorm["warfarin"] == "11289"
    assert rxnorm["gabapentin"] == "25480"
    assert len(rxnorm) >= 24


def test_a_lexicon_edit_changes_the_version(tmp_path):
    edited = json.loads(json.dumps(DEFAULT_LEXICON))
    assert pipeline_version(edited) == PIPELINE_VERSION
    edited[0]["synonyms"].append("raised blood pressure")
    assert pipeline_version(edited) != PIPELINE_VERSION
    # Layout alone (indentation) does not.
    path = tmp_path / "lexicon.json"
    path.write_text(json.dumps({"concepts": DEFAULT_LEXICON}, indent=4), encoding="utf-8")
    assert pipeline_version(load_lexicon(path)) == PIPELINE_VERSION


def test_a_custom_lexicon_is_used_and_versioned():
    lexicon = [
        {
            "id": "gout",
            "kind": "problem",
            "preferred": "Gout",
            "synonyms": ["gout"],
            "abbreviations": [],
            "codes": [{"system": SNOMED, "code": "90560007", "display": "Gout"}],
        }
    ]
    result = extract("History of gout. Denies chest pain.", lexicon=lexicon)
    assert [f["concept_id"] for f in result["facts"]] == ["gout"]
    assert result["pipeline_version"] != PIPELINE_VERSION
    # checked and hashed once for many notes: the same facts and versions as the list itself
    prepared = prepare_lexicon(lexicon)
    assert extract("History of gout. Denies chest pain.", lexicon=prepared) == result
    rule_path = extract("No gout.", lexicon=lexicon, assertion=False)
    assert extract("No gout.", lexicon=prepared, assertion=False) == rule_path
    assert rule_path["pipeline_version"] == prepared.rule_path_version != prepared.version()
    assert result["pipeline_version"] == prepared.version()


@pytest.mark.parametrize(
    "lexicon",
    [
        [{"id": "x", "kind": "spell", "preferred": "X", "synonyms": ["x"]}],
        [{"id": "x", "kind": "problem", "preferred": "X", "synonyms": [""]}],
        [{"id": "x", "kind": "problem", "preferred": "X", "codes": [{"system": "urn:made-up", "code": "1"}]}],
        [{"id": "x", "kind": "problem", "preferred": "X"}, {"id": "x", "kind": "problem", "preferred": "Y"}],
        "not a lexicon",
    ],
)
def test_a_malformed_lexicon_is_refused(lexicon):
    with pytest.raises(LexiconError):
        extract("chest pain", lexicon=lexicon)
    with pytest.raises(LexiconError):
        prepare_lexicon(lexicon)


# --- the command ----------------------------------------------------------------------------


def run_extract(*args: str) -> dict:
    out = io.StringIO()
    call_command("nlp_extract", *args, stdout=out)
    return json.loads(out.getvalue())


def test_the_command_prints_the_facts_as_json(tmp_path):
    note = tmp_path / "note.txt"
    note.write_text("Denies CP. ALLERGIES: NKDA.\n", encoding="utf-8")
    result = run_extract(str(note))
    assert result["pipeline_version"] == PIPELINE_VERSION
    assert [(f["concept_id"], f["negated"]) for f in result["facts"]] == [
        ("chest-pain", True),
        ("no-known-drug-allergies", False),
    ]


def test_the_command_reads_stdin(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"Known HTN.")))
    assert [f["concept_id"] for f in run_extract("-")["facts"]] == ["hypertension"]


def test_the_command_names_the_first_byte_that_is_not_utf8(tmp_path):
    note = tmp_path / "note.txt"
    note.write_bytes(b"Denies chest pain \xff\xfe.")
    with pytest.raises(CommandError, match=r"not valid UTF-8 \(byte offset 18\)"):
        run_extract(str(note))


def test_the_command_names_a_missing_file(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(CommandError, match=str(missing)):
        run_extract(str(missing))


# --- real notes -----------------------------------------------------------------------------


@pytest.mark.needs_data
def test_it_runs_over_fifty_mtsamples_notes():
    """Every 100th of the ~5,000 MTSamples notes (all specialties). Measured 2026-11-25: facts in
    28 of 50 (the rest are procedure and imaging notes outside the lexicon), about 90 notes/s."""
    path: Path = require_data("nlp/mtsamples.csv")
    csv.field_size_limit(10**8)
    with path.open(encoding="utf-8", newline="") as fh:
        notes = [row["transcription"] for row in csv.DictReader(fh)][::100][:50]
    assert len(notes) == 50
    with_facts = 0
    for note in notes:
        facts = facts_of(note)  # checks every span
        with_facts += bool(facts)
    assert with_facts >= 20


def test_the_rule_path_leaves_the_classifier_out():
    text = "PAST MEDICAL HISTORY: Hypertension.\nDenies chest pain."
    facts = facts_of(text, assertion=False)
    assert {f["stage"] for f in facts} == {"lexicon+context"}
    assert all(set(f["flag_stages"].values()) == {"context"} for f in facts)
    assert extract(text, assertion=False)["pipeline_version"] != PIPELINE_VERSION


def test_the_classifier_decides_the_flags_its_heads_own():
    from nlp.assertion.context import get_classifier

    classifier = get_classifier()
    flags = ("negated", "historical", "hypothetical", "family")
    owned = {flag for flag in flags if classifier.mode(flag) in {"model", "or"}}
    assert owned  # the shipped artefact has at least one learned head
    # No rule cue here: every learned head decides its flag.
    (fact,) = [f for f in facts_of("She has a productive cough.") if f["concept_id"] == "cough"]
    assert {flag for flag, stage in fact["flag_stages"].items() if stage == "classifier"} == owned
    assert fact["stage"] == "lexicon+context+classifier"
    assert not fact["negated"] and not fact["historical"]
    (fact,) = [f for f in facts_of("She denies chest pain.") if f["concept_id"] == "chest-pain"]
    assert fact["negated"] is True
    assert classifier.version in PIPELINE_VERSION  # a new artefact is a new extraction version
