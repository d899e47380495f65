"""The record over the API: site scoping, filters, pagination, audit, fixed query counts."""

from __future__ import annotations

import uuid

import pytest

from cdss.models import AuditEvent
from tests.api.conftest import token_client
from tests.factories import ObservationFactory, clinician_of

pytestmark = pytest.mark.django_db

RECORD_LISTS = ["conditions", "observations", "medications", "allergies", "notes", "risk", "recommendations"]


def _url(patient, what: str = "") -> str:
    return f"/api/patients/{patient.external_id}/" + (f"{what}/" if what else "")


@pytest.mark.parametrize("what", ["", *RECORD_LISTS, "$everything"])
def test_another_sites_patient_is_a_404_in_the_error_shape(api_a, record_b, what):
    url = _url(record_b.patient, what).rstrip("/") if what == "$everything" else _url(record_b.patient, what)
    response = api_a.get(url)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert not AuditEvent.objects.filter(patient=record_b.patient).exists()


@pytest.mark.parametrize("what", ["", *RECORD_LISTS])
def test_anonymous_callers_get_401(client, record_a, what):
    response = client.get(_url(record_a.patient, what))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"
    assert response["WWW-Authenticate"].startswith("Token")


def test_the_patient_list_shows_only_the_users_sites(api_a, record_a, record_b):
    body = api_a.get("/api/patients/").json()
    assert [p["id"] for p in body["results"]] == [str(record_a.patient.external_id)]
    assert body["count"] == 1


def test_conditions_leave_out_entered_in_error_and_filter_active(api_a, record_a):
    body = api_a.get(_url(record_a.patient, "conditions")).json()
    assert sorted(c["display"] for c in body["results"]) == ["Diabetes", "Hypertension"]
    body = api_a.get(_url(record_a.patient, "conditions"), {"active": "true"}).json()
    assert [c["display"] for c in body["results"]] == ["Hypertension"]


def test_observations_filter_by_code_category_and_days_newest_first(api_a, record_a):
    url = _url(record_a.patient, "observations")
    ldl = api_a.get(url, {"code": "18262-6"}).json()["results"]
    assert [o["value_quantity"] for o in ldl] == [200.0, 180.0, 150.0]
    both = api_a.get(url, {"code": "18262-6,8480-6"}).json()
    assert both["count"] == 4
    vitals = api_a.get(url, {"category": "vital-signs"}).json()["results"]
    assert [o["code"] for o in vitals] == ["8480-6"]
    last_60 = ldl[1]["effective_at"][:10]
    recent = api_a.get(url, {"code": "18262-6", "date_from": last_60}).json()["results"]
    assert [o["value_quantity"] for o in recent] == [200.0, 180.0]
    old = api_a.get(url, {"code": "18262-6", "date_to": ldl[2]["effective_at"][:10]}).json()["results"]
    assert [o["value_quantity"] for o in old] == [150.0]


@pytest.mark.parametrize("params,field", [({"date_from": "yesterday"}, "date_from"),
                                          ({"date_from": "2024-02-01", "date_to": "2024-01-01"}, "date_to")])
def test_a_bad_filter_is_a_400_naming_it(api_a, record_a, params, field):
    response = api_a.get(_url(record_a.patient, "observations"), params)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid" and field in error["details"]


def test_lists_are_paginated(api_a, record_a):
    body = api_a.get(_url(record_a.patient, "observations"), {"limit": 2}).json()
    assert body["count"] == 4 and len(body["results"]) == 2 and "offset=2" in body["next"]


def test_medications_allergies_and_notes(api_a, record_a):
    meds = api_a.get(_url(record_a.patient, "medications")).json()["results"]
    assert [m["display"] for m in meds] == ["Hydrochlorothiazide 25 MG"]
    assert api_a.get(_url(record_a.patient, "medications"), {"status": "stopped"}).json()["count"] == 0
    allergies = api_a.get(_url(record_a.patient, "allergies")).json()["results"]
    assert [a["code"] for a in allergies] == ["91936005"]
    notes = api_a.get(_url(record_a.patient, "notes")).json()["results"]
    assert notes[0]["id"] == str(record_a.note.external_id) and "text" not in notes[0]
    assert notes[0]["characters"] == len(record_a.note.text)
    note = api_a.get(_url(record_a.patient, f"notes/{record_a.note.external_id}")).json()
    assert note["text"] == record_a.note.text


