"""Jobs and recommendations over the API: scoping, retry, enqueue, feedback through the services."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from cdss.jobs.runner import job_enqueue
from cdss.models import Job
from decision.models import Recommendation, RecommendationAction, Snooze
from tests.api.conftest import token_client
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def jobs(patient_a, patient_b):
    a = job_enqueue(kind="test.probe", patient=patient_a, inputs={"n": 1})
    b = job_enqueue(kind="test.probe", patient=patient_b, inputs={"n": 2})
    population = job_enqueue(kind="test.probe", inputs={"n": 3})
    return a, b, population


@pytest.fixture
def staff_a(site_a):
    from tests.factories import clinician_of

    user = clinician_of(site_a, username="staff-a")
    user.is_staff = True
    user.save()
    return user


def test_a_user_sees_only_the_jobs_of_their_sites_patients(api_a, jobs):
    a, b, _ = jobs
    body = api_a.get("/api/jobs/").json()
    assert [j["id"] for j in body["results"]] == [str(a.external_id)]
    assert api_a.get(f"/api/jobs/{b.external_id}/").status_code == 404
    assert api_a.get(f"/api/jobs/{a.external_id}/").json()["status"] == "queued"


def test_staff_also_see_population_jobs_and_filters_apply(staff_a, jobs, patient_a):
    a, _b, population = jobs
    client = token_client(staff_a)
    ids = {j["id"] for j in client.get("/api/jobs/").json()["results"]}
    assert ids == {str(a.external_id), str(population.external_id)}
    only = client.get("/api/jobs/", {"patient": str(patient_a.external_id), "status": "queued"}).json()
    assert [j["id"] for j in only["results"]] == [str(a.external_id)]
    assert client.get("/api/jobs/", {"status": "nonsense"}).status_code == 400


def test_only_staff_retry_and_only_a_dead_job(api_a, staff_a, jobs):
    a, b, _ = jobs
    assert api_a.post(f"/api/jobs/{a.external_id}/retry/").status_code == 403
    client = token_client(staff_a)
    conflict = client.post(f"/api/jobs/{a.external_id}/retry/")
    assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "conflict"
    Job.objects.filter(pk=a.pk).update(status=Job.Status.DEAD, attempts=3, error="ValueError: boom\n  at x")
    retried = client.post(f"/api/jobs/{a.external_id}/retry/")
    assert retried.status_code == 200 and retried.json()["status"] == "queued"
    assert Job.objects.get(pk=a.pk).attempts == 0
    assert client.post(f"/api/jobs/{b.external_id}/retry/").status_code == 404


def test_a_clinician_asks_for_a_per_patient_analysis(api_a, patient_a, patient_b):
    url = f"/api/patients/{patient_a.external_id}/jobs/"
    response = api_a.post(url, {"kind": "test.patient_probe"}, format="json")
    assert response.status_code == 201, response.content
    job = Job.objects.get(external_id=response.json()["id"])
    assert job.patient == patient_a and job.kind == "test.patient_probe"
    refused = api_a.post(url, {"kind": "test.probe"}, format="json")
    assert refused.status_code == 400 and "kind" in refused.json()["error"]["details"]
    other = api_a.post(f"/api/patients/{patient_b.external_id}/jobs/", {"kind": "test.patient_probe"},
                       format="json")
    assert other.status_code == 404
    nobody = token_client(UserFactory(username="no-group"))
    assert nobody.post(url, {"kind": "test.patient_probe"}, format="json").status_code == 403


# -- recommendations ------------------------------------------------------------------------------


def test_the_patients_recommendations_and_one_with_its_trace(api_a, record_a, record_b):
    body = api_a.get(f"/api/patients/{record_a.patient.external_id}/recommendations/").json()
    assert [r["id"] for r in body["results"]] == [str(record_a.recommendation.external_id)]
    assert body["results"][0]["rule"] == "ldl-high" and body["results"][0]["summary"] == "LDL 200 mg/dL"
    detail = api_a.get(f"/api/recommendations/{record_a.recommendation.external_id}/").json()
    assert detail["trace"][0]["source"].startswith("Observation:")
    assert {r["code"] for r in detail["override_reasons"]} >= {"cds-not-applicable"}
    assert api_a.get(f"/api/recommendations/{record_b.recommendation.external_id}/").status_code == 404
    feedback = api_a.post(f"/api/recommendations/{record_b.recommendation.external_id}/feedback/",
                          {"action": "accept"}, format="json")
    assert feedback.status_code == 404
    assert record_b.recommendation.actions.count() == 0


def test_accept_goes_through_the_service_and_a_second_answer_is_a_409(api_a, record_a, clinician_a):
    url = f"/api/recommendations/{record_a.recommendation.external_id}/feedback/"
    response = api_a.post(url, {"action": "accept", "suggestion": "Start a statin"}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "accepted" and body["actions"][0]["action"] == "accept"
    action = RecommendationAction.objects.get(recommendation=record_a.recommendation)
    assert action.user == clinician_a and action.suggestion == "Start a statin"
    again = api_a.post(url, {"action": "accept"}, format="json")
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
    assert RecommendationAction.objects.count() == 1
    history = api_a.get(f"/api/patients/{record_a.patient.external_id}/recommendations/", {"status": "accepted"})
    assert history.json()["count"] == 1


@pytest.mark.parametrize("payload,field", [
    ({"action": "override"}, "reason_code"),
    ({"action": "override", "reason_code": "because"}, "reason_code"),
    ({"action": "snooze"}, "until"),
    ({"action": "snooze", "until": "2001-01-01T00:00:00Z"}, "until"),
    ({"action": "dismiss"}, "action"),
])
def test_bad_feedback_is_a_400_naming_the_field_and_writes_nothing(api_a, record_a, payload, field):
    url = f"/api/recommendations/{record_a.recommendation.external_id}/feedback/"
    response = api_a.post(url, payload, format="json")
    assert response.status_code == 400
    assert field in response.json()["error"]["details"]
    assert not RecommendationAction.objects.exists() and not Snooze.objects.exists()
    assert Recommendation.objects.get(pk=record_a.recommendation.pk).status == "active"


def test_override_with_a_coded_reason_and_snooze(api_a, record_a):
    url = f"/api/recommendations/{record_a.recommendation.external_id}/feedback/"
    until = (timezone.now() + dt.timedelta(days=7)).isoformat()
    snoozed = api_a.post(url, {"action": "snooze", "until": until, "comment": "after the visit"}, format="json")
    assert snoozed.status_code == 201
    assert Snooze.objects.get().rule == record_a.recommendation.rule
    shown = api_a.get(f"/api/patients/{record_a.patient.external_id}/recommendations/").json()
    assert shown["count"] == 0
    response = api_a.post(url, {"action": "override", "reason_code": "patient-ineligible"}, format="json")
    assert response.status_code == 201 and response.json()["status"] == "overridden"
    assert RecommendationAction.objects.get().reason_display.startswith("Patient does not meet")


def test_a_user_outside_the_clinician_group_may_read_but_not_answer(record_a, site_a):
    from patients.models import SiteMembership

    reader = UserFactory(username="reader")
    SiteMembership.objects.create(user=reader, site=site_a)
    client = token_client(reader)
    assert client.get(f"/api/recommendations/{record_a.recommendation.external_id}/").status_code == 200
    response = client.post(f"/api/recommendations/{record_a.recommendation.external_id}/feedback/",
                           {"action": "accept"}, format="json")
    assert response.status_code == 403 and response.json()["error"]["code"] == "permission_denied"
