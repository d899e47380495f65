"""ConText on marked spans: nlp.pipeline.classify_context, the nlp_context command, the evaluation.

Expected values are a clinician's reading of each sentence (the conventions of the NegEx/ConText
annotation guidelines, Chapman et al. 2007/2009: a pseudo-negation leaves the finding affirmed;
a relative's condition has experiencer "family"; a condition under "Past medical history" is
historical; the duration of the present illness is not).
"""

from __future__ import annotations

import io
import json
import logging
import sys
import time

import pytest
from django.core.management import call_command

from nlp.pipeline import ContextResult, SpanError, build_pipeline, classify_context
from tests.conftest import require_data


def ctx(text: str, target: str, nlp=None) -> ContextResult:
    start = text.index(target)
    return classify_context(text, start, start + len(target), nlp=nlp)


NEGATION = [
    # (sentence, target, negated)
    ("No evidence of pneumonia.", "pneumonia", True),
    ("Patient denies chest pain or shortness of breath.", "shortness of breath", True),
    ("The lungs are clear to auscultation bilaterally, no wheezes or   RALES.", "RALES", True),  # dev-style spacing
    ("Extremities: No clubbing, cyanosis, or edema.", "edema", True),  # header then a negated list
    ("IMPRESSION:       NO EVIDENCE OF ACUTE CARDIOPULMONARY DISEASE.", "ACUTE CARDIOPULMONARY DISEASE", True),
    ("Pulmonary embolism was ruled out.", "Pulmonary embolism", True),
    ("She has a productive cough.", "productive cough", False),
    ("Pharynx is pink without exudates.", "Pharynx is pink without exudates", False),  # cue inside the finding
    ("The patient was not consistent with aortic dissection.", "aortic dissection", True),
]


@pytest.mark.parametrize(("text", "target", "negated"), NEGATION)
def test_it_reads_negation(text, target, negated):
    assert ctx(text, target)["negated"] is negated


PSEUDO_NEGATION = [
    # (sentence, target): the cue word is there, the finding is present.
    ("No interval change in the right pleural effusion.", "right pleural effusion"),
    ("Blood cultures grew gram negative bacteremia.", "bacteremia"),
    ("CT abdomen with and without contrast shows appendicitis.", "appendicitis"),
    ("MRI showed no biliary dilatation and positive for cholecystolithiasis.", "cholecystolithiasis"),
    ("Pulmonary embolism has not been ruled out.", "Pulmonary embolism"),
]


@pytest.mark.parametrize(("text", "target"), PSEUDO_NEGATION)
def test_it_leaves_pseudo_negated_findings_affirmed(text, target):
    assert ctx(text, target)["negated"] is False


def test_not_ruled_out_is_uncertain():
    # ConText: "not ruled out" is a possible-existence cue, not a negation.
    assert ctx("Pulmonary embolism has not been ruled out.", "Pulmonary embolism")["uncertain"] is True


HISTORICAL = [
    # (sentence, target, historical)
    ("History of myocardial infarction.", "myocardial infarction", True),
    ("The patient is status post liver  transplant.", "liver  transplant", True),
    ("He is s/p appendectomy.", "appendectomy", True),
    ("He had a previous diagnosis of anxiety.", "anxiety", True),
    ("He had a stroke many years ago.", "stroke", True),
    ("PAST MEDICAL HISTORY:   Hypertension, diabetes and gout.", "gout", True),  # carried by the section
    ("SOCIAL HISTORY:   She was a smoker for 40 years.", "smoker", True),  # the annotators' convention
    ("He presents with a two day history of cough.", "cough", False),  # duration of the present illness
    ("CLINICAL HISTORY:     Dizziness and headache.", "headache", False),  # radiology indication
    # medspaCy's header rules match "HISTORY:" alone here: the word before it says which history
    ("MEDICAL HISTORY:   Atrial fibrillation, hypertension and gout.", "gout", True),
    ("HOURS    CLINICAL HISTORY:   Fever and cough.", "cough", False),
    ("She has a 75-year-old sister with diabetes.", "diabetes", False),  # "old" is not "previous"
    ("She complains of abdominal pain.", "abdominal pain", False),
]


