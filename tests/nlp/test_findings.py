"""Patient-level note findings for the rules engine, from real extractions of notes."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

import pytest
from django.db import models, transaction

from cdss.jobs import runner
from nlp.lexicon_store import lexicon_current, lexicon_load
from nlp.models import NoteExtraction
from nlp.selectors import Code, NoteAllergy, NoteFinding, NoteFindings, NoteMedication, note_findings
from patients.models import ClinicalNote
from tests.factories import PatientFactory

NOTE = """Chief Complaint: chest pain.
History of Present Illness: 64-year-old man with HTN presents with CP. He denies SOB. Possible pneumonia.
Past Medical History: myocardial infarction in 2015.
Family History: Mother with breast cancer. Father had type 2 diabetes.
Medications: metformin 500 mg PO BID. Lisinopril was discontinued.
Allergies: penicillin (rash).
"""
WRITTEN = dt.datetime(2024, 5, 1, 9, 30, tzinfo=dt.UTC)


def read(patient, text, fhir_id, written_at=WRITTEN):
    note = ClinicalNote.objects.create(patient=patient, fhir_id=fhir_id, source_type="typed", status="current",
                                       text=text, written_at=written_at)
    with transaction.atomic():
        job = runner.job_enqueue(kind="nlp", patient=patient, inputs={"note": fhir_id})
    assert runner.job_run(job.pk, worker="w") == "succeeded"
    return note


def ids(findings):
    return [f.concept_id for f in findings]


@pytest.mark.django_db
def test_a_notes_findings_are_sorted_by_what_rules_need(site_a):
    patient = PatientFactory(site=site_a)
    note = read(patient, NOTE, "n1")
    found = note_findings([patient.pk])[patient.pk]
    assert ids(found.affirmed) == ["chest-pain", "hypertension", "chest-pain", "myocardial-infarction"]
    assert ids(found.negated) == ["dyspnea"]
    assert ids(found.possible) == ["pneumonia"]
    assert [(f.concept_id, f.relation) for f in found.family] == [("breast-cancer", "mother"),
                                                                  ("type-2-diabetes", "father")]
    assert [(m.concept_id, m.dose, m.unit, m.route, m.frequency, m.status) for m in found.medications] == [
        ("metformin", 500.0, "mg", "oral", "twice daily", "current"),
        ("lisinopril", None, None, None, None, "stopped"),
    ]
    assert [(a.concept_id, a.substance, a.reaction) for a in found.allergies] == [("penicillin", "Penicillin", "rash")]
    assert found.no_known_allergies == []

    mi = found.affirmed[-1]
    assert mi.historical and mi.section == "past_medical_history"
    assert NOTE[mi.start:mi.end] == mi.text == "myocardial infarction"
    assert mi.note_id == note.external_id and mi.note_date == WRITTEN
    assert Code("http://snomed.info/sct", "22298006", "Myocardial infarction") in mi.codes
    assert mi.has_code("http://hl7.org/fhir/sid/icd-10-cm", ["I21.9", "I25.2"])
    assert mi.pipeline_version == lexicon_current().version and mi.stage == "lexicon+context"
    assert found.concept_ids() == {"chest-pain", "hypertension", "myocardial-infarction"}


def walk(value):
    if dataclasses.is_dataclass(value):
        for item in dataclasses.fields(value):
            yield from walk(getattr(value, item.name))
    elif isinstance(value, list | tuple):
        for item in value:
            yield from walk(item)
    else:
        yield value


@pytest.mark.django_db
def test_findings_are_plain_values_not_orm_objects(site_a):
    patient = PatientFactory(site=site_a)
    read(patient, NOTE, "n1")
    found = note_findings([patient.pk])[patient.pk]
    leaves = list(walk(found))
    assert leaves and not any(isinstance(v, models.Model | models.QuerySet) for v in leaves)
    assert {type(v) for v in leaves} <= {str, int, float, bool, type(None), uuid.UUID, dt.datetime}
    assert all(type(f) is NoteFinding for f in found.affirmed)
    assert all(isinstance(m, NoteMedication) for m in found.medications)
    assert all(isinstance(a, NoteAllergy) for a in found.allergies)


@pytest.mark.django_db
def test_no_known_allergies_and_patients_without_notes(site_a):
    with_nkda, without = PatientFactory(site=site_a), PatientFactory(site=site_a)
    read(with_nkda, "Allergies: NKDA.\nAssessment: hypertension.", "n1")
    found = note_findings([with_nkda.pk, without.pk])
    assert ids(found[with_nkda.pk].no_known_allergies) == ["no-known-drug-allergies"]
    assert found[with_nkda.pk].allergies == [] and ids(found[with_nkda.pk].affirmed) == ["hypertension"]
    assert found[without.pk] == NoteFindings()
    assert note_findings([]) == {}


@pytest.mark.django_db
def test_notes_entered_in_error_are_left_out(site_a):
    patient = PatientFactory(site=site_a)
    wrong = read(patient, "Assessment: atrial fibrillation.", "n1")
    read(patient, "Assessment: hypertension.", "n2")
    ClinicalNote.objects.filter(pk=wrong.pk).update(status="entered-in-error")
    assert ids(note_findings([patient.pk])[patient.pk].affirmed) == ["hypertension"]


GOUT = {"id": "gout", "kind": "problem", "preferred": "Gout", "synonyms": ["gout"], "abbreviations": [],
        "codes": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "M10.9", "display": "Gout"}]}


@pytest.mark.django_db
def test_each_note_counts_once_with_its_current_extraction(site_a):
    patient = PatientFactory(site=site_a)
    text = "Assessment: gout and hypertension."
    read(patient, text, "n1")
    old_version = lexicon_current().version
    lexicon_load([GOUT])  # an edited lexicon: the note is read again, both extractions are kept
    with transaction.atomic():
        job = runner.job_enqueue(kind="nlp", patient=patient, inputs={"again": 1})
    runner.job_run(job.pk, worker="w")
    assert NoteExtraction.objects.count() == 2
    assert ids(note_findings([patient.pk])[patient.pk].affirmed) == ["gout", "hypertension"]  # the latest
    # The version in use is preferred over a later one (a lexicon edited back to its old content).
    assert ids(note_findings([patient.pk], version=old_version)[patient.pk].affirmed) == ["hypertension"]


@pytest.mark.django_db
def test_findings_take_one_query_whatever_the_number_of_patients_and_notes(site_a, django_assert_num_queries):
    few = [PatientFactory(site=site_a)]
    read(few[0], NOTE, "n1")
    many = [PatientFactory(site=site_a) for _ in range(5)]
    for i, patient in enumerate(many):
        for j in range(3):
            read(patient, NOTE, f"n{i}-{j}", written_at=WRITTEN + dt.timedelta(days=j))
    version = lexicon_current().version
    with django_assert_num_queries(1):
        assert len(note_findings([p.pk for p in few], version=version)) == 1
    with django_assert_num_queries(1):
        found = note_findings([p.pk for p in many], version=version)
    assert all(len(found[p.pk].affirmed) == 12 for p in many)  # 4 per note, 3 notes each
    # Ordered by note date within a patient.
    dates = [f.note_date for f in found[many[0].pk].affirmed]
    assert dates == sorted(dates)
