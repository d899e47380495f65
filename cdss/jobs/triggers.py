"""Work that follows a change of a patient's record, or a job's results.

Apps register the job kinds to run when a record changes (in their AppConfig.ready); the service
that changed the record calls ``record_changed`` inside its transaction, so the jobs exist if and
only if the change commits. Likewise an app registers what follows a job of some kind that
succeeded (``on_job_succeeded``); the runner calls it in the transaction that stores the job's
results. This keeps imports pointing down: the record does not know who analyses it, and a job
kind does not know who reads its results.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from django.db import transaction
from django.utils import timezone

log = logging.getLogger("cdss.jobs")

_KINDS: list[str] = []
# kinds to queue when what is read from a record changes without the record changing
_FACT_KINDS: list[str] = []
# kind -> callbacks(job, result) run after a job of that kind succeeded
_AFTER: dict[str, list[Callable[[Any, dict[str, Any]], None]]] = {}


def on_record_change(kind: str) -> None:
    if kind not in _KINDS:
        _KINDS.append(kind)


def record_changed(patient_ids: Iterable[int], *, user: Any = None, reason: str = "record-changed") -> int:
    """Queue one job per registered kind and patient; returns the number of jobs queued."""
    from patients.models import Patient

    from .runner import job_enqueue

    ids = sorted(set(patient_ids))
    if not ids or not _KINDS:
        return 0
    count = 0
    for patient in Patient.objects.filter(pk__in=ids).only("pk"):
        for kind in _KINDS:
            # The time of the change makes the request distinct from earlier ones.
            job_enqueue(kind=kind, patient=patient, user=user,
                        inputs={"reason": reason, "at": timezone.now().isoformat()})
            count += 1
    return count


def on_facts_change(kind: str) -> None:
    """Queue a job of ``kind`` when something its readers derive from a patient's record changes
    while the record does not (a clinician's verdict on an imaging finding, which rules read)."""
    if kind not in _FACT_KINDS:
        _FACT_KINDS.append(kind)


def facts_changed(patient_id: int, *, user: Any = None, reason: str, ref: str) -> int:
    """Queue one job per registered kind for the patient, inside the caller's transaction (so it
    exists if and only if the change commits); not when one of that kind is already queued for the
    patient and not started (it will read the change). ``ref`` names what changed (a row's id:
    never patient data), which makes the request distinct. Returns the number of jobs queued."""
    from cdss.models import Job
    from patients.models import Patient

    from .runner import job_enqueue

    count = 0
    for kind in _FACT_KINDS:
        if Job.objects.filter(kind=kind, patient_id=patient_id, status=Job.Status.QUEUED).exists():
            continue
        job_enqueue(kind=kind, patient=Patient.objects.only("pk").get(pk=patient_id), user=user,
                    inputs={"reason": reason, "ref": ref})
        count += 1
    return count


def on_job_succeeded(kind: str, callback: Callable[[Any, dict[str, Any]], None]) -> None:
    """Run ``callback(job, result)`` after each job of ``kind`` succeeds, in the transaction that
    marks it succeeded (so what it queues exists if and only if the results commit)."""
    callbacks = _AFTER.setdefault(kind, [])
    if callback not in callbacks:
        callbacks.append(callback)


def job_succeeded(job: Any, result: dict[str, Any]) -> None:
    """Called by the runner. Each callback runs in a savepoint: one that fails is logged and
    undone, and the job's results stand (the schedule's sweeps catch up)."""
    for callback in _AFTER.get(job.kind, []):
        try:
            with transaction.atomic():
                callback(job, result)
        except Exception as exc:  # noqa: BLE001 - follow-up work must not undo the job's results
            log.warning("job %s (%s): follow-up %s failed (%s)", job.pk, job.kind,
                        getattr(callback, "__qualname__", callback), type(exc).__name__)