@pytest.mark.parametrize(("text", "target", "historical"), HISTORICAL)
def test_it_reads_history(text, target, historical):
    assert ctx(text, target)["historical"] is historical


HYPOTHETICAL = [
    ("Return to the emergency department if chest pain recurs.", "chest pain", True),
    ("Should he develop fever, call the clinic.", "fever", True),
    ("He has fever.", "fever", False),
]


@pytest.mark.parametrize(("text", "target", "hypothetical"), HYPOTHETICAL)
def test_it_reads_hypothetical_mentions(text, target, hypothetical):
    assert ctx(text, target)["hypothetical"] is hypothetical


FAMILY = [
    # (sentence, target, experiencer, relation)
    ("Mother had breast cancer.", "breast cancer", "family", "mother"),
    ("Her father's colon cancer was diagnosed at 50.", "colon cancer", "family", "father"),
    ("Maternal grandmother with ovarian cancer.", "ovarian cancer", "family", "maternal grandmother"),
    ("Family history of diabetes.", "diabetes", "family", None),  # a relative, not which one
    ("Family History: mother had breast cancer", "breast cancer", "family", "mother"),
    ("FAMILY HISTORY:   Coronary artery disease.", "Coronary artery disease", "family", None),  # section only
    ("The donor had hepatitis B.", "hepatitis B", "other", None),
    ("She has diabetes.", "diabetes", "patient", None),
]


@pytest.mark.parametrize(("text", "target", "experiencer", "relation"), FAMILY)
def test_it_reads_the_experiencer(text, target, experiencer, relation):
    result = ctx(text, target)
    assert (result["experiencer"], result["family_relation"]) == (experiencer, relation)


def test_the_section_is_carried_into_the_result():
    result = ctx("Family History: mother had breast cancer", "breast cancer")
    assert result["section"] == "family_history"
    assert {"category": "FAMILY", "text": "mother", "start": 16, "end": 22} in result["cues"]


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("", 0, 0),
        ("No fever.", 3, 3),
        ("No fever.", -1, 4),
        ("No fever.", 3, 99),
        ("No   fever.", 2, 5),  # whitespace only
    ],
)
def test_it_rejects_spans_that_locate_nothing(text, start, end):
    with pytest.raises(SpanError):
        classify_context(text, start, end)


def test_it_classifies_a_target_deep_in_a_one_megabyte_note():
    filler = "The patient is comfortable. Vital signs are stable.\n" * 21_000  # about 1.1 MB
    text = filler + "Lungs: no wheezes."
    start = text.rindex("wheezes")
    began = time.perf_counter()
    result = classify_context(text, start, start + 7)
    assert result["negated"] is True
    assert time.perf_counter() - began < 10
    cue = result["cues"][0]
    assert cue["start"] > 1_000_000  # offsets are in the whole note, not the window
    assert text[cue["start"] : cue["end"]] == cue["text"]


@pytest.mark.parametrize(
    ("text", "target"),
    [
        ("<p>No <b>fever</b> today.</p>", "fever"),  # markup
        ("Pas de fièvre, pas de toux.", "toux"),  # another language: a result, maybe not a right one
        ("No fever \U0001f912 today.", "fever"),
        ("No fever\x00 today.", "fever"),
        ("\ufeffNo fever.", "fever"),
    ],
)
def test_it_gives_a_result_for_odd_text(text, target):
    result = ctx(text, target)
    assert set(result) >= {"negated", "historical", "hypothetical", "experiencer"}


def test_markup_does_not_hide_a_negation():
    assert ctx("<p>No <b>fever</b> today.</p>", "fever")["negated"] is True


# --- the command ----------------------------------------------------------------------------


def run_command(monkeypatch, data: bytes) -> list[dict]:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    out = io.StringIO()
    call_command("nlp_context", stdout=out)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def jl(**record) -> bytes:
    return json.dumps(record).encode() + b"\n"


