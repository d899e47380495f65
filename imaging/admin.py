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

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from cdss.adminkit import PatientAuditMixin, ReadOnlyAdmin, reason_confirmation
from cdss.audit import audit_record

from .held import held_images_discard, held_images_file
from .models import (
    FindingFeedback,
    HeldImage,
    ImagingFinding,
    ImagingInstance,
    ImagingSeries,
    ImagingStudy,
    ResultDelivery,
)

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

    list_display = ("sop_instance_uid", "finding", "object_type", "destination", "status", "detail", "created_at")
    list_filter = ("status", "object_type", "destination")
    raw_id_fields = ("finding", "patient", "job")
    list_select_related = ("finding",)


class DiscardForm(forms.Form):
    reason = forms.CharField(max_length=200, widget=forms.TextInput(attrs={"size": 80}),
                             help_text="Why these images are not to be filed (e.g. sent again with the right "
                                       "PatientID). Kept on each row.")


@admin.register(HeldImage)
class HeldImageAdmin(ImagingAdmin):
    """Images the DICOM listener holds for a PatientID the record has no patient for (yet): an
    operator sees what waits, files what can be filed now (the schedule does it within a minute
    anyway) and discards what never will be. Filing and discarding need the permission "Can file
    or discard held images"; each is audited. Opening a row is audited, under its patient once
    it is filed."""

    patient_path = "instance.patient"
    list_display = ("received_at", "patient_identifier", "accession_number", "modality", "study_date", "calling_ae",
                    "site", "status", "detail")
    list_filter = ("status", "site", "modality")
    search_fields = ("=patient_identifier", "=accession_number", "=study_instance_uid", "=sop_instance_uid")
    raw_id_fields = ("site", "instance", "resolved_by")
    list_select_related = ("site",)
    exclude = ("file",)
    readonly_fields = ("stored_file",)
    actions = ("file_now", "discard")

    def get_object(self, request: HttpRequest, object_id: str, from_field: str | None = None) -> Any:
        obj = super().get_object(request, object_id, from_field)
        if obj is not None and obj.instance_id is None:  # no patient to name: the row is the target
            audit_record(user=request.user, action="view", target="admin:heldimage", request=request,
                         detail=f"held image {obj.external_id}")
        return obj

    def has_resolve_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("imaging.resolve_heldimage"))

    @admin.display(description="stored file")
    def stored_file(self, obj: HeldImage) -> str:
        if obj.file:
            return format_html("<code>{}</code> ({} bytes)", obj.file.name, obj.size_bytes)
        if obj.instance is not None:
            return format_html('removed: filed as <a href="{}">an image of the patient</a>',
                               reverse("imaging-viewer", args=[obj.instance.patient.external_id,
                                                               obj.instance.external_id]))
        return "removed"

    @admin.action(description="File to the patient with their PatientID now", permissions=["resolve"])
    def file_now(self, request: HttpRequest, queryset: QuerySet[HeldImage]) -> None:
        ids = list(queryset.filter(status=HeldImage.Status.HELD).values_list("pk", flat=True))
        filing = held_images_file(ids=ids, limit=len(ids), user=request.user, request=request)
        waiting = len(ids) - filing.filed - filing.refused
        self.message_user(request, f"{filing.filed} filed, {filing.refused} could not be filed (see their detail), "
                                   f"{waiting} still without a patient with their PatientID.",
                          messages.SUCCESS if not filing.refused else messages.WARNING)

    @admin.action(description="Discard", permissions=["resolve"])
    def discard(self, request: HttpRequest, queryset: QuerySet[HeldImage]) -> HttpResponse | None:
        """Asks for a reason on an intermediate page, then discards through the service."""
        rows = queryset.filter(status__in=[HeldImage.Status.HELD, HeldImage.Status.REFUSED]).select_related("site")
        total = rows.count()
        if total == 0:
            self.message_user(request, "None of the selected images is held or refused.", messages.INFO)
            return None
        form = DiscardForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            discarded = held_images_discard(ids=rows.values_list("pk", flat=True), user=request.user, request=request,
                                            reason=form.cleaned_data["reason"])
            self.message_user(request, f"{discarded} held image(s) discarded.", messages.SUCCESS)
            return None
        return reason_confirmation(self, request, template="admin/imaging/heldimage/discard_confirmation.html",
                                   title="Discard held images", action="discard", form=form, rows=rows, total=total)
