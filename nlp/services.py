"""Extracting the facts of a patient's notes and storing them (append-only)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from django.db import transaction

from nlp.assertion.model import AssertionHead
from patients.models import ENTERED_IN_ERROR, ClinicalNote

from .models import NoteExtraction, NoteFact, NoteFactFeedback

if TYPE_CHECKING:  # spaCy is imported with the extractor, when it is first needed
    from .extract import PreparedLexicon

log = logging.getLogger("nlp")

FACT_FIELDS = ("kind", "concept_id", "preferred", "codes", "text", "start", "end", "section", "negated", "historical",
               "hypothetical", "uncertain", "experiencer", "family_relation", "stage")


def notes_to_extract(patient_ids: Iterable[int], *, version: str) -> list[tuple[int, int]]:
    """(note id, patient id) of the notes that have no extraction by this pipeline version."""
    done = NoteExtraction.objects.filter(pipeline_version=version).values("note_id")
    return list(
        ClinicalNote.objects.filter(patient_id__in=list(patient_ids))
        .exclude(status=ENTERED_IN_ERROR)
        .exclude(pk__in=done)
        .order_by("pk")
        .values_list("pk", "patient_id")
    )


def notes_extract(note_ids: list[tuple[int, int]], *,
                  lexicon: Sequence[Mapping[str, Any]] | PreparedLexicon | None = None,
                  version: str | None = None, head: AssertionHead | None = None) -> list[dict[str, Any]]:
    """Run the pipeline over the notes (no writes): one result per note, with its ids.
    ``lexicon`` is a list of concepts, or one already prepared (``nlp.lexicon_store``'s
    ``Lexicon.prepared``); None: ``nlp/lexicon.json``.
    ``head`` is the assertion head; None: the model registry's active version, else the shipped
    artefact (``nlp.assertion_registry.assertion_head_current``).

    A note that cannot be read gives a result with ``error`` (and no facts) instead of failing
    the others: longer than ``note_max_bytes()`` characters (refused before reading), or an
    exception in the pipeline (its type and place only: messages may quote the note)."""
    from celery.exceptions import SoftTimeLimitExceeded

    from .assertion_registry import assertion_head_current
    from .extract import DEFAULT_LEXICON, PreparedLexicon, extract_batch, pipeline_version, prepare_lexicon

    if head is None:
        head = assertion_head_current()
    # checked and hashed once, not per note
    prepared = lexicon if lexicon is None or isinstance(lexicon, PreparedLexicon) else prepare_lexicon(list(lexicon))
    if version is None:
        version = pipeline_version(DEFAULT_LEXICON, head=head) if prepared is None else prepared.version(head)
    limit = note_max_bytes()
    texts = dict(ClinicalNote.objects.filter(pk__in=[n for n, _ in note_ids]).values_list("pk", "text"))
    results: list[dict[str, Any]] = []
    readable: list[tuple[int, str]] = []  # (place in results, text)
    for note_id, patient_id in note_ids:
        text = texts.get(note_id) or ""
        ids = {"note_id": note_id, "patient_id": patient_id, "pipeline_version": version}
        if len(text) > limit:
            results.append({**ids, "sections": [], "facts": [],
                            "error": f"The note is {len(text):,} characters; notes longer than {limit:,} are not read "
                                     "(CDSS_NOTE_MAX_BYTES)."})
            continue
        readable.append((len(results), text))
        results.append(ids)
    # The notes' candidate mentions go through the classifier together (extract_batch).
    read = extract_batch([text for _, text in readable], lexicon=prepared, head=head, reraise=(SoftTimeLimitExceeded,))
    for (place, _), result in zip(readable, read, strict=True):
        if isinstance(result, Exception):  # one unreadable note must not stop the others
            log.warning("nlp: note %s could not be read: %s", results[place]["note_id"], _where(result))
            results[place].update(sections=[], facts=[], error=f"The pipeline failed on this note: {_where(result)}.")
        else:
            results[place].update(result)
    return results


def _where(exc: BaseException) -> str:
    """An exception's type and the line that raised it, without its message."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    place = f" at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}{place}"


