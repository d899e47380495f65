"""The live job panel of the patient page: the HTMX fragment and a clinician's "Run"."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from django.contrib.staticfiles import finders
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from cdss.models import AuditEvent, Job
from cdss.selectors import job_kind_list_per_patient, job_list_for_patient
from cdss.views_jobs import PANEL_JOBS, error_first_line
from patients import models as m
from tests.factories import PatientFactory
from tests.jobsapp.models import ProbeResult

S = Job.Status

# Session read, user read, the patient (access-checked), the jobs, and the session save with
# the savepoints around it. Whatever the number of jobs.
PANEL_QUERIES = 7
POLLING = 'hx-trigger="every 2s"'




def panel_url(patient: m.Patient) -> str:
    return reverse("patient-jobs", args=[patient.external_id])


def make_job(patient: m.Patient | None, *, status: str = S.SUCCEEDED, kind: str = "test.slow", **fields) -> Job:
    return Job.objects.create(
        kind=kind,
        queue="risk",
        patient=patient,
        status=status,
        available_at=timezone.now(),
        idempotency_key=f"test-{uuid.uuid4()}",
        **fields,
    )


def panel_root(content: str) -> str:
    """The fragment's root tag, where the polling attributes live."""
    match = re.match(r"\s*(<div id=\"job-panel\"[^>]*>)", content)
    assert match, content[:300]
    return match.group(1)


# --- The fragment -----------------------------------------------------------------------------


def test_the_panel_lists_the_patients_jobs_with_status_and_progress(
    client_a: Client, patient_a: m.Patient, site_a: m.Site
) -> None:
    make_job(patient_a, status=S.RUNNING, progress=40, progress_message="step 2 of 4", attempts=1, max_attempts=3)
    make_job(patient_a, status=S.SUCCEEDED, kind="test.probe", progress=100, attempts=2, max_attempts=3)
    make_job(PatientFactory.create(site=site_a), kind="test.fail", status=S.DEAD)  # another patient's job

    response = client_a.get(panel_url(patient_a))
    assert response.status_code == 200
    content = response.content.decode()
    assert "test.slow" in content and "test.probe" in content
    assert "test.fail" not in content
    assert 'class="badge job-status job-status-running"' in content
    assert 'class="badge job-status job-status-succeeded"' in content
    assert '<progress value="40" max="100"' in content
    assert '<progress value="100" max="100"' in content
    assert "step 2 of 4" in content
    assert "1/3" in content and "2/3" in content
    assert response["Cache-Control"].startswith("max-age=0")


def test_the_panel_shows_no_patient_data(client_a: Client, patient_a: m.Patient) -> None:
    make_job(patient_a, status=S.SUCCEEDED)
    content = client_a.get(panel_url(patient_a)).content.decode()
    for value in (patient_a.mrn, patient_a.family_name, patient_a.given_names, patient_a.fhir_id):
        assert value not in content
    assert str(patient_a.external_id) not in content  # no polling: not even the page's own address


def test_a_dead_job_shows_only_the_first_line_of_its_error(client_a: Client, patient_a: m.Patient) -> None:
    make_job(
        patient_a,
        status=S.DEAD,
        kind="test.fail",
        attempts=3,
        max_attempts=3,
        error="RuntimeError: the test job failed on purpose\n  at kinds.py:40 in fail",
    )
    content = client_a.get(panel_url(patient_a)).content.decode()
    assert "failed: RuntimeError: the test job failed on purpose" in content
    assert "kinds.py" not in content
    assert "job-status-dead" in content


def test_a_job_that_failed_and_will_retry_shows_no_error_text(client_a: Client, patient_a: m.Patient) -> None:
    make_job(patient_a, status=S.FAILED, error="ValueError: first attempt\n  at x.py:1 in f")
    content = client_a.get(panel_url(patient_a)).content.decode()
    assert "Failed (will retry)" in content
    assert "ValueError" not in content


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("RuntimeError: boom\n  at kinds.py:40 in fail", "RuntimeError: boom"),
        ("\n\n  lease expired after attempt 3 (worker lost)\n", "lease expired after attempt 3 (worker lost)"),
        ("", ""),
        ("x" * 500, "x" * 199 + "…"),
    ],
)
def test_error_first_line(text: str, expected: str) -> None:
    assert error_first_line(text) == expected


@pytest.mark.parametrize(
    ("statuses", "polls"),
    [
        ([S.RUNNING, S.SUCCEEDED], True),
        ([S.QUEUED], True),
        ([S.FAILED, S.DEAD], True),  # a failed job runs again after its back-off
        ([S.SUCCEEDED, S.DEAD, S.CANCELLED], False),
        ([], False),
    ],
)
def test_the_panel_polls_only_while_a_job_is_active(
    client_a: Client, patient_a: m.Patient, statuses: list[str], polls: bool
) -> None:
    for status in statuses:
        make_job(patient_a, status=status)
    root = panel_root(client_a.get(panel_url(patient_a)).content.decode())
    if polls:
        assert POLLING in root
        assert f'hx-get="{panel_url(patient_a)}"' in root
        assert 'hx-swap="outerHTML"' in root
    else:
        assert "hx-trigger" not in root and "hx-get" not in root