def test_a_note_of_another_patient_is_not_found_through_this_one(api_a, record_a, record_b, site_b, clinician_a):
    response = api_a.get(_url(record_a.patient, f"notes/{record_b.note.external_id}"))
    assert response.status_code == 404
    assert api_a.get(_url(record_a.patient, f"notes/{uuid.uuid4()}")).status_code == 404


def test_the_notes_address_still_adds_a_note(api_a, record_a):
    response = api_a.post(_url(record_a.patient, "notes"), {"text": "Plan: recheck LDL.", "title": "Follow-up"},
                          format="json")
    assert response.status_code == 201, response.content
    assert api_a.get(_url(record_a.patient, "notes")).json()["count"] == 2


def test_each_read_is_audited_once(api_a, record_a, clinician_a):
    before = AuditEvent.objects.count()
    for what in RECORD_LISTS:
        assert api_a.get(_url(record_a.patient, what)).status_code == 200
    events = AuditEvent.objects.order_by("pk")[before:]
    assert [e.target for e in events] == [f"api:{w}" for w in RECORD_LISTS]
    assert {e.user_id for e in events} == {clinician_a.pk}


# token, savepoint, patient, COUNT, page, audit INSERT, release; the two short lists (latest per
# calculator, a patient's active recommendations) are read whole, so no COUNT.
QUERIES = {"conditions": 7, "observations": 7, "medications": 7, "allergies": 7, "notes": 7, "risk": 6,
           "recommendations": 6}


@pytest.mark.parametrize("what", RECORD_LISTS)
def test_record_lists_take_a_fixed_number_of_queries(api_a, record_a, django_assert_num_queries, what):
    url = _url(record_a.patient, what)
    with django_assert_num_queries(QUERIES[what]):
        assert api_a.get(url).status_code == 200
    _more_of_everything(record_a.patient)
    with django_assert_num_queries(QUERIES[what]):
        body = api_a.get(url).json()
    assert body["count"] >= (2 if what in ("risk", "recommendations") else 4)


def _more_of_everything(patient) -> None:
    from django.utils import timezone

    from decision.models import Recommendation, RuleVersion
    from patients.models import ClinicalNote
    from risk.models import RiskAssessment
    from tests.factories import AllergyFactory, ConditionFactory, MedicationRequestFactory

    for i in range(5):
        ObservationFactory(patient=patient)
        ConditionFactory(patient=patient)
        MedicationRequestFactory(patient=patient)
        AllergyFactory(patient=patient)
        ClinicalNote.objects.create(patient=patient, fhir_id=f"more-{i}", source_type="typed", text="x" * i)
    RiskAssessment.objects.create(patient=patient, calculator="chads2_vasc", calculator_version="1",
                                  status="missing-inputs", inputs_hash="b" * 64, as_of=timezone.now())
    version = RuleVersion.objects.get(status="active")
    from decision.services import rule_create, rule_version_activate

    other = rule_version_activate(rule_create(slug="ldl-any", title="LDL any", severity="info",
                                              conditions=version.conditions, summary_template="LDL {ldl}",
                                              citation_source="test"))
    from decision.services import patients_evaluate

    patients_evaluate([patient.pk])
    assert Recommendation.objects.filter(patient=patient, rule=other.rule).exists()


def test_a_user_of_two_sites_sees_both(record_a, record_b, site_a, site_b):
    both = token_client(clinician_of(site_a, site_b, username="clin-ab"))
    assert both.get("/api/patients/").json()["count"] == 2
    assert both.get(_url(record_b.patient, "observations")).status_code == 200
