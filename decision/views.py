"""Pages of decision support.

Clinicians:
- the recommendations panel of the patient page (an HTMX fragment): one card per visible
  recommendation, critical first, each with its "why" (the trace: every condition, the value it
  used with unit and date, the threshold, held or not, and links to the evidence), and the
  accept / override / snooze forms, answered in place;
- the counts by severity on the worklist (one request per worklist page, out-of-band cells) and a
  list of the patients with recommendations, the most urgent first.

Admins (staff with ``decision.view_rule``): every rule's statistics, one rule's statistics with
the override rate over time, and the diff between two versions of a rule.

Access to patient data goes through ``patients.selectors.patient_get_for_user`` or the selectors
here (another site's patient is a 404); every render of a patient's recommendations is audited.
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import NoReverseMatch, reverse
from django.utils.dateparse import parse_datetime
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from cdss.adminkit import PERIODS, period_since
from cdss.audit import audit_record
from patients.models import Patient
from patients.selectors import patient_get_for_user

from .actions import (
    ActionOutcome,
    ActionRefused,
    recommendation_accept,
    recommendation_override,
    recommendation_snooze,
)
from .forms import AcceptForm, OverrideForm, SnoozeForm
from .models import PatientEvaluation, Recommendation, Rule, RuleVersion
from .selectors import (
    patient_alert_list_for_user,
    recommendation_get_for_user,
    recommendation_list_for_patient,
    rule_statistics_detail,
    rule_statistics_list,
    severity_counts_for_patients,
)

ALERT_LIST_PAGE_SIZE = 25
MAX_COUNT_IDS = 100  # a worklist page holds 25; more is not a page's request

OP_LABELS = {"<": "<", "<=": "≤", ">": ">", ">=": "≥", "=": "=", "!=": "≠", "between": "between",
             "present": "present", "absent": "absent", "changed by": "changed by"}
# Where each kind of record row shows on the patient page (its section's anchor), and its name.
SOURCE_SECTIONS: dict[str, tuple[str, str]] = {
    "Observation": ("Lab or vital sign", "latest"),
    "Condition": ("Problem list", "problems"),
    "MedicationRequest": ("Medication list", "medications"),
    "AllergyIntolerance": ("Allergy list", "allergies"),
    "GenomicResult": ("Genomic result", "genomics"),
    "RiskAssessment": ("Risk assessment", "risk"),
    "ImagingFinding": ("Imaging finding", "imaging"),
}


# --------------------------------------------------------------------------------------------
# The cards


@dataclass(frozen=True)
class Evidence:
    label: str
    url: str = ""
    text: str = ""


@dataclass
class TraceRow:
    depth: int
    kind: str  # "condition" | "group" | "shown"
    name: str = ""
    fact: str = ""
    op: str = ""
    threshold: str = ""
    value: str = ""
    at: dt.datetime | None = None
    held: bool | None = None
    missing: bool = False
    problem: str = ""
    lookback_days: int | None = None
    evidence: list[Evidence] = field(default_factory=list)


@dataclass
class Card:
    recommendation: Recommendation
    trace: list[TraceRow]
    suggested_actions: list[dict[str, str]]
    override_form: OverrideForm
    snooze_form: SnoozeForm
    error: str = ""
    notice: str = ""
    open_form: str = ""  # "override" | "snooze": the form to show open (after an error)
    snoozed_until: dt.datetime | None = None

    @property
    def is_open(self) -> bool:
        r = self.recommendation
        return r.status == Recommendation.Status.ACTIVE and not getattr(r, "is_snoozed", False) and not self.snoozed_until


def fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{round(value, 2):g}"
    if isinstance(value, list | tuple):
        return " and ".join(fmt(v) for v in value)
    return str(value)


# UCUM codes shown in words where the code is not what a clinician reads ("a" is a year of age).
UNIT_LABELS = {"a": "years", "1": "", "{score}": "points"}


def _with_unit(value: Any, unit: Any) -> str:
    text = fmt(value)
    unit = UNIT_LABELS.get(str(unit or ""), str(unit or ""))
    if not text or not unit:
        return text
    return f"{text} {unit}"


def _note_url(patient: Patient, note_id: str) -> str:
    """The note page, when the notes app provides one; "" otherwise."""
    try:
        key = uuid.UUID(str(note_id))
    except ValueError:
        return ""
    try:
        return reverse("note-detail", args=[patient.external_id, key])
    except NoReverseMatch:
        return ""


def evidence_for(entry: dict[str, Any], patient: Patient, patient_url: str) -> list[Evidence]:
    """Links to what a trace entry used. Record ids stay on the server: a source is named by its
    kind and shown where the patient page lists it."""
    out: list[Evidence] = []
    explanation = entry.get("explanation") if isinstance(entry.get("explanation"), dict) else {}
    assert isinstance(explanation, dict)
    source = str(entry.get("source") or "")
    kind = source.partition(":")[0]
    if explanation.get("note_id"):
        start, end = explanation.get("start"), explanation.get("end")
        span = str(explanation.get("text") or "")
        where = f"characters {start} to {end}" if start is not None and end is not None else ""
        section = str(explanation.get("section") or "")
        text = "; ".join(part for part in (f"“{span}”" if span else "", section and f"section {section}", where) if part)
        url = _note_url(patient, str(explanation["note_id"]))
        out.append(Evidence("Note" if url else f"Note {explanation['note_id']}", url, text))
    elif kind in SOURCE_SECTIONS:
        label, anchor = SOURCE_SECTIONS[kind]
        out.append(Evidence(label, f"{patient_url}#{anchor}"))
    elif kind == "NoteFact":
        out.append(Evidence("Note finding"))
    viewer, heatmap = str(explanation.get("viewer_url") or ""), str(explanation.get("heatmap_url") or "")
    if viewer or heatmap:  # the image with the heat map over it; the heat map alone for older recommendations
        probability = explanation.get("probability")
        text = f"probability {fmt(probability)}" if probability is not None else ""
        out.append(Evidence("Image with heat map", viewer, text) if viewer else Evidence("Heat map", heatmap, text))
    contributions = explanation.get("contributions")
    if isinstance(contributions, dict) and contributions:
        top = sorted(
            ((str(k), v) for k, v in contributions.items() if isinstance(v, int | float)),
            key=lambda kv: -abs(kv[1]),
        )[:3]
        if top:
            text = ", ".join(f"{name.replace('_', ' ')} {fmt(float(v))}" for name, v in top)
            out.append(Evidence("Largest contributions", "", text))
    if explanation.get("gene"):
        diplotype = str(explanation.get("diplotype") or "")
        out.append(Evidence("Gene", "", f"{explanation['gene']} {diplotype}".strip()))
    return out


def trace_rows(trace: Any, patient: Patient, patient_url: str, depth: int = 0) -> list[TraceRow]:
    """The trace as flat rows (groups indented), tolerant of entries written by older engines."""
    rows: list[TraceRow] = []
    if not isinstance(trace, list):
        return rows
    for entry in trace:
        if not isinstance(entry, dict):
            continue
        kind = str(entry.get("kind") or "condition")
        if kind == "group":
            rows.append(TraceRow(depth=depth, kind="group", op=str(entry.get("logic", "")), held=entry.get("held")))
            rows.extend(trace_rows(entry.get("items"), patient, patient_url, depth + 1))
            continue
        at = entry.get("at")
        rows.append(
            TraceRow(
                depth=depth,
                kind=kind,
                name=str(entry.get("name") or entry.get("fact") or ""),
                fact=str(entry.get("fact") or ""),
                op=OP_LABELS.get(str(entry.get("op") or ""), str(entry.get("op") or "")),
                threshold=_with_unit(entry.get("threshold"), entry.get("unit")),
                value=_with_unit(entry.get("value"), entry.get("value_unit")),
                at=parse_datetime(at) if isinstance(at, str) else None,
                held=entry.get("held") if kind != "shown" else None,
                missing=bool(entry.get("missing")),
                problem=str(entry.get("problem") or ""),
                lookback_days=entry.get("lookback_days") if isinstance(entry.get("lookback_days"), int) else None,
                evidence=evidence_for(entry, patient, patient_url),
            )
        )
    return rows


def card_for(
    recommendation: Recommendation,
    patient: Patient,
    *,
    override_form: OverrideForm | None = None,
    snooze_form: SnoozeForm | None = None,
    **extra: Any,
) -> Card:
    patient_url = reverse("patient-detail", args=[patient.external_id])
    version = recommendation.rule_version
    return Card(
        recommendation=recommendation,
        trace=trace_rows(recommendation.trace, patient, patient_url),
        suggested_actions=[s for s in version.suggested_actions or [] if isinstance(s, dict) and s.get("label")],
        override_form=override_form or OverrideForm(recommendation=recommendation, auto_id=f"id_%s_{recommendation.external_id}"),
        snooze_form=snooze_form or SnoozeForm(auto_id=f"id_%s_{recommendation.external_id}"),
        **extra,
    )


@never_cache
@require_GET
@transaction.atomic
def patient_recommendations(request: HttpRequest, external_id: uuid.UUID) -> HttpResponse:
    """GET: the recommendations panel (a fragment the patient page loads). ``?history=1`` adds the
    answered, resolved and snoozed ones below the open cards."""
    patient = patient_get_for_user(request.user, external_id)
    history = request.GET.get("history") == "1"
    recommendations = recommendation_list_for_patient(patient=patient, user=request.user, history=history)
    cards = [card_for(r, patient) for r in recommendations]
    evaluated_at = (
        PatientEvaluation.objects.filter(patient=patient).values_list("evaluated_at", flat=True).first()
    )
    audit_record(user=request.user, action="view", target="recommendations-panel", patient=patient, request=request)
    context = {
        "patient": patient,
        "evaluated_at": evaluated_at,
        "open_cards": [c for c in cards if c.is_open],
        "closed_cards": [c for c in cards if not c.is_open],
        "history": history,
    }
    return render(request, "decision/_panel.html", context)


def _card_response(request: HttpRequest, card: Card, *, status: int = 200) -> HttpResponse:
    response = render(request, "decision/_card.html", {"card": card, "patient": card.recommendation.patient},
                      status=status)
    return response


def _refused(request: HttpRequest, recommendation: Recommendation, error: ActionRefused, *, open_form: str,
             override_form: OverrideForm | None = None, snooze_form: SnoozeForm | None = None) -> HttpResponse:
    """422 with the card: the message beside the field at fault (the form keeps what was typed),
    or at the top of the card when it is about the recommendation's state."""
    placed = False
    for form in (override_form, snooze_form):
        if form is not None:
            form.errors.clear()  # the action's message replaces the form's own wording
            if error.field in form.fields:
                form.add_error(error.field, str(error))
                placed = True
    card = card_for(recommendation, recommendation.patient, override_form=override_form, snooze_form=snooze_form,
                    error="" if placed else str(error), open_form=open_form)
    return _card_response(request, card, status=422)


