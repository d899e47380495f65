from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html_join

from cdss.adminkit import PatientAuditMixin, ReadOnlyAdmin

from .engine import RuleDefinitionError, compile_rule
from .load import fact_plan
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
from .services import (
    VERSION_FIELDS,
    ActivationRefused,
    backtest_queue,
    known_risks,
    rule_version_activate,
    rule_version_diff,
    rule_version_edit,
    rule_version_restore,
    rule_version_run_tests,
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


class RuleVersionForm(forms.ModelForm):
    """Checks the definition when the version is saved, so a wrong unit or an unknown value set
    is an error on the form, not a rule that silently never fires."""

    citation_url = forms.URLField(max_length=500, required=False, assume_scheme="https")

    class Meta:
        model = RuleVersion
        fields = ("rule", *VERSION_FIELDS, "change_note")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        rule = data.get("rule") or getattr(self.instance, "rule", None)
        if rule is None or "conditions" not in data:
            return data
        try:
            compile_rule(slug=rule.slug, version=self.instance.number or 0, severity=data.get("severity", ""),
                         conditions=data.get("conditions"), summary_template=data.get("summary_template", ""),
                         detail_template=data.get("detail_template", ""), value_sets=fact_plan().value_sets,
                         known_risks=known_risks())
        except RuleDefinitionError as exc:
            raise ValidationError([ValidationError(p) for p in exc.problems]) from None
        return data


@admin.register(RuleVersion)
class RuleVersionAdmin(admin.ModelAdmin):
    """Saving a change to an active (or retired) version makes a new draft; drafts are tested on
    save and activated with the action, which refuses a version whose tests fail."""

    form = RuleVersionForm
    list_display = ("rule", "number", "status", "severity", "tests_passed", "activated_by", "activated_at")
    list_filter = ("status", "severity")
    search_fields = ("rule__slug", "rule__title")
    list_select_related = ("rule", "activated_by")
    readonly_fields = ("number", "status", "based_on", "changes", "test_results", "tests_passed", "tested_at",
                       "created_by", "created_at", "activated_by", "activated_at", "retired_at")
    actions = ["activate", "restore", "run_tests", "backtest"]

    @admin.display(description="Changes from the version it was made from")
    def changes(self, obj: RuleVersion) -> str:
        if obj.pk is None:
            return ""
        rows = rule_version_diff(obj.based_on, obj)
        if not rows:
            return "No changes."
        return format_html_join(
            "", "<p><b>{}</b><br><del>{}</del><br><ins>{}</ins></p>",
            ((r["field"], json.dumps(r["before"], indent=1, default=str)[:2000],
              json.dumps(r["after"], indent=1, default=str)[:2000]) for r in rows),
        )

    def save_model(self, request: HttpRequest, obj: RuleVersion, form: Any, change: bool) -> None:
        fields = {name: form.cleaned_data[name] for name in VERSION_FIELDS if name in form.cleaned_data}
        draft = rule_version_edit(obj.rule, user=request.user, change_note=form.cleaned_data.get("change_note", ""),
                                  **fields)
        obj.pk = draft.pk
        obj.number, obj.status = draft.number, draft.status
        if change and draft.pk != form.instance.pk:
            messages.info(request, f"Saved as draft version {draft.number}: an active version is never edited.")

    @admin.action(description="Activate the selected drafts (their tests must pass)")
    def activate(self, request: HttpRequest, queryset: QuerySet[RuleVersion]) -> None:
        for version in queryset:
            try:
                rule_version_activate(version, user=request.user)
                messages.success(request, f"{version.rule.slug} version {version.number} is active.")
            except ActivationRefused as exc:
                messages.error(request, str(exc))

    @admin.action(description="Restore the selected versions as new drafts")
    def restore(self, request: HttpRequest, queryset: QuerySet[RuleVersion]) -> None:
        for version in queryset:
            draft = rule_version_restore(version, user=request.user)
            messages.success(request, f"{version.rule.slug}: draft version {draft.number} restores version "
                                      f"{version.number}.")

    @admin.action(description="Run the rule test cases")
    def run_tests(self, request: HttpRequest, queryset: QuerySet[RuleVersion]) -> None:
        for version in queryset:
            outcomes = rule_version_run_tests(version)
            failed = [o for o in outcomes if not o["passed"]]
            level = messages.ERROR if failed else messages.SUCCESS
            messages.add_message(request, level, f"{version}: {len(outcomes) - len(failed)}/{len(outcomes)} passed"
                                 + "".join(f"; {o['case']}: {o['message']}" for o in failed))

    @admin.action(description="Backtest over the population (beside the active version)")
    def backtest(self, request: HttpRequest, queryset: QuerySet[RuleVersion]) -> None:
        for version in queryset[:3]:
            bt = backtest_queue(version, user=request.user)
            bt.refresh_from_db()  # on the embedded default the jobs have run by now
            if bt.status == Backtest.Status.DONE:
                messages.info(request, f"{version}: fires for {bt.fired} of {bt.patients} patients (active version: "
                                       f"{bt.compared_fired}; +{bt.newly_fired} -{bt.no_longer_fired}) in "
                                       f"{bt.seconds:.1f} s")
            elif bt.status == Backtest.Status.FAILED:
                messages.error(request, f"{version}: the backtest failed: {bt.error}")
            else:
                messages.info(request, f"{version}: backtest over {bt.patients} patients queued as {bt.chunks} "
                                       f"job(s); see Backtests for its progress and result.")


@admin.register(Recommendation)
class RecommendationAdmin(PatientAuditMixin, ReadOnlyAdmin):
    """Read-only: recommendations are written by evaluation and by clinicians' actions. Opening one
    or searching the list is audited."""

    list_display = ("rule", "status", "severity", "shadow", "first_fired_at", "last_fired_at")
    list_filter = ("status", "severity", "shadow", "rule")
    search_fields = ("patient__mrn", "rule__slug")
    raw_id_fields = ("patient", "rule", "rule_version")
    list_select_related = ("rule",)


@admin.register(RecommendationAction)
class RecommendationActionAdmin(PatientAuditMixin, ReadOnlyAdmin):
    patient_path = "recommendation.patient"
    list_display = ("rule", "action", "reason_code", "source", "user", "at")
    list_filter = ("action", "source", "reason_code", "rule")
    raw_id_fields = ("recommendation", "rule", "rule_version", "user")
    list_select_related = ("rule", "user")


@admin.register(Snooze)
class SnoozeAdmin(PatientAuditMixin, admin.ModelAdmin):
    list_display = ("rule", "until", "user", "created_at")
    raw_id_fields = ("patient", "rule", "user")
    list_select_related = ("rule", "user")


@admin.register(Backtest)
class BacktestAdmin(admin.ModelAdmin):
    list_display = ("rule_version", "status", "progress", "patients", "fired", "compared_fired", "newly_fired",
                    "no_longer_fired", "seconds", "created_at")
    list_filter = ("status",)
    raw_id_fields = ("rule_version", "compared_with", "created_by", "job")
    readonly_fields = ("progress", "sample", "error")
    exclude = ("parts",)

    @admin.display(description="jobs done")
    def progress(self, obj: Backtest) -> str:
        return f"{obj.chunks_done}/{obj.chunks}" if obj.chunks else "in process"
