"""Work that follows a change of a patient's record.

Apps register the job kinds to run when a record changes (in their AppConfig.ready); the service
that changed the record calls ``record_changed`` inside its transaction, so the jobs exist if and
only if the change commits. This keeps imports pointing down: the record does not know who
analyses it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.utils import timezone

_KINDS: list[str] = []


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