@transaction.atomic
def extractions_write(results: list[dict[str, Any]], *, job_id: int | None = None) -> int:
    """Store the extractions and their facts; an extraction that exists already is left alone."""
    written = 0
    for result in results:
        extraction, created = NoteExtraction.objects.get_or_create(
            note_id=result["note_id"], pipeline_version=result["pipeline_version"],
            defaults={"patient_id": result["patient_id"], "sections": result.get("sections", []),
                      "fact_count": len(result["facts"]), "job_id": job_id,
                      "error": str(result.get("error") or "")[:300]},
        )
        if not created:
            continue
        NoteFact.objects.bulk_create([
            NoteFact(extraction=extraction, patient_id=result["patient_id"],
                     details={k: v for k, v in fact.items() if k not in FACT_FIELDS},
                     **{k: _field(k, fact.get(k)) for k in FACT_FIELDS})
            for fact in result["facts"]
        ])
        written += 1
    return written


_DEFAULTS: dict[str, Any] = {"codes": [], "negated": False, "historical": False, "hypothetical": False,
                             "uncertain": False, "experiencer": "patient"}
_WIDTHS = {"text": 500, "preferred": 300, "concept_id": 100, "section": 100, "family_relation": 64, "stage": 64,
           "kind": 32, "experiencer": 16}


def _field(name: str, value: Any) -> Any:
    """A fact's value as its column holds it (None -> the column's empty value)."""
    if value is None:
        return _DEFAULTS.get(name, "")
    if name in _WIDTHS:
        return str(value)[: _WIDTHS[name]]
    return value


@transaction.atomic
def note_fact_feedback_create(*, user: Any, patient: Any, fact: NoteFact, problem: str, comment: str = "",
                              request: Any = None) -> NoteFactFeedback:
    """Store a clinician's report that ``fact`` (of ``patient``) is wrong, with its audit row; a
    report that disputes the fact (``NoteFactFeedback.DISPUTING``) takes it out of what the rules
    read, so the patient's evaluation is queued in the same transaction."""
    from cdss.audit import audit_record
    from cdss.jobs.triggers import facts_changed

    if fact.patient_id != patient.pk:
        raise ValueError("the fact is not about this patient")
    if problem not in NoteFactFeedback.Problem.values:
        raise ValueError(f"unknown problem {problem!r} (one of {', '.join(NoteFactFeedback.Problem.values)})")
    feedback = NoteFactFeedback.objects.create(
        fact=fact, patient=patient, problem=problem, comment=comment.strip()[:2000],
        concept_id=fact.concept_id, kind=fact.kind, pipeline_version=fact.extraction.pipeline_version,
        created_by=user,
    )
    audit_record(user=user, action="create", target="note-fact-feedback", patient=patient, request=request,
                 detail=f"fact {fact.external_id}")
    if problem in NoteFactFeedback.DISPUTING:
        facts_changed(patient.pk, user=user, reason="note-fact-report", ref=f"NoteFactFeedback:{feedback.pk}")
    return feedback


def note_max_bytes() -> int:
    """The largest note accepted (setting ``CDSS_NOTE_MAX_BYTES``; 2 MiB by default)."""
    from django.conf import settings

    from .note_input import DEFAULT_MAX_BYTES

    return int(getattr(settings, "CDSS_NOTE_MAX_BYTES", DEFAULT_MAX_BYTES))


@transaction.atomic
def note_create(*, user: Any, patient: Any, text: str, title: str = "", written_at: Any = None,
                request: Any = None) -> tuple[ClinicalNote, Any]:
    """Store a typed or uploaded note (text already through ``nlp.note_input``) and queue its
    extraction, in one transaction with the audit row: the job exists if and only if the note
    does. Returns the note and the job."""
    import uuid

    from django.utils import timezone

    from cdss.audit import audit_record
    from cdss.jobs.runner import job_enqueue

    from .jobs import NLP_KIND

    author = (user.get_full_name() or user.get_username()) if getattr(user, "is_authenticated", False) else ""
    note = ClinicalNote.objects.create(
        patient=patient, fhir_id=f"typed-{uuid.uuid4()}", source_type=ClinicalNote.Source.TYPED, status="current",
        display=(title or "").strip()[:500] or "Note", text=text, content_type="text/plain",
        written_at=written_at or timezone.now(), author_display=author[:300],
    )
    audit_record(user=user, action="create", target="note", patient=patient, request=request,
                 detail=f"note {note.external_id}")
    job = job_enqueue(kind=NLP_KIND, patient=patient, user=user, inputs={"note": str(note.external_id)})
    return note, job
