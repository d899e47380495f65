"""Every admin page of a patient's rows audits who opened it (``cdss.adminkit``), in every app."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.db.models import ForeignKey, Model
from django.urls import reverse
from django.utils import timezone

from cdss.adminkit import PatientAuditMixin
from cdss.models import AuditEvent, Job
from patients.models import BreakGlassAccess, Patient

# Rows about a patient whose admin pages are not audited, and why: the audit log itself (reading it
# is the review), and the break-glass grants (read for that review; each grant is audited when made).
NOT_AUDITED = {AuditEvent, BreakGlassAccess}


def _patient_fk(model: type[Model]) -> ForeignKey | None:
    for field in model._meta.fields:
        if isinstance(field, ForeignKey) and field.related_model is Patient:
            return field
    return None


def _patient_rows() -> set[type[Model]]:
    """Registered models with a foreign key to the patient, or a required one to a row with a
    required one (a finding's feedback, a recommendation's actions)."""
    direct = {model for model in admin.site._registry if _patient_fk(model) is not None}
    owned = {model for model in direct if not _patient_fk(model).null}  # type: ignore[union-attr]
    hop = {model for model in admin.site._registry
           if any(isinstance(f, ForeignKey) and not f.null and f.related_model in owned for f in model._meta.fields)}
    return (direct | hop) - {Patient}


def test_every_admin_of_a_patients_rows_audits_with_a_path_that_reaches_the_patient() -> None:
    rows = _patient_rows() - NOT_AUDITED
    assert len(rows) >= 20  # the record's facts, imaging, notes, risk, recommendations, cards, jobs
    for model in sorted(rows, key=lambda m: m._meta.label):
        model_admin = admin.site._registry[model]
        assert isinstance(model_admin, PatientAuditMixin), model._meta.label
        target: type[Model] = model
        for name in model_admin.patient_path.split("."):
            target = target._meta.get_field(name).related_model  # type: ignore[assignment]
        assert target is Patient, (model._meta.label, model_admin.patient_path)


@pytest.mark.django_db
def test_a_job_page_is_audited_only_when_the_job_is_a_patients(admin_client, admin_user, patient_a) -> None:
    def job(key: str, patient: Patient | None) -> Job:
        return Job.objects.create(kind="demo-kind", queue="default", patient=patient, idempotency_key=key,
                                  available_at=timezone.now(), status=Job.Status.SUCCEEDED)

    population, own = job("demo-kind:all", None), job("demo-kind:a", patient_a)
    for obj in (population, own):
        assert admin_client.get(reverse("admin:cdss_job_change", args=[obj.pk])).status_code == 200
    [event] = AuditEvent.objects.filter(user=admin_user, action="view")
    assert (event.target, event.patient) == ("admin:job", patient_a)


@pytest.mark.django_db
def test_every_list_of_every_app_loads_searched_and_the_searches_of_patients_rows_are_audited(
    admin_client, admin_user
) -> None:
    audited = set()
    for model, model_admin in admin.site._registry.items():
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        response = admin_client.get(url, {"q": "MRN-0042"} if model_admin.search_fields else {})
        assert response.status_code == 200, model._meta.label
        if isinstance(model_admin, PatientAuditMixin) and model_admin.search_fields:
            audited.add(f"admin:{model._meta.model_name}-list")
    searches = AuditEvent.objects.filter(user=admin_user, action="search")
    assert set(searches.values_list("target", flat=True)) == audited and len(audited) >= 15
    assert set(searches.values_list("detail", flat=True)) == {"MRN-0042"}
