"""A clinician's report that a fact found in a note is wrong: a report that disputes it takes it
out of what the rules read (from the report's time on), and queues the patient's evaluation; a
report about its highlighted words or section leaves it read."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from cdss.models import Job
from decision.jobs import DECISION_KIND
from decision.load import load_facts
from nlp.models import NoteExtraction, NoteFact, NoteFactFeedback
from nlp.services import note_fact_feedback_create
from patients import models as m

pytestmark = pytest.mark.django_db


def copd_fact(patient: m.Patient) -> NoteFact:
    note = m.ClinicalNote.objects.create(patient=patient, fhir_id="n", source_type="typed", text="COPD.",
                                         written_at=timezone.now() - dt.timedelta(days=1))
    extraction = NoteExtraction.objects.create(note=note, patient=patient, pipeline_version="1")
    return NoteFact.objects.create(extraction=extraction, patient=patient, kind="problem", concept_id="copd",
                                   text="COPD", start=0, end=4, stage="s")


def read(patient: m.Patient, as_of: dt.datetime | None = None) -> list[str]:
    return [f.concept for f in load_facts(patient, as_of=as_of).notes]


def test_a_disputing_report_takes_the_fact_out_of_what_rules_read(patient_a: m.Patient, clinician_a) -> None:
    fact = copd_fact(patient_a)
    assert read(patient_a) == ["copd"]
    note_fact_feedback_create(user=clinician_a, patient=patient_a, fact=fact, problem="span")
    assert read(patient_a) == ["copd"]  # the wrong words highlighted: the finding stands
    assert not Job.objects.filter(kind=DECISION_KIND, patient=patient_a).exists()
    report = note_fact_feedback_create(user=clinician_a, patient=patient_a, fact=fact, problem="negation",
                                       comment="the note says no COPD")
    assert read(patient_a) == []
    assert Job.objects.filter(kind=DECISION_KIND, patient=patient_a, status=Job.Status.QUEUED).count() == 1
    # evaluated as of a time before the report, the fact was still read
    NoteFactFeedback.objects.filter(pk=report.pk).update(created_at=timezone.now() - dt.timedelta(hours=2))
    assert read(patient_a, as_of=timezone.now() - dt.timedelta(hours=3)) == ["copd"]
    assert read(patient_a) == []


@pytest.mark.parametrize("problem", NoteFactFeedback.DISPUTING)
def test_every_disputing_problem_is_a_known_one_and_disputes(problem: str, patient_a: m.Patient, clinician_a) -> None:
    assert problem in NoteFactFeedback.Problem.values
    fact = copd_fact(patient_a)
    note_fact_feedback_create(user=clinician_a, patient=patient_a, fact=fact, problem=problem)
    assert read(patient_a) == []
