from django.contrib import admin

from .models import RiskAssessment


@admin.register(RiskAssessment)
class RiskAssessmentAdmin(admin.ModelAdmin):
    """Read-only: assessments are append-only results, written by the risk jobs."""

    list_display = ("calculator", "status", "value", "unit", "category", "as_of", "computed_at")
    list_filter = ("calculator", "status", "category")
    search_fields = ("patient__mrn", "calculator")
    raw_id_fields = ("patient", "job")
    list_select_related = ("patient",)
    show_full_result_count = False

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False
