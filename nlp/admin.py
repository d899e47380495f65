"""Admin: the concept lexicon (editable, checked), extractions (read-only) and clinicians'
feedback on facts (read-only, filterable)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.utils import timezone

from cdss.adminkit import PatientAuditMixin, ReadOnlyAdmin

from .lexicon_store import term_key, term_owners
from .models import LexiconCode, LexiconConcept, LexiconTerm, NoteExtraction, NoteFact, NoteFactFeedback


class LexiconTermFormSet(forms.BaseInlineFormSet):
    """Terms of one concept: no term twice, none that another concept has already, and at least
    one for an active concept (a concept without words is never found)."""

    def clean(self) -> None:
        super().clean()
        kept: dict[str, Any] = {}
        for form in self.forms:
            if not hasattr(form, "cleaned_data") or not form.cleaned_data or form.cleaned_data.get("DELETE"):
                continue
            text = form.cleaned_data.get("text")
            if not text:
                continue
            key = term_key(text)
            if key in kept:
                form.add_error("text", f"“{text}” is listed twice for this concept.")
                continue
            kept[key] = form
        owners = term_owners(kept, exclude_concept=self.instance.pk)
        for key, form in kept.items():
            if key in owners:
                form.add_error("text", f"“{form.cleaned_data['text']}” is already a term of {owners[key]}; "
                                       "a term may name one concept only.")
        if getattr(self.instance, "active", False) and not kept:
            raise forms.ValidationError("An active concept needs at least one synonym or abbreviation.")


class LexiconCodeFormSet(forms.BaseInlineFormSet):
    def clean(self) -> None:
        super().clean()
        seen: set[tuple[str, str]] = set()
        for form in self.forms:
            data = getattr(form, "cleaned_data", None)
            if not data or data.get("DELETE") or not data.get("code"):
                continue
            key = (data["system"], data["code"])
            if key in seen:
                form.add_error("code", f"{data['code']} is listed twice in this system.")
            seen.add(key)


class LexiconTermInline(admin.TabularInline):
    model = LexiconTerm
    formset = LexiconTermFormSet
    fields = ("term_type", "text")
    extra = 1


class LexiconCodeInline(admin.TabularInline):
    model = LexiconCode
    formset = LexiconCodeFormSet
    fields = ("system", "code", "display")
    extra = 1


@admin.register(LexiconConcept)
class LexiconConceptAdmin(admin.ModelAdmin):
    """Edits take effect for notes read after the save: the lexicon's content is part of the
    pipeline version, so re-reading a note with an edited lexicon adds a new extraction."""

    list_display = ("concept_id", "preferred", "kind", "active", "term_count", "code_list", "updated_at")
    list_filter = ("kind", "active", "codes__system")
    search_fields = ("concept_id", "preferred", "terms__text", "=codes__code")
    fields = ("concept_id", "preferred", "kind", "active")
    inlines = [LexiconTermInline, LexiconCodeInline]
    actions = ["activate", "deactivate"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[LexiconConcept]:
        return super().get_queryset(request).annotate(n_terms=Count("terms", distinct=True)).prefetch_related("codes")

    @admin.display(description="terms", ordering="n_terms")
    def term_count(self, obj: Any) -> int:
        return int(obj.n_terms)

    @admin.display(description="codes")
    def code_list(self, obj: LexiconConcept) -> str:
        return ", ".join(f"{code.get_system_display()} {code.code}" for code in obj.codes.all())

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        # Facts keep the id: renaming it would orphan them. Make a new concept instead.
        return ("concept_id",) if obj is not None else ()

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # deactivate instead: stored facts name the concept

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        # A deleted term or code leaves no row behind; touching the concept records the change.
        LexiconConcept.objects.filter(pk=form.instance.pk).update(updated_at=timezone.now())

    @admin.action(description="Activate the selected concepts", permissions=["change"])
    def activate(self, request: HttpRequest, queryset: QuerySet[LexiconConcept]) -> None:
        count = queryset.update(active=True, updated_at=timezone.now())
        self.message_user(request, f"{count} concepts active.", messages.SUCCESS)

    @admin.action(description="Deactivate the selected concepts", permissions=["change"])
    def deactivate(self, request: HttpRequest, queryset: QuerySet[LexiconConcept]) -> None:
        count = queryset.update(active=False, updated_at=timezone.now())
        self.message_user(request, f"{count} concepts inactive (no longer looked for).", messages.SUCCESS)


class NoteFactInline(admin.TabularInline):
    model = NoteFact
    extra = 0
    can_delete = False
    fields = ("kind", "preferred", "text", "start", "end", "section", "negated", "historical", "experiencer",
              "stage")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


@admin.register(NoteExtraction)
class NoteExtractionAdmin(PatientAuditMixin, ReadOnlyAdmin):
    """Read-only (written by the extraction jobs); opening one (its facts quote the note) or searching
    the list is audited."""

    list_display = ("external_id", "pipeline_version", "fact_count", "error", "created_at")
    list_filter = ("pipeline_version",)
    search_fields = ("patient__mrn", "pipeline_version")
    raw_id_fields = ("note", "patient", "job")
    readonly_fields = ("external_id", "note", "patient", "pipeline_version", "sections", "fact_count", "error",
                       "created_at", "job")
    inlines = [NoteFactInline]


@admin.register(NoteFactFeedback)
class NoteFactFeedbackAdmin(PatientAuditMixin, ReadOnlyAdmin):
    """Clinicians' reports of wrong facts, to count errors per concept, kind and pipeline version.
    Read-only (given on the note page); opening one (it shows the note's words) or searching the list
    is audited."""

    list_display = ("created_at", "problem", "concept_id", "kind", "fact_text", "pipeline_version", "created_by")
    list_filter = ("problem", "kind", "pipeline_version", ("created_at", admin.DateFieldListFilter))
    search_fields = ("concept_id", "comment")
    list_select_related = ("fact", "created_by")
    readonly_fields = ("external_id", "created_at", "created_by", "problem", "comment", "concept_id", "kind",
                       "pipeline_version", "fact_text", "fact_context", "patient", "fact")
    fields = readonly_fields
    date_hierarchy = "created_at"

    @admin.display(description="words in the note")
    def fact_text(self, obj: NoteFactFeedback) -> str:
        return obj.fact.text

    @admin.display(description="context as found")
    def fact_context(self, obj: NoteFactFeedback) -> str:
        fact = obj.fact
        flags = [name for name in ("negated", "historical", "hypothetical", "uncertain") if getattr(fact, name)]
        who = fact.experiencer + (f" ({fact.family_relation})" if fact.family_relation else "")
        return f"{', '.join(flags) or 'affirmed'}; {who}; section {fact.section or '—'}; stage {fact.stage}"
