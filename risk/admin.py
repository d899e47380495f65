from django.contrib import admin

from cdss.adminkit import PatientAuditMixin, ReadOnlyAdmin

from .models import RiskAssessment


@admin.register(RiskAssessment)
class RiskAssessmentAdmin(PatientAuditMixin, ReadOnlyAdmin):
    """Read-only: assessments are append-only results, written by the risk jobs. Opening one or
    searching the list is audited."""

    list_display = ("calculator", "status", "value", "unit", "category", "as_of", "computed_at")
    list_filter = ("calculator", "status", "category")
    search_fields = ("patient__mrn", "calculator")
    raw_id_fields = ("patient", "job")
    list_select_related = ("patient",)
