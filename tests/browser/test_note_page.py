"""A clinician opens a note from the patient page, sees its facts highlighted, follows a span to
its entry in the list, and marks a fact wrong.

Same browser as the other browser tests: Debian's Chromium through Playwright's sync API against
pytest-django's live server. The note is read by an nlp job in the fixture (ORM work stays out of
the thread where Playwright runs).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import pytest
from django.db import transaction

from cdss.jobs import runner
from nlp.models import NoteExtraction, NoteFact
from patients import models as m
from tests.browser.conftest import PASSWORD, SCREENSHOT_DIR
from tests.factories import PatientFactory, SiteFactory, clinician_of

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

NOTE = """Chief Complaint: chest pain.
History of Present Illness: 64-year-old man with HTN presents with CP. He denies SOB.
Family History: Mother with breast cancer.
Medications: metformin 500 mg PO BID.
"""


@pytest.fixture
def read_note(transactional_db: None) -> tuple[m.Patient, m.ClinicalNote, str]:
    site = SiteFactory.create(code="browser-note-site", name="Browser Note Hospital")
    user = clinician_of(site, username="dr-note")
    user.set_password(PASSWORD)
    user.save()
    patient = PatientFactory.create(site=site, family_name="Notes", given_names="Nora", mrn="BRW-NOTE-1")
    note = m.ClinicalNote.objects.create(patient=patient, fhir_id="browser-note", source_type="typed",
                                         status="current", text=NOTE, display="Clinic note",
                                         written_at=dt.datetime(2024, 5, 1, tzinfo=dt.UTC))
    with transaction.atomic():
        job = runner.job_enqueue(kind="nlp", patient=patient)
    runner.job_run(job.pk, worker="w")  # "not-claimed" where an eager test ran it at commit already
    assert NoteExtraction.objects.filter(note=note).exists()
    sob = NoteFact.objects.get(extraction__note=note, text="SOB")
    return patient, note, str(sob.external_id)


def test_a_clinician_follows_a_span_to_its_fact_and_marks_it_wrong(
    live_server, read_note: tuple[m.Patient, m.ClinicalNote, str], browser_page: Page
) -> None:
    patient, note, sob = read_note
    page = browser_page
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{live_server.url}/login/")
    page.fill("input[name=username]", "dr-note")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")

    page.goto(f"{live_server.url}/patients/{patient.external_id}/")
    page.click("#notes a:has-text('Clinic note')")
    page.wait_for_url(f"**/notes/{note.external_id}/")

    span = page.locator(f"#span-{sob}")
    assert span.inner_text().startswith("SOB")
    # Negated: struck through, and said in text (the "neg" tag), not by colour alone.
    assert "line-through" in span.evaluate("el => getComputedStyle(el).textDecorationLine")
    assert span.locator(".ctx-tag").inner_text() == "neg"
    item = page.locator(f"#fact-{sob}")
    span.hover()
    assert "linked" in (item.get_attribute("class") or "")
    span.click()
    page.wait_for_function(f"document.activeElement === document.querySelector('#fact-{sob} a.fact-name')")

    item.locator("summary:has-text('Mark wrong')").click()
    item.locator("select[name=problem]").select_option("negation")
    item.locator("textarea[name=comment]").fill("He reports SOB on exertion.")
    item.locator("button:has-text('Send')").click()
    page.wait_for_selector(f"#feedback-{sob} .feedback-saved")
    assert "Negation is wrong" in item.locator(".feedback-saved").inner_text()
    assert errors == []

    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT_DIR / "note-page.png"), full_page=True)
    assert (SCREENSHOT_DIR / "note-page.png").stat().st_size > 0



def test_a_clinician_types_a_note_and_sees_its_facts(
    eager: None, live_server, read_note: tuple[m.Patient, m.ClinicalNote, str], browser_page: Page
) -> None:
    """With no broker the note is read at commit, so its page shows the facts at once."""
    patient, _, _ = read_note
    page = browser_page
    page.goto(f"{live_server.url}/login/")
    page.fill("input[name=username]", "dr-note")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")
    page.goto(f"{live_server.url}/patients/{patient.external_id}/")
    page.click("#notes summary:has-text('Add a note')")
    page.fill("#note-title", "Ward round")
    page.fill("#note-text", "Assessment: new AFib. No chest pain.\nPlan: apixaban 5 mg BID.")
    page.click("#notes button:has-text('Save note')")
    page.wait_for_selector("h1:has-text('Ward round')")
    assert page.locator("#note-text mark.span.kind-problem").first.inner_text().startswith("AFib")
    assert page.locator("#note-text mark.span.ctx-negated").first.inner_text().startswith("chest pain")
    assert page.locator("#note-text mark.span.kind-medication").first.inner_text().startswith("apixaban")
    assert "Note saved" in page.inner_text(".messages")
