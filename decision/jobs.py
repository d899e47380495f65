"""The decision job kind: evaluate the active rules for one patient or a batch of patients."""

from __future__ import annotations

from typing import Any

from cdss.models import Job

from .services import patients_evaluate

DECISION_KIND = "decision"


def run(job: Job, ctx: Any) -> dict[str, Any]:
    """Read, evaluate and write in one go: re-running updates the same open recommendations (one
    per patient and rule), so a second run adds nothing. A job queued by a record change first
    brings the patient's risk scores up to date in-process (append-only, so the risk job that runs
    beside it writes nothing twice); note findings are picked up by the schedule's sweep once
    the nlp job has stored them."""
    ids = [job.patient_id] if job.patient_id else [int(i) for i in job.params.get("patient_ids", [])]
    summary = patients_evaluate(ids, compute_risk=bool(job.patient_id), job_id=job.pk)
    return {"patients": summary.patients, "fired": summary.fired, "opened": summary.opened,
            "updated": summary.updated, "resolved": summary.resolved}
