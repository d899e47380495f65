"""Notes as they come: empty, very long, not UTF-8, other languages, HTML and RTF markup. Each
gives a clear result or a clear error; the worker never fails on them."""

from __future__ import annotations

import codecs
import datetime as dt

import pytest
from django.db import transaction
from django.urls import reverse
from rest_framework.test import APIClient

from cdss.jobs import runner
from cdss.models import Job
from nlp.models import NoteExtraction, NoteFact
from nlp.note_input import NoteInputError, note_text_clean, note_text_from_bytes, rtf_to_text
from patients.models import ClinicalNote
from tests.factories import PatientFactory

# --- the input rule (no database) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"Assessment: HTN.", "Assessment: HTN."),
        (codecs.BOM_UTF8 + "Ärztlicher Bericht".encode(), "Ärztlicher Bericht"),
        ("Assessment: HTN.\r\nPlan: none.\rEnd".encode("utf-16-le").join([codecs.BOM_UTF16_LE, b""]),
         "Assessment: HTN.\nPlan: none.\nEnd"),
        (codecs.BOM_UTF16_BE + "高血压".encode("utf-16-be"), "高血压"),
        ("Hypertension artérielle, pas de dyspnée. 高血压。ارتفاع ضغط الدم 🫀".encode(),
         "Hypertension artérielle, pas de dyspnée. 高血压。ارتفاع ضغط الدم 🫀"),
        (b"<p>Assessment: <b>HTN</b></p>", "<p>Assessment: <b>HTN</b></p>"),  # HTML is kept, shown escaped
    ],
)
def test_text_in_the_accepted_encodings_is_read(data, text):
    assert note_text_from_bytes(data) == text


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("Patient: café".encode("latin-1"), "the byte at offset 12 (0xE9) is not valid UTF-8"),
        ("\u201cno CP\u201d".encode("cp1252"), "the byte at offset 0 (0x93) is not valid UTF-8"),
        (b"%PDF-1.7\n...", "The file is a PDF document, not text."),
        (b"PK\x03\x04word/document.xml", "a ZIP archive (a Word .docx file is one)"),
        (b"\x89PNG\r\n\x1a\n", "a PNG image"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "old Word/Office (.doc)"),
        (b"text\x00with nul", "NUL character (offset 4)"),
        (b"", "The note is empty."),
        (b" \n\t\r\n ", "The note is empty."),
        (codecs.BOM_UTF16_LE + b"\x00\xd8", "is not valid UTF-16"),  # an unpaired surrogate
    ],
)
def test_other_bytes_are_refused_with_the_reason_and_without_quoting_the_note(data, message):
    with pytest.raises(NoteInputError) as exc:
        note_text_from_bytes(data)
    assert message in str(exc.value)
    assert "café" not in str(exc.value) and "no CP" not in str(exc.value)


def test_the_size_limit_is_exact_in_bytes():
    assert len(note_text_from_bytes(b"x" * 100, max_bytes=100)) == 100
    with pytest.raises(NoteInputError, match=r"The note is 101 bytes; the limit is 100 bytes\."):
        note_text_from_bytes(b"x" * 101, max_bytes=100)
    with pytest.raises(NoteInputError, match="The note is 102 bytes"):  # 51 two-byte characters
        note_text_clean("é" * 51, max_bytes=100)


RTF = r"""{\rtf1\ansi\ansicpg1252\deff0{\fonttbl{\f0\fnil\fcharset0 Calibri;}}{\colortbl ;\red0\green0\blue0;}
{\*\generator Riched20 10.0.19041}{\info{\author Dr Who}}\viewkind4\uc1
\pard\sa200\b\f0\fs22 Assessment:\b0  HTN, caf\'e9 au lait spots \u8212? no CP.\par
Plan: metformin 500 mg\tab BID; \{braces\} and a back\\slash.\line
{\pict\wmetafile8 0100090000}End.\par
}"""


def test_rtf_becomes_its_plain_text():
    # Destinations (font and colour tables, generator, info, pictures) are not text; \'e9 is
    # Windows-1252; \u8212 is an em dash whose "?" fallback is dropped (RTF 1.9.1, \ucN).
    assert rtf_to_text(RTF) == ("Assessment: HTN, café au lait spots — no CP.\n"
                                "Plan: metformin 500 mg\tBID; {braces} and a back\\slash.\nEnd.\n")
    assert note_text_from_bytes(RTF.encode()) == rtf_to_text(RTF)


# --- extraction on the worker ------------------------------------------------------------------


def read_all(patient, *texts):
    notes = [ClinicalNote.objects.create(patient=patient, fhir_id=f"n{i}", source_type="DocumentReference",
                                         status="current", text=text, written_at=dt.datetime(2024, 5, 1, tzinfo=dt.UTC))
             for i, text in enumerate(texts)]
    with transaction.atomic():
        job = runner.job_enqueue(kind="nlp", patient=patient)
    assert runner.job_run(job.pk, worker="w") == "succeeded"
    return notes, Job.objects.get(pk=job.pk).result


def spans_hold(note):
    facts = NoteFact.objects.filter(extraction__note=note)
    return all(note.text[f.start:f.end] == f.text for f in facts)


HTML_NOTE = '<html><body><p><b>Assessment:</b> HTN &amp; DM2.</p><script>alert("x")</script></body></html>'
OTHER_LANGUAGES = [
    "Anamnèse : hypertension artérielle, pas de dyspnée. Traitement : metformine 500 mg.",
    "主诉\uff1a胸痛三天。既往史\uff1a高血压。",  # fullwidth colons, as Chinese text writes them
    "الشكوى الرئيسية: ألم في الصدر. التاريخ المرضي: ارتفاع ضغط الدم.",
    "Befund: Z. n. Myokardinfarkt 🫀 — kein Fieber. e\u0301 combining",
]


