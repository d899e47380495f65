from django.contrib import admin

from .models import NoteExtraction, NoteFact


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
class NoteExtractionAdmin(admin.ModelAdmin):
    list_display = ("external_id", "pipeline_version", "fact_count", "created_at")
    list_filter = ("pipeline_version",)
    search_fields = ("patient__mrn", "pipeline_version")
    raw_id_fields = ("note", "patient", "job")
    readonly_fields = ("external_id", "note", "patient", "pipeline_version", "sections", "fact_count", "created_at",
                       "job")
    inlines = [NoteFactInline]

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False
