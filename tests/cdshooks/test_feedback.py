"""Feedback (CDS Hooks 2.0.1 "Feedback"): stored once however often it is sent, and recorded as a
cds-hooks action on the stored patient's recommendation so it counts with in-app feedback."""

from __future__ import annotations

import pytest
from django.utils import timezone

from cdshooks.models import CardFeedback
from decision.models import Recommendation, RecommendationAction
from decision.services import patients_evaluate
from risk.models import RiskAssessment
from tests.factories import ConditionFactory, PatientFactory, clinician_of

from .fhir import bundle, days_ago, empty_prefetch, observation, patient, patient_view

pytestmark = pytest.mark.django_db
NON_ADHERENCE = "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes"


@pytest.fixture
def af_card(ehr, starter, site_a):
    p = PatientFactory(site=site_a, fhir_id="af-2", sex="male")
    ConditionFactory(patient=p, code="49436004", display="Atrial fibrillation")
    RiskAssessment.objects.create(patient=p, calculator="cha2ds2_vasc", calculator_version="1", status="computed",
                                  value=4.0, unit="points", inputs_hash="h", as_of=timezone.now())
    patients_evaluate([p.pk])
    cards = ehr.call("patient-view", patient_view("af-2")).json()["cards"]
    assert len(cards) == 1
    return p, cards[0]


@pytest.fixture
def visitor_card(ehr, starter):
    pid = "visitor-3"
    prefetch = empty_prefetch(pid, patient=patient(pid, birth="1970-01-01"),
                              observations=bundle(observation(pid, "l1", "18262-6", 250, "mg/dL", days_ago(3))))
    return ehr.call("patient-view", patient_view(pid, prefetch)).json()["cards"][0]


