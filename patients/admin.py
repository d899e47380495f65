"""The patient record in the Django admin.

Records arrive through the FHIR importer (command, API, or the upload page here), so the admin
shows them read-only: editing a row by hand would bypass the audit log and leave ``raw`` out of
step with the columns. Clinical facts are never deleted; the one write offered is the action
"Mark as entered in error", which goes through ``clinical_fact_mark_entered_in_error`` and so
writes its audit row. Opening a record or searching a list of patient data is audited too.

The tables are large (observations run to billions of rows in a hospital), so foreign keys are
raw-id widgets, list pages do not count every row, and list filters offer fixed choices rather
than a ``SELECT DISTINCT`` over the whole table.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, cast

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from cdss.adminkit import PatientAuditMixin, ReadOnlyAdmin, reason_confirmation

from .fhir.parse import unit_from_bytes, unit_from_ndjson
from .fhir.resources import LOINC, RXNORM, SNOMED
from .models import (
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
    Organization,
    Patient,
    Practitioner,
    Procedure,
    Site,
    SiteMembership,
)
from .selectors import site_list_for_user
from .services import ImportSummary, clinical_fact_mark_entered_in_error, fhir_import_units

# More rows than this in one "entered in error" action is almost certainly a mistaken "select
# all"; a correction that large belongs in a reviewed script.
MAX_ENTERED_IN_ERROR = 500
# Error messages shown after a failed upload (the rest are counted).
MAX_ERROR_MESSAGES = 100

# ---------------------------------------------------------------------------------------------
# List filters with fixed choices: the FHIR R4 value sets of each column.


class FixedChoicesFilter(admin.SimpleListFilter):
    options: tuple[tuple[str, str], ...] = ()

    def lookups(self, request: HttpRequest, model_admin: Any) -> tuple[tuple[str, str], ...]:
        return self.options

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value is None:
            return queryset
        return queryset.filter(**{str(self.parameter_name): "" if value == "-" else value})


def choices_filter(field: str, *codes: str | tuple[str, str], title: str = "") -> type[FixedChoicesFilter]:
    """A list filter on ``field`` offering ``codes`` (a code, or (code, label)). An empty code is
    sent as "-", because an empty query parameter would read as "no filter"."""
    options = tuple((c[0] or "-", c[1]) if isinstance(c, tuple) else (c, c) for c in codes)
    attrs = {"title": title or field.replace("_", " "), "parameter_name": field, "options": options}
    return cast(type[FixedChoicesFilter], type(f"{field.title().replace('_', '')}Filter", (FixedChoicesFilter,), attrs))


CODE_SYSTEM_FILTER = choices_filter(
    "code_system", (LOINC, "LOINC"), (SNOMED, "SNOMED CT"), (RXNORM, "RxNorm"),
    ("http://hl7.org/fhir/sid/cvx", "CVX"), ("http://hl7.org/fhir/sid/icd-10-cm", "ICD-10-CM"), ("", "(none)"),
    title="code system",
)

# ---------------------------------------------------------------------------------------------
# Sites and who belongs to them (the only patient-app rows edited here)


class SiteMembershipInline(admin.TabularInline):
    model = SiteMembership
    extra = 0
    autocomplete_fields = ("user",)


@admin.register(BreakGlassAccess)
class BreakGlassAccessAdmin(ReadOnlyAdmin):
    """For review: who opened which other site's patient, when, why and until when. Read-only."""

    list_display = ("created_at", "user", "patient_mrn", "patient_site", "expires_at", "reason")
    list_filter = ("created_at", "patient__site")
    search_fields = ("user__username", "patient__mrn", "reason")
    date_hierarchy = "created_at"
    list_select_related = ("user", "patient__site")
    readonly_fields = ("created_at", "user", "patient", "reason", "expires_at")

    @admin.display(description="MRN")
    def patient_mrn(self, obj: BreakGlassAccess) -> str:
        return obj.patient.mrn

    @admin.display(description="site")
    def patient_site(self, obj: BreakGlassAccess) -> str:
        return obj.patient.site.name


@admin.register(Site)
class SiteAdmin(admin.ModelAdmin):
    list_display = ("name", "code")
    search_fields = ("name", "code")
    readonly_fields = ("external_id",)
    inlines = (SiteMembershipInline,)


@admin.register(SiteMembership)
class SiteMembershipAdmin(admin.ModelAdmin):
    list_display = ("user", "site", "specialty")
    list_filter = ("site",)
    list_select_related = ("user", "site")
    search_fields = ("user__username", "user__last_name", "site__code", "site__name", "specialty")
    autocomplete_fields = ("user", "site")


