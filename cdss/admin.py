"""The platform's models in the Django admin.

The audit log is read-only: nobody edits history. Jobs are read-only too (workers own their
state); an operator can retry a dead or failed job, or cancel one that has not started, through
the same functions the command line uses. Opening a patient's job, or searching the jobs, is
audited (``cdss.adminkit``).
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from .adminkit import PatientAuditMixin
from .jobs.registry import QUEUES, all_kinds
from .jobs.runner import job_cancel, job_retry
from .models import AuditEvent, Job


class ReadOnlyAdmin(admin.ModelAdmin):
    show_full_result_count = False  # these tables grow without bound: no COUNT(*) per page

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in self.opts.concrete_fields if not f.primary_key]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("at", "user", "action", "target", "patient", "ip_address", "detail")
    list_filter = ("action", ("at", admin.DateFieldListFilter))
    list_select_related = ("user", "patient")
    # Exact matches on short or indexed columns; "target" is a short label ("patient-page").
    search_fields = ("=user__username", "=patient__mrn", "=patient__external_id", "target", "=ip_address")
    ordering = ("-at",)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class JobKindFilter(admin.SimpleListFilter):
    """The registered kinds, without a SELECT DISTINCT over the job table."""

    title = "kind"
    parameter_name = "kind"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(kind.name, kind.name) for kind in all_kinds()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.filter(kind=self.value()) if self.value() else queryset


class JobQueueFilter(admin.SimpleListFilter):
    title = "queue"
    parameter_name = "queue"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(queue, queue) for queue in QUEUES]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.filter(queue=self.value()) if self.value() else queryset


@admin.register(Job)
class JobAdmin(PatientAuditMixin, ReadOnlyAdmin):
    list_display = ("__str__", "kind", "status", "queue", "patient", "attempts", "progress", "created_at",
                    "finished_at", "error_summary")
    list_filter = ("status", JobKindFilter, JobQueueFilter, ("created_at", admin.DateFieldListFilter))
    list_select_related = ("patient",)
    search_fields = ("=external_id", "=kind", "=idempotency_key", "=patient__mrn", "=target_id", "=worker")
    exclude = ("params", "result", "error")
    actions = ("retry", "cancel")
    ordering = ("-created_at",)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        names = [n for n in super().get_readonly_fields(request, obj) if n not in ("params", "result", "error")]
        return [*names, "params_json", "result_json", "error_text"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # The list-level "change" permission gates the retry and cancel actions; a job's own page
        # is read-only.
        if obj is not None:
            return False
        return super().has_change_permission(request)

    @admin.display(description="error")
    def error_summary(self, obj: Job) -> str:
        lines = obj.error.strip().splitlines()
        return lines[-1][:120] if lines else ""

    @admin.display(description="error")
    def error_text(self, obj: Job) -> str:
        return format_html('<pre style="white-space: pre-wrap">{}</pre>', obj.error)

    @admin.display(description="params")
    def params_json(self, obj: Job) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.params, indent=2, sort_keys=True))

    @admin.display(description="result")
    def result_json(self, obj: Job) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.result, indent=2, sort_keys=True))

    @admin.action(description="Retry (a fresh set of attempts)", permissions=["change"])
    def retry(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        done = sum(job_retry(job) for job in queryset)
        self.message_user(request, f"{done} job(s) queued again; {queryset.count() - done} were not dead, failed "
                                   "or cancelled.", messages.SUCCESS if done else messages.WARNING)

    @admin.action(description="Cancel (jobs not yet started)", permissions=["change"])
    def cancel(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        done = sum(job_cancel(job) for job in queryset)
        self.message_user(request, f"{done} job(s) cancelled; {queryset.count() - done} had already started or "
                                   "finished.", messages.SUCCESS if done else messages.WARNING)


from . import admin_models  # noqa: E402,F401