def test_the_command_writes_one_result_per_line(monkeypatch):
    data = (
        jl(id="a", text="No fever.", start=3, end=8)
        + jl(id="b", text="Mother had breast cancer.", start=11, end=24)
        + jl(id=3, text="History of stroke.", start=11, end=17)
        + b"\n"
    )  # a blank line is skipped
    from nlp.assertion.context import assert_context

    # "Mother had breast cancer.": a relative's past condition, which the annotators of the NegEx
    # set mark historical or not (two family rows); the command says what the classifier says.
    mother = assert_context("Mother had breast cancer.", 11, 24)
    assert run_command(monkeypatch, data) == [
        {"id": "a", "negated": True, "historical": False, "hypothetical": False, "experiencer": "patient"},
        {"id": "b", "negated": False, "historical": mother["historical"], "hypothetical": False,
         "experiencer": "family"},
        {"id": 3, "negated": False, "historical": True, "hypothetical": False, "experiencer": "patient"},
    ]


def test_the_command_reports_bad_lines_and_goes_on(monkeypatch):
    data = (
        b"not json\n"
        + b"[1, 2]\n"
        + jl(id="m", text="No fever.")
        + jl(id="r", text="No fever.", start=3, end=80)
        + jl(id="e", text="", start=0, end=0)
        + jl(id="t", text=5, start=0, end=1)
        + jl(id="s", text="No fever.", start="3", end=8)
        + b'{"id": "u", "text": "No fever \xff\xfe.", "start": 3, "end": 8}\n'
        + jl(id="ok", text="No fever.", start=3, end=8)
    )
    out = run_command(monkeypatch, data)
    assert [o["id"] for o in out] == [None, None, "m", "r", "e", "t", "s", "u", "ok"]
    assert all("error" in o for o in out[:-1])
    assert "missing field(s): start, end" in out[2]["error"]
    assert "UTF-8" in out[7]["error"]
    assert out[-1]["negated"] is True


def test_the_command_error_lines_never_quote_the_note(monkeypatch):
    data = jl(id="x", text="SECRET-NAME has no fever", start=100, end=200)
    (out,) = run_command(monkeypatch, data)
    assert "SECRET" not in out["error"]


# --- patient data in logs -------------------------------------------------------------------


def test_no_note_text_reaches_the_logs(capfd, caplog):
    """PyRuSH logs every sentence at DEBUG through loguru (to stderr by default); nlp.pipeline
    disables it. A loguru sink of our own sees what any handler would."""
    from loguru import logger

    caplog.set_level(logging.DEBUG)
    sink = io.StringIO()
    handler = logger.add(sink, level="DEBUG")
    pyrush = build_pipeline(sentencizer="pyrush")
    note = "Zebediah Quux denies chest pain. Mother had breast cancer."
    try:
        # The check can see a leak: with PyRuSH's logger enabled the note reaches the sink.
        logger.enable("PyRuSH")
        try:
            ctx(note, "chest pain", nlp=pyrush)
        finally:
            logger.disable("PyRuSH")
        assert "Zebediah" in sink.getvalue()
        sink.truncate(0)
        sink.seek(0)
        ctx(note, "chest pain", nlp=pyrush)
        ctx(note, "breast cancer")
    finally:
        logger.remove(handler)
    captured = capfd.readouterr()
    assert "Zebediah" not in sink.getvalue()
    assert "Zebediah" not in captured.err + captured.out
    assert "Zebediah" not in caplog.text


# --- the evaluation -------------------------------------------------------------------------


@pytest.mark.needs_data
def test_negation_on_held_out_dev_sentences_stays_above_its_floor():
    """bench/nlp_eval.py's own function, on the 30% never read while writing rules. Measured
    (2026-11-25): negated F1 0.974 (medspaCy defaults 0.920), historical F1 0.581 (0.594);
    each floor is the measured figure less 0.03."""
    from bench.nlp_eval import evaluate_file

    scores = evaluate_file(require_data("nlp/negex-dev.tsv"), part="heldout", pipeline="project")
    assert scores.n == 373
    assert scores.counts["negated"].f1 >= 0.944
    assert scores.counts["historical"].f1 >= 0.551
