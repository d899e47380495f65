"""The clinician's pages of decision support: the recommendations panel of the patient page, the
worklist's counts by severity, the list of patients with recommendations."""

from __future__ import annotations

import datetime as dt
import re
import uuid

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from cdss.models import AuditEvent
from decision.models import PatientEvaluation, Recommendation, Snooze
from decision.selectors import recommendation_list_for_patient, severity_counts_for_patients
from patients import models as m
from tests.decision.test_actions import make_rec, make_rule
from tests.factories import PatientFactory, SiteFactory, clinician_of

# Session, user, SAVEPOINT (the atomic view), the patient (access-checked), the recommendations
# (with their rule and version, snoozes as a subquery), when the rules last ran, the audit INSERT,
# RELEASE, and the session save with its savepoints. Whatever the number of recommendations.
PANEL_QUERIES = 11
# Session, user, the rules limited to specialties (none here; one more query, the user's
# specialties, where there are), the counts (one query: the user's patients among those asked,
# with three counts), and the session save with its savepoints.
COUNTS_QUERIES = 7


def panel_url(patient: m.Patient, history: bool = False) -> str:
    return reverse("patient-recommendations", args=[patient.external_id]) + ("?history=1" if history else "")


def card_ids(content: str) -> list[str]:
    return re.findall(r'<article class="rec-card[^"]*" id="rec-([0-9a-f-]+)"', content)


def card_of(content: str, rec: Recommendation) -> str:
    start = content.index(f'id="rec-{rec.external_id}"')
    return content[start : content.index("</article>", start)]


# --- The panel --------------------------------------------------------------------------------


def test_the_patient_page_loads_the_panel_from_decision_support(client_a: Client, patient_a):
    content = client_a.get(reverse("patient-detail", args=[patient_a.external_id])).content.decode()
    assert f'hx-get="{panel_url(patient_a)}"' in content
    assert "js/decision.js" in content and "css/decision.css" in content


def test_cards_are_ordered_by_severity_and_shadow_resolved_and_snoozed_ones_are_not_shown(
    client_a: Client, patient_a
):
    now = timezone.now()
    info = make_rec(patient_a, make_rule("info-rule", severity="info"), fired_at=now)
    warning_old = make_rec(patient_a, make_rule("warning-old"), fired_at=now - dt.timedelta(days=3))
    warning_new = make_rec(patient_a, make_rule("warning-new"), fired_at=now - dt.timedelta(days=1))
    critical = make_rec(patient_a, make_rule("critical-rule", severity="critical"), fired_at=now - dt.timedelta(9))
    shadow = make_rec(patient_a, make_rule("shadow-rule", severity="critical", shadow=True), shadow=True)
    resolved = make_rec(patient_a, make_rule("resolved-rule"), status=Recommendation.Status.RESOLVED, closed=True)
    accepted = make_rec(patient_a, make_rule("accepted-rule"), status=Recommendation.Status.ACCEPTED)
    snoozed = make_rec(patient_a, make_rule("snoozed-rule", severity="critical"))
    Snooze.objects.create(patient=patient_a, rule=snoozed.rule, until=now + dt.timedelta(days=1))
    expired = make_rec(patient_a, make_rule("expired-snooze", severity="info"), fired_at=now - dt.timedelta(5))
    Snooze.objects.create(patient=patient_a, rule=expired.rule, until=now - dt.timedelta(minutes=1))

    response = client_a.get(panel_url(patient_a))
    assert response.status_code == 200
    content = response.content.decode()
    expected = [critical, warning_new, warning_old, info, expired]
    assert card_ids(content) == [str(r.external_id) for r in expected]
    assert "shadow-rule fired" not in content and str(shadow.external_id) not in content
    for hidden in (resolved, accepted, snoozed):
        assert str(hidden.external_id) not in content
    assert "Show history" in content

    history = client_a.get(panel_url(patient_a, history=True)).content.decode()
    ids = card_ids(history)
    assert ids[:5] == [str(r.external_id) for r in expected]
    assert set(ids[5:]) == {str(resolved.external_id), str(accepted.external_id), str(snoozed.external_id)}
    assert str(shadow.external_id) not in history  # never, not even in the history
    assert "Snoozed." in card_of(history, snoozed) and "hx-post" not in card_of(history, snoozed)
    assert "Hide history" in history


