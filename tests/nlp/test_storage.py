"""Note extractions stored append-only, by a job that reads only what is new."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import transaction

from cdss.jobs import runner
from cdss.models import Job
from nlp.models import NoteExtraction, NoteFact
from patients.models import ClinicalNote
from tests.factories import PatientFactory

NOTE = """Chief Complaint: chest pain.
History of Present Illness: 64-year-old man with HTN and DM2 presents with CP. He denies SOB.
Family History: Mother with breast cancer.
Medications: metformin 500 mg PO BID; lisinopril 10 mg daily.
Allergies: penicillin (rash).
"""


def make_note(patient, text=NOTE, fhir_id="note-1"):
    return ClinicalNote.objects.create(patient=patient, fhir_id=fhir_id, source_type="typed", status="current",
                                       text=text, written_at=dt.datetime(2024, 5, 1, tzinfo=dt.UTC))


@pytest.mark.django_db
def test_the_nlp_job_stores_each_notes_facts_once(site_a):
    from nlp.extract import PIPELINE_VERSION

    patient = PatientFactory(site=site_a)
    note = make_note(patient)
    with transaction.atomic():
        job = runner.job_enqueue(kind="nlp", patient=patient)
    assert runner.job_run(job.pk, worker="w") == "succeeded"
    extraction = NoteExtraction.objects.get(note=note)
    assert extraction.pipeline_version == PIPELINE_VERSION and extraction.job_id == job.pk
    facts = list(NoteFact.objects.filter(extraction=extraction))
    assert extraction.fact_count == len(facts) > 0
    for fact in facts:
        assert note.text[fact.start:fact.end] == fact.text  # every span points into the note
    negated = [f for f in facts if f.negated]
    assert any("dyspnea" in f.preferred.lower() or f.text == "SOB" for f in negated)
    assert any(f.experiencer == "family" for f in facts)
    assert Job.objects.get(pk=job.pk).result["written"] == 1

    # A second run (a re-delivered message) writes nothing new.
    Job.objects.filter(pk=job.pk).update(status="queued")
    assert runner.job_run(job.pk, worker="w") == "succeeded"
    assert NoteExtraction.objects.count() == 1
    assert Job.objects.get(pk=job.pk).result == {"notes": 0, "written": 0, "facts": 0}


@pytest.mark.django_db
def test_a_new_note_is_read_and_old_ones_are_not_read_again(site_a):
    patient = PatientFactory(site=site_a)
    make_note(patient)
    with transaction.atomic():
        first = runner.job_enqueue(kind="nlp", patient=patient, inputs={"n": 1})
    runner.job_run(first.pk, worker="w")
    make_note(patient, text="Assessment: atrial fibrillation. Plan: start apixaban 5 mg BID.", fhir_id="note-2")
    with transaction.atomic():
        second = runner.job_enqueue(kind="nlp", patient=patient, inputs={"n": 2})
    runner.job_run(second.pk, worker="w")
    assert Job.objects.get(pk=second.pk).result["notes"] == 1
    assert NoteExtraction.objects.count() == 2


@pytest.mark.django_db
def test_an_empty_note_gives_an_empty_extraction_not_a_failure(site_a):
    patient = PatientFactory(site=site_a)
    make_note(patient, text="")
    with transaction.atomic():
        job = runner.job_enqueue(kind="nlp", patient=patient)
    assert runner.job_run(job.pk, worker="w") == "succeeded"
    assert NoteExtraction.objects.get().fact_count == 0
