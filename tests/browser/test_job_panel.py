"""A clinician asks for an analysis on the patient page and watches the job panel until it is done.

Same browser as tests/browser/test_clinician_flow.py: Debian's Chromium through Playwright's sync
API against pytest-django's live server. Jobs run in the live server's process after commit (the
embedded default, no broker), so the panel sees the job through to the end.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import pytest
from django.db import connection
from django.utils import timezone

from cdss.models import Job
from patients import models as m
from tests.browser.conftest import PASSWORD, SCREENSHOT_DIR
from tests.factories import PatientFactory, SiteFactory, clinician_of

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def panel_patient(transactional_db: None) -> m.Patient:
    """A clinician (dr-jobs) and a patient of their site."""
    site = SiteFactory.create(code="browser-jobs-site", name="Browser Jobs Hospital")
    user = clinician_of(site, username="dr-jobs")
    user.set_password(PASSWORD)
    user.first_name, user.last_name = "Jo", "Panel"
    user.save()
    return PatientFactory.create(site=site, family_name="Panelton", given_names="Pat", mrn="BRW-JOB-1")


@pytest.fixture
def running_job(panel_patient: m.Patient) -> int:
    """A job of the patient that a worker elsewhere is still running: the panel polls for it."""
    job = Job.objects.create(
        kind="test.slow",
        queue="risk",
        patient=panel_patient,
        status=Job.Status.RUNNING,
        attempts=1,
        progress=25,
        progress_message="step 1 of 4",
        available_at=timezone.now(),
        started_at=timezone.now(),
        idempotency_key="browser-running-job",
    )
    return job.pk


def finish_elsewhere(job_id: int) -> None:
    """The other worker finishes the job. From a thread of its own: Django refuses ORM calls from
    the thread where Playwright's event loop runs."""

    def work() -> None:
        try:
            Job.objects.filter(pk=job_id).update(
                status=Job.Status.SUCCEEDED, progress=100, finished_at=timezone.now(), lease_expires_at=None
            )
        finally:
            connection.close()

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=10)


# As in test_clinician_flow.py, the ORM work happens in fixtures requested before
# ``browser_page`` (no ORM calls from the thread where Playwright's event loop runs).
def test_a_clinician_runs_an_analysis_and_the_panel_shows_it_succeed(
    eager: None, live_server, panel_patient: m.Patient, running_job: int, browser_page: Page
) -> None:
    page = browser_page
    patient = panel_patient
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    page.goto(f"{live_server.url}/login/")
    page.fill("input[name=username]", "dr-jobs")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")

    page.goto(f"{live_server.url}/patients/{patient.external_id}/")
    # The fragment replaced the placeholder, and polls while the other job runs.
    running = "#job-panel tr.job[data-status=running]"
    page.wait_for_selector(running)
    assert page.get_attribute("#job-panel", "hx-trigger") == "every 2s"
    assert "step 1 of 4" in page.inner_text(running)

    page.select_option("select[name=kind]", "test.patient_probe")
    page.click("#analyses button:text('Run')")
    # No broker: the job ran in the server's process once the request committed.
    page.wait_for_selector("#job-panel .job-status-succeeded")
    mine = page.inner_text("#job-panel tr.job:has-text('test.patient_probe')")
    assert "SUCCEEDED" in mine.upper() and "1/3" in mine
    assert page.get_attribute("#job-panel tr.job:has-text('test.patient_probe') progress", "value") == "100"
    assert page.get_attribute("#job-panel", "hx-trigger") == "every 2s"  # the other job still runs

    finish_elsewhere(running_job)
    page.wait_for_selector(running, state="detached")  # a poll brought the news, no reload
    assert page.locator("#job-panel .job-status-succeeded").count() == 2
    # Nothing left to wait for: the panel stopped polling.
    assert page.get_attribute("#job-panel", "hx-trigger") is None
    assert errors == []
    assert page.request.get(f"{live_server.url}/static/vendor/htmx/htmx.min.js").ok

    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT_DIR / "job-panel.png"), full_page=True)
    assert (SCREENSHOT_DIR / "job-panel.png").stat().st_size > 0
