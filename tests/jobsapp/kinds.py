"""Trivial job kinds for the job platform's tests and benchmark."""

from __future__ import annotations

import time
from typing import Any

from cdss.jobs.registry import job_kind
from cdss.models import Job

from .models import ProbeResult


def _write(job: Job, payload: dict[str, Any]) -> dict[str, Any]:
    _, created = ProbeResult.objects.get_or_create(key=payload["key"],
                                                   defaults={"job_id": job.pk, "worker": job.worker})
    return {"key": payload["key"], "written": int(created)}


@job_kind("test.probe", queue="risk", writer=_write)
def probe(job: Job, ctx: Any) -> dict[str, Any]:
    """Does nothing but record that it ran."""
    return {"key": job.params["key"]}


@job_kind("test.slow", queue="risk", writer=_write)
def slow(job: Job, ctx: Any) -> dict[str, Any]:
    """Sleeps, reporting progress, then records that it ran."""
    seconds = float(job.params.get("seconds", 1.0))
    steps = 4
    for i in range(steps):
        time.sleep(seconds / steps)
        ctx.progress(int(100 * (i + 1) / steps), f"step {i + 1} of {steps}")
    return {"key": job.params["key"]}


@job_kind("test.fail", queue="risk", max_attempts=3)
def fail(job: Job, ctx: Any) -> None:
    """Raises every time."""
    raise RuntimeError("the test job failed on purpose")


@job_kind("test.patient_probe", queue="risk", writer=_write, per_patient=True)
def patient_probe(job: Job, ctx: Any) -> dict[str, Any]:
    """Records that it ran for one patient (a clinician may ask for it on the patient page)."""
    ctx.progress(50, "halfway")
    return {"key": f"patient-{job.patient_id}-{job.pk}"}
