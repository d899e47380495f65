"""What the apps' admin pages share: rows the admin shows and never changes, and rows that hold
one patient's data, whose opening and searching the audit log records as the clinical pages'
reads are (who, which patient, when, from where).

An admin sees every site's patients: a data protection officer asks who opened which patient's
findings, notes or recommendations in the admin as much as on the patient page, so every admin
page of a patient's rows writes an audit row: one ``view`` naming the patient when a row is
opened, one ``search`` with the words when a list is searched (a list names no one patient).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.contrib import admin
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.views.main import SEARCH_VAR
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from cdss.audit import audit_record
from cdss.models import AuditEvent

# The periods the admin's statistics pages offer (``?days=N``; templates/admin/_period.html).
PERIODS = (("30", "Last 30 days"), ("90", "Last 90 days"), ("365", "Last year"))


def period_since(request: HttpRequest) -> tuple[dt.datetime | None, str]:
    """``?days=N`` (1-3650): (the start of the last N days, N as given); (None, "") for all time."""
    raw = request.GET.get("days", "")
    if raw.isdigit() and 1 <= int(raw) <= 3650:
        return timezone.now() - dt.timedelta(days=int(raw)), raw
    return None, ""


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written by the application's services and jobs (their checks, audit and follow-up
    work): the admin shows them and adds, changes and deletes none. Lists do not count every row
    of tables that grow with every patient."""

    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class PatientAuditMixin:
    """For a ``ModelAdmin`` of rows that belong to one patient: opening a row writes a ``view``
    audit row naming its patient (target ``admin:<model>``), searching the list a ``search`` row
    with the words (target ``admin:<model>-list``). ``patient_path``: the attributes from a row to
    its patient (``"patient"``, or e.g. ``"finding.patient"``); opening a row that belongs to no
    patient (a population job, a card for a patient not known here) writes none."""

    patient_path = "patient"
    opts: Any

    def patient_of(self, obj: Any) -> Any:
        for name in self.patient_path.split("."):
            obj = getattr(obj, name)
            if obj is None:
                return None
        return obj

    def get_object(self, request: HttpRequest, object_id: str, from_field: str | None = None) -> Any:
        obj = super().get_object(request, object_id, from_field)  # type: ignore[misc]
        patient = None if obj is None else self.patient_of(obj)
        if patient is not None:
            audit_record(user=request.user, action=AuditEvent.Action.VIEW, target=f"admin:{self.opts.model_name}",
                         patient=patient, request=request)
        return obj

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        query = request.GET.get(SEARCH_VAR, "").strip()
        if query and request.method == "GET":
            audit_record(user=request.user, action=AuditEvent.Action.SEARCH,
                         target=f"admin:{self.opts.model_name}-list", request=request, detail=query)
        return super().changelist_view(request, extra_context)  # type: ignore[misc,no-any-return]


def reason_confirmation(model_admin: admin.ModelAdmin, request: HttpRequest, *, template: str, title: str,
                        action: str, form: Any, **context: Any) -> TemplateResponse:
    """An admin action's intermediate page that asks for a reason (``form`` has a ``reason`` field)
    and posts the selection back to the action ``action`` with ``apply=yes``; the template extends
    ``admin/_reason_confirmation.html``."""
    return TemplateResponse(request, template, {
        **model_admin.admin_site.each_context(request),
        "title": title,
        "opts": model_admin.opts,
        "form": form,
        "action_checkbox_name": ACTION_CHECKBOX_NAME,
        "selected": request.POST.getlist(ACTION_CHECKBOX_NAME),
        "select_across": request.POST.get("select_across", "0"),
        "action_name": action,
        **context,
    })
