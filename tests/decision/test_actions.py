"""A clinician's answers to a recommendation card: accept, override with a coded reason (a comment
for a critical one), snooze for a bounded time; through the pages (HTMX posts) and the actions."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from cdss.models import AuditEvent
from decision.actions import (
    SNOOZE_DURATIONS,
    ActionRefused,
    recommendation_accept,
    recommendation_override,
    recommendation_snooze,
)
from decision.engine import Result
from decision.models import Recommendation, RecommendationAction, Rule, RuleVersion, Snooze
from decision.services import apply_results
from patients import models as m

# A trace as the engine writes it (decision.engine._trace_entry): a condition on an observation,
# a group of two, a risk score with its contributions, a note finding and an imaging finding.
TRACE: list[dict[str, Any]] = [
    {"kind": "condition", "name": "ldl", "fact": "observation:ldl", "op": ">=", "threshold": 190, "unit": "mg/dL",
     "lookback_days": 730, "held": True, "value": 201.0, "value_unit": "mg/dL", "at": "2026-01-05T09:00:00+00:00",
     "source": "Observation:41", "missing": False},
    {"kind": "group", "logic": "any", "held": True, "items": [
        {"kind": "condition", "name": "ascvd", "fact": "risk:pce_ascvd_10y", "op": ">=", "threshold": 7.5, "unit": "%",
         "held": True, "value": 12.3, "value_unit": "%", "at": "2026-01-06T00:00:00+00:00",
         "source": "RiskAssessment:7", "missing": False,
         "explanation": {"contributions": {"age": 2.5, "hdl_cholesterol": -0.7, "systolic_bp": 1.1, "smoker": 0.2},
                         "category": "intermediate"}},
        {"kind": "condition", "name": "statin", "fact": "medication:statins", "op": "absent", "threshold": None,
         "unit": "", "held": False, "value": None, "value_unit": "", "at": None, "source": "", "missing": False},
    ]},
    {"kind": "condition", "name": "chf_in_notes", "fact": "note:heart-failure", "op": "present", "threshold": None,
     "unit": "", "held": True, "value": "heart failure", "value_unit": "", "at": "2026-01-02T00:00:00+00:00",
     "source": "NoteFact:3", "missing": False,
     "explanation": {"note_id": "8d0c1f5e-3a57-4c39-9d43-0a8f3b2b6f10", "start": 120, "end": 133,
                     "text": "heart failure", "section": "assessment"}},
    {"kind": "condition", "name": "pneumonia", "fact": "imaging:pneumonia", "op": ">=", "threshold": 0.8, "unit": "1",
     "held": True, "value": 0.91, "value_unit": "1", "at": "2026-01-07T00:00:00+00:00",
     "source": "ImagingFinding:5", "missing": False,
     "explanation": {"heatmap_url": "/media/heatmaps/abc.png", "probability": 0.91, "reported": False}},
]


def make_rule(slug: str, *, severity: str = "warning", title: str = "", shadow: bool = False,
              suggested_actions: list[dict[str, str]] | None = None, **fields: Any) -> RuleVersion:
    """A rule with an active first version (rows written directly: the pages read them as the
    services write them)."""
    rule = Rule.objects.create(slug=slug, title=title or slug.replace("-", " ").capitalize(), shadow=shadow)
    return RuleVersion.objects.create(
        rule=rule, number=1, status=RuleVersion.Status.ACTIVE, severity=severity,
        conditions={"all": [{"fact": "observation:ldl", "op": ">=", "value": 190, "unit": "mg/dL"}]},
        summary_template=f"{slug} fired", rationale="Because the guideline says so.",
        citation_source="Grundy SM et al. 2018 AHA/ACC cholesterol guideline, Circulation 2019;139:e1082, Table 3",
        citation_url="https://doi.org/10.1161/CIR.0000000000000625",
        suggested_actions=suggested_actions or [], activated_at=timezone.now(), **fields,
    )


def make_rec(patient: m.Patient, version: RuleVersion, *, status: str = Recommendation.Status.ACTIVE,
             shadow: bool = False, summary: str = "", trace: Any = None,
             fired_at: dt.datetime | None = None, closed: bool = False) -> Recommendation:
    at = fired_at or timezone.now()
    return Recommendation.objects.create(
        patient=patient, rule=version.rule, rule_version=version, status=status, severity=version.severity,
        shadow=shadow, summary=summary or version.summary_template, trace=TRACE if trace is None else trace,
        first_fired_at=at, last_fired_at=at, status_changed_at=at, closed_at=at if closed else None,
    )


def url(name: str, rec: Recommendation) -> str:
    return reverse(name, args=[rec.external_id])


HX = {"HX-Request": "true"}
REASON = "cds-not-applicable"  # one of decision.models.default_override_reasons()


@pytest.fixture
def warning_rec(patient_a: m.Patient) -> Recommendation:
    return make_rec(patient_a, make_rule("statin-ldl-190"))


@pytest.fixture
def critical_rec(patient_a: m.Patient) -> Recommendation:
    return make_rec(patient_a, make_rule("sepsis-screen", severity="critical"))


# --- Accept -----------------------------------------------------------------------------------


def test_accepting_records_the_action_changes_the_status_and_audits(client_a: Client, warning_rec, clinician_a):
    response = client_a.post(url("recommendation-accept", warning_rec), headers=HX)
    assert response.status_code == 200
    content = response.content.decode()
    assert f'id="rec-{warning_rec.external_id}"' in content and 'data-status="accepted"' in content
    assert "Your answer is recorded." in content and "Accepted 20" in content
    assert "hx-post" not in content  # an answered card has no forms left
    warning_rec.refresh_from_db()
    assert warning_rec.status == Recommendation.Status.ACCEPTED
    action = RecommendationAction.objects.get(recommendation=warning_rec)
    assert (action.action, action.user, action.rule_id, action.rule_version_id, action.source) == (
        "accept", clinician_a, warning_rec.rule_id, warning_rec.rule_version_id, "in-app")
    event = AuditEvent.objects.get(action="accept")
    assert (event.user, event.patient_id, event.target, event.detail) == (
        clinician_a, warning_rec.patient_id, "recommendation", "statin-ldl-190")


def test_a_double_submitted_accept_writes_one_action(client_a: Client, warning_rec):
    first = client_a.post(url("recommendation-accept", warning_rec), headers=HX)
    second = client_a.post(url("recommendation-accept", warning_rec), headers=HX)
    assert first.status_code == second.status_code == 200
    assert "Already accepted." in second.content.decode()
    assert RecommendationAction.objects.filter(recommendation=warning_rec).count() == 1
    assert AuditEvent.objects.filter(action="accept").count() == 1


def test_accepting_a_suggested_action_records_it_and_an_unknown_one_is_refused(patient_a, clinician_a):
    version = make_rule("af-anticoagulation", suggested_actions=[{"label": "Start apixaban", "type": "order"}])
    rec = make_rec(patient_a, version)
    with pytest.raises(ActionRefused) as refused:
        recommendation_accept(user=clinician_a, recommendation=rec, suggestion="Start warfarin")
    assert refused.value.field == "suggestion"
    assert not RecommendationAction.objects.exists()
    recommendation_accept(user=clinician_a, recommendation=rec, suggestion="Start apixaban")
    assert RecommendationAction.objects.get().suggestion == "Start apixaban"


# --- Override ---------------------------------------------------------------------------------


def test_overriding_with_a_reason_records_its_code_and_display(client_a: Client, warning_rec):
    response = client_a.post(url("recommendation-override", warning_rec), {"reason": REASON, "comment": " seen "}, headers=HX)
    assert response.status_code == 200
    assert 'data-status="overridden"' in response.content.decode()
    action = RecommendationAction.objects.get(recommendation=warning_rec)
    assert (action.action, action.reason_code, action.reason_display, action.comment) == (
        "override", REASON, "Does not apply to this patient", "seen")
    assert AuditEvent.objects.get(action="override").detail == f"statin-ldl-190 {REASON}"


def test_an_override_without_a_reason_is_refused_and_writes_nothing(client_a: Client, warning_rec):
    response = client_a.post(url("recommendation-override", warning_rec), {"reason": "", "comment": "no"}, headers=HX)
    assert response.status_code == 422
    content = response.content.decode()
    assert content.count("Choose a reason for not following") == 1  # beside the field, once
    assert "This field is required" not in content
    assert '<details class="rec-override" open>' in content  # the form stays open with its error
    warning_rec.refresh_from_db()
    assert warning_rec.status == Recommendation.Status.ACTIVE
    assert not RecommendationAction.objects.exists()
    assert not AuditEvent.objects.filter(action="override").exists()


def test_an_override_with_a_reason_the_version_does_not_offer_is_refused(client_a: Client, warning_rec):
    response = client_a.post(url("recommendation-override", warning_rec), {"reason": "i-disagree"}, headers=HX)
    assert response.status_code == 422
    assert "is not one of this rule" in response.content.decode()
    assert not RecommendationAction.objects.exists()


def test_overriding_a_critical_recommendation_needs_a_comment(client_a: Client, critical_rec):
    blank = client_a.post(url("recommendation-override", critical_rec), {"reason": REASON, "comment": "   "}, headers=HX)
    assert blank.status_code == 422
    assert re.search(r'<span class="field-error">A comment is required to override a critical recommendation.</span>',
                     blank.content.decode())
    assert not RecommendationAction.objects.exists()
    ok = client_a.post(url("recommendation-override", critical_rec),
                       {"reason": REASON, "comment": "Lactate normal, afebrile"}, headers=HX)
    assert ok.status_code == 200
    assert RecommendationAction.objects.get().comment == "Lactate normal, afebrile"


def test_an_overlong_comment_is_refused(patient_a, clinician_a, warning_rec):
    with pytest.raises(ActionRefused) as refused:
        recommendation_override(user=clinician_a, recommendation=warning_rec, reason_code=REASON, comment="x" * 2001)
    assert refused.value.field == "comment"


def test_accepting_an_overridden_recommendation_is_refused(client_a: Client, warning_rec, clinician_a):
    recommendation_override(user=clinician_a, recommendation=warning_rec, reason_code=REASON)
    response = client_a.post(url("recommendation-accept", warning_rec), headers=HX)
    assert response.status_code == 422
    assert re.search(r'<p class="form-errors rec-error" role="alert">This recommendation is already overridden.</p>',
                     response.content.decode())
    assert RecommendationAction.objects.count() == 1


def test_a_double_submitted_override_writes_one_action(client_a: Client, warning_rec):
    for _ in range(2):
        assert client_a.post(url("recommendation-override", warning_rec), {"reason": REASON}, headers=HX).status_code == 200
    assert RecommendationAction.objects.count() == 1


# --- Snooze -----------------------------------------------------------------------------------


def test_snoozing_hides_the_rule_for_the_patient_for_the_chosen_time(client_a: Client, warning_rec, clinician_a):
    before = timezone.now()
    response = client_a.post(url("recommendation-snooze", warning_rec), {"duration": "7d"}, headers=HX)
    assert response.status_code == 200
    assert "Snoozed until" in response.content.decode()
    snooze = Snooze.objects.get()
    assert (snooze.patient_id, snooze.rule_id, snooze.user) == (warning_rec.patient_id, warning_rec.rule_id, clinician_a)
    assert before + dt.timedelta(days=7) <= snooze.until <= timezone.now() + dt.timedelta(days=7)
    warning_rec.refresh_from_db()
    assert warning_rec.status == Recommendation.Status.ACTIVE  # still firing, only hidden
    assert AuditEvent.objects.get(action="snooze").detail == "statin-ldl-190 7d"
    panel = client_a.get(reverse("patient-recommendations", args=[warning_rec.patient.external_id]))
    assert f"rec-{warning_rec.external_id}" not in panel.content.decode()


@pytest.mark.parametrize("duration", ["", "365d", "0", "-1d", "1y", "100000h"])
def test_a_snooze_duration_not_offered_is_refused(client_a: Client, warning_rec, duration):
    response = client_a.post(url("recommendation-snooze", warning_rec), {"duration": duration}, headers=HX)
    assert response.status_code == 422
    assert "Choose a snooze duration among" in response.content.decode()
    assert not Snooze.objects.exists()


def test_snooze_durations_are_bounded_to_a_quarter():
    assert max(SNOOZE_DURATIONS.values()) == dt.timedelta(days=90)
    assert min(SNOOZE_DURATIONS.values()) == dt.timedelta(hours=4)


def test_a_double_submitted_snooze_writes_one_snooze(client_a: Client, warning_rec):
    client_a.post(url("recommendation-snooze", warning_rec), {"duration": "1d"}, headers=HX)
    again = client_a.post(url("recommendation-snooze", warning_rec), {"duration": "3d"}, headers=HX)
    assert again.status_code == 200
    assert "Already snoozed." in again.content.decode()
    assert Snooze.objects.count() == 1
    assert AuditEvent.objects.filter(action="snooze").count() == 1


def test_an_ended_snooze_lets_a_new_one_be_written(warning_rec, clinician_a):
    Snooze.objects.create(patient=warning_rec.patient, rule=warning_rec.rule, until=timezone.now() - dt.timedelta(1))
    outcome = recommendation_snooze(user=clinician_a, recommendation=warning_rec, duration="4h")
    assert outcome.created and Snooze.objects.count() == 2


# --- Access -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name,data", [
    ("recommendation-accept", {}),
    ("recommendation-override", {"reason": REASON, "comment": "x"}),
    ("recommendation-snooze", {"duration": "1d"}),
])
def test_another_sites_patient_is_a_404_and_nothing_is_written(client_a: Client, patient_b, name, data):
    rec = make_rec(patient_b, make_rule("statin-ldl-190"))
    response = client_a.post(url(name, rec), data, headers=HX)
    assert response.status_code == 404
    rec.refresh_from_db()
    assert rec.status == Recommendation.Status.ACTIVE
    assert not RecommendationAction.objects.exists() and not Snooze.objects.exists()


def test_a_shadow_recommendation_cannot_be_answered(client_a: Client, patient_a):
    rec = make_rec(patient_a, make_rule("statin-ldl-190", shadow=True), shadow=True)
    assert client_a.post(url("recommendation-accept", rec), headers=HX).status_code == 404
    assert not RecommendationAction.objects.exists()


def test_actions_need_a_post(client_a: Client, warning_rec):
    assert client_a.get(url("recommendation-accept", warning_rec)).status_code == 405


def test_actions_work_on_recommendations_written_by_the_engine_services(patient_a, clinician_a):
    """Through ``decision.services.apply_results`` (the evaluation's writer), then answered."""
    version = make_rule("hba1c-9")
    result = Result(rule="hba1c-9", version=1, version_id=version.pk, fired=True, severity="warning",
                    summary="HbA1c 9.4 % on treatment", detail="", trace=TRACE[:1])
    apply_results(patient_a, [result])
    rec = Recommendation.objects.get(patient=patient_a)
    recommendation_override(user=clinician_a, recommendation=rec, reason_code="action-completed")
    apply_results(patient_a, [result])  # re-evaluation: still fires, the answer stays
    rec.refresh_from_db()
    assert rec.status == Recommendation.Status.OVERRIDDEN
    assert Recommendation.objects.filter(patient=patient_a).count() == 1
