"""Reads of the patient record, always scoped to what the user may see.

Views and API endpoints never query patient data directly: they go through these getters, which
answer 404 (not 403) for a patient of another site so that its existence is not revealed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from django.db.models import Q, QuerySet
from django.http import Http404
from django.utils import timezone

from .models import (
    ACTIVE_CONDITION,
    ENTERED_IN_ERROR,
    AllergyIntolerance,
    BreakGlassAccess,
    ClinicalNote,
    Condition,
    Encounter,
    GenomicResult,
    Immunization,
    MedicationRequest,
    Observation,
    Patient,
    Site,
)

CLINICIAN_GROUP = "clinician"
RULES_ADMIN_GROUP = "rules-admin"


def site_list_for_user(user: Any) -> QuerySet[Site]:
    if not getattr(user, "is_authenticated", False):
        return Site.objects.none()
    if user.is_superuser:
        return Site.objects.all()
    return Site.objects.filter(sitemembership__user=user)


def patient_list_for_user(user: Any, *, query: str = "") -> QuerySet[Patient]:
    """Patients of the user's sites, and those the user holds an unexpired break-glass access to,
    optionally matching a name or MRN."""
    if not getattr(user, "is_authenticated", False):
        return Patient.objects.none()
    qs = Patient.objects.select_related("site")
    if not user.is_superuser:
        granted = BreakGlassAccess.objects.filter(user=user, expires_at__gt=timezone.now()).values("patient_id")
        qs = qs.filter(Q(site__in=site_list_for_user(user).values("pk")) | Q(pk__in=granted))
    query = query.strip()
    if query:
        terms = Q()
        for word in query.replace(",", " ").split():
            terms &= Q(family_name__icontains=word) | Q(given_names__icontains=word) | Q(mrn__iexact=word)
        qs = qs.filter(terms | Q(mrn__iexact=query))
    return qs.order_by("family_name", "given_names", "pk")


def patient_get_for_user(user: Any, external_id: uuid.UUID | str) -> Patient:
    """The patient if the user may see it; Http404 otherwise (unknown, or another site's)."""
    try:
        key = external_id if isinstance(external_id, uuid.UUID) else uuid.UUID(str(external_id))
    except ValueError:
        raise Http404("No such patient.") from None
    try:
        return patient_list_for_user(user).get(external_id=key)
    except Patient.DoesNotExist:
        raise Http404("No such patient.") from None


def break_glass_active(user: Any, patient: Patient) -> BreakGlassAccess | None:
    """The user's unexpired break-glass access to the patient, when the patient is not of one of
    the user's sites (what the patient page says it is seen through); else None."""
    if not getattr(user, "is_authenticated", False) or user.is_superuser:
        return None
    return (BreakGlassAccess.objects.filter(user=user, patient=patient, expires_at__gt=timezone.now())
            .exclude(patient__site__in=site_list_for_user(user).values("pk"))
            .order_by("-expires_at").first())  # one query


def is_clinician(user: Any, *, or_perm: str = "") -> bool:
    """A superuser, a member of the clinician group, or (with ``or_perm``) a user granted that
    permission: who may act on patients (add notes, upload images, give feedback, ...)."""
    return bool(getattr(user, "is_authenticated", False) and (
        user.is_superuser or (or_perm and user.has_perm(or_perm)) or user.groups.filter(name=CLINICIAN_GROUP).exists()))


def may_break_glass(user: Any) -> bool:
    """Clinicians may ask for emergency access to another site's patient."""
    return is_clinician(user)


@dataclass
class TrendPoint:
    code: str
    display: str
    unit: str
    value: float
    at: Any


@dataclass
class PatientRecord:
    """Everything the patient page shows, read with a fixed number of queries."""

    patient: Patient
    problems: list[Condition]
    medications: list[MedicationRequest]
    allergies: list[AllergyIntolerance]
    encounters: list[Encounter]
    immunizations: list[Immunization]
    notes: list[ClinicalNote]
    genomics: list[GenomicResult]
    trends: dict[str, list[TrendPoint]]
    latest: list[TrendPoint]


ACTIVE_MEDICATION_STATUSES = ("active", "on-hold", "draft")


def patient_record(patient: Patient, *, encounters: int = 10, notes: int = 10) -> PatientRecord:
    """Eight queries whatever the size of the record (pinned by a test)."""
    problems = list(
        Condition.objects.filter(ACTIVE_CONDITION, patient=patient).order_by("-onset_at", "pk")
    )
    medications = list(
        MedicationRequest.objects.filter(patient=patient, status__in=ACTIVE_MEDICATION_STATUSES).order_by(
            "-authored_at", "pk"
        )
    )
    allergies = list(
        AllergyIntolerance.objects.filter(patient=patient)
        .exclude(status=ENTERED_IN_ERROR)
        .exclude(clinical_status__in=["inactive", "resolved"])
        .order_by("display")
    )
    recent = list(
        Encounter.objects.filter(patient=patient).exclude(status=ENTERED_IN_ERROR).order_by("-period_start")[
            :encounters
        ]
    )
    immunizations = list(
        Immunization.objects.filter(patient=patient).exclude(status=ENTERED_IN_ERROR).order_by("-occurrence_at")[:20]
    )
    note_rows = list(
        ClinicalNote.objects.filter(patient=patient)
        .exclude(status=ENTERED_IN_ERROR)
        .defer("text", "raw")
        .order_by("-written_at")[:notes]
    )
    genomics = list(GenomicResult.objects.filter(patient=patient).exclude(status=ENTERED_IN_ERROR).order_by("gene"))
    rows = (
        Observation.objects.filter(patient=patient, value_quantity__isnull=False, effective_at__isnull=False)
        .exclude(status=ENTERED_IN_ERROR)
        .order_by("code", "effective_at")
        .values_list("code", "display", "value_unit", "value_quantity", "effective_at")
    )
    trends: dict[str, list[TrendPoint]] = {}
    for code, display, unit, value, at in rows:
        if value is not None:
            trends.setdefault(code, []).append(TrendPoint(code, display, unit, value, at))
    latest = sorted((points[-1] for points in trends.values()), key=lambda p: p.display.lower())
    return PatientRecord(
        patient=patient,
        problems=problems,
        medications=medications,
        allergies=allergies,
        encounters=recent,
        immunizations=immunizations,
        notes=note_rows,
        genomics=genomics,
        trends=trends,
        latest=latest,
    )