def _accepted(card: dict, at: str = "2026-11-25T10:05:31Z") -> dict:
    return {"feedback": [{"card": card["uuid"], "outcome": "accepted",
                          "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}], "outcomeTimestamp": at}]}


def test_accepted_feedback_counts_as_a_cds_hooks_action_and_is_stored_once(ehr, af_card):
    p, card = af_card
    first = ehr.feedback("patient-view", _accepted(card))
    assert first.status_code == 200 and first.json() == {"stored": 1, "duplicates": 0}
    again = ehr.feedback("patient-view", _accepted(card))
    assert again.json() == {"stored": 0, "duplicates": 1}
    assert CardFeedback.objects.count() == 1
    action = RecommendationAction.objects.get()
    assert action.source == "cds-hooks" and action.action == "accept"
    assert action.suggestion == "Start an oral anticoagulant (DOAC preferred)"
    assert action.rule.slug == "af-anticoagulation"
    assert Recommendation.objects.get(patient=p).status == "accepted"
    assert CardFeedback.objects.get().action == action


def test_overridden_with_a_coded_reason_and_comment(ehr, af_card):
    p, card = af_card
    reason = card["overrideReasons"][0]
    body = {"feedback": [{"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-11-25T11:00:00Z",
                          "overrideReason": {"reason": {"system": reason["system"], "code": reason["code"]},
                                             "userComment": "Discussed with the patient"}}]}
    assert ehr.feedback("patient-view", body).json() == {"stored": 1, "duplicates": 0}
    action = RecommendationAction.objects.get()
    assert (action.action, action.reason_code, action.comment) == ("override", reason["code"],
                                                                    "Discussed with the patient")
    assert action.reason_display == reason["display"]
    assert Recommendation.objects.get(patient=p).status == "overridden"


def test_a_second_outcome_later_is_kept_as_another_row(ehr, af_card):
    _, card = af_card
    ehr.feedback("patient-view", _accepted(card, "2026-11-25T10:00:00Z"))
    body = {"feedback": [{"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-11-25T12:00:00Z"}]}
    assert ehr.feedback("patient-view", body).json() == {"stored": 1, "duplicates": 0}
    assert CardFeedback.objects.count() == 2 and RecommendationAction.objects.count() == 2


def test_feedback_on_a_patient_not_stored_here_is_kept_without_an_action(ehr, visitor_card):
    body = {"feedback": [{"card": visitor_card["uuid"], "outcome": "overridden",
                          "outcomeTimestamp": "2026-11-25T10:00:00+01:00",
                          "overrideReason": {"reason": {"system": NON_ADHERENCE, "code": "patient-ineligible"}}}]}
    assert ehr.feedback("patient-view", body).json() == {"stored": 1, "duplicates": 0}
    fb = CardFeedback.objects.get()
    assert fb.action is None and fb.card.rule.slug == "statin-ldl-190" and fb.reason_code == "patient-ineligible"
    assert fb.reason_display == "Patient does not meet eligibility for the recommended action"


def test_an_unknown_card_refuses_the_whole_batch(ehr, visitor_card):
    body = {"feedback": [
        {"card": visitor_card["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-11-25T10:00:00Z"},
        {"card": "9368d37b-283f-44a0-93ea-547cebab93ed", "outcome": "overridden",
         "outcomeTimestamp": "2026-11-25T10:00:00Z"}]}
    response = ehr.feedback("patient-view", body)
    assert response.status_code == 404 and "9368d37b" in response.json()["error"]["message"]
    assert not CardFeedback.objects.exists()


def test_a_card_of_another_service_is_unknown_there(ehr, visitor_card):
    body = {"feedback": [{"card": visitor_card["uuid"], "outcome": "overridden",
                          "outcomeTimestamp": "2026-11-25T10:00:00Z"}]}
    assert ehr.feedback("order-select", body).status_code == 404


def test_accepted_needs_accepted_suggestions_of_that_card(ehr, visitor_card):
    body = {"feedback": [{"card": visitor_card["uuid"], "outcome": "accepted",
                          "outcomeTimestamp": "2026-11-25T10:00:00Z"}]}
    response = ehr.feedback("patient-view", body)
    assert response.status_code == 400 and "cds-fb-2" in response.json()["error"]["details"][0]
    body["feedback"][0]["acceptedSuggestions"] = [{"id": "e56e1945-20b3-4393-8503-a1a20fd73152"}]
    response = ehr.feedback("patient-view", body)
    assert response.status_code == 400 and "has no suggestion" in response.json()["error"]["message"]


def test_an_override_reason_needs_a_reason_or_a_comment(ehr, visitor_card):
    body = {"feedback": [{"card": visitor_card["uuid"], "outcome": "overridden", "overrideReason": {},
                          "outcomeTimestamp": "2026-11-25T10:00:00Z"}]}
    response = ehr.feedback("patient-view", body)
    assert response.status_code == 400 and "cds-fb-3" in response.json()["error"]["details"][0]


def test_the_explanation_page_needs_login_and_access_to_the_patient(client, ehr, af_card, site_b):
    p, card = af_card
    url = f"/cds-services/cards/{card['uuid']}"
    assert client.get(url).status_code == 302  # to the login page
    client.force_login(clinician_of(site_b, username="other-site"))
    assert client.get(url).status_code == 404
    client.force_login(clinician_of(p.site, username="same-site"))
    page = client.get(url)
    assert page.status_code == 200
    text = page.content.decode()
    assert "af-anticoagulation" in text and "risk:cha2ds2_vasc" in text and "Joglar JA" in text


def test_card_statistics_count_feedback_on_patients_not_stored_here(ehr, visitor_card):
    from cdshooks.models import IssuedCard
    from cdshooks.selectors import card_statistics

    body = {"feedback": [{"card": visitor_card["uuid"], "outcome": "overridden",
                          "outcomeTimestamp": "2026-11-25T10:00:00Z",
                          "overrideReason": {"reason": {"system": NON_ADHERENCE, "code": "patient-ineligible"}}}]}
    ehr.feedback("patient-view", body)
    ehr.feedback("patient-view", body)  # again: counted once
    stats = card_statistics(IssuedCard.objects.get().rule_id)
    assert stats == {"issued": 1, "answered": 1, "by_outcome": {"overridden": 1},
                     "overrides_by_reason": {"patient-ineligible": 1}, "stored_patients": 0}


def test_feedback_on_patients_not_stored_here_counts_in_the_admin_rule_statistics(ehr, visitor_card, af_card):
    from decision.models import Rule
    from decision.selectors import rule_statistics_detail, rule_statistics_list

    statin = Rule.objects.get(slug="statin-ldl-190")
    before = rule_statistics_detail(rule=statin)
    assert (before.fired, before.patients, before.answered) == (1, 1, 0)  # the visitor's card, once per patient
    body = {"feedback": [{"card": visitor_card["uuid"], "outcome": "overridden",
                          "outcomeTimestamp": "2026-11-25T10:00:00Z",
                          "overrideReason": {"reason": {"system": NON_ADHERENCE, "code": "patient-ineligible"}}}]}
    ehr.feedback("patient-view", body)
    ehr.feedback("patient-view", body)  # again: counted once
    stats = rule_statistics_detail(rule=statin)
    assert (stats.fired, stats.accepted, stats.overridden, stats.override_rate) == (1, 0, 1, 1.0)
    assert [(r.code, r.display, r.count) for r in stats.reasons] == [
        ("patient-ineligible", "Patient does not meet eligibility for the recommended action", 1)]
    assert [(p.accepted, p.overridden) for p in stats.months] == [(0, 1)]
    assert [(v["number"], v["overridden"]) for v in stats.versions] == [(1, 1)]
    # Feedback on a stored patient's card is its recommendation's action: counted once, not twice.
    _, card = af_card
    ehr.feedback("patient-view", _accepted(card))
    af = rule_statistics_detail(rule=Rule.objects.get(slug="af-anticoagulation"))
    assert (af.fired, af.accepted, af.overridden) == (1, 1, 0)
    rows = {r.rule.slug: (r.fired, r.accepted, r.overridden) for r in rule_statistics_list()}
    assert rows["statin-ldl-190"] == (1, 0, 1) and rows["af-anticoagulation"] == (1, 1, 0)
