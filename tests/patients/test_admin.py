"""The Django admin for the record and the audit log."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.auth.models import Permission, User
from django.contrib.messages import get_messages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db.models import Model
from django.urls import reverse
from django.utils import timezone

from cdss.models import AuditEvent, Job, ModelVersion
from patients import models as m
from tests.factories import (
    AllergyFactory,
    ConditionFactory,
    EncounterFactory,
    MedicationRequestFactory,
    ObservationFactory,
)

ADMIN_APPS = ("patients", "cdss")
PATIENT_ID = "5b0c7f0e-2a41-4c55-9d1e-6f7a8b9c0d01"


def _admin_models() -> list[type[Model]]:
    return [model for app in ADMIN_APPS for model in apps.get_app_config(app).get_models()]


def _url(model: type[Model], view: str, *args: Any) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


@pytest.fixture
def record(patient_a: m.Patient) -> dict[type[Model], Any]:
    """One row of every model of the two apps, all about patient_a (family name Alpha)."""
    encounter = EncounterFactory(patient=patient_a)
    observation = ObservationFactory(patient=patient_a, encounter=encounter)
    org = m.Organization.objects.create(fhir_id="org-1", name="Alpha Clinic")
    practitioner = m.Practitioner.objects.create(fhir_id="pr-1", name="Dr. Alpha Jones", npi="9999000001")
    user = User.objects.create_user("member")
    return {
        m.Site: patient_a.site,
        m.SiteMembership: m.SiteMembership.objects.create(user=user, site=patient_a.site),
        m.BreakGlassAccess: m.BreakGlassAccess.objects.create(user=user, patient=patient_a, reason="Alpha transfer",
                                                              expires_at=timezone.now()),
        m.Organization: org,
        m.Practitioner: practitioner,
        m.Patient: patient_a,
        m.Encounter: encounter,
        m.Observation: observation,
        m.Condition: ConditionFactory(patient=patient_a),
        m.MedicationRequest: MedicationRequestFactory(patient=patient_a),
        m.AllergyIntolerance: AllergyFactory(patient=patient_a),
        m.Procedure: m.Procedure.objects.create(patient=patient_a, fhir_id="proc-1", status="completed",
                                                code="29303009", display="Electrocardiographic procedure"),
        m.Immunization: m.Immunization.objects.create(patient=patient_a, fhir_id="imm-1", status="completed",
                                                      code="140", display="Influenza"),
        m.ClinicalNote: m.ClinicalNote.objects.create(patient=patient_a, fhir_id="note-1", status="current",
                                                      source_type="typed", text="Denies chest pain."),
        m.GenomicResult: m.GenomicResult.objects.create(patient=patient_a, fhir_id="pgx-1", status="final",
                                                        gene="CYP2C19", diplotype="*2/*2",
                                                        phenotype="Poor metabolizer"),
        AuditEvent: AuditEvent.objects.create(patient=patient_a, action="view", target="patient-page"),
        Job: Job.objects.create(kind="demo-kind", queue="default", patient=patient_a, idempotency_key="demo-kind:1",
                                available_at=timezone.now(), status=Job.Status.DEAD, attempts=3,
                                error="Traceback ...\nValueError: Alpha went wrong"),
        ModelVersion: ModelVersion.objects.create(name="heart_disease", version="2026.11.25-1", kind="risk",
                                                  architecture="logistic", dataset="-", split="-",
                                                  file_path="heart_disease/x.pt", file_sha256="0" * 64,
                                                  trained_at=timezone.now()),
    }


def test_every_model_of_the_record_and_the_platform_is_in_the_admin() -> None:
    missing = [model.__name__ for model in _admin_models() if not admin.site.is_registered(model)]
    assert missing == []


@pytest.mark.django_db
def test_every_changelist_and_change_page_loads_with_a_search(admin_client, record) -> None:
    for model in _admin_models():
        response = admin_client.get(_url(model, "changelist"), {"q": "Alpha"})
        assert response.status_code == 200, model.__name__
        response = admin_client.get(_url(model, "change", record[model].pk))
        assert response.status_code == 200, model.__name__


@pytest.mark.django_db
def test_every_list_filter_applies(admin_client, record) -> None:
    for model in _admin_models():
        model_admin = admin.site._registry[model]
        changelist = admin_client.get(_url(model, "changelist")).context["cl"]
        for spec in changelist.filter_specs:
            for choice in list(spec.choices(changelist))[1:3]:  # the first is "All"
                response = admin_client.get(_url(model, "changelist") + choice["query_string"])
                assert response.status_code == 200, (model.__name__, model_admin, choice["query_string"])


@pytest.mark.django_db
def test_clinical_facts_cannot_be_added_changed_or_deleted(admin_client, record) -> None:
    models: list[type[Model]] = [*m.CLINICAL_MODELS, m.Patient]
    for model in models:
        obj = record[model]
        changelist = admin_client.get(_url(model, "changelist"))
        assert "delete_selected" not in changelist.content.decode(), model.__name__
        assert admin_client.get(_url(model, "delete", obj.pk)).status_code == 403, model.__name__
        assert admin_client.get(_url(model, "add")).status_code == 403, model.__name__
        change = admin_client.get(_url(model, "change", obj.pk))
        assert 'name="_save"' not in change.content.decode(), model.__name__
        assert admin_client.post(_url(model, "change", obj.pk), {}).status_code == 403, model.__name__


@pytest.mark.django_db
def test_the_audit_log_is_read_only(admin_client, record) -> None:
    event = record[AuditEvent]
    assert admin_client.get(_url(AuditEvent, "add")).status_code == 403
    assert admin_client.get(_url(AuditEvent, "delete", event.pk)).status_code == 403
    assert admin_client.post(_url(AuditEvent, "change", event.pk), {"target": "x"}).status_code == 403
    event.refresh_from_db()
    assert event.target == "patient-page"


@pytest.mark.django_db
def test_opening_a_record_in_the_admin_is_audited(admin_client, admin_user, record) -> None:
    admin_client.get(_url(m.Condition, "change", record[m.Condition].pk))
    event = AuditEvent.objects.filter(user=admin_user, action="view").get()
    assert (event.target, event.patient) == ("admin:condition", record[m.Patient])


@pytest.mark.django_db
def test_mark_as_entered_in_error_asks_for_a_reason_then_marks_and_audits(admin_client, admin_user, record) -> None:
    observation = record[m.Observation]
    url = _url(m.Observation, "changelist")
    selection = {"action": "mark_entered_in_error", "_selected_action": [observation.pk]}

    confirm = admin_client.post(url, selection)
    assert confirm.status_code == 200
    assert b'name="reason"' in confirm.content
    observation.refresh_from_db()
    assert observation.status == "final"

    done = admin_client.post(url, {**selection, "apply": "yes", "reason": "wrong patient"})
    assert done.status_code == 302
    observation.refresh_from_db()
    assert observation.status == m.ENTERED_IN_ERROR
    event = AuditEvent.objects.get(target="Observation:entered-in-error")
    assert (event.user, event.patient, event.action, event.detail) == (admin_user, record[m.Patient], "update",
                                                                       "wrong patient")


@pytest.mark.django_db
def test_mark_as_entered_in_error_needs_a_reason(admin_client, record) -> None:
    condition = record[m.Condition]
    response = admin_client.post(_url(m.Condition, "changelist"), {
        "action": "mark_entered_in_error", "_selected_action": [condition.pk], "apply": "yes", "reason": ""})
    assert response.status_code == 200
    condition.refresh_from_db()
    assert condition.status == "confirmed"
    assert not AuditEvent.objects.filter(target__endswith="entered-in-error").exists()


@pytest.mark.django_db
def test_a_dead_job_can_be_retried_from_the_admin(admin_client, record) -> None:
    job = record[Job]
    response = admin_client.post(_url(Job, "changelist"), {"action": "retry", "_selected_action": [job.pk]})
    assert response.status_code == 302
    job.refresh_from_db()
    assert (job.status, job.attempts) == (Job.Status.QUEUED, 0)
    assert admin_client.get(_url(Job, "delete", job.pk)).status_code == 403


# -- FHIR upload ----------------------------------------------------------------------------------


def _bundle(*, broken: bool = False) -> bytes:
    subject = {"reference": "urn:uuid:does-not-exist" if broken else f"urn:uuid:{PATIENT_ID}"}
    quantity: dict[str, Any] = {"value": 7.9, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"}
    if broken:
        del quantity["unit"], quantity["code"]
    return json.dumps({
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": f"urn:uuid:{PATIENT_ID}", "resource": {
                "resourceType": "Patient", "id": PATIENT_ID, "gender": "male", "birthDate": "1958-02-03",
                "name": [{"family": "Uploaded", "given": ["Ulf"]}],
                "identifier": [{"type": {"coding": [{"code": "MR"}]}, "value": "UP-1"}]}},
            {"fullUrl": "urn:uuid:7c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e04", "resource": {
                "resourceType": "Observation", "id": "7c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e04", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4", "display": "HbA1c"}]},
                "subject": subject, "effectiveDateTime": "2024-05-06T09:00:00+00:00", "valueQuantity": quantity}},
            {"fullUrl": "urn:uuid:8d2e3f4a-5b6c-4d7e-9f8a-0b1c2d3e4f05", "resource": {
                "resourceType": "Claim", "id": "8d2e3f4a-5b6c-4d7e-9f8a-0b1c2d3e4f05", "status": "active"}},
        ],
    }).encode()


def _upload(client: Any, site: m.Site, data: bytes, name: str = "bundle.json") -> Any:
    return client.post(reverse("admin:patients_patient_import_fhir"),
                       {"site": site.pk, "file": SimpleUploadedFile(name, data, content_type="application/json")})


def _messages(response: Any) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


@pytest.mark.django_db
def test_the_patient_list_links_to_the_upload_page(admin_client) -> None:
    response = admin_client.get(_url(m.Patient, "changelist"))
    assert reverse("admin:patients_patient_import_fhir").encode() in response.content
    assert admin_client.get(reverse("admin:patients_patient_import_fhir")).status_code == 200


@pytest.mark.django_db
def test_uploading_a_bundle_imports_it_and_reports_the_counts(admin_client, admin_user, site_a) -> None:
    response = _upload(admin_client, site_a, _bundle())
    assert response.status_code == 302
    patient = m.Patient.objects.get(site=site_a, mrn="UP-1")
    assert m.Observation.objects.get(patient=patient).value_quantity == 7.9
    text = " ".join(_messages(response))
    assert "Patient: 1 created" in text and "Observation: 1 created" in text
    assert "Claim (billing): 1" in text
    assert AuditEvent.objects.filter(user=admin_user, patient=patient, action="import").exists()

    again = _upload(admin_client, site_a, _bundle())
    assert "Patient: 0 created, 0 updated, 1 unchanged" in " ".join(_messages(again))
    assert m.Patient.objects.count() == 1


@pytest.mark.django_db
def test_uploading_a_broken_bundle_writes_nothing_and_lists_every_error(admin_client, site_a) -> None:
    response = _upload(admin_client, site_a, _bundle(broken=True))
    assert response.status_code == 200
    errors = _messages(response)
    assert errors[0].startswith("Nothing was imported from bundle.json")
    assert any(e.startswith("entry[1]:") and "does-not-exist" in e for e in errors), errors
    assert m.Patient.objects.count() == 0 and m.Observation.objects.count() == 0


@pytest.mark.django_db
def test_uploading_ndjson_imports_each_line(admin_client, site_a) -> None:
    patient = json.loads(_bundle())["entry"][0]["resource"]
    response = _upload(admin_client, site_a, json.dumps(patient).encode() + b"\n", name="Patient.ndjson")
    assert response.status_code == 302
    assert m.Patient.objects.filter(site=site_a, mrn="UP-1").exists()


@pytest.mark.django_db
def test_uploading_refuses_other_file_types(admin_client, site_a) -> None:
    response = _upload(admin_client, site_a, b"<xml/>", name="bundle.xml")
    assert response.status_code == 200
    assert b"Upload a .json Bundle or an .ndjson file." in response.content


@pytest.mark.django_db
def test_uploading_needs_the_add_patient_permission(client, site_a) -> None:
    staff = User.objects.create_user("staff", password="pw", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_patient"))
    client.force_login(staff)
    assert client.get(reverse("admin:patients_patient_import_fhir")).status_code == 403
    assert _upload(client, site_a, _bundle()).status_code == 403
    assert reverse("admin:patients_patient_import_fhir").encode() not in client.get(
        _url(m.Patient, "changelist")).content

    staff.user_permissions.add(Permission.objects.get(codename="add_patient"))
    m.SiteMembership.objects.create(user=staff, site=site_a)
    assert _upload(client, site_a, _bundle()).status_code == 302


@pytest.mark.django_db
def test_an_importer_may_only_choose_the_sites_they_belong_to(client, site_a, site_b) -> None:
    staff = User.objects.create_user("staff", password="pw", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="add_patient"))
    m.SiteMembership.objects.create(user=staff, site=site_a)
    client.force_login(staff)
    response = _upload(client, site_b, _bundle())
    assert response.status_code == 200
    assert m.Patient.objects.count() == 0
