"""Several notes read together (``extract_batch``, what the nlp job runs): the same facts as each
note read alone, one failing note pinned on itself, a worker's time limit not swallowed."""

from __future__ import annotations

import pytest

from nlp import extract as extract_module
from nlp.extract import CANDIDATE_KINDS, extract, extract_batch

NOTES = [
    "History of Present Illness: 70-year-old woman with cough and fever for two days. Denies chest pain.\n"
    "Past Medical History: HTN, DM2, s/p CABG.\nFamily History: Mother had breast cancer.\n"
    "Assessment: pneumonia. She has had a stroke. Rule out MI.",
    "",
    "Medications: metoprolol 25 mg PO BID. Allergies: penicillin (rash).",
    "CHIEF COMPLAINT: SOB and CP.\nHPI: No fever. History of CHF. Possible pneumonia.",
    "   ",
]


def test_notes_read_together_give_what_each_gives_alone():
    alone = [extract(text) for text in NOTES]
    together = extract_batch(NOTES)
    assert together == alone
    # the classifier did decide some flags here (so the joint classification ran)
    assert any(f["stage"].endswith("+classifier") for result in together for f in result["facts"])
    assert extract_batch(NOTES, assertion=False) == [extract(text, assertion=False) for text in NOTES]
    assert extract_batch([]) == []


def test_a_note_that_fails_is_handed_back_in_its_place_and_the_others_are_read(monkeypatch):
    results = extract_batch([NOTES[0], b"bytes, not text", NOTES[2]])  # type: ignore[list-item]
    assert isinstance(results[1], TypeError)
    assert results[0] == extract(NOTES[0]) and results[2] == extract(NOTES[2])


def test_a_failure_of_the_joint_classification_is_pinned_on_the_note_that_causes_it(monkeypatch):
    real = extract_module._classify

    def poisoned(pending, head_json=None):
        if any("POISON" in p.mention[0] for p in pending):
            raise RuntimeError("the encoder failed")
        return real(pending, head_json)

    monkeypatch.setattr(extract_module, "_classify", poisoned)
    notes = [NOTES[0], "She had a stroke, POISON, years ago.", NOTES[3]]
    results = extract_batch(notes)
    assert isinstance(results[1], RuntimeError)
    assert results[0] == extract(NOTES[0]) and results[2] == extract(NOTES[3])


def test_the_exceptions_a_worker_needs_raised_are_not_handed_back(monkeypatch):
    class TimeUp(Exception):
        pass

    real = extract_module._read

    def slow(text, **kwargs):
        if "late" in text:
            raise TimeUp()
        return real(text, **kwargs)

    monkeypatch.setattr(extract_module, "_read", slow)
    assert isinstance(extract_batch(["HTN.", "late"])[1], TimeUp)
    with pytest.raises(TimeUp):
        extract_batch(["HTN.", "late"], reraise=(TimeUp,))


def test_the_joint_calls_hold_a_bounded_number_of_mentions(monkeypatch):
    notes = NOTES * 3
    alone = [extract(text) for text in notes]
    mentions = [sum(1 for f in r["facts"] if f["kind"] in CANDIDATE_KINDS) for r in alone]
    assert max(mentions) > 3  # one note has more than the bound below

    calls: list[int] = []
    real = extract_module._classify

    def counted(pending, head_json=None):
        calls.append(len(pending))
        return real(pending, head_json)

    monkeypatch.setattr(extract_module, "_classify", counted)
    monkeypatch.setattr(extract_module, "JOINT_MENTIONS", 3)
    assert extract_batch(notes) == alone
    assert sum(calls) == sum(mentions) and len(calls) > 1
    # within the bound, unless it is one note's own mentions
    assert all(n <= 3 or n in mentions for n in calls)