def test_a_card_shows_its_summary_forms_and_why_with_the_trace_and_its_evidence(client_a: Client, patient_a):
    version = make_rule("statin-ldl-190", severity="warning",
                        suggested_actions=[{"label": "Start a high-intensity statin", "type": "order"}])
    rec = make_rec(patient_a, version, summary="LDL 201 mg/dL: start a high-intensity statin")
    card = card_of(client_a.get(panel_url(patient_a)).content.decode(), rec)

    assert "LDL 201 mg/dL: start a high-intensity statin" in card
    assert 'class="badge rec-severity rec-severity-warning">Warning<' in card
    assert "version 1" in card
    # accept (with the suggested action), override with the version's reasons, snooze durations
    assert 'name="suggestion" value="Start a high-intensity statin"' in card
    assert '<option value="cds-not-applicable">Does not apply to this patient</option>' in card
    assert card.count("<option value=") == 1 + 7 + 6 - 1 + 1  # "choose" + 7 reasons, 6 durations
    assert '<option value="90d">90 days</option>' in card
    # the why: each condition, the fact value with unit and date, threshold, held or not
    why = card[card.index('<details class="rec-why">') :]
    assert re.search(r"<td>≥ 190 mg/dL <span class=\"muted\">within 730 d</span></td>\s*"
                     r"<td class=\"num\">201 mg/dL</td>\s*<td>2026-01-05</td>\s*"
                     r"<td><span class=\"held-yes\">yes</span></td>", why)
    assert "Any of:" in why and 'class="rec-cond depth-1"' in why
    assert re.search(r"<td>absent </td>\s*<td class=\"num\">—</td>\s*<td>—</td>\s*"
                     r"<td><span class=\"held-no\">no</span></td>", why)
    # evidence: where the lab value and the risk score are on the patient page (no record id)
    patient_url = reverse("patient-detail", args=[patient_a.external_id])
    assert f'<a href="{patient_url}#latest">Lab or vital sign</a>' in why
    assert f'<a href="{patient_url}#risk">Risk assessment</a>' in why
    assert "Largest contributions: <span class=\"muted\">age 2.5, systolic bp 1.1, hdl cholesterol -0.7</span>" in why
    assert "Observation:41" not in card and "RiskAssessment:7" not in card
    # the note span: its text, section and characters (a link when the notes app has a note page)
    assert "“heart failure”; section assessment; characters 120 to 133" in why
    assert "8d0c1f5e-3a57-4c39-9d43-0a8f3b2b6f10" in why
    # the heat map of the imaging finding (a recommendation from before there was a viewer link)
    assert '<a href="/media/heatmaps/abc.png">Heat map</a>: <span class="muted">probability 0.91</span>' in why
    # rationale and citation
    assert "Because the guideline says so." in why
    assert 'href="https://doi.org/10.1161/CIR.0000000000000625"' in why


def test_a_critical_card_asks_for_a_comment(client_a: Client, patient_a):
    rec = make_rec(patient_a, make_rule("sepsis-screen", severity="critical"))
    card = card_of(client_a.get(panel_url(patient_a)).content.decode(), rec)
    assert "Comment (required for a critical recommendation)" in card
    assert "required" in card[card.index("<textarea") : card.index("</textarea>")]


def test_a_trace_entry_of_an_unknown_shape_does_not_break_the_card(client_a: Client, patient_a):
    rec = make_rec(patient_a, make_rule("odd"), trace=[{"fact": "x"}, "not a dict", {"kind": "group"}])
    assert client_a.get(panel_url(patient_a)).status_code == 200
    rec.trace = {"not": "a list"}
    rec.save()
    assert "No trace recorded." in client_a.get(panel_url(patient_a)).content.decode()


def test_the_panel_says_when_the_rules_last_ran(client_a: Client, patient_a):
    assert "Not evaluated yet" in client_a.get(panel_url(patient_a)).content.decode()
    PatientEvaluation.objects.create(patient=patient_a, evaluated_at=dt.datetime(2026, 3, 4, 12, 0, tzinfo=dt.UTC))
    assert "Rules evaluated 2026-03-04" in client_a.get(panel_url(patient_a)).content.decode()


def test_the_panel_is_audited(client_a: Client, patient_a, clinician_a):
    client_a.get(panel_url(patient_a))
    event = AuditEvent.objects.get(target="recommendations-panel")
    assert (event.user, event.patient, event.action) == (clinician_a, patient_a, "view")


