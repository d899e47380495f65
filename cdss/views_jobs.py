"""The live job panel of the patient page (an HTMX fragment) and a clinician's request for a fresh
analysis. Access goes through ``patient_get_for_user``: another site's patient is a 404."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from patients.models import Patient
from patients.selectors import patient_get_for_user

from .audit import audit_record
from .jobs import runner
from .models import Job
from .selectors import job_kind_list_per_patient, job_list_for_patient

PANEL_JOBS = 10
POLL_SECONDS = 2
ERROR_LINE_CHARS = 200
# Panels elsewhere on the patient page that show a kind's results reload on these events. The job
# panel sends one (HX-Trigger) with the render that first sees a job of that kind succeed.
RESULT_EVENTS = {"risk": "risk-updated", "decision": "recommendations-updated"}


@dataclass(frozen=True)
class JobRow:
    job: Job
    # Only the first line of a dead job's error: the exception and its message. The full text
    # (with where it was raised) is for operators, in the admin.
    error_line: str


def error_first_line(text: str) -> str:
    """The first non-empty line of an error text, cut to ERROR_LINE_CHARS."""
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line if len(line) <= ERROR_LINE_CHARS else line[: ERROR_LINE_CHARS - 1] + "…"
    return ""


def _panel(request: HttpRequest, patient: Patient, *, waiting: set[str]) -> HttpResponse:
    """``waiting``: external ids of the jobs the caller saw unfinished (the previous render's, or the
    one just enqueued); those that have succeeded since send their kind's result event."""
    jobs = job_list_for_patient(patient=patient, limit=PANEL_JOBS)
    rows = [
        JobRow(job=job, error_line=error_first_line(job.error) if job.status == Job.Status.DEAD else "") for job in jobs
    ]
    # A failed job waits out its back-off and runs again, so it keeps the panel polling too.
    unfinished = [str(job.external_id) for job in jobs if not job.is_finished]
    context = {
        "patient": patient,
        "rows": rows,
        "polling": bool(unfinished),
        "poll_seconds": POLL_SECONDS,
        "waiting": ",".join(unfinished),
    }
    response = render(request, "cdss/_job_panel.html", context)
    events = sorted(
        {
            RESULT_EVENTS[job.kind]
            for job in jobs
            if job.kind in RESULT_EVENTS and job.status == Job.Status.SUCCEEDED and str(job.external_id) in waiting
        }
    )
    if events:
        response["HX-Trigger"] = ", ".join(events)
    return response


# The fragment writes no audit row: it shows the state of jobs, no clinical data, and it is polled
# every few seconds; the patient page that loads it is audited, and so is every request for a job.
@never_cache
@require_http_methods(["GET", "POST"])
def patient_jobs(request: HttpRequest, external_id: uuid.UUID) -> HttpResponse:
    """GET: the panel. POST (``patient-jobs-enqueue``, the same address): a fresh analysis of kind
    ``kind``, then the panel."""
    patient = patient_get_for_user(request.user, external_id)
    if request.method == "POST":
        return _patient_job_enqueue(request, patient)
    return _panel(request, patient, waiting=set(request.GET.get("waiting", "").split(",")[:PANEL_JOBS]))


def _patient_job_enqueue(request: HttpRequest, patient: Patient) -> HttpResponse:
    allowed = {kind.name for kind in job_kind_list_per_patient()}
    kind = request.POST.get("kind", "")
    if kind not in allowed:
        # The submitted value is not echoed back; plain text, so nothing in it is ever markup.
        choices = ", ".join(sorted(allowed)) or "none"
        return HttpResponseBadRequest(
            f"This analysis cannot be requested for one patient. Kinds that can: {choices}.",
            content_type="text/plain; charset=utf-8",
        )
    with transaction.atomic():
        # The time makes each click a new job: the idempotency key hashes the inputs, and a
        # clinician who asks again wants a fresh run, not the old job back.
        job = runner.job_enqueue(
            kind=kind, patient=patient, user=request.user, inputs={"requested_at": timezone.now().isoformat()}
        )
        audit_record(user=request.user, action="create", target=f"job:{kind}", patient=patient, request=request)
    # With no broker the job has already run (at commit), so this render may be the one that sees it succeed.
    return _panel(request, patient, waiting={str(job.external_id)})
