"""A clinician logs in, finds a patient on the worklist and sees the trend charts drawn.

Drives Debian's Chromium (/usr/bin/chromium) through Playwright's sync API against
pytest-django's live server. No browser is ever downloaded.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import pytest

from patients import models as m
from tests.browser.conftest import PASSWORD, SCREENSHOT_DIR
from tests.factories import ConditionFactory, PatientFactory, SiteFactory, clinician_of

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def make_patient_with_trends(site: m.Site) -> m.Patient:
    patient = PatientFactory.create(site=site, family_name="Trendwell", given_names="Tess", mrn="BRW-0001")
    ConditionFactory.create(patient=patient, display="Essential hypertension")
    ConditionFactory.create(patient=patient, display="Prediabetes", code="714628002")
    start = dt.datetime(2022, 1, 1, tzinfo=dt.UTC)
    rows = []
    for n in range(10):
        at = start + dt.timedelta(days=30 * n)
        rows.append(
            m.Observation(
                patient=patient,
                fhir_id=f"bp-{n}",
                status="final",
                category="vital-signs",
                code_system="http://loinc.org",
                code="8480-6",
                display="Systolic blood pressure",
                value_quantity=150.0 - 2 * n,
                value_unit="mm[Hg]",
                effective_at=at,
            )
        )
        rows.append(
            m.Observation(
                patient=patient,
                fhir_id=f"a1c-{n}",
                status="final",
                category="laboratory",
                code_system="http://loinc.org",
                code="4548-4",
                display="Hemoglobin A1c",
                value_quantity=6.4 - 0.05 * n,
                value_unit="%",
                effective_at=at,
            )
        )
    m.Observation.objects.bulk_create(rows)
    return patient


@pytest.fixture
def trend_patient(transactional_db: None) -> m.Patient:
    """A clinician (dr-browser) and a patient of their site with two trended codes."""
    site = SiteFactory.create(code="browser-site", name="Browser Test Hospital")
    user = clinician_of(site, username="dr-browser")
    user.set_password(PASSWORD)
    user.first_name, user.last_name = "Dana", "Browser"
    user.save()
    return make_patient_with_trends(site)


# The ORM work happens in fixtures requested before ``browser_page``, so before Playwright
# starts its event loop in this thread (Django refuses ORM calls from a thread with a running
# loop, and a connection opened there escapes pytest-django's teardown on PostgreSQL).
def test_a_clinician_logs_in_opens_a_patient_and_sees_trend_charts(
    live_server, trend_patient: m.Patient, browser_page: Page
) -> None:
    page = browser_page
    patient = trend_patient
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    page.goto(f"{live_server.url}/login/")
    page.fill("input[name=username]", "dr-browser")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")
    assert "Dana Browser" in page.inner_text("header")

    page.click(f"text={patient.display_name}")
    page.wait_for_url(f"**/patients/{patient.external_id}/")
    assert "Essential hypertension" in page.inner_text("#problems")

    page.wait_for_selector(".trend-chart .main-svg", state="attached")
    codes = page.eval_on_selector_all(".trend-chart", "els => els.map(e => e.dataset.code)")
    assert codes == ["8480-6", "4548-4"]  # preferred order: blood pressure before HbA1c
    drawn = page.eval_on_selector_all(".trend-chart", "els => els.filter(e => e.querySelector('.main-svg')).length")
    assert drawn == 2
    assert errors == []
    for asset in ("vendor/plotly/plotly.min.js", "js/trends.js", "css/app.css"):
        assert page.request.get(f"{live_server.url}/static/{asset}").ok, asset

    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT_DIR / "patient-page.png"), full_page=True)
    assert (SCREENSHOT_DIR / "patient-page.png").stat().st_size > 0
