"""The note page: highlighted spans by kind and context, the list of facts, "mark wrong"
feedback, access and escaping."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.db import transaction
from django.urls import reverse

from cdss.jobs import runner
from cdss.models import AuditEvent
from nlp.highlight import Piece, note_pieces
from nlp.models import NoteExtraction, NoteFact, NoteFactFeedback
from patients.models import ClinicalNote
from tests.factories import PatientFactory

NOTE = """Chief Complaint: chest pain.
History of Present Illness: 64-year-old man with HTN presents with CP. He denies SOB.
Past Medical History: myocardial infarction in 2015.
Family History: Mother with breast cancer.
Medications: metformin 500 mg PO BID.
Allergies: penicillin (rash).
Assessment: rule out pneumonia. <script>alert("x")</script> <b onmouseover="steal()">bold</b> & co.
"""


def make_note(patient, text=NOTE, fhir_id="note-1", read=True):
    note = ClinicalNote.objects.create(patient=patient, fhir_id=fhir_id, source_type="typed", status="current",
                                       text=text, display="Clinic note",
                                       written_at=dt.datetime(2024, 5, 1, 9, 30, tzinfo=dt.UTC))
    if read:
        with transaction.atomic():
            job = runner.job_enqueue(kind="nlp", patient=patient, inputs={"note": fhir_id})
        assert runner.job_run(job.pk, worker="w") == "succeeded"
    return note


def page_url(patient, note):
    return reverse("note-detail", args=[patient.external_id, note.external_id])


def fact(note, **filters):
    return NoteFact.objects.get(extraction__note=note, **filters)


# --- the pieces of text (no database) ---------------------------------------------------------


def test_pieces_join_to_the_text_and_leave_out_overlapping_or_out_of_range_spans():
    text = "no chest pain today"
    pieces, hidden = note_pieces(text, [(3, 13, "a"), (9, 13, "b"), (15, 40, "c"), (5, 5, "d")])
    assert "".join(p.text for p in pieces) == text
    assert [p for p in pieces if p.item] == [Piece("chest pain", "a")]
    assert sorted(hidden) == ["b", "c", "d"]


# --- the page ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_page_highlights_each_fact_by_kind_and_context(client_a, patient_a):
    note = make_note(patient_a)
    response = client_a.get(page_url(patient_a, note))
    assert response.status_code == 200
    html = response.content.decode()
    sob = fact(note, text="SOB")
    assert sob.negated
    span = re.search(rf'<mark class="span ([^"]+)" id="span-{sob.external_id}"[^>]*>SOB<sup class="ctx-tag"[^>]*>neg</sup>',
                     html)
    assert span and {"kind-symptom", "ctx-negated"} <= set(span.group(1).split())
    cancer = fact(note, concept_id="breast-cancer")
    family = re.search(rf'<mark class="span ([^"]+)" id="span-{cancer.external_id}"', html)
    assert family and "ctx-family" in family.group(1)
    assert "family: mother" in html  # the relation, in words
    mi = fact(note, concept_id="myocardial-infarction")
    assert mi.historical and re.search(rf'id="span-{mi.external_id}"[^>]*>myocardial infarction<sup[^>]*>hx</sup>', html)
    assert "ctx-uncertain" in html or "ctx-hypothetical" in html  # "rule out pneumonia"
    # The list: concept, codes, section, stage; a link to each span.
    assert f'href="#span-{sob.external_id}"' in html
    assert "SNOMED CT <span class=\"mono\">38341003</span>" in html  # hypertension
    assert "RxNorm <span class=\"mono\">6809</span>" in html  # metformin
    assert "lexicon+context" in html
    assert "Legend" in html
    # Every character of the note is on the page, in order (escaped).
    text_div = re.search(r'<div class="note-text" id="note-text">(.*?)</div>', html, re.S).group(1)
    visible = re.sub(r'<sup class="ctx-tag"[^>]*>.*?</sup>|<span class="visually-hidden">.*?</span>|<[^>]+>', "",
                     text_div)
    from html import unescape

    assert unescape(visible) == note.text
    assert AuditEvent.objects.filter(patient=patient_a, action="view", target="note-page").count() == 1


@pytest.mark.django_db
def test_hostile_markup_in_a_note_is_shown_as_text(client_a, patient_a):
    note = make_note(patient_a)
    NoteFact.objects.filter(extraction__note=note, concept_id="hypertension").update(
        preferred='<img src=x onerror="alert(1)">')
    html = client_a.get(page_url(patient_a, note)).content.decode()
    assert "<script>alert" not in html and '<b onmouseover' not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert "&lt;b onmouseover=&quot;steal()&quot;&gt;bold&lt;/b&gt; &amp; co." in html
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html


@pytest.mark.django_db
def test_a_note_not_read_yet_says_so(client_a, patient_a):
    note = make_note(patient_a, read=False)
    html = client_a.get(page_url(patient_a, note)).content.decode()
    assert "Not read yet" in html and "chest pain" in html


@pytest.mark.django_db
def test_another_sites_patient_and_another_patients_note_are_404(client_a, patient_a, patient_b, site_a):
    theirs = make_note(patient_b, read=False)
    assert client_a.get(page_url(patient_b, theirs)).status_code == 404
    neighbour = PatientFactory(site=site_a)
    note = make_note(neighbour, fhir_id="n2", read=False)
    assert client_a.get(reverse("note-detail", args=[patient_a.external_id, note.external_id])).status_code == 404
    assert not AuditEvent.objects.filter(target="note-page").exists()


@pytest.mark.django_db
def test_anonymous_users_are_sent_to_login(client, patient_a):
    note = make_note(patient_a, read=False)
    response = client.get(page_url(patient_a, note))
    assert response.status_code == 302 and "/login/" in response["Location"]


# The page's queries: session, user, patient (with its site), note, lexicon check, extraction,
# facts with their feedback counts, audit insert, the savepoint pair of the atomic view, and the
# session's idle-time update (savepoint, update, release).
NOTE_PAGE_QUERIES = 13


@pytest.mark.django_db
def test_the_note_page_query_count_does_not_grow_with_the_facts(client_a, patient_a, django_assert_num_queries):
    small = make_note(patient_a, text="Assessment: HTN.", fhir_id="small")
    big = make_note(patient_a, text=NOTE * 20, fhir_id="big")
    assert NoteFact.objects.filter(extraction__note=big).count() > 100
    client_a.get(page_url(patient_a, small))  # the process's lexicon copy is read once
    for note in (small, big):
        with django_assert_num_queries(NOTE_PAGE_QUERIES):
            assert client_a.get(page_url(patient_a, note)).status_code == 200


@pytest.mark.django_db
def test_the_patient_page_links_each_note_to_its_page(client_a, patient_a):
    note = make_note(patient_a, read=False)
    html = client_a.get(reverse("patient-detail", args=[patient_a.external_id])).content.decode()
    assert f'href="{page_url(patient_a, note)}"' in html


@pytest.mark.django_db
def test_the_current_extraction_is_the_current_lexicons_then_the_latest(client_a, patient_a):
    note = make_note(patient_a)
    current = NoteExtraction.objects.get(note=note)
    newer = NoteExtraction.objects.create(note=note, patient=patient_a, pipeline_version="older-lexicon")
    html = client_a.get(page_url(patient_a, note)).content.decode()
    assert current.pipeline_version in html and "older-lexicon" not in html
    current.pipeline_version = "edited-away"
    current.save()
    html = client_a.get(page_url(patient_a, note)).content.decode()
    assert newer.pipeline_version in html and "read with an earlier lexicon" in html


# --- mark wrong ----------------------------------------------------------------------------------


def feedback_url(patient, note, the_fact):
    return reverse("note-fact-feedback", args=[patient.external_id, note.external_id, the_fact.external_id])


@pytest.mark.django_db
def test_marking_a_fact_wrong_stores_feedback_with_an_audit_row(client_a, patient_a, clinician_a):
    note = make_note(patient_a)
    sob = fact(note, text="SOB")
    response = client_a.post(feedback_url(patient_a, note, sob), {"problem": "negation", "comment": "he has SOB"},
                             HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert "recorded as “Negation is wrong (present / absent)”" in response.content.decode()
    feedback = NoteFactFeedback.objects.get()
    assert (feedback.fact, feedback.problem, feedback.comment, feedback.created_by) == (sob, "negation", "he has SOB",
                                                                                         clinician_a)
    assert feedback.concept_id == sob.concept_id and feedback.pipeline_version == sob.extraction.pipeline_version
    assert AuditEvent.objects.filter(patient=patient_a, action="create", target="note-fact-feedback").count() == 1
    assert "Marked wrong 1 time." in client_a.get(page_url(patient_a, note)).content.decode()


@pytest.mark.django_db
def test_feedback_without_a_valid_problem_is_refused_with_the_form_again(client_a, patient_a):
    note = make_note(patient_a)
    response = client_a.post(feedback_url(patient_a, note, fact(note, text="SOB")), {"problem": "vibes"})
    assert "Select a valid choice" in response.content.decode()
    long = client_a.post(feedback_url(patient_a, note, fact(note, text="SOB")), {"problem": "other", "comment": "x" * 1001})
    assert "at most 1000 characters" in long.content.decode()
    assert not NoteFactFeedback.objects.exists()


@pytest.mark.django_db
def test_feedback_on_another_sites_fact_or_another_notes_fact_is_404(client_a, patient_a, patient_b):
    theirs = make_note(patient_b, fhir_id="b1")
    mine = make_note(patient_a, fhir_id="a1")
    their_fact = NoteFact.objects.filter(extraction__note=theirs).first()
    assert client_a.post(feedback_url(patient_b, theirs, their_fact), {"problem": "other"}).status_code == 404
    assert client_a.post(feedback_url(patient_a, mine, their_fact), {"problem": "other"}).status_code == 404
    assert client_a.get(feedback_url(patient_a, mine, fact(mine, text="SOB"))).status_code == 405
    assert not NoteFactFeedback.objects.exists()


@pytest.mark.django_db
def test_the_admin_lists_feedback_with_filters_and_audits_opening_one(client, patient_a, clinician_a,
                                                                      django_user_model):
    from nlp.services import note_fact_feedback_create

    note = make_note(patient_a)
    sob = fact(note, text="SOB")
    feedback = note_fact_feedback_create(user=clinician_a, patient=patient_a, fact=sob, problem="negation")
    admin = django_user_model.objects.create_superuser("fb-admin", "a@example.org", "pw-feedback-42")
    client.force_login(admin)
    listing = client.get(reverse("admin:nlp_notefactfeedback_changelist"), {"problem": "negation"})
    assert listing.status_code == 200 and "SOB" in listing.content.decode()
    assert "By problem" in listing.content.decode() and "By pipeline version" in listing.content.decode()
    assert "SOB" not in client.get(reverse("admin:nlp_notefactfeedback_changelist"),
                                   {"problem": "codes"}).content.decode()
    detail = client.get(reverse("admin:nlp_notefactfeedback_change", args=[feedback.pk]))
    assert detail.status_code == 200 and "negated; patient" in detail.content.decode()
    assert AuditEvent.objects.filter(user=admin, patient=patient_a, target="admin:notefactfeedback").exists()
