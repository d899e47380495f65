"""The note page: a note's text with the facts found in it highlighted, the list of those facts,
and a "mark wrong" action per fact (HTMX). Access goes through ``note_get_for_user`` (another
site's patient is a 404); every render and every feedback writes an audit row.

The note's text is patient-written, possibly hostile, markup: it is only ever placed in the page
through Django's auto-escaping (``{{ }}``), never marked safe.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field

from django import forms
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from cdss.audit import audit_record
from cdss.model_registry import ModelFileError

from .highlight import Piece, note_pieces
from .models import NoteFact, NoteFactFeedback
from .selectors import note_extraction_current, note_fact_get, note_fact_list, note_get_for_user
from .services import note_fact_feedback_create

log = logging.getLogger("nlp")

SYSTEM_LABELS = {
    "http://snomed.info/sct": "SNOMED CT",
    "http://hl7.org/fhir/sid/icd-10-cm": "ICD-10-CM",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm",
}
KIND_LABELS = {
    "problem": "Problem", "symptom": "Symptom", "finding": "Finding", "procedure": "Procedure",
    "medication": "Medication", "allergen": "Allergen",
}
# (css class, short tag shown on the span, words for the list and screen readers). The tag is
# text, so the context never depends on colour alone.
CONTEXTS = {
    "negated": ("ctx-negated", "neg", "negated"),
    "family": ("ctx-family", "FH", "family"),
    "other": ("ctx-other", "oth", "another person"),
    "historical": ("ctx-historical", "hx", "historical"),
    "hypothetical": ("ctx-hypothetical", "hyp", "hypothetical"),
    "uncertain": ("ctx-uncertain", "?", "uncertain"),
}


# A very long note can hold thousands of facts: all are highlighted, the side list (each entry
# with its feedback form) stops here.
MAX_LISTED_FACTS = 500


@dataclass
class FactView:
    fact: NoteFact
    classes: str
    tags: list[tuple[str, str]]  # (short, words)
    codes: list[tuple[str, str, str]]  # (system label, code, display)
    section: str
    details: list[tuple[str, str]] = field(default_factory=list)
    shown: bool = True  # highlighted in the text (False: span overlaps another or is out of range)

    @property
    def kind_label(self) -> str:
        return KIND_LABELS.get(self.fact.kind, self.fact.kind)

    @property
    def context_words(self) -> str:
        return ", ".join(words for _, words in self.tags) or "affirmed, patient"


def fact_view(fact: NoteFact) -> FactView:
    keys = [key for key in ("negated", "historical", "hypothetical", "uncertain") if getattr(fact, key)]
    if fact.experiencer in ("family", "other"):
        keys.insert(0, fact.experiencer)
    tags = []
    for key in keys:
        _, short, words = CONTEXTS[key]
        if key == "family" and fact.family_relation:
            words = f"family: {fact.family_relation}"
        tags.append((short, words))
    classes = " ".join([f"kind-{fact.kind}", *(CONTEXTS[key][0] for key in keys)])
    details: list[tuple[str, str]] = []
    medication = (fact.details or {}).get("medication") or {}
    if medication:
        dose = medication.get("dose")
        if dose is not None:
            details.append(("dose", f"{dose:g} {medication.get('unit') or ''}".strip()))
        for key in ("route", "frequency", "status"):
            if medication.get(key):
                details.append((key, str(medication[key])))
        if medication.get("as_needed"):
            details.append(("as needed", "yes"))
    allergy = (fact.details or {}).get("allergy") or {}
    if allergy:
        if allergy.get("no_known_allergies"):
            details.append(("allergies", "none known"))
        else:
            details.append(("allergy to", str(allergy.get("substance") or fact.preferred)))
            if allergy.get("reaction"):
                details.append(("reaction", str(allergy["reaction"])))
    return FactView(
        fact=fact,
        classes=classes,
        tags=tags,
        codes=[(SYSTEM_LABELS.get(str(c.get("system")), str(c.get("system"))), str(c.get("code", "")),
                str(c.get("display", ""))) for c in fact.codes or []],
        section=(fact.section or "").replace("_", " "),
        details=details,
    )


class FactFeedbackForm(forms.Form):
    problem = forms.ChoiceField(label="What is wrong", choices=NoteFactFeedback.Problem.choices)
    comment = forms.CharField(label="Comment (optional)", required=False, max_length=1000,
                              widget=forms.Textarea(attrs={"rows": 2}))


@require_GET
@transaction.atomic
def note_detail(request: HttpRequest, external_id: uuid.UUID, note_id: uuid.UUID) -> HttpResponse:
    from .lexicon_store import lexicon_current

    patient, note = note_get_for_user(request.user, external_id, note_id)
    model_error = False
    try:
        current_version: str | None = lexicon_current().version
    except ModelFileError as exc:  # the active assertion head's files changed: the page says so
        log.error("nlp: %s", exc)
        current_version, model_error = None, True
    extraction = note_extraction_current(note, version=current_version)
    facts = [fact_view(f) for f in note_fact_list(extraction)] if extraction else []
    pieces: list[Piece[FactView]]
    pieces, hidden = note_pieces(note.text, [(v.fact.start, v.fact.end, v) for v in facts])
    for view in hidden:
        view.shown = False
    audit_record(user=request.user, action="view", target="note-page", patient=patient, request=request,
                 detail=f"note {note.external_id}")
    context = {
        "patient": patient,
        "note": note,
        "extraction": extraction,
        "outdated": extraction is not None and extraction.pipeline_version != current_version,
        "model_error": model_error,
        "pieces": pieces,
        "facts": facts,
        "listed": facts[:MAX_LISTED_FACTS],
        "facts_hidden": len(facts) > MAX_LISTED_FACTS,
        "kinds": [(kind, label) for kind, label in KIND_LABELS.items()],
        "contexts": [(css, short, words) for css, short, words in CONTEXTS.values()],
        "form": FactFeedbackForm(),
    }
    return render(request, "nlp/note_detail.html", context)


@require_POST
def note_fact_feedback(request: HttpRequest, external_id: uuid.UUID, note_id: uuid.UUID,
                       fact_id: uuid.UUID) -> HttpResponse:
    """HTMX: the "mark wrong" form of one fact. Answers the fact's feedback area: a confirmation,
    or the form again with its errors."""
    with transaction.atomic():
        patient, note = note_get_for_user(request.user, external_id, note_id)
        fact = note_fact_get(note, fact_id)
        form = FactFeedbackForm(request.POST)
        saved = None
        if form.is_valid():
            saved = note_fact_feedback_create(user=request.user, patient=patient, fact=fact,
                                              problem=form.cleaned_data["problem"],
                                              comment=form.cleaned_data["comment"], request=request)
    context = {"patient": patient, "note": note, "fact": fact, "form": form, "saved": saved}
    return render(request, "nlp/_fact_feedback.html", context)


class NoteForm(forms.Form):
    title = forms.CharField(label="Title", required=False, max_length=200)
    text = forms.CharField(label="Note", required=False, strip=False, widget=forms.Textarea(attrs={"rows": 6}))
    file = forms.FileField(label="or a file (plain text or RTF)", required=False)


@require_POST
def note_create_page(request: HttpRequest, external_id: uuid.UUID) -> HttpResponse:
    """The patient page's "Add a note" form: stores the note, queues its reading, and opens the
    note's page; a refused note goes back to the patient page with the reason."""
    from django.contrib import messages
    from django.core.exceptions import PermissionDenied
    from django.shortcuts import redirect

    from patients.selectors import patient_get_for_user

    from .api import may_add_notes, note_text_from_request
    from .note_input import NoteInputError
    from .services import note_create

    patient = patient_get_for_user(request.user, external_id)
    if not may_add_notes(request.user):
        raise PermissionDenied("You may not add notes.")
    form = NoteForm(request.POST, request.FILES)
    back = redirect(f"{reverse('patient-detail', args=[patient.external_id])}#notes")
    if not form.is_valid():
        messages.error(request, "The note was not saved: " + "; ".join(
            f"{form.fields[name].label}: {' '.join(str(e) for e in errors)}" for name, errors in form.errors.items()))
        return back
    upload = form.cleaned_data.get("file")
    text = form.cleaned_data.get("text") or None
    try:
        note_text = note_text_from_request(text=None if upload and not (text or "").strip() else text,
                                           upload=upload, raw=None)
    except NoteInputError as exc:
        messages.error(request, f"The note was not saved: {exc}")
        return back
    with transaction.atomic():
        note, _ = note_create(user=request.user, patient=patient, text=note_text, title=form.cleaned_data["title"],
                              request=request)
    messages.success(request, "Note saved. Its facts appear here once it has been read.")
    return redirect("note-detail", external_id=patient.external_id, note_id=note.external_id)