@require_POST
def recommendation_accept_view(request: HttpRequest, external_id: uuid.UUID) -> HttpResponse:
    recommendation = recommendation_get_for_user(request.user, external_id)
    form = AcceptForm(request.POST)
    suggestion = form.cleaned_data["suggestion"] if form.is_valid() else ""
    try:
        outcome = recommendation_accept(user=request.user, recommendation=recommendation, suggestion=suggestion,
                                        request=request)
    except ActionRefused as error:
        return _refused(request, recommendation, error, open_form="")
    return _card_response(request, _answered_card(outcome))


@require_POST
def recommendation_override_view(request: HttpRequest, external_id: uuid.UUID) -> HttpResponse:
    recommendation = recommendation_get_for_user(request.user, external_id)
    form = OverrideForm(request.POST, recommendation=recommendation,
                        auto_id=f"id_%s_{recommendation.external_id}")
    form.is_valid()  # binds what was typed, to show it again; the action decides
    try:
        outcome = recommendation_override(
            user=request.user,
            recommendation=recommendation,
            reason_code=str(request.POST.get("reason", "")),
            comment=str(request.POST.get("comment", ""))[:5000],
            request=request,
        )
    except ActionRefused as error:
        return _refused(request, recommendation, error, open_form="override", override_form=form)
    return _card_response(request, _answered_card(outcome))