def test_another_sites_patient_is_a_404(client_a: Client, patient_b):
    make_rec(patient_b, make_rule("statin-ldl-190"))
    assert client_a.get(panel_url(patient_b)).status_code == 404
    assert client_a.get(reverse("patient-recommendations", args=[uuid.uuid4()])).status_code == 404
    assert not AuditEvent.objects.filter(target="recommendations-panel").exists()


def test_the_panel_needs_a_login(client: Client, patient_a):
    response = client.get(panel_url(patient_a), HTTP_HX_REQUEST="true")
    assert response.status_code == 401


@pytest.mark.parametrize("n", [0, 1, 12])
def test_the_panel_query_count_does_not_grow_with_the_recommendations(
    client_a: Client, patient_a, django_assert_num_queries, n
):
    for i in range(n):
        rec = make_rec(patient_a, make_rule(f"rule-{i}", severity=("info", "warning", "critical")[i % 3]))
        if i % 4 == 0:
            Snooze.objects.create(patient=patient_a, rule=rec.rule, until=timezone.now() - dt.timedelta(hours=1))
    client_a.get("/health")  # the session's first save happens here, not in the measured request
    with django_assert_num_queries(PANEL_QUERIES):
        response = client_a.get(panel_url(patient_a))
    assert len(card_ids(response.content.decode())) == n
    with django_assert_num_queries(PANEL_QUERIES):
        client_a.get(panel_url(patient_a, history=True))


def test_the_selector_reads_the_cards_in_one_query(patient_a, clinician_a):
    for i in range(5):
        make_rec(patient_a, make_rule(f"rule-{i}"))
    with CaptureQueriesContext(connection) as queries:
        cards = recommendation_list_for_patient(patient=patient_a, user=clinician_a)
        _ = [(c.rule.slug, c.rule_version.override_reasons) for c in cards]
    assert len(queries) == 1 and len(cards) == 5


# --- The worklist -----------------------------------------------------------------------------


def test_the_worklist_asks_for_the_counts_of_its_page_in_one_request(client_a: Client, patient_a, site_a):
    other = PatientFactory.create(site=site_a, family_name="Zulu")
    content = client_a.get(reverse("worklist")).content.decode()
    counts_url = reverse("worklist-recommendation-counts")
    assert content.count(f'hx-get="{counts_url}?') == 1
    assert f"p={patient_a.external_id}&amp;p={other.external_id}" in content
    assert f'id="rec-counts-{patient_a.external_id}"' in content


def test_counts_by_severity_per_patient_leave_out_shadow_snoozed_and_answered_ones(
    client_a: Client, patient_a, patient_b, site_a
):
    quiet = PatientFactory.create(site=site_a, family_name="Quiet")
    for slug, severity in (("c1", "critical"), ("c2", "critical"), ("w1", "warning"), ("i1", "info")):
        make_rec(patient_a, make_rule(slug, severity=severity))
    make_rec(patient_a, make_rule("shadow", severity="critical", shadow=True), shadow=True)
    make_rec(patient_a, make_rule("done", severity="warning"), status=Recommendation.Status.OVERRIDDEN)
    snoozed = make_rec(patient_a, make_rule("snoozed", severity="info"))
    Snooze.objects.create(patient=patient_a, rule=snoozed.rule, until=timezone.now() + dt.timedelta(days=1))
    make_rec(patient_b, make_rule("b-only", severity="critical"))

    ids = [patient_a.external_id, quiet.external_id, patient_b.external_id, uuid.uuid4()]
    query = "&".join(f"p={i}" for i in ids) + "&p=not-a-uuid"
    client_a.get("/health")
    with CaptureQueriesContext(connection) as queries:
        response = client_a.get(reverse("worklist-recommendation-counts") + "?" + query)
    assert response.status_code == 200
    assert len(queries) == COUNTS_QUERIES, [q["sql"][:150] for q in queries.captured_queries]
    content = response.content.decode()
    cell = re.search(rf'<span id="rec-counts-{patient_a.external_id}"[^>]*>(.*?)</span>\n', content, re.S)
    assert cell is not None
    assert 'hx-swap-oob="true" data-critical="2" data-warning="1" data-info="1"' in content
    assert "2 critical" in cell.group(1) and "1 warning" in cell.group(1) and "1 info" in cell.group(1)
    assert f'id="rec-counts-{quiet.external_id}"' in content  # zero: a dash, so the cell is filled
    assert str(patient_b.external_id) not in content  # another site's patient: left out