@pytest.mark.django_db
def test_empty_foreign_html_and_rtf_notes_give_a_clear_result(site_a):
    patient = PatientFactory(site=site_a)
    texts = ["", "   \n\n  ", HTML_NOTE, RTF, *OTHER_LANGUAGES]
    notes, result = read_all(patient, *texts)
    assert result == {"notes": len(texts), "written": len(texts), "facts": result["facts"]}
    for note in notes:
        extraction = NoteExtraction.objects.get(note=note)
        assert extraction.error == "" and spans_hold(note)
    assert NoteExtraction.objects.get(note=notes[0]).fact_count == 0
    html = {f.concept_id: f for f in NoteFact.objects.filter(extraction__note=notes[2])}
    assert set(html) == {"hypertension", "type-2-diabetes"}  # found inside the tags, offsets of the stored text
    assert HTML_NOTE[html["hypertension"].start:html["hypertension"].end] == "HTN"
    assert "hypertension" in set(NoteFact.objects.filter(extraction__note=notes[3]).values_list("concept_id",
                                                                                                  flat=True))


@pytest.mark.django_db
def test_a_note_past_the_limit_or_one_the_pipeline_fails_on_is_recorded_and_the_others_are_read(
    site_a, settings, monkeypatch, client_a, patient_a
):
    from nlp import extract as extract_module

    real = extract_module._read  # one note's reading in extract_batch, which the job calls

    def failing(text, **kwargs):
        if "BOOM" in text:
            raise RuntimeError(f"cannot read {text!r}")  # a message that quotes the note
        return real(text, **kwargs)

    monkeypatch.setattr(extract_module, "_read", failing)
    settings.CDSS_NOTE_MAX_BYTES = 1000
    (too_long, boom, fine), result = read_all(patient_a, "HTN. " * 201, "BOOM: secret patient words", "Assessment: CHF.")
    assert result["unreadable"] == 2 and result["written"] == 3
    long_error = NoteExtraction.objects.get(note=too_long).error
    assert long_error == ("The note is 1,005 characters; notes longer than 1,000 are not read (CDSS_NOTE_MAX_BYTES).")
    boom_error = NoteExtraction.objects.get(note=boom).error
    assert boom_error.startswith("The pipeline failed on this note: RuntimeError at test_robustness.py:")
    assert "secret" not in boom_error
    assert NoteExtraction.objects.get(note=fine).fact_count == 1
    page = client_a.get(reverse("note-detail", args=[patient_a.external_id, boom.external_id])).content.decode()
    assert "This note could not be read. The pipeline failed on this note: RuntimeError" in page
    # The same version never reads them again (the result is recorded), so no job keeps failing.
    with transaction.atomic():
        again = runner.job_enqueue(kind="nlp", patient=patient_a, inputs={"again": 1})
    assert runner.job_run(again.pk, worker="w") == "succeeded"
    assert Job.objects.get(pk=again.pk).result["notes"] == 0


def mtsamples_megabyte() -> str:
    """1,000,000 characters of real transcribed notes (MTSamples), one after another."""
    import csv

    from tests.conftest import require_data

    csv.field_size_limit(10**9)
    with require_data("nlp/mtsamples.csv").open(encoding="utf-8", newline="") as fh:
        rows = csv.DictReader(fh)
        parts: list[str] = []
        size = 0
        for row in rows:
            parts.append(row["transcription"] or "")
            size += len(parts[-1]) + 2
            if size > 1_000_000:
                break
    return "\n\n".join(parts)[:1_000_000]


@pytest.mark.django_db
@pytest.mark.needs_data
def test_a_one_megabyte_note_is_accepted_read_and_shown(client_a, clinician_a, patient_a,
                                                        django_assert_max_num_queries):
    text = mtsamples_megabyte()
    api = APIClient()
    api.force_authenticate(clinician_a)
    response = api.post(reverse("api-patient-notes", args=[patient_a.external_id]), {"text": text}, format="json")
    assert response.status_code == 201, response.content
    note = ClinicalNote.objects.get()
    assert len(note.text) == 1_000_000
    job = Job.objects.get(kind="nlp", patient=patient_a)
    assert runner.job_run(job.pk, worker="w") == "succeeded"
    extraction = NoteExtraction.objects.get(note=note)
    assert extraction.error == "" and extraction.fact_count > 300 and spans_hold(note)
    assert len(extraction.sections) > 100
    with django_assert_max_num_queries(13):
        page = client_a.get(reverse("note-detail", args=[patient_a.external_id, note.external_id]))
    assert page.status_code == 200


@pytest.mark.django_db
def test_a_note_with_more_facts_than_the_list_shows_highlights_them_all(client_a, patient_a):
    text = "HTN. " * 600
    note = ClinicalNote.objects.create(patient=patient_a, fhir_id="many", source_type="typed", status="current",
                                       text=text)
    extraction = NoteExtraction.objects.create(note=note, patient=patient_a, pipeline_version="v", fact_count=600)
    NoteFact.objects.bulk_create([
        NoteFact(extraction=extraction, patient=patient_a, kind="problem", concept_id="hypertension",
                 preferred="Hypertension", text="HTN", start=5 * i, end=5 * i + 3, stage="lexicon+context")
        for i in range(600)
    ])
    html = client_a.get(reverse("note-detail", args=[patient_a.external_id, note.external_id])).content.decode()
    assert "The list shows the first 500 of 600 facts" in html
    assert html.count('<li class="fact ') == 500 and html.count('<mark class="span kind-problem" id="span-') == 600
