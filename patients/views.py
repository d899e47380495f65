"""Pages: the worklist and the patient page. Access goes through selectors; every view of a
patient's data writes an audit row in the same transaction."""

from __future__ import annotations

import uuid

from django.core.paginator import Paginator
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from cdss.audit import audit_record

from .selectors import patient_get_for_user, patient_list_for_user, patient_record

WORKLIST_PAGE_SIZE = 25


def worklist(request: HttpRequest) -> HttpResponse:
    query = request.GET.get("q", "")[:100]
    paginator = Paginator(patient_list_for_user(request.user, query=query), WORKLIST_PAGE_SIZE)
    page = paginator.get_page(request.GET.get("page"))
    return render(request, "patients/worklist.html", {"page": page, "query": query})


@transaction.atomic
def patient_detail(request: HttpRequest, external_id: uuid.UUID) -> HttpResponse:
    patient = patient_get_for_user(request.user, external_id)
    record = patient_record(patient)
    audit_record(user=request.user, action="view", target="patient-page", patient=patient, request=request)
    return render(request, "patients/patient_detail.html", {"patient": patient, "record": record})
