"""A clinician recalculates a patient's risk on the patient page and sees the result drawn.

Same browser as tests/browser/test_job_panel.py: Debian's Chromium through Playwright's sync API
against pytest-django's live server. The risk job runs in the live server's process at commit
(the embedded default, no broker); the job panel's answer says "risk-updated", and the risk panel
reloads itself with the new assessment.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import pytest
from django.utils import timezone

from patients import models as m
from risk.services import risk_compute_for_patients
from tests.browser.conftest import PASSWORD, SCREENSHOT_DIR
from tests.factories import ObservationFactory, PatientFactory, SiteFactory, clinician_of
from tests.risk.test_from_record import WHITE

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def goff_patient_now(transactional_db: None) -> m.Patient:
    """A clinician (dr-risk) and the Goff 2013 example patient as of today: white woman, 55,
    total cholesterol 213 mg/dL, HDL 50 mg/dL, SBP 120 mm[Hg] untreated, never smoked, measured a
    month ago (inside every look-back window). A year ago her record (other values, 13 months
    old) gave an earlier assessment, so the panel has a history to draw after the recalculation."""
    site = SiteFactory.create(code="browser-risk-site", name="Browser Risk Hospital")
    user = clinician_of(site, username="dr-risk")
    user.set_password(PASSWORD)
    user.first_name, user.last_name = "Rita", "Risk"
    user.save()
    today = timezone.localdate()
    patient = PatientFactory.create(
        site=site,
        family_name="Goffman",
        given_names="Grace",
        mrn="BRW-RISK-1",
        birth_date=dt.date(today.year - 55, 1, 1),
        sex="female",
        raw={"extension": WHITE},
    )
    now = timezone.now()
    for days, (tc, hdl, sbp) in ((400, (180, 55, 112)), (30, (213, 50, 120))):
        day = now - dt.timedelta(days=days)
        for code, value, unit in (("2093-3", tc, "mg/dL"), ("2085-9", hdl, "mg/dL"), ("8480-6", sbp, "mm[Hg]")):
            ObservationFactory.create(
                patient=patient, code=code, value_quantity=value, value_unit=unit, effective_at=day
            )
        ObservationFactory.create(
            patient=patient,
            code="72166-2",
            value_quantity=None,
            value_unit="",
            value_code="266919005",
            value_display="Never smoked tobacco",
            effective_at=day,
        )
    risk_compute_for_patients([patient.pk], as_of=now - dt.timedelta(days=365))
    return patient


# As in test_job_panel.py, the ORM work happens in fixtures requested before ``browser_page``
# (no ORM calls from the thread where Playwright's event loop runs).
def test_a_clinician_recalculates_and_sees_the_pce_with_its_contribution_chart(
    eager: None, live_server, goff_patient_now: m.Patient, browser_page: Page
) -> None:
    page = browser_page
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    page.goto(f"{live_server.url}/login/")
    page.fill("input[name=username]", "dr-risk")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")

    page.goto(f"{live_server.url}/patients/{goff_patient_now.external_id}/")
    card = "#risk-panel #risk-pce_ascvd_10y"
    value = f"{card} .risk-value strong"
    page.wait_for_selector(value)
    assert page.inner_text(value) == "1.2"  # a year ago: age 54, TC 180, HDL 55, SBP 112
    assert page.locator("#risk-panel [data-kind=history]").count() == 0  # one assessment so far

    page.click("#risk button:text('Recalculate')")
    # The job ran at commit; the job panel shows it, and its answer reloaded the risk panel.
    page.wait_for_selector("#job-panel tr.job:has-text('risk') .job-status-succeeded")
    page.wait_for_selector(f"{value}:text-is('2.1')")  # Goff 2013 worked example
    assert page.inner_text(f"{card} .risk-level").lower() == "low"  # Grundy 2019: < 5 %
    contributions = f"{card} .risk-chart[data-kind=contributions]"
    page.wait_for_selector(f"{contributions} .main-svg")
    # PCE terms grouped by input: age, total and HDL cholesterol, SBP, smoker, diabetes, cohort mean
    assert page.locator(f"{contributions} .bars .point").count() == 7
    page.wait_for_selector(f"{card} .risk-chart[data-kind=history] .main-svg")
    assert page.locator(f"{card} .risk-chart[data-kind=history] .scatterlayer .point").count() == 2
    inputs = page.inner_text(f"{card} table.risk-inputs")
    assert "Observation" in inputs and "Observation:" not in inputs
    assert errors == []

    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    page.locator("#risk").screenshot(path=str(SCREENSHOT_DIR / "risk-panel.png"))
    assert (SCREENSHOT_DIR / "risk-panel.png").stat().st_size > 0
