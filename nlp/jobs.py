"""The note-extraction job kind: the notes of one patient (or a batch) that the current pipeline
version has not read yet."""

from __future__ import annotations

from typing import Any

from cdss.models import Job

from .lexicon_store import lexicon_current
from .services import extractions_write, notes_extract, notes_to_extract

NLP_KIND = "nlp"


def run(job: Job, ctx: Any) -> list[dict[str, Any]]:
    """Read and extract (no writes); the writer stores the results with the job's success. The
    lexicon is the database's as it is when the job starts (``nlp.lexicon_store``), and so is the
    assertion head (the model registry's active version, else the shipped artefact)."""
    lexicon = lexicon_current()
    ids = [job.patient_id] if job.patient_id else [int(i) for i in job.params.get("patient_ids", [])]
    notes = notes_to_extract(ids, version=lexicon.version)
    results = []
    for i in range(0, len(notes), 20):
        results += notes_extract(notes[i:i + 20], lexicon=lexicon.prepared, version=lexicon.version, head=lexicon.head)
        ctx.progress(int(100 * min(i + 20, len(notes)) / max(len(notes), 1)), f"{min(i + 20, len(notes))} notes")
    return results


def write(job: Job, results: list[dict[str, Any]]) -> dict[str, Any]:
    written = extractions_write(results, job_id=job.pk)
    summary = {"notes": len(results), "written": written, "facts": sum(len(r["facts"]) for r in results)}
    failed = sum(1 for r in results if r.get("error"))
    if failed:
        summary["unreadable"] = failed  # stored with their reason; see the notes' extractions
    return summary
