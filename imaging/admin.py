"""Imaging in the Django admin: studies, series, instances, findings and clinicians' feedback,
read-only (images come in through the upload service, with its checks, storage, jobs and audit;
findings from the jobs; feedback from clinicians), and every opened row audited
(``cdss.adminkit``).

Stored files are never linked to storage: a folder under ``MEDIA_ROOT`` is not served, an object
store's link would be a pre-signed URL that skips the patient's access check and the audit log,
and a finding's heat map is a place in a pack of many. The pages give the files' names (for an
operator looking for them) and link the application's own viewer and heat map endpoints instead,
which check that the user may see the patient and audit what they serve.
"""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from cdss.adminkit import PatientAuditMixin, ReadOnlyAdmin

from .models import FindingFeedback, ImagingFinding, ImagingInstance, ImagingSeries, ImagingStudy, ResultDelivery

INSTANCE_FILES = (("file", "uploaded file"), ("preview", "preview"), ("thumbnail", "thumbnail"),
                  ("analysis", "analysis copy"))


class ImagingAdmin(PatientAuditMixin, ReadOnlyAdmin):
    pass


@admin.register(ImagingStudy)
class ImagingStudyAdmin(ImagingAdmin):
    list_display = ("study_instance_uid", "study_date", "description", "status", "created_at")
    list_filter = ("status",)
    search_fields = ("patient__mrn", "study_instance_uid", "accession_number")
    raw_id_fields = ("patient", "created_by")
    list_select_related = ("patient",)


@admin.register(ImagingSeries)
class ImagingSeriesAdmin(ImagingAdmin):
    list_display = ("series_instance_uid", "modality", "body_part", "series_number", "created_at")
    list_filter = ("modality",)
    search_fields = ("patient__mrn", "series_instance_uid")
    raw_id_fields = ("patient", "study")


@admin.register(ImagingInstance)
class ImagingInstanceAdmin(ImagingAdmin):
    list_display = ("sop_instance_uid", "format", "modality", "body_part", "view_position", "rows", "columns",
                    "frames", "created_at")
    list_filter = ("format", "modality")
    search_fields = ("patient__mrn", "sop_instance_uid", "sha256")
    raw_id_fields = ("patient", "series", "created_by")
    exclude = tuple(name for name, _ in INSTANCE_FILES)
    readonly_fields = ("viewer", "stored_files")

    @admin.display(description="viewer")
    def viewer(self, obj: ImagingInstance) -> SafeString:
        url = reverse("imaging-viewer", args=[obj.patient.external_id, obj.external_id])
        return format_html('<a href="{}">Open in the imaging viewer</a>', url)

    @admin.display(description="stored files")
    def stored_files(self, obj: ImagingInstance) -> SafeString:
        rows = [(label, getattr(obj, name).name) for name, label in INSTANCE_FILES if getattr(obj, name)]
        return format_html_join(mark_safe("<br>"), "{}: <code>{}</code>", rows)


@admin.register(ImagingFinding)
class ImagingFindingAdmin(ImagingAdmin):
    list_display = ("label", "probability", "threshold", "positive", "model_version", "created_at")
    list_filter = ("label", "positive", "model_version")
    search_fields = ("patient__mrn", "label")
    raw_id_fields = ("patient", "instance", "job", "model_version")
    list_select_related = ("model_version",)
    exclude = ("heatmap", "heatmap_offset", "heatmap_length")
    readonly_fields = ("heat_map", "stored_heat_map")

    @admin.display(description="heat map")
    def heat_map(self, obj: ImagingFinding) -> str:
        if not obj.heatmap:
            return "none"
        patient = obj.patient.external_id
        viewer = reverse("imaging-viewer", args=[patient, obj.instance.external_id])
        return format_html('<a href="{}">PNG</a> · <a href="{}?finding={}">in the imaging viewer</a>',
                           reverse("imaging-heatmap", args=[patient, obj.external_id]), viewer, obj.external_id)

    @admin.display(description="stored as")
    def stored_heat_map(self, obj: ImagingFinding) -> str:
        if not obj.heatmap:
            return "-"
        if obj.heatmap_offset is None:
            return format_html("<code>{}</code> (a file of its own)", obj.heatmap.name)
        return format_html("<code>{}</code>, {} bytes from byte {} (a heat map pack)", obj.heatmap.name,
                           obj.heatmap_length, obj.heatmap_offset)


@admin.register(FindingFeedback)
class FindingFeedbackAdmin(ImagingAdmin):
    patient_path = "finding.patient"
    list_display = ("finding", "verdict", "user", "created_at")
    list_filter = ("verdict",)
    raw_id_fields = ("finding", "user")
    list_select_related = ("finding", "user")


@admin.register(ResultDelivery)
class ResultDeliveryAdmin(ImagingAdmin):
    """Sendings of findings' DICOM results to the PACS, with its answers: an operator looks here
    for refusals (the job's page has the errors of a PACS that could not be reached)."""

    list_display = ("sop_instance_uid", "finding", "destination", "status", "detail", "created_at")
    list_filter = ("status", "destination")
    raw_id_fields = ("finding", "patient", "job")
    list_select_related = ("finding",)