@require_POST
def recommendation_snooze_view(request: HttpRequest, external_id: uuid.UUID) -> HttpResponse:
    recommendation = recommendation_get_for_user(request.user, external_id)
    form = SnoozeForm(request.POST, auto_id=f"id_%s_{recommendation.external_id}")
    form.is_valid()
    try:
        outcome = recommendation_snooze(user=request.user, recommendation=recommendation,
                                        duration=str(request.POST.get("duration", "")), request=request)
    except ActionRefused as error:
        return _refused(request, recommendation, error, open_form="snooze", snooze_form=form)
    assert outcome.snooze is not None
    card = card_for(recommendation, recommendation.patient, snoozed_until=outcome.snooze.until,
                    notice="Snoozed." if outcome.created else "Already snoozed.")
    return _card_response(request, card)


def _answered_card(outcome: ActionOutcome) -> Card:
    r = outcome.recommendation
    notice = "Your answer is recorded." if outcome.created else f"Already {r.get_status_display().lower()}."
    return card_for(r, r.patient, notice=notice)


# --------------------------------------------------------------------------------------------
# Worklist


@never_cache
@require_GET
def worklist_recommendation_counts(request: HttpRequest) -> HttpResponse:
    """GET ``?p=<patient id>&p=...``: the worklist's "Recommendations" cells, as out-of-band swaps
    (one per patient the user may see; unknown and other sites' ids are left out). One query.
    Not audited, like the worklist it completes: counts only, no clinical content."""
    ids: list[uuid.UUID] = []
    for raw in request.GET.getlist("p")[:MAX_COUNT_IDS]:
        try:
            ids.append(uuid.UUID(raw))
        except ValueError:
            continue
    counts = severity_counts_for_patients(user=request.user, external_ids=ids)
    rows = [(key, counts[key]) for key in ids if key in counts]
    return render(request, "decision/_worklist_counts.html", {"rows": rows})


