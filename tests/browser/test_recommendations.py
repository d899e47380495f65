"""A clinician answers two recommendation cards on the patient page: accepts one, tries to override
a critical one without a comment (refused, the form stays open with its error), then overrides it
with a reason and a comment. Same browser as the other browser tests: Debian's Chromium through
Playwright's sync API against pytest-django's live server."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import pytest
from django.db import connection

from decision.models import Recommendation, RecommendationAction
from patients import models as m
from tests.browser.conftest import PASSWORD, SCREENSHOT_DIR
from tests.decision.test_actions import make_rec, make_rule
from tests.factories import PatientFactory, SiteFactory, clinician_of

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def two_cards(transactional_db: None) -> tuple[m.Patient, Recommendation, Recommendation]:
    site = SiteFactory.create(code="browser-rec-site", name="Browser Rec Hospital")
    user = clinician_of(site, username="dr-rec")
    user.set_password(PASSWORD)
    user.save()
    patient = PatientFactory.create(site=site, family_name="Cardwell", given_names="Cora", mrn="BRW-REC-1")
    statin = make_rec(patient, make_rule("statin-ldl-190", severity="warning"), summary="LDL 201 mg/dL: start a statin")
    sepsis = make_rec(patient, make_rule("sepsis-screen", severity="critical"), summary="qSOFA 2: screen for sepsis")
    return patient, statin, sepsis


def _actions() -> list[RecommendationAction]:
    try:
        return list(RecommendationAction.objects.all())
    finally:
        connection.close()  # this thread's own connection, or the test database cannot be dropped


# As in the other browser tests, the ORM work happens in fixtures requested before
# ``browser_page`` (no ORM calls from the thread where Playwright's event loop runs).
def test_a_clinician_accepts_one_card_and_overrides_another(
    live_server, two_cards: tuple[m.Patient, Recommendation, Recommendation], browser_page: Page
) -> None:
    patient, statin, sepsis = two_cards
    page = browser_page
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    page.goto(f"{live_server.url}/login/")
    page.fill("input[name=username]", "dr-rec")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")

    # The worklist fills each patient's counts by severity (one request, out-of-band cells).
    counts = f"#rec-counts-{patient.external_id}"
    page.wait_for_selector(f"{counts} .rec-severity-critical")
    assert page.inner_text(counts).lower().split() == ["1", "critical", "1", "warning"]

    page.goto(f"{live_server.url}/patients/{patient.external_id}/")
    statin_card, sepsis_card = f"#rec-{statin.external_id}", f"#rec-{sepsis.external_id}"
    page.wait_for_selector(sepsis_card)
    # critical first
    order = page.eval_on_selector_all("#recommendations-panel article.rec-card", "els => els.map(e => e.id)")
    assert order == [sepsis_card[1:], statin_card[1:]]

    # The why expander shows the trace.
    page.click(f"{statin_card} .rec-why summary")
    assert "201 mg/dL" in page.inner_text(f"{statin_card} table.rec-trace")
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    page.locator(statin_card).screenshot(path=str(SCREENSHOT_DIR / "recommendation-why.png"))

    # Accept the statin card: it is answered in place.
    page.click(f"{statin_card} .rec-accept button")
    page.wait_for_selector(f"{statin_card}[data-status=accepted]")
    assert "Accepted 20" in page.inner_text(statin_card)

    # Override the critical card without a comment: refused, the form stays open with the error.
    page.click(f"{sepsis_card} .rec-override summary")
    page.select_option(f"{sepsis_card} select[name=reason]", "cds-not-applicable")
    page.eval_on_selector(f"{sepsis_card} textarea[name=comment]", "el => el.removeAttribute('required')")
    page.click(f"{sepsis_card} .rec-override button[type=submit]")
    page.wait_for_selector(f"{sepsis_card} .field-error")
    assert "A comment is required" in page.inner_text(f"{sepsis_card} .field-error")
    assert page.is_visible(f"{sepsis_card} textarea[name=comment]")  # the form is still open
    assert page.input_value(f"{sepsis_card} select[name=reason]") == "cds-not-applicable"  # kept

    page.fill(f"{sepsis_card} textarea[name=comment]", "Afebrile, lactate normal")
    page.click(f"{sepsis_card} .rec-override button[type=submit]")
    page.wait_for_selector(f"{sepsis_card}[data-status=overridden]")
    assert errors == []

    page.locator("#recommendations").screenshot(path=str(SCREENSHOT_DIR / "recommendations.png"))

    # The ORM from another thread: this one runs Playwright's event loop.
    with ThreadPoolExecutor(max_workers=1) as pool:
        rows = pool.submit(_actions).result()
    actions = {a.recommendation_id: a for a in rows}
    assert actions[statin.pk].action == "accept"
    assert (actions[sepsis.pk].action, actions[sepsis.pk].reason_code, actions[sepsis.pk].comment) == (
        "override", "cds-not-applicable", "Afebrile, lactate normal")
    assert len(actions) == 2


@pytest.fixture
def answered_rule(transactional_db: None) -> str:
    """A rules admin, and a rule answered in two months: January 1 accepted and 1 overridden,
    February 3 overridden."""
    from django.contrib.auth.models import Permission

    from tests.decision.test_stats import FEB, JAN, answer
    from tests.factories import UserFactory

    admin = UserFactory.create(username="dr-rules", is_staff=True)
    admin.set_password(PASSWORD)
    admin.save()
    admin.user_permissions.add(Permission.objects.get(codename="view_rule", content_type__app_label="decision"))
    site = SiteFactory.create(code="browser-stats-site")
    version = make_rule("sepsis-screen", severity="critical")
    for i, (action, at) in enumerate([("accept", JAN), ("override", JAN), ("override", FEB), ("override", FEB),
                                      ("override", FEB)]):
        rec = make_rec(PatientFactory.create(site=site, mrn=f"BRW-STATS-{i}"), version)
        answer(rec, action, at=at, reason="cds-not-applicable" if action == "override" else "",
               display="Does not apply to this patient")
    return version.rule.slug


def test_an_admin_sees_the_override_rate_drawn_by_month(live_server, answered_rule: str, browser_page: Page) -> None:
    page = browser_page
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("input[name=username]", "dr-rules")
    page.fill("input[name=password]", PASSWORD)
    page.click("input[type=submit]")
    page.goto(f"{live_server.url}/rules/{answered_rule}/statistics/")
    page.wait_for_selector("#rule-stats-over-time .main-svg")
    # accepted and overridden bars for two months, and the override-rate line's two points
    assert page.locator("#rule-stats-over-time .bars .point").count() == 4
    assert page.locator("#rule-stats-over-time .scatterlayer .point").count() == 2
    page.wait_for_selector("#rule-stats-reasons .main-svg")
    assert page.inner_text("[data-stat=override-rate]") == "80 %"
    assert errors == []
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT_DIR / "rule-statistics.png"), full_page=True)