def test_the_counts_selector_gives_every_visible_patient_an_entry(clinician_a, patient_a, site_a):
    quiet = PatientFactory.create(site=site_a)
    make_rec(patient_a, make_rule("w", severity="warning"))
    counts = severity_counts_for_patients(user=clinician_a, external_ids=[patient_a.external_id, quiet.external_id])
    assert counts[patient_a.external_id].warning == 1 and counts[patient_a.external_id].total == 1
    assert counts[quiet.external_id].total == 0


def test_patients_with_recommendations_are_listed_most_critical_first(client_a: Client, site_a, patient_b):
    one_critical = PatientFactory.create(site=site_a, family_name="Aaron")
    two_warnings = PatientFactory.create(site=site_a, family_name="Baker")
    two_critical = PatientFactory.create(site=site_a, family_name="Carter")
    none = PatientFactory.create(site=site_a, family_name="Dunn")
    only_shadow = PatientFactory.create(site=site_a, family_name="Evans")
    make_rec(one_critical, make_rule("c", severity="critical"))
    w1, w2 = make_rule("w1"), make_rule("w2")
    make_rec(two_warnings, w1)
    make_rec(two_warnings, w2)
    make_rec(one_critical, w1)
    c2 = make_rule("c2", severity="critical")
    make_rec(two_critical, c2)
    make_rec(two_critical, make_rule("c3", severity="critical"))
    make_rec(only_shadow, make_rule("s", severity="critical", shadow=True), shadow=True)
    make_rec(patient_b, c2)

    content = client_a.get(reverse("recommendation-worklist")).content.decode()
    names = re.findall(r'<td><a href="/patients/[^"]+/">([^<]+)</a></td>', content)
    assert [n.split()[0].rstrip(",") for n in names] == ["CARTER", "AARON", "BAKER"]
    for absent in (none, only_shadow, patient_b):
        assert str(absent.external_id) not in content
    assert "3 patients with recommendations" in content


def test_a_clinician_of_two_sites_sees_counts_for_both(patient_a, patient_b, site_a, site_b):
    user = clinician_of(site_a, site_b, username="two-sites")
    make_rec(patient_b, make_rule("x", severity="info"))
    counts = severity_counts_for_patients(user=user, external_ids=[patient_a.external_id, patient_b.external_id])
    assert counts[patient_b.external_id].info == 1 and counts[patient_a.external_id].total == 0
    assert SiteFactory(code="site-c")  # a third site changes nothing


def test_a_rule_limited_to_specialties_shows_only_to_clinicians_of_them(client: Client, patient_a, site_a):
    cardio = make_rule("af-anticoagulation", severity="critical")
    cardio.rule.specialties = ["Cardiology"]
    cardio.rule.save()
    limited = make_rec(patient_a, cardio)
    everyone = make_rec(patient_a, make_rule("statin-ldl-190"))
    generalist = clinician_of(site_a, username="generalist")
    cardiologist = clinician_of(site_a, username="cardiologist")
    m.SiteMembership.objects.filter(user=cardiologist).update(specialty="cardiology ")

    client.force_login(generalist)
    assert card_ids(client.get(panel_url(patient_a)).content.decode()) == [str(everyone.external_id)]
    counts = severity_counts_for_patients(user=generalist, external_ids=[patient_a.external_id])
    assert (counts[patient_a.external_id].critical, counts[patient_a.external_id].warning) == (0, 1)

    client.force_login(cardiologist)
    assert card_ids(client.get(panel_url(patient_a)).content.decode()) == [
        str(limited.external_id), str(everyone.external_id)]
    counts = severity_counts_for_patients(user=cardiologist, external_ids=[patient_a.external_id])
    assert (counts[patient_a.external_id].critical, counts[patient_a.external_id].warning) == (1, 1)
    content = client.get(reverse("recommendation-worklist")).content.decode()
    assert "1 critical" in content


def test_an_imaging_finding_is_shown_as_its_image_with_the_heat_map_in_the_viewer(patient_a) -> None:
    from decision.views import evidence_for

    viewer = "/patients/p/imaging/i/?finding=f"
    [evidence] = evidence_for({"explanation": {"heatmap_url": "/h.png", "viewer_url": viewer, "probability": 0.91}},
                              patient_a, "/patients/p/")
    assert (evidence.label, evidence.url, evidence.text) == ("Image with heat map", viewer, "probability 0.91")

