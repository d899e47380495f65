"""Reads of the job platform's rows. Callers pass a patient they got from
``patients.selectors.patient_get_for_user``: the access check is theirs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .jobs.registry import JobKind, all_kinds
from .models import Job

if TYPE_CHECKING:
    from patients.models import Patient

# What the job panel shows, and nothing else: params, results and the worker stay unread.
JOB_PANEL_FIELDS = (
    "external_id",
    "kind",
    "status",
    "attempts",
    "max_attempts",
    "progress",
    "progress_message",
    "error",
    "created_at",
    "started_at",
    "finished_at",
)


def job_list_for_patient(*, patient: Patient, limit: int = 10) -> list[Job]:
    """The patient's most recent jobs, newest first, in one query."""
    return list(Job.objects.filter(patient=patient).only(*JOB_PANEL_FIELDS).order_by("-created_at", "-pk")[:limit])


def job_kind_list_per_patient() -> list[JobKind]:
    """The kinds a clinician may ask for on one patient's page (``per_patient=True``), by name."""
    return [kind for kind in all_kinds() if kind.per_patient]
