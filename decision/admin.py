from django.contrib import admin

from .models import (
    Backtest,
    ConceptIsA,
    Recommendation,
    RecommendationAction,
    Rule,
    RuleTestCase,
    RuleVersion,
    Snooze,
    ValueSet,
    ValueSetCode,
)


class ValueSetCodeInline(admin.TabularInline):
    model = ValueSetCode
    extra = 1
    fields = ("system", "code", "match", "display")


@admin.register(ValueSet)
class ValueSetAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "kind", "updated_at")
    list_filter = ("kind",)
    search_fields = ("slug", "name", "codes__code", "codes__display")
    inlines = [ValueSetCodeInline]


@admin.register(ConceptIsA)
class ConceptIsAAdmin(admin.ModelAdmin):
    list_display = ("system", "parent", "child")
    list_filter = ("system",)
    search_fields = ("parent", "child")
    show_full_result_count = False


class RuleVersionInline(admin.TabularInline):
    model = RuleVersion
    extra = 0
    fields = ("number", "status", "severity", "tests_passed", "created_by", "created_at", "activated_by",
              "activated_at")
    readonly_fields = fields
    show_change_link = True
    can_delete = False

    def has_add_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


class RuleTestCaseInline(admin.StackedInline):
    model = RuleTestCase
    extra = 0
    fields = ("name", "expect", "expected_message", "facts")


@admin.register(Rule)
class RuleAdmin(admin.ModelAdmin):
    list_display = ("slug", "title", "category", "shadow", "updated_at")
    list_filter = ("category", "shadow")
    search_fields = ("slug", "title")
    filter_horizontal = ("sites",)
    inlines = [RuleVersionInline, RuleTestCaseInline]


@admin.register(RuleVersion)
class RuleVersionAdmin(admin.ModelAdmin):
    list_display = ("rule", "number", "status", "severity", "tests_passed", "activated_at")
    list_filter = ("status", "severity")
    search_fields = ("rule__slug", "rule__title")
    list_select_related = ("rule",)
    readonly_fields = ("number", "status", "based_on", "test_results", "tests_passed", "tested_at", "created_by",
                       "created_at", "activated_by", "activated_at", "retired_at")


@admin.register(Recommendation)
class RecommendationAdmin(admin.ModelAdmin):
    """Read-only: recommendations are written by evaluation and by clinicians' actions."""

    list_display = ("rule", "status", "severity", "shadow", "first_fired_at", "last_fired_at")
    list_filter = ("status", "severity", "shadow", "rule")
    search_fields = ("patient__mrn", "rule__slug")
    raw_id_fields = ("patient", "rule", "rule_version")
    list_select_related = ("rule",)
    show_full_result_count = False

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


@admin.register(RecommendationAction)
class RecommendationActionAdmin(admin.ModelAdmin):
    list_display = ("rule", "action", "reason_code", "source", "user", "at")
    list_filter = ("action", "source", "reason_code", "rule")
    raw_id_fields = ("recommendation", "rule", "rule_version", "user")
    list_select_related = ("rule", "user")
    show_full_result_count = False

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


@admin.register(Snooze)
class SnoozeAdmin(admin.ModelAdmin):
    list_display = ("rule", "until", "user", "created_at")
    raw_id_fields = ("patient", "rule", "user")
    list_select_related = ("rule", "user")


@admin.register(Backtest)
class BacktestAdmin(admin.ModelAdmin):
    list_display = ("rule_version", "status", "patients", "fired", "compared_fired", "newly_fired",
                    "no_longer_fired", "seconds", "created_at")
    list_filter = ("status",)
    raw_id_fields = ("rule_version", "compared_with", "created_by", "job")
    readonly_fields = ("sample",)
