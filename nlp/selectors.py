"""Reads of note extractions. Pages reach a note through ``note_get_for_user`` (the patient's
site is checked first); ``note_findings`` serves the rules engine, which has already chosen its
patients.

Which extraction of a note counts: the one made with the current pipeline version (the lexicon
in use) when there is one, otherwise the most recent. A lexicon edited and then edited back has
the earlier version again; its extraction, kept append-only, is current again.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Case, Count, Exists, IntegerField, OuterRef, Q, Subquery, Value, When
from django.http import Http404

from patients.models import ENTERED_IN_ERROR, ClinicalNote, Patient
from patients.selectors import patient_get_for_user

from .models import NoteExtraction, NoteFact, NoteFactFeedback


def note_get_for_user(user: Any, patient_external_id: uuid.UUID | str, note_external_id: uuid.UUID | str
                      ) -> tuple[Patient, ClinicalNote]:
    """The patient and one of its notes if the user may see the patient; Http404 otherwise
    (unknown, another site's patient, or a note of another patient)."""
    patient = patient_get_for_user(user, patient_external_id)
    try:
        key = note_external_id if isinstance(note_external_id, uuid.UUID) else uuid.UUID(str(note_external_id))
        return patient, ClinicalNote.objects.get(patient=patient, external_id=key)
    except (ValueError, ClinicalNote.DoesNotExist):
        raise Http404("No such note.") from None


def _current_first(version: str | None) -> list[Any]:
    preferred = (
        [Case(When(pipeline_version=version, then=Value(0)), default=Value(1), output_field=IntegerField())]
        if version else []
    )
    return [*preferred, "-created_at", "-pk"]


def note_extraction_current(note: ClinicalNote, *, version: str | None = None) -> NoteExtraction | None:
    """The extraction that counts for this note (see the module docstring), or None. One query."""
    return NoteExtraction.objects.filter(note=note).order_by(*_current_first(version)).first()


def note_fact_list(extraction: NoteExtraction) -> list[NoteFact]:
    """The facts of an extraction in note order, each with ``feedback_count`` (one query)."""
    return list(
        NoteFact.objects.filter(extraction=extraction)
        .annotate(feedback_count=Count("feedback"))
        .order_by("start", "pk")
    )


def note_fact_get(note: ClinicalNote, fact_external_id: uuid.UUID | str) -> NoteFact:
    """A fact of any extraction of ``note`` (the caller has checked the patient); Http404 else."""
    try:
        key = fact_external_id if isinstance(fact_external_id, uuid.UUID) else uuid.UUID(str(fact_external_id))
        return NoteFact.objects.select_related("extraction").get(external_id=key, extraction__note=note)
    except (ValueError, NoteFact.DoesNotExist):
        raise Http404("No such fact.") from None


def note_fact_feedback_list(fact: NoteFact) -> list[NoteFactFeedback]:
    return list(NoteFactFeedback.objects.filter(fact=fact).select_related("created_by"))


# --- patient-level note findings for the rules engine ---------------------------------------

CONDITION_KINDS = frozenset({"problem", "symptom", "finding", "procedure"})


@dataclass(frozen=True)
class Code:
    system: str
    code: str
    display: str = ""


@dataclass(frozen=True)
class NoteFinding:
    """One mention of a concept in a note, with where it is and what the note says of it."""

    concept_id: str
    preferred: str
    kind: str
    codes: tuple[Code, ...]
    note_id: uuid.UUID  # the note's external id
    note_date: dt.datetime | None  # when the note was written
    text: str  # the words in the note
    start: int
    end: int
    section: str
    negated: bool
    historical: bool
    hypothetical: bool
    uncertain: bool
    experiencer: str
    relation: str  # the family member ("mother"), when stated
    stage: str
    pipeline_version: str
    fact_id: int = 0  # the NoteFact row (a rule's trace points at it)

    def has_code(self, system: str, codes: Iterable[str]) -> bool:
        wanted = set(codes)
        return any(c.system == system and c.code in wanted for c in self.codes)


@dataclass(frozen=True)
class NoteMedication(NoteFinding):
    dose: float | None = None
    unit: str | None = None
    route: str | None = None
    frequency: str | None = None
    as_needed: bool = False
    status: str = "current"  # current, stopped


@dataclass(frozen=True)
class NoteAllergy(NoteFinding):
    substance: str | None = None
    reaction: str | None = None


@dataclass
class NoteFindings:
    """What a patient's notes say, for rules. Conditions are problems, symptoms, findings and
    procedures; ``affirmed`` are about the patient, present (or past: see ``historical``), and
    neither hypothetical nor uncertain; ``possible`` are the patient's hypothetical or uncertain
    ones; ``negated`` are the patient's denied ones; ``family`` are affirmed in a relative.
    Medications exclude those named as allergies (those are in ``allergies``)."""

    affirmed: list[NoteFinding] = field(default_factory=list)
    possible: list[NoteFinding] = field(default_factory=list)
    negated: list[NoteFinding] = field(default_factory=list)
    family: list[NoteFinding] = field(default_factory=list)
    medications: list[NoteMedication] = field(default_factory=list)
    allergies: list[NoteAllergy] = field(default_factory=list)
    no_known_allergies: list[NoteFinding] = field(default_factory=list)  # "NKDA" statements

    def concept_ids(self, attribute: str = "affirmed") -> set[str]:
        return {f.concept_id for f in getattr(self, attribute)}


FINDING_FIELDS = ("extraction__note__external_id", "extraction__note__written_at", "extraction__pipeline_version",
                  "patient_id", "concept_id", "preferred", "kind", "codes", "text", "start", "end",
                  "section", "negated", "historical", "hypothetical", "uncertain", "experiencer", "family_relation",
                  "stage", "details", "pk")


def note_findings(patient_ids: Iterable[int], *, version: str | None = None,
                  disputed_by: dt.datetime | None = None) -> dict[int, NoteFindings]:
    """What the current extraction of each note of these patients says (notes marked entered in
    error left out), per patient id; every patient asked for has an entry. One query, whatever
    the number of patients and notes. ``version`` is the current pipeline version (see the module
    docstring: pass ``nlp.lexicon_store.lexicon_current().version``); None: the most recent
    extraction of each note. ``disputed_by``: leave out the facts a clinician reported wrong by
    then (``NoteFactFeedback.DISPUTING``), as decision support reads them."""
    ids = sorted(set(patient_ids))
    out: dict[int, NoteFindings] = {pid: NoteFindings() for pid in ids}
    if not ids:
        return out
    current = (NoteExtraction.objects.filter(note_id=OuterRef("extraction__note_id"))
               .order_by(*_current_first(version)).values("pk")[:1])
    rows = (
        NoteFact.objects.filter(patient_id__in=ids)
        .exclude(extraction__note__status=ENTERED_IN_ERROR)
        .filter(extraction_id=Subquery(current))
        .exclude(Exists(NoteFactFeedback.objects.filter(fact=OuterRef("pk"), problem__in=NoteFactFeedback.DISPUTING,
                                                        created_at__lte=disputed_by))
                 if disputed_by is not None else Q())
        .order_by("patient_id", "extraction__note__written_at", "extraction__note_id", "start", "pk")
        .values_list(*FINDING_FIELDS)
    )
    for row in rows:
        data = dict(zip(FINDING_FIELDS, row, strict=True))
        details = data["details"] or {}
        base: dict[str, Any] = {
            "concept_id": data["concept_id"], "preferred": data["preferred"], "kind": data["kind"],
            "codes": tuple(Code(str(c.get("system", "")), str(c.get("code", "")), str(c.get("display", "")))
                           for c in data["codes"] or []),
            "note_id": data["extraction__note__external_id"], "note_date": data["extraction__note__written_at"],
            "text": data["text"], "start": data["start"], "end": data["end"], "section": data["section"],
            "negated": data["negated"], "historical": data["historical"], "hypothetical": data["hypothetical"],
            "uncertain": data["uncertain"], "experiencer": data["experiencer"], "relation": data["family_relation"],
            "stage": data["stage"], "pipeline_version": data["extraction__pipeline_version"], "fact_id": data["pk"],
        }
        findings = out[data["patient_id"]]
        patient_says = data["experiencer"] == "patient"
        allergy = details.get("allergy")
        if allergy:
            if allergy.get("no_known_allergies"):
                findings.no_known_allergies.append(NoteFinding(**base))
            elif patient_says and not data["negated"]:
                findings.allergies.append(NoteAllergy(**base, substance=allergy.get("substance"),
                                                      reaction=allergy.get("reaction")))
            continue
        medication = details.get("medication")
        if data["kind"] == "medication" and medication is not None:
            if patient_says and not data["negated"] and not data["hypothetical"]:
                findings.medications.append(NoteMedication(
                    **base, dose=medication.get("dose"), unit=medication.get("unit"), route=medication.get("route"),
                    frequency=medication.get("frequency"), as_needed=bool(medication.get("as_needed")),
                    status=medication.get("status") or "current",
                ))
            continue
        if data["kind"] not in CONDITION_KINDS:
            continue
        finding = NoteFinding(**base)
        if data["experiencer"] == "family":
            if not data["negated"]:
                findings.family.append(finding)
        elif not patient_says:
            continue
        elif data["negated"]:
            findings.negated.append(finding)
        elif data["hypothetical"] or data["uncertain"]:
            findings.possible.append(finding)
        else:
            findings.affirmed.append(finding)
    return out