# ---------------------------------------------------------------------------------------------
# Rows that mirror a FHIR resource


class FhirBackedAdmin(admin.ModelAdmin):
    """Read-only detail pages with the stored FHIR JSON; no adding or deleting."""

    exclude = ("raw",)
    show_full_result_count = False  # no COUNT(*) over the whole table on each list page

    @admin.display(description="FHIR resource (as imported)")
    def raw_json(self, obj: Any) -> str:
        return format_html('<pre style="white-space: pre-wrap">{}</pre>',
                           json.dumps(obj.raw, indent=2, ensure_ascii=False, sort_keys=True))

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        names = [f.name for f in self.opts.concrete_fields if f.name != "raw" and not f.primary_key]
        return [*names, "raw_json"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # rows come from FHIR import

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # On the list (obj None) "change" is what the entered-in-error action asks for; on one row
        # it is refused, so the row shows read-only to whoever may view it.
        if obj is not None:
            return False
        return super().has_change_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # clinical facts are never deleted: mark them entered in error


@admin.register(Organization)
class OrganizationAdmin(FhirBackedAdmin):
    list_display = ("name", "identifier_system", "identifier_value", "fhir_id")
    search_fields = ("name", "=identifier_value", "=fhir_id")


@admin.register(Practitioner)
class PractitionerAdmin(FhirBackedAdmin):
    list_display = ("name", "npi", "identifier_value", "fhir_id")
    search_fields = ("name", "=npi", "=identifier_value", "=fhir_id")


class PatientDataAdmin(PatientAuditMixin, FhirBackedAdmin):
    """Rows that hold one patient's data: opening one, or searching the list, is audited."""


# ---------------------------------------------------------------------------------------------
# Patient, with the FHIR upload page


class FhirUploadForm(forms.Form):
    site = forms.ModelChoiceField(queryset=Site.objects.none(), help_text="The site the patients belong to.")
    file = forms.FileField(help_text="A FHIR R4 Bundle (.json), or a bulk-export file of one resource type (.ndjson).")

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["site"]
        assert isinstance(field, forms.ModelChoiceField)
        field.queryset = site_list_for_user(user)
        sites = list(field.queryset[:2])
        if len(sites) == 1:
            field.initial = sites[0]

    def clean_file(self) -> Any:
        upload = self.cleaned_data["file"]
        if not upload.name.lower().endswith((".json", ".ndjson")):
            raise forms.ValidationError("Upload a .json Bundle or an .ndjson file.")
        limit = settings.CDSS_FHIR_MAX_UPLOAD_BYTES
        if upload.size > limit:
            raise forms.ValidationError(f"The file is larger than the limit of {limit:,} bytes "
                                        "(CDSS_FHIR_MAX_UPLOAD_BYTES); use `manage.py import_fhir` instead.")
        return upload


@admin.register(Patient)
class PatientAdmin(PatientDataAdmin):
    change_list_template = "admin/patients/patient/change_list.html"
    import_template = "admin/patients/patient/import_fhir.html"
    list_display = ("display_name", "mrn", "site", "birth_date", "sex", "active", "deceased")
    list_filter = ("site", "sex", "active", "deceased")
    list_select_related = ("site",)
    search_fields = ("=mrn", "family_name", "given_names", "=fhir_id")

    def patient_of(self, obj: Any) -> Patient:
        return obj  # type: ignore[no-any-return]

    def get_urls(self) -> list[URLPattern]:
        name = f"{self.opts.app_label}_{self.opts.model_name}_import_fhir"
        return [path("import-fhir/", self.admin_site.admin_view(self.import_fhir_view), name=name),
                *super().get_urls()]

    def has_import_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(f"{self.opts.app_label}.add_{self.opts.model_name}")

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        extra_context = {**(extra_context or {}), "has_import_permission": self.has_import_permission(request)}
        return super().changelist_view(request, extra_context)

    def import_fhir_view(self, request: HttpRequest) -> HttpResponse:
        """Upload one Bundle or NDJSON file; it is imported atomically, like `import_fhir`."""
        if not self.has_import_permission(request):
            raise PermissionDenied
        form = FhirUploadForm(request.POST or None, request.FILES or None, user=request.user)
        if request.method == "POST" and form.is_valid():
            site: Site = form.cleaned_data["site"]
            upload = form.cleaned_data["file"]
            data = upload.read()
            name = str(upload.name)
            unit = unit_from_ndjson(data, name) if name.lower().endswith(".ndjson") else unit_from_bytes(data, name)
            summary = fhir_import_units([unit], site=site, user=request.user, request=request)
            if summary.ok:
                self.report_success(request, summary, name, site)
                return HttpResponseRedirect(reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist"))
            self.report_errors(request, summary, name)
        context = {
            **self.admin_site.each_context(request),
            "title": "Import FHIR",
            "opts": self.opts,
            "form": form,
        }
        return TemplateResponse(request, self.import_template, context)

    def report_success(self, request: HttpRequest, summary: ImportSummary, name: str, site: Site) -> None:
        counts = "; ".join(
            f"{model}: {c['created']} created, {c['updated']} updated, {c['unchanged']} unchanged"
            for model, c in sorted(summary.totals().items()) if sum(c.values())
        )
        self.message_user(request, f"Imported {name} into {site.name}: {summary.resources} resources read. {counts}.",
                          messages.SUCCESS)
        skipped = summary.skipped()
        if skipped:
            self.message_user(request, "Not stored: " + "; ".join(f"{what}: {n}" for what, n in sorted(skipped.items())),
                              messages.INFO)

    def report_errors(self, request: HttpRequest, summary: ImportSummary, name: str) -> None:
        errors = [e for unit in summary.failed for e in unit.errors]
        self.message_user(request, f"Nothing was imported from {name}: {len(errors)} error(s).", messages.ERROR)
        for error in errors[:MAX_ERROR_MESSAGES]:
            self.message_user(request, str(error), messages.ERROR)
        if len(errors) > MAX_ERROR_MESSAGES:
            self.message_user(request, f"... and {len(errors) - MAX_ERROR_MESSAGES} more.", messages.ERROR)


# ---------------------------------------------------------------------------------------------
# Clinical facts


class EnteredInErrorForm(forms.Form):
    reason = forms.CharField(max_length=255, widget=forms.TextInput(attrs={"size": 80}),
                             help_text="Why these records are wrong. Kept in the audit log.")


class ClinicalFactAdmin(PatientDataAdmin):
    list_select_related: ClassVar[tuple[str, ...]] = ("patient",)
    raw_id_fields: ClassVar[tuple[str, ...]] = ("patient", "encounter")
    search_fields: ClassVar[tuple[str, ...]] = ("=patient__mrn", "patient__family_name", "=code", "display",
                                                "=fhir_id")
    actions = ("mark_entered_in_error",)

    @admin.action(description="Mark as entered in error", permissions=["change"])
    def mark_entered_in_error(self, request: HttpRequest, queryset: QuerySet[Any]) -> HttpResponse | None:
        """Asks for a reason on an intermediate page (as Django's delete confirmation does), then
        marks each row through the service, which writes one audit row per fact."""
        facts = queryset.exclude(status=ENTERED_IN_ERROR).select_related("patient").order_by("pk")
        total = facts.count()
        if total == 0:
            self.message_user(request, "The selected records are already marked entered in error.", messages.INFO)
            return None
        if total > MAX_ENTERED_IN_ERROR:
            self.message_user(request, f"{total} records selected; at most {MAX_ENTERED_IN_ERROR} can be marked "
                                       "entered in error at once.", messages.ERROR)
            return None
        form = EnteredInErrorForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            with transaction.atomic():
                for fact in facts:
                    clinical_fact_mark_entered_in_error(fact=fact, user=request.user, request=request,
                                                        reason=form.cleaned_data["reason"])
            noun = self.opts.verbose_name if total == 1 else self.opts.verbose_name_plural
            self.message_user(request, f"Marked {total} {noun} as entered in error.", messages.SUCCESS)
            return None
        return reason_confirmation(self, request, template="admin/patients/entered_in_error_confirmation.html",
                                   title="Mark as entered in error", action="mark_entered_in_error", form=form,
                                   facts=facts, total=total)


@admin.register(Encounter)
class EncounterAdmin(ClinicalFactAdmin):
    list_display = ("__str__", "patient", "class_code", "period_start", "status", "service_provider")
    list_filter = (
        choices_filter("status", "planned", "arrived", "triaged", "in-progress", "onleave", "finished", "cancelled",
                       ENTERED_IN_ERROR, "unknown"),
        choices_filter("class_code", ("AMB", "ambulatory"), ("EMER", "emergency"), ("IMP", "inpatient"),
                       ("ACUTE", "inpatient acute"), ("OBSENC", "observation"), ("SS", "short stay"),
                       ("VR", "virtual"), ("HH", "home health"), title="class"),
        "patient__site",
    )
    list_select_related = ("patient", "service_provider")
    raw_id_fields = ("patient", "service_provider", "practitioner")


@admin.register(Condition)
class ConditionAdmin(ClinicalFactAdmin):
    list_display = ("display", "code", "patient", "clinical_status", "status", "category", "onset_at")
    list_filter = (
        choices_filter("clinical_status", "active", "recurrence", "relapse", "inactive", "remission", "resolved"),
        choices_filter("status", "unconfirmed", "provisional", "differential", "confirmed", "refuted",
                       ENTERED_IN_ERROR, title="verification status"),
        choices_filter("category", "problem-list-item", "encounter-diagnosis", "health-concern"),
        CODE_SYSTEM_FILTER,
        "patient__site",
    )


@admin.register(Observation)
class ObservationAdmin(ClinicalFactAdmin):
    list_display = ("display", "code", "value", "patient", "category", "effective_at", "status")
    list_filter = (
        choices_filter("category", "vital-signs", "laboratory", "social-history", "imaging", "procedure", "survey",
                       "exam", "therapy", "activity"),
        choices_filter("status", "registered", "preliminary", "final", "amended", "corrected", "cancelled",
                       ENTERED_IN_ERROR, "unknown"),
        CODE_SYSTEM_FILTER,
        "patient__site",
    )
    raw_id_fields = ("patient", "encounter", "parent")

    @admin.display(description="value")
    def value(self, obj: Observation) -> str:
        return obj.value_text


@admin.register(MedicationRequest)
class MedicationRequestAdmin(ClinicalFactAdmin):
    list_display = ("display", "code", "patient", "status", "intent", "authored_at", "dosage_text")
    list_filter = (
        choices_filter("status", "active", "on-hold", "cancelled", "completed", "stopped", "draft", ENTERED_IN_ERROR,
                       "unknown"),
        choices_filter("intent", "proposal", "plan", "order", "original-order", "reflex-order", "filler-order",
                       "instance-order", "option"),
        CODE_SYSTEM_FILTER,
        "patient__site",
    )
    raw_id_fields = ("patient", "encounter", "requester")


@admin.register(AllergyIntolerance)
class AllergyIntoleranceAdmin(ClinicalFactAdmin):
    list_display = ("display", "code", "patient", "clinical_status", "status", "category", "criticality")
    list_filter = (
        choices_filter("clinical_status", "active", "inactive", "resolved"),
        choices_filter("status", "unconfirmed", "confirmed", "refuted", ENTERED_IN_ERROR, title="verification status"),
        choices_filter("category", "food", "medication", "environment", "biologic"),
        choices_filter("criticality", "low", "high", "unable-to-assess"),
        CODE_SYSTEM_FILTER,
        "patient__site",
    )
    raw_id_fields = ("patient",)


@admin.register(Procedure)
class ProcedureAdmin(ClinicalFactAdmin):
    list_display = ("display", "code", "patient", "status", "performed_start")
    list_filter = (
        choices_filter("status", "preparation", "in-progress", "not-done", "on-hold", "stopped", "completed",
                       ENTERED_IN_ERROR, "unknown"),
        CODE_SYSTEM_FILTER,
        "patient__site",
    )


@admin.register(Immunization)
class ImmunizationAdmin(ClinicalFactAdmin):
    list_display = ("display", "code", "patient", "status", "occurrence_at")
    list_filter = (choices_filter("status", "completed", "not-done", ENTERED_IN_ERROR), CODE_SYSTEM_FILTER,
                   "patient__site")


@admin.register(ClinicalNote)
class ClinicalNoteAdmin(ClinicalFactAdmin):
    list_display = ("__str__", "patient", "source_type", "author_display", "written_at", "status")
    list_filter = (
        "source_type",
        # DocumentReference and DiagnosticReport statuses together.
        choices_filter("status", "current", "superseded", "preliminary", "final", "amended", "corrected",
                       ENTERED_IN_ERROR),
        CODE_SYSTEM_FILTER,
        "patient__site",
    )
    raw_id_fields = ("patient", "encounter", "author")


@admin.register(GenomicResult)
class GenomicResultAdmin(ClinicalFactAdmin):
    list_display = ("gene", "diplotype", "phenotype", "patient", "effective_at", "status")
    # The genomic table is small (a few results per tested patient): distinct genes are cheap.
    list_filter = ("gene", choices_filter("status", "final", "amended", "corrected", ENTERED_IN_ERROR), "patient__site")
    search_fields = ("=patient__mrn", "patient__family_name", "=gene", "diplotype", "phenotype", "=fhir_id")
    raw_id_fields = ("patient", "observation")