def test_polling_stops_once_the_running_job_finishes(client_a: Client, patient_a: m.Patient) -> None:
    job = make_job(patient_a, status=S.RUNNING, progress=75)
    assert POLLING in panel_root(client_a.get(panel_url(patient_a)).content.decode())
    Job.objects.filter(pk=job.pk).update(status=S.SUCCEEDED, progress=100, finished_at=timezone.now())
    assert "hx-trigger" not in panel_root(client_a.get(panel_url(patient_a)).content.decode())


def test_the_panel_shows_the_most_recent_jobs_first(client_a: Client, patient_a: m.Patient) -> None:
    for n in range(PANEL_JOBS + 2):
        make_job(patient_a, status=S.RUNNING, progress_message=f"message-{n:02d}")
    content = client_a.get(panel_url(patient_a)).content.decode()
    shown = re.findall(r"message-(\d\d)", content)
    assert shown == [f"{n:02d}" for n in range(PANEL_JOBS + 1, 1, -1)]


def test_job_list_for_patient_is_one_query(patient_a: m.Patient, django_assert_num_queries) -> None:
    for _ in range(3):
        make_job(patient_a)
    with django_assert_num_queries(1):
        jobs = job_list_for_patient(patient=patient_a, limit=2)
        assert [job.is_finished for job in jobs] == [True, True]
        assert [job.progress_message for job in jobs] == ["", ""]


@pytest.mark.parametrize("jobs", [1, 8])
def test_the_panel_query_count_is_fixed(
    client_a: Client, patient_a: m.Patient, jobs: int, django_assert_num_queries
) -> None:
    for n in range(jobs):
        make_job(
            patient_a,
            status=S.DEAD if n % 2 else S.RUNNING,
            error="RuntimeError: x\n  at y",
            started_at=timezone.now(),
            finished_at=timezone.now(),
        )
    with django_assert_num_queries(PANEL_QUERIES):
        response = client_a.get(panel_url(patient_a))
    assert response.status_code == 200
    assert response.content.decode().count('<tr class="job"') == jobs


def test_viewing_the_panel_writes_no_audit_row(client_a: Client, patient_a: m.Patient) -> None:
    # Polled every few seconds; the patient page that loads it is audited (tests/patients).
    client_a.get(panel_url(patient_a))
    assert not AuditEvent.objects.exists()


# --- Access -----------------------------------------------------------------------------------


def test_another_sites_patient_is_a_404_for_the_panel(client_a: Client, patient_b: m.Patient) -> None:
    make_job(patient_b, status=S.RUNNING)
    response = client_a.get(panel_url(patient_b))
    assert response.status_code == 404
    assert "test.slow" not in response.content.decode()


def test_another_sites_patient_is_a_404_for_a_request(eager, client_a: Client, patient_b: m.Patient) -> None:
    response = client_a.post(
        reverse("patient-jobs-enqueue", args=[patient_b.external_id]), {"kind": "test.patient_probe"}
    )
    assert response.status_code == 404
    assert not Job.objects.exists()
    assert not AuditEvent.objects.exists()


def test_an_unknown_patient_is_a_404(client_a: Client, db: None) -> None:
    assert client_a.get(f"/patients/{uuid.uuid4()}/jobs/").status_code == 404


@pytest.mark.parametrize("method", ["get", "post"])
def test_anonymous_users_are_sent_to_login(client: Client, patient_a: m.Patient, method: str) -> None:
    response = getattr(client, method)(panel_url(patient_a), {"kind": "test.patient_probe"} if method == "post" else {})
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")
    assert not Job.objects.exists()


def test_an_anonymous_htmx_request_gets_a_401(client: Client, patient_a: m.Patient) -> None:
    # htmx would swap a login page into the panel; the middleware answers 401 instead.
    assert client.get(panel_url(patient_a), headers={"HX-Request": "true"}).status_code == 401


def test_other_methods_are_refused(client_a: Client, patient_a: m.Patient) -> None:
    assert client_a.put(panel_url(patient_a)).status_code == 405
    assert client_a.delete(panel_url(patient_a)).status_code == 405


# --- Asking for an analysis -------------------------------------------------------------------


def test_both_names_are_the_same_address(patient_a: m.Patient) -> None:
    assert reverse("patient-jobs-enqueue", args=[patient_a.external_id]) == panel_url(patient_a)


