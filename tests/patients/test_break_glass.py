"""Break-glass: a clinician's emergency access to a patient of another site, with a reason, for
a limited time, audited and kept for review."""

from __future__ import annotations

import datetime as dt

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from cdss.models import AuditEvent, Job
from patients.models import BreakGlassAccess
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

REASON = "Transferred to our emergency department unconscious; need allergies and medications."


def ask(client: Client, site_code: str, mrn: str, reason: str = REASON):
    return client.post(reverse("break-glass"), {"site": site_code, "mrn": mrn, "reason": reason})


def test_a_clinician_opens_another_sites_patient_with_a_reason_for_a_limited_time(
        client_a: Client, clinician_a, patient_b, settings) -> None:
    page = reverse("patient-detail", args=[patient_b.external_id])
    assert client_a.get(page).status_code == 404  # not of the clinician's sites
    settings.CDSS_BREAK_GLASS_HOURS = 4
    before = timezone.now()
    response = ask(client_a, patient_b.site.code, patient_b.mrn)
    assert response.status_code == 302 and response["Location"] == page
    grant = BreakGlassAccess.objects.get()
    assert (grant.user, grant.patient, grant.reason) == (clinician_a, patient_b, REASON)
    assert dt.timedelta(hours=4) <= grant.expires_at - before < dt.timedelta(hours=4, seconds=30)
    audit = AuditEvent.objects.get(action="break-glass", target="break-glass")
    assert (audit.user, audit.patient, audit.detail) == (clinician_a, patient_b, REASON)

    content = client_a.get(page).content.decode()
    assert 'class="break-glass-banner"' in content and "Emergency access (break-glass) until" in content
    assert AuditEvent.objects.filter(action="view", target="patient-page", patient=patient_b).count() == 1
    # the panels and the worklist follow the same access
    assert client_a.get(reverse("patient-imaging", args=[patient_b.external_id])).status_code == 200
    assert patient_b.mrn in client_a.get(reverse("worklist")).content.decode()
    job = Job.objects.create(kind="risk", queue="risk", patient=patient_b, idempotency_key="risk:b",
                             available_at=timezone.now())
    assert str(job.external_id) in client_a.get(reverse("api-job-list")).content.decode()  # the jobs API too

    BreakGlassAccess.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    assert client_a.get(page).status_code == 404  # expired: closed again
    assert patient_b.mrn not in client_a.get(reverse("worklist")).content.decode()
    assert str(job.external_id) not in client_a.get(reverse("api-job-list")).content.decode()


def test_no_access_without_a_reason_or_for_an_unknown_mrn(client_a: Client, patient_b, site_b) -> None:
    for reason in ("", "   ", "because"):
        response = ask(client_a, site_b.code, patient_b.mrn, reason)
        assert response.status_code == 400 and "Say why you need" in response.content.decode()
    response = ask(client_a, site_b.code, "NO-SUCH-MRN")
    assert response.status_code == 400 and "No patient with MRN NO-SUCH-MRN at" in response.content.decode()
    assert AuditEvent.objects.filter(action="break-glass", target="break-glass-refused", patient=None).count() == 1
    response = ask(client_a, "no-such-site", patient_b.mrn)
    assert response.status_code == 400 and "Choose the patient" in response.content.decode()
    assert not BreakGlassAccess.objects.exists()
    assert client_a.get(reverse("patient-detail", args=[patient_b.external_id])).status_code == 404


def test_a_patient_of_ones_own_sites_needs_no_grant(client_a: Client, patient_a, site_a) -> None:
    response = ask(client_a, site_a.code, patient_a.mrn)
    assert response.status_code == 302
    assert not BreakGlassAccess.objects.exists()
    assert "break-glass-banner" not in client_a.get(response["Location"]).content.decode()


def test_only_clinicians_may_break_glass(client, patient_b, site_b) -> None:
    client.force_login(UserFactory(username="clerk"))
    assert client.get(reverse("break-glass")).status_code == 403
    assert ask(client, site_b.code, patient_b.mrn).status_code == 403
    assert not BreakGlassAccess.objects.exists()


def test_the_grants_are_listed_read_only_in_the_admin(client_a: Client, patient_b, site_b, admin_client) -> None:
    ask(client_a, site_b.code, patient_b.mrn)
    content = admin_client.get(reverse("admin:patients_breakglassaccess_changelist")).content.decode()
    assert patient_b.mrn in content and "clin-a" in content and REASON[:40] in content
    assert admin_client.get(reverse("admin:patients_breakglassaccess_add")).status_code == 403


def test_guessing_mrns_is_stopped_after_a_few_refusals(client_a: Client, patient_b, site_b) -> None:
    from patients.services import BREAK_GLASS_MAX_REFUSALS_PER_HOUR

    for n in range(BREAK_GLASS_MAX_REFUSALS_PER_HOUR):
        assert "No patient with MRN" in ask(client_a, site_b.code, f"GUESS-{n}").content.decode()
    response = ask(client_a, site_b.code, patient_b.mrn)  # even the right one, now
    assert response.status_code == 400 and "emergency access is refused for now" in response.content.decode()
    assert not BreakGlassAccess.objects.exists()
    AuditEvent.objects.filter(target="break-glass-refused").update(at=timezone.now() - dt.timedelta(hours=2))
    assert ask(client_a, site_b.code, patient_b.mrn).status_code == 302  # an hour later
