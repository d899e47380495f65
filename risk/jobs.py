"""The risk job kind: assess one patient, or a batch of patients (population runs)."""

from __future__ import annotations

from typing import Any

from cdss.models import Job

from .services import risk_compute_for_patients

RISK_KIND = "risk"


def run(job: Job, ctx: Any) -> dict[str, Any]:
    """Read, compute and write in one go: the assessments are append-only with unique keys, so a
    second run of the same job writes nothing new."""
    ids = [job.patient_id] if job.patient_id else [int(i) for i in job.params.get("patient_ids", [])]
    summary = risk_compute_for_patients(ids, job_id=job.pk)
    return {"patients": summary.patients, "computed": summary.computed, "missing_inputs": summary.missing_inputs,
            "invalid_inputs": summary.invalid_inputs, "written": summary.written}
