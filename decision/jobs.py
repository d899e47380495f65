"""The job kinds of decision support: ``decision`` evaluates the active rules for one patient or
a batch of patients; ``decision.backtest`` runs one chunk of a backtest."""

from __future__ import annotations

from typing import Any

from cdss.models import Job

from .services import (
    BACKTEST_KIND,
    BACKTEST_SAMPLE,
    backtest_chunk,
    backtest_fail,
    backtest_part_write,
    patients_evaluate,
)

DECISION_KIND = "decision"

__all__ = ["BACKTEST_KIND", "DECISION_KIND", "evaluate_after_results", "run", "run_backtest_chunk",
           "write_backtest_chunk"]


def run(job: Job, ctx: Any) -> dict[str, Any]:
    """Read, evaluate and write in one go: re-running updates the same open recommendations (one
    per patient and rule), so a second run adds nothing. A job queued by a record change first
    brings the patient's risk scores up to date in-process (append-only, so the risk job that runs
    beside it writes nothing twice); the nlp and imaging jobs' results queue an evaluation of
    their own when they are stored (``evaluate_after_results``), and the schedule's sweep catches
    up on anything missed."""
    ids = [job.patient_id] if job.patient_id else [int(i) for i in job.params.get("patient_ids", [])]
    summary = patients_evaluate(ids, compute_risk=bool(job.patient_id), job_id=job.pk)
    return {"patients": summary.patients, "fired": summary.fired, "opened": summary.opened,
            "updated": summary.updated, "resolved": summary.resolved}


def evaluate_after_results(job: Job, result: dict[str, Any]) -> None:
    """A risk, note or imaging job stored new results: queue an evaluation of its patient (or its
    batch of patients), in the transaction that stores them. Debounced: when an evaluation of the
    patient is already queued and not started, it will read the new results and none is added.
    The key names the job that asked, so a job asks once however often this runs."""
    from cdss.jobs.runner import job_enqueue

    inputs = {"reason": f"{job.kind}-results", "after_job": job.pk}
    if job.patient_id:
        if Job.objects.filter(kind=DECISION_KIND, patient_id=job.patient_id, status=Job.Status.QUEUED).exists():
            return
        job_enqueue(kind=DECISION_KIND, patient=job.patient, inputs=inputs)
        return
    ids = sorted({int(i) for i in job.params.get("patient_ids", [])})
    if ids:
        job_enqueue(kind=DECISION_KIND, params={"patient_ids": ids}, inputs=inputs)


def run_backtest_chunk(job: Job, ctx: Any) -> dict[str, Any] | None:
    """One chunk of a backtest: facts and evaluation of its patients, nothing written (the writer
    stores the part). None when the backtest is gone or has already failed."""
    from .models import Backtest

    bt = Backtest.objects.select_related("rule_version__rule", "compared_with__rule").filter(
        pk=int(job.target_id)).first()
    if bt is None or bt.status == Backtest.Status.FAILED:
        return None
    Backtest.objects.filter(pk=bt.pk, status=Backtest.Status.QUEUED).update(status=Backtest.Status.RUNNING)
    try:
        return backtest_chunk(bt, [int(i) for i in job.params.get("patient_ids", [])],
                              sample_size=int(job.params.get("sample_size", BACKTEST_SAMPLE)))
    except Exception as exc:
        if job.attempts >= job.max_attempts:
            # the last attempt: the backtest cannot finish (the job's own row keeps the error)
            backtest_fail(bt.pk, f"chunk {job.params.get('chunk')} failed in job #{job.pk} after {job.attempts} "
                                 f"attempts ({type(exc).__name__})")
        raise


def write_backtest_chunk(job: Job, part: dict[str, Any] | None) -> dict[str, Any]:
    """Store the part in the backtest (inside the job's success transaction); the job's own
    result holds counts only."""
    chunk = int(job.params.get("chunk", 0))
    if part is None:
        return {"chunk": chunk, "skipped": True}
    sample_size = int(job.params.get("sample_size", BACKTEST_SAMPLE))
    bt = backtest_part_write(int(job.target_id), chunk, part, sample_size=sample_size)
    return {"chunk": chunk, "patients": part["patients"], "fired": part["fired"],
            "backtest_status": bt.status if bt is not None else "deleted"}