def test_only_per_patient_kinds_can_be_asked_for() -> None:
    names = [kind.name for kind in job_kind_list_per_patient()]
    assert "test.patient_probe" in names
    assert "test.probe" not in names and "test.slow" not in names


def test_a_clinician_asks_for_an_analysis_which_runs_and_succeeds(
    eager, client_a: Client, clinician_a, patient_a: m.Patient, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = client_a.post(
            reverse("patient-jobs-enqueue", args=[patient_a.external_id]), {"kind": "test.patient_probe"}
        )
        assert response.status_code == 200
        content = response.content.decode()
        # The panel as it stands at commit: the new job waits, so the panel polls.
        assert "test.patient_probe" in content and "job-status-queued" in content
        assert POLLING in panel_root(content)
    assert len(callbacks) == 1

    job = Job.objects.get()
    assert job.kind == "test.patient_probe" and job.patient == patient_a and job.created_by == clinician_a
    assert job.status == S.SUCCEEDED and job.progress == 100 and job.attempts == 1
    assert set(job.params) == set()  # the request time is an input (hashed), not a parameter
    assert ProbeResult.objects.filter(key=f"patient-{patient_a.pk}-{job.pk}").exists()

    event = AuditEvent.objects.get()
    assert (event.user, event.patient, event.action, event.target) == (
        clinician_a,
        patient_a,
        "create",
        "job:test.patient_probe",
    )
    assert event.ip_address == "127.0.0.1"

    content = client_a.get(panel_url(patient_a)).content.decode()
    assert "job-status-succeeded" in content
    assert "hx-trigger" not in panel_root(content)


def test_asking_twice_makes_two_jobs(
    eager, client_a: Client, patient_a: m.Patient, django_capture_on_commit_callbacks
) -> None:
    url = reverse("patient-jobs-enqueue", args=[patient_a.external_id])
    for _ in range(2):
        with django_capture_on_commit_callbacks(execute=True):
            assert client_a.post(url, {"kind": "test.patient_probe"}).status_code == 200
    assert Job.objects.filter(status=S.SUCCEEDED).count() == 2
    assert AuditEvent.objects.count() == 2


@pytest.mark.parametrize("kind", ["test.probe", "no.such.kind", ""])
def test_a_kind_that_is_not_per_patient_is_refused(eager, client_a: Client, patient_a: m.Patient, kind: str) -> None:
    response = client_a.post(reverse("patient-jobs-enqueue", args=[patient_a.external_id]), {"kind": kind})
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    assert "cannot be requested for one patient" in text and "test.patient_probe" in text
    assert not Job.objects.exists()
    assert not AuditEvent.objects.exists()


def test_a_request_without_the_csrf_token_is_refused(eager, clinician_a, patient_a: m.Patient) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(clinician_a)
    page = client.get(reverse("patient-detail", args=[patient_a.external_id])).content.decode()
    url = reverse("patient-jobs-enqueue", args=[patient_a.external_id])
    assert client.post(url, {"kind": "test.patient_probe"}).status_code == 403
    # What htmx sends: the token the page puts in <body hx-headers>.
    match = re.search(r"<body hx-headers='\{\"X-CSRFToken\": \"([^\"]+)\"\}'>", page)
    assert match
    assert client.post(url, {"kind": "test.patient_probe"}, headers={"X-CSRFToken": match.group(1)}).status_code == 200
    assert Job.objects.count() == 1


# --- The patient page -------------------------------------------------------------------------


def test_the_patient_page_loads_the_panel_and_offers_the_per_patient_kinds(
    client_a: Client, patient_a: m.Patient
) -> None:
    content = client_a.get(reverse("patient-detail", args=[patient_a.external_id])).content.decode()
    assert 'id="analyses"' in content
    assert f'hx-get="{panel_url(patient_a)}" hx-trigger="load"' in content
    assert f'hx-post="{panel_url(patient_a)}" hx-target="#job-panel"' in content
    assert '<option value="test.patient_probe">' in content
    assert 'value="test.probe"' not in content
    assert "vendor/htmx/htmx.min.js" in content


def test_the_patient_page_hides_the_form_when_no_kind_runs_per_patient(
    client_a: Client, patient_a: m.Patient, monkeypatch
) -> None:
    monkeypatch.setattr("patients.views.job_kind_list_per_patient", list)
    content = client_a.get(reverse("patient-detail", args=[patient_a.external_id])).content.decode()
    assert 'id="job-panel"' in content
    assert "hx-post" not in content and 'name="kind"' not in content


@pytest.mark.parametrize("asset", ["vendor/htmx/htmx.min.js", "vendor/htmx/LICENSE"])
def test_htmx_is_served_locally(asset: str) -> None:
    path = finders.find(asset)
    assert isinstance(path, str)
    text = Path(path).read_text(encoding="utf-8")
    assert "2.0.4" in text
