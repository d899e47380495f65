from django.contrib import admin

from .models import FindingFeedback, ImagingFinding, ImagingInstance, ImagingSeries, ImagingStudy


class ReadOnlyAdmin(admin.ModelAdmin):
    """Images come in through the upload service (checks, storage, jobs, audit), findings from the
    jobs and feedback from clinicians: the admin shows them and changes nothing."""

    show_full_result_count = False

    def has_add_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


@admin.register(ImagingStudy)
class ImagingStudyAdmin(ReadOnlyAdmin):
    list_display = ("study_instance_uid", "study_date", "description", "status", "created_at")
    list_filter = ("status",)
    search_fields = ("patient__mrn", "study_instance_uid", "accession_number")
    raw_id_fields = ("patient", "created_by")
    list_select_related = ("patient",)


@admin.register(ImagingSeries)
class ImagingSeriesAdmin(ReadOnlyAdmin):
    list_display = ("series_instance_uid", "modality", "body_part", "series_number", "created_at")
    list_filter = ("modality",)
    search_fields = ("patient__mrn", "series_instance_uid")
    raw_id_fields = ("patient", "study")


@admin.register(ImagingInstance)
class ImagingInstanceAdmin(ReadOnlyAdmin):
    list_display = ("sop_instance_uid", "format", "modality", "body_part", "view_position", "rows", "columns",
                    "frames", "created_at")
    list_filter = ("format", "modality")
    search_fields = ("patient__mrn", "sop_instance_uid", "sha256")
    raw_id_fields = ("patient", "series", "created_by")


@admin.register(ImagingFinding)
class ImagingFindingAdmin(ReadOnlyAdmin):
    list_display = ("label", "probability", "threshold", "positive", "model_version", "created_at")
    list_filter = ("label", "positive", "model_version")
    search_fields = ("patient__mrn", "label")
    raw_id_fields = ("patient", "instance", "job", "model_version")
    list_select_related = ("model_version",)


@admin.register(FindingFeedback)
class FindingFeedbackAdmin(ReadOnlyAdmin):
    list_display = ("finding", "verdict", "user", "created_at")
    list_filter = ("verdict",)
    raw_id_fields = ("finding", "user")
    list_select_related = ("finding", "user")
