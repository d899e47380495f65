"""Note extractions stored append-only, by a job that reads only what is new."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.urls import reverse
from rest_framework.test import APIClient

from cdss.jobs import runner
from cdss.models import AuditEvent, Job
from nlp.models import NoteExtraction, NoteFact
from patients.models import ClinicalNote
from tests.factories import PatientFactory, UserFactory

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


# --- notes in: the API and the patient page's form ---------------------------------------------


def api_for(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


def notes_url(patient):
    return reverse("api-patient-notes", args=[patient.external_id])


@pytest.mark.django_db
def test_a_typed_note_is_stored_with_its_extraction_job_in_one_transaction(patient_a, clinician_a):
    response = api_for(clinician_a).post(notes_url(patient_a), {"text": "Assessment: HTN.\r\nPlan: lisinopril.",
                                                                "title": "Clinic note"}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    note = ClinicalNote.objects.get(external_id=body["id"])
    assert (note.patient, note.source_type, note.display, note.text) == (patient_a, "typed", "Clinic note",
                                                                         "Assessment: HTN.\nPlan: lisinopril.")
    assert body["job"] == {"kind": "nlp", "status": "queued"} and body["characters"] == len(note.text)
    assert body["url"] == reverse("note-detail", args=[patient_a.external_id, note.external_id])
    job = Job.objects.get(kind="nlp", patient=patient_a)
    assert job.created_by == clinician_a
    assert AuditEvent.objects.filter(patient=patient_a, action="create", target="note").count() == 1
    assert runner.job_run(job.pk, worker="w") == "succeeded"
    assert set(NoteFact.objects.filter(extraction__note=note).values_list("concept_id", flat=True)) == {
        "hypertension", "lisinopril"}


@pytest.mark.django_db
def test_a_failed_write_leaves_neither_note_nor_job(patient_a, clinician_a):
    from nlp.services import note_create

    with pytest.raises(RuntimeError), transaction.atomic():
        note_create(user=clinician_a, patient=patient_a, text="Assessment: HTN.")
        raise RuntimeError("the request failed later")
    assert not ClinicalNote.objects.exists() and not Job.objects.exists()


@pytest.mark.django_db
def test_with_no_broker_the_note_is_read_before_the_answer(patient_a, clinician_a, eager,
                                                          django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = api_for(clinician_a).post(notes_url(patient_a), {"text": "Assessment: atrial fibrillation."},
                                             format="json")
    note = ClinicalNote.objects.get(external_id=response.json()["id"])
    assert NoteExtraction.objects.get(note=note).fact_count == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("content", "name", "expected"),
    [
        (b"Assessment: HTN.", "note.txt", "Assessment: HTN."),
        ("\ufeffAssessment: café.".encode(), "note.txt", "Assessment: café."),  # UTF-8 with BOM
        ("Assessment: HTN.".encode("utf-16"), "note.txt", "Assessment: HTN."),  # UTF-16 with BOM
        (rb"{\rtf1\ansi{\fonttbl{\f0 Arial;}}\f0 Assessment: caf\'e9, HTN.\par}", "note.rtf", "Assessment: café, HTN.\n"),
    ],
)
def test_an_uploaded_file_is_decoded_by_the_rule(patient_a, clinician_a, content, name, expected):
    upload = SimpleUploadedFile(name, content, content_type="text/plain")
    response = api_for(clinician_a).post(notes_url(patient_a), {"file": upload}, format="multipart")
    assert response.status_code == 201, response.content
    assert ClinicalNote.objects.get().text == expected


@pytest.mark.django_db
def test_a_plain_text_body_is_a_note(patient_a, clinician_a):
    response = api_for(clinician_a).post(notes_url(patient_a), data=b"Assessment: HTN.",
                                         content_type="text/plain")
    assert response.status_code == 201 and ClinicalNote.objects.get().text == "Assessment: HTN."


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"data": {"file": SimpleUploadedFile("n.txt", "Assessment: café".encode("latin-1"))}, "format": "multipart"},
         "The note is not UTF-8 text: the byte at offset 15 (0xE9) is not valid UTF-8. Save the file as UTF-8"),
        ({"data": {"file": SimpleUploadedFile("n.pdf", b"%PDF-1.7 ...")}, "format": "multipart"},
         "The file is a PDF document, not text."),
        ({"data": {"text": "   \n  "}, "format": "json"}, "The note is empty."),
        ({"data": {"text": "a\x00b"}, "format": "json"}, "Null characters are not allowed."),  # DRF's own check
        ({"data": {"file": SimpleUploadedFile("n.txt", b"a\x00b")}, "format": "multipart"},
         "NUL character (offset 1)"),
        ({"data": {}, "format": "json"}, "Send the note as text or as a file."),
        ({"data": {"text": "x", "file": SimpleUploadedFile("n.txt", b"y")}, "format": "multipart"},
         "not both"),
        ({"data": {"text": "x" * 1001}, "format": "json"}, "The note is 1,001 bytes; the limit is 1,000 bytes."),
        ({"data": {"file": SimpleUploadedFile("n.txt", b"x" * 1001)}, "format": "multipart"},
         "The file is 1,001 bytes; the limit is 1,000 bytes."),
    ],
)
def test_a_bad_note_is_refused_with_a_clear_error_and_nothing_written(patient_a, clinician_a, settings, kwargs,
                                                                      message):
    settings.CDSS_NOTE_MAX_BYTES = 1000
    response = api_for(clinician_a).post(notes_url(patient_a), **kwargs)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["status"] == 400 and message in " ".join(str(m) for v in error["details"].values() for m in v)
    assert "café" not in str(error) and "x" * 20 not in str(error)  # the note is never quoted
    assert not ClinicalNote.objects.exists() and not Job.objects.exists()


@pytest.mark.django_db
def test_an_oversized_text_body_is_refused(patient_a, clinician_a, settings):
    settings.CDSS_NOTE_MAX_BYTES = 1000
    response = api_for(clinician_a).post(notes_url(patient_a), data=b"x" * 1001, content_type="text/plain")
    assert response.status_code == 400 and "larger than 1,000 bytes" in response.json()["error"]["message"]


@pytest.mark.django_db
def test_notes_reach_only_my_sites_patients_and_only_clinicians_add_them(patient_a, patient_b, clinician_a, site_a):
    assert api_for(clinician_a).post(notes_url(patient_b), {"text": "x"}, format="json").status_code == 404
    outsider = UserFactory()
    from patients.models import SiteMembership

    SiteMembership.objects.create(user=outsider, site=site_a)
    assert api_for(outsider).post(notes_url(patient_a), {"text": "x"}, format="json").status_code == 403
    assert APIClient().post(notes_url(patient_a), {"text": "x"}, format="json").status_code == 401
    assert not ClinicalNote.objects.exists()


@pytest.mark.django_db
def test_the_patient_page_form_saves_a_note_and_opens_it(client_a, patient_a):
    page = client_a.get(reverse("patient-detail", args=[patient_a.external_id])).content.decode()
    assert 'action="{}"'.format(reverse("note-create", args=[patient_a.external_id])) in page
    response = client_a.post(reverse("note-create", args=[patient_a.external_id]),
                             {"title": "Ward round", "text": "Assessment: CHF."})
    note = ClinicalNote.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("note-detail", args=[patient_a.external_id, note.external_id])
    assert note.display == "Ward round" and Job.objects.filter(kind="nlp", patient=patient_a).exists()


@pytest.mark.django_db
def test_the_patient_page_form_says_why_a_note_was_refused(client_a, patient_a, patient_b):
    url = reverse("note-create", args=[patient_a.external_id])
    response = client_a.post(url, {"file": SimpleUploadedFile("n.txt", "café".encode("cp1252"))}, follow=True)
    assert "The note was not saved: The note is not UTF-8 text" in response.content.decode()
    assert client_a.post(reverse("note-create", args=[patient_b.external_id]), {"text": "x"}).status_code == 404
    assert not ClinicalNote.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_migration_gives_existing_facts_their_own_external_ids():
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    executor.migrate([("nlp", "0004_fact_feedback")])
    apps = executor.loader.project_state([("nlp", "0004_fact_feedback")]).apps
    site = apps.get_model("patients", "Site").objects.create(code="mig", name="Mig")
    patient = apps.get_model("patients", "Patient").objects.create(site=site, mrn="M1", fhir_id="p1")
    note = apps.get_model("patients", "ClinicalNote").objects.create(patient=patient, fhir_id="n1",
                                                                    source_type="typed", text="HTN, CP.")
    extraction = apps.get_model("nlp", "NoteExtraction").objects.create(note=note, patient=patient,
                                                                        pipeline_version="v")
    Fact = apps.get_model("nlp", "NoteFact")
    for start in (0, 5):
        Fact.objects.create(extraction=extraction, patient=patient, kind="problem", text="x", start=start,
                            end=start + 2, stage="s")
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
    ids = list(NoteFact.objects.values_list("external_id", flat=True))
    assert len(ids) == 2 and None not in ids and len(set(ids)) == 2