@never_cache
@require_GET
def recommendation_worklist(request: HttpRequest) -> HttpResponse:
    """Patients of the user's sites with recommendations to act on, the most urgent first."""
    paginator = Paginator(patient_alert_list_for_user(request.user), ALERT_LIST_PAGE_SIZE)
    page = paginator.get_page(request.GET.get("page"))
    return render(request, "decision/recommendation_worklist.html", {"page": page})


# --------------------------------------------------------------------------------------------
# Admin pages


def _rules_admin(request: HttpRequest) -> None:
    if not request.user.has_perm("decision.view_rule"):
        raise PermissionDenied("Viewing rules requires the permission decision.view_rule.")


def _admin_context(request: HttpRequest, title: str) -> dict[str, Any]:
    return {**admin.site.each_context(request), "title": title, "opts": Rule._meta, "period_choices": PERIODS}


@staff_member_required
@never_cache
@require_GET
def rule_statistics_overview(request: HttpRequest) -> HttpResponse:
    _rules_admin(request)
    since, days = period_since(request)
    context = {
        **_admin_context(request, "Rule statistics"),
        "rows": rule_statistics_list(since=since),
        "days": days,
    }
    return render(request, "admin/decision/rule_statistics_overview.html", context)


@staff_member_required
@never_cache
@require_GET
def rule_statistics_view(request: HttpRequest, slug: str) -> HttpResponse:
    _rules_admin(request)
    rule = get_object_or_404(Rule, slug=slug)
    since, days = period_since(request)
    stats = rule_statistics_detail(rule=rule, since=since)
    chart = {
        "months": [p.month.isoformat() for p in stats.months],
        "accepted": [p.accepted for p in stats.months],
        "overridden": [p.overridden for p in stats.months],
        "override_rate": [round(100 * p.override_rate, 1) if p.override_rate is not None else None
                          for p in stats.months],
        "reasons": {"labels": [r.display for r in stats.reasons], "counts": [r.count for r in stats.reasons]},
    }
    context = {
        **_admin_context(request, f"Statistics: {rule.title or rule.slug}"),
        "rule": rule,
        "stats": stats,
        "chart": chart,
        "days": days,
    }
    return render(request, "admin/decision/rule_statistics.html", context)


