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


def _write_decoded(job: Job, payload: dict[str, Any]) -> dict[str, Any]:
    _write(job, payload)
    return payload


@job_kind("test.decode_processes", queue="imaging", writer=_write_decoded)
def decode_processes(job: Job, ctx: Any) -> dict[str, Any]:
    """Starts the imaging pipeline's worker processes from inside the worker's (daemonic) pool
    process and decodes a PNG there: what the imaging job does with CDSS_IMAGING_PROCESSES set."""
    import io
    import multiprocessing

    import numpy as np
    from PIL import Image

    from imaging.ml import cpuwork
    from imaging.ml.pipeline import DecodeProcesses

    buf = io.BytesIO()
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(buf, format="PNG")
    pool = DecodeProcesses.get(2)
    (image,) = pool.call(cpuwork.decode_shrink, [(buf.getvalue(), None)], 4)
    (shared,) = pool.decode([(buf.getvalue(), None)], 4)  # through shared memory
    return {
        "same_through_shared_memory": image is not None and shared is not None and np.array_equal(image, shared),
        "shm_blocks": [block.name for block in pool._blocks],
        "shm_error": pool.shm_error,
        "key": job.params["key"],
        "daemon": multiprocessing.current_process().daemon,
        "pids": pool.pids,
        "torch_in_workers": any(loaded for _, loaded in pool.facts),
        "shape": None if image is None else list(image.shape),
    }


# What test.leaves_files "left outside the database" and what its discarder was given back.
LEFT: list[str] = []
DISCARDED: list[str] = []


def _discard(job: Job, payload: dict[str, Any]) -> None:
    DISCARDED.append(payload["key"])


def _write_or_fail(job: Job, payload: dict[str, Any]) -> dict[str, Any]:
    summary = _write(job, payload)
    if job.params.get("fail_write"):
        raise RuntimeError("the writer failed on purpose")
    return summary


@job_kind("test.leaves_files", queue="risk", writer=_write_or_fail, discard=_discard)
def leaves_files(job: Job, ctx: Any) -> dict[str, Any]:
    """Leaves something outside the database for its writer (as the imaging job's heat map files)."""
    LEFT.append(job.params["key"])
    if job.params.get("taken_over"):  # another worker takes the job over meanwhile (its lease expired)
        Job.objects.filter(pk=job.pk).update(worker="someone-else")
    return {"key": job.params["key"]}
