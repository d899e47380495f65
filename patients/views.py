"""Pages: the worklist and the patient page. Access goes through selectors; every view of a
patient's data writes an audit row in the same transaction."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from cdss.audit import audit_record
from cdss.selectors import job_kind_list_per_patient

from .models import Site
from .selectors import (
    TrendPoint,
    break_glass_active,
    may_break_glass,
    patient_get_for_user,
    patient_list_for_user,
    patient_record,
)
from .services import BreakGlassError, break_glass_grant

WORKLIST_PAGE_SIZE = 25

# LOINC codes a clinician looks for first: blood pressure, weight, BMI, HbA1c, lipids,
# creatinine, glucose. They are charted before any other code with enough points.
PREFERRED_TREND_CODES = (
    "8480-6",  # Systolic blood pressure
    "8462-4",  # Diastolic blood pressure
    "29463-7",  # Body weight
    "39156-5",  # Body mass index
    "4548-4",  # Hemoglobin A1c
    "2093-3",  # Total cholesterol
    "18262-6",  # LDL cholesterol (direct)
    "2085-9",  # HDL cholesterol
    "2160-0",  # Creatinine, serum
    "38483-4",  # Creatinine, blood
    "2339-0",  # Glucose, blood
)
MAX_TREND_CHARTS = 8


def trend_charts(trends: dict[str, list[TrendPoint]], *, limit: int = MAX_TREND_CHARTS) -> list[dict[str, Any]]:
    """The series to chart, as JSON-able dicts (for ``json_script``): codes with at least two
    points, preferred vitals and labs first, then the most frequent; at most ``limit``."""
    preferred = {code: rank for rank, code in enumerate(PREFERRED_TREND_CODES)}
    candidates = [(code, points) for code, points in trends.items() if len(points) >= 2]
    candidates.sort(key=lambda item: (preferred.get(item[0], len(preferred)), -len(item[1]), item[0]))
    charts = []
    for code, points in candidates[:limit]:
        last = points[-1]
        charts.append(
            {
                "code": code,
                "display": last.display or code,
                "unit": last.unit,
                "x": [point.at.isoformat() for point in points],
                "y": [point.value for point in points],
            }
        )
    return charts


def worklist(request: HttpRequest) -> HttpResponse:
    query = request.GET.get("q", "")[:100]
    paginator = Paginator(patient_list_for_user(request.user, query=query), WORKLIST_PAGE_SIZE)
    page = paginator.get_page(request.GET.get("page"))
    return render(request, "patients/worklist.html", {"page": page, "query": query,
                                                      "may_break_glass": may_break_glass(request.user)})


@require_http_methods(["GET", "POST"])
def break_glass(request: HttpRequest) -> HttpResponse:
    """Emergency access to a patient of another site: the site, the exact MRN and a reason. The
    access lasts CDSS_BREAK_GLASS_HOURS, is audited and kept for review; the patient page says
    it is seen through it."""
    if not may_break_glass(request.user):
        raise PermissionDenied("Only clinicians may ask for emergency access.")
    sites = Site.objects.order_by("name")
    form = {"site": request.POST.get("site", ""), "mrn": request.POST.get("mrn", "")[:100],
            "reason": request.POST.get("reason", "")[:2000]}
    error = ""
    if request.method == "POST":
        site = sites.filter(code=form["site"]).first()
        if site is None:
            error = "Choose the patient's site."
        else:
            try:
                patient, _ = break_glass_grant(user=request.user, site=site, mrn=form["mrn"], reason=form["reason"],
                                               request=request)
            except BreakGlassError as exc:
                error = str(exc)
            else:
                return redirect("patient-detail", external_id=patient.external_id)
    return render(request, "patients/break_glass.html",
                  {"sites": sites, "form": form, "error": error,
                   "hours": settings.CDSS_BREAK_GLASS_HOURS}, status=400 if error else 200)


@transaction.atomic
def patient_detail(request: HttpRequest, external_id: uuid.UUID) -> HttpResponse:
    patient = patient_get_for_user(request.user, external_id)
    record = patient_record(patient)
    audit_record(user=request.user, action="view", target="patient-page", patient=patient, request=request)
    context = {
        "patient": patient,
        "record": record,
        "age": patient.age_on(timezone.localdate()),
        "trend_charts": trend_charts(record.trends),
        "job_kinds": job_kind_list_per_patient(),  # the "Run" form of the Analyses panel; none: no form
        "break_glass": break_glass_active(request.user, patient),
    }
    return render(request, "patients/patient_detail.html", context)