# The parts of a version a reviewer compares, in the order shown.
DIFF_FIELDS = ("severity", "conditions", "summary_template", "detail_template", "rationale", "citation_source",
               "citation_url", "suggested_actions", "override_reasons", "status", "change_note")


def version_text(version: RuleVersion, name: str) -> list[str]:
    """A field as stable lines: JSON with sorted keys and fixed indentation, text as it is."""
    value = getattr(version, name)
    if isinstance(value, dict | list):
        return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False).splitlines()
    return str(value if value is not None else "").splitlines()


@dataclass
class FieldDiff:
    name: str
    lines: list[tuple[str, str]]  # (css class: "add" | "del" | "ctx" | "hunk", text)


def version_diff(old: RuleVersion, new: RuleVersion) -> tuple[list[FieldDiff], list[str]]:
    """Changed fields with their unified diff (three lines of context), and the unchanged names."""
    changed: list[FieldDiff] = []
    same: list[str] = []
    for name in DIFF_FIELDS:
        a, b = version_text(old, name), version_text(new, name)
        if a == b:
            same.append(name)
            continue
        lines: list[tuple[str, str]] = []
        for line in list(difflib.unified_diff(a, b, f"v{old.number}", f"v{new.number}", lineterm="", n=3))[2:]:
            css = {"+": "add", "-": "del", "@": "hunk"}.get(line[:1], "ctx")
            lines.append((css, line))
        changed.append(FieldDiff(name, lines))
    return changed, same


@staff_member_required
@never_cache
@require_GET
def rule_version_diff_view(request: HttpRequest, slug: str) -> HttpResponse:
    """``?a=N&b=M``: version N against version M. By default the active version (else the one
    before the newest) against the newest."""
    _rules_admin(request)
    rule = get_object_or_404(Rule, slug=slug)
    versions = list(rule.versions.order_by("-number"))
    by_number = {v.number: v for v in versions}
    context = {**_admin_context(request, f"Versions: {rule.title or rule.slug}"), "rule": rule, "versions": versions}
    if len(versions) < 2:
        context["message"] = "This rule has a single version: nothing to compare."
        return render(request, "admin/decision/rule_version_diff.html", context)
    newest = versions[0]
    active = next((v for v in versions if v.status == RuleVersion.Status.ACTIVE and v is not newest), None)
    default_a, default_b = (active or versions[1]).number, newest.number
    a, b = _version_number(request, "a", default_a), _version_number(request, "b", default_b)
    if a not in by_number or b not in by_number:
        context["message"] = "No such version of this rule."
        return render(request, "admin/decision/rule_version_diff.html", context, status=404)
    changed, same = version_diff(by_number[a], by_number[b])
    context.update(old=by_number[a], new=by_number[b], changed=changed, same=same)
    return render(request, "admin/decision/rule_version_diff.html", context)


def _version_number(request: HttpRequest, name: str, default: int) -> int:
    raw = request.GET.get(name, "")
    return int(raw) if raw.isdigit() else default
