"""Images of a patient (study > series > instance, keyed by their DICOM UIDs) and the findings the
models made on them, with the clinicians' feedback.

Files live in Django's default storage (``default_storage``: a folder under ``MEDIA_ROOT`` by
default, S3-compatible object storage through the ``STORAGES`` setting), never served directly:
the views stream them after checking who may see the patient. Names in storage carry only random
UUIDs, never a patient identifier.

Rows are not deleted: a wrongly filed image is marked ``entered-in-error``. Findings are
append-only results: one row per instance, model version and label (a re-run writes nothing).
"""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.db import models

ENTERED_IN_ERROR = "entered-in-error"


class ImagingStudy(models.Model):
    external_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    patient = models.ForeignKey("patients.Patient", on_delete=models.PROTECT, related_name="imaging_studies")
    study_instance_uid = models.CharField("Study Instance UID", max_length=64, unique=True)
    accession_number = models.CharField(max_length=64, blank=True)
    description = models.CharField(max_length=200, blank=True)
    study_date = models.DateField(null=True, blank=True)
    status = models.CharField(max_length=32, default="available")
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")

    class Meta:
        verbose_name_plural = "imaging studies"
        ordering = ["-study_date", "-created_at"]
        indexes = [models.Index(fields=["patient", "-study_date"], name="imgstudy_patient_date")]

    def __str__(self) -> str:
        return f"Study {self.study_date or ''} {self.description}".strip()


class ImagingSeries(models.Model):
    external_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    study = models.ForeignKey(ImagingStudy, on_delete=models.PROTECT, related_name="series")
    patient = models.ForeignKey("patients.Patient", on_delete=models.PROTECT, related_name="+")
    series_instance_uid = models.CharField("Series Instance UID", max_length=64, unique=True)
    modality = models.CharField(max_length=16, blank=True)
    body_part = models.CharField(max_length=64, blank=True)
    series_number = models.IntegerField(null=True, blank=True)
    description = models.CharField(max_length=200, blank=True)
    series_date = models.DateField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "imaging series"
        ordering = ["series_number", "created_at"]

    def __str__(self) -> str:
        return f"{self.modality} {self.body_part} series {self.series_number or ''}".strip()


class ImagingInstance(models.Model):
    """One image file (one DICOM SOP instance, or one PNG/JPEG with UIDs made from its content)."""

    class Format(models.TextChoices):
        DICOM = "dicom", "DICOM"
        PNG = "png", "PNG"
        JPEG = "jpeg", "JPEG"

    external_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    series = models.ForeignKey(ImagingSeries, on_delete=models.PROTECT, related_name="instances")
    patient = models.ForeignKey("patients.Patient", on_delete=models.PROTECT, related_name="+")
    sop_instance_uid = models.CharField("SOP Instance UID", max_length=64, unique=True)
    sop_class_uid = models.CharField("SOP Class UID", max_length=64, blank=True)
    format = models.CharField(max_length=8, choices=Format.choices)
    instance_number = models.IntegerField(null=True, blank=True)
    modality = models.CharField(max_length=16, blank=True)
    body_part = models.CharField(max_length=64, blank=True)
    view_position = models.CharField(max_length=16, blank=True)
    laterality = models.CharField(max_length=16, blank=True)
    content_date = models.DateField(null=True, blank=True)
    photometric = models.CharField(max_length=32, blank=True)
    rows = models.PositiveIntegerField()
    columns = models.PositiveIntegerField()
    frames = models.PositiveIntegerField(default=1)
    frame_index = models.PositiveIntegerField(default=0, help_text="The frame shown and analysed (0-based).")
    transfer_syntax = models.CharField(max_length=64, blank=True)
    presets = models.JSONField(default=list, blank=True, help_text="Window presets; the first is the default.")
    technical = models.JSONField(default=dict, blank=True)
    # Whether the file named a patient: an image without PatientID (e.g. a PNG, an anonymised
    # export) is filed under the patient the uploader chose, and the viewer says so.
    header_patient_id_present = models.BooleanField(default=False)
    file = models.FileField(upload_to="imaging/", max_length=255)
    preview = models.FileField(upload_to="imaging/", max_length=255)
    thumbnail = models.FileField(upload_to="imaging/", max_length=255)
    # The image the models read, shrunk to at most 512 px a side, as 16-bit levels in a .npy file
    # (``imaging.pixels.analysis_copy``); empty where the original reads as fast (a small 8-bit grey
    # PNG or JPEG) and for images stored before there was one: the imaging job reads the original.
    analysis = models.FileField(upload_to="imaging/", max_length=255, blank=True)
    preview_width = models.PositiveIntegerField()
    preview_height = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64)
    size_bytes = models.BigIntegerField()
    status = models.CharField(max_length=32, default="available")
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    # When its analysis was queued (``imaging.services.imaging_jobs_queue``). Empty: not yet; a
    # receiver that stores image by image queues at the end of its study or request, and should
    # it die first, the schedule's sweep queues what it left (``analysis_backlog_queue``).
    analysis_queued_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["instance_number", "created_at"]
        indexes = [
            models.Index(fields=["patient", "-created_at"], name="imginst_patient_recent"),
            models.Index(fields=["created_at"], name="imginst_unqueued", condition=models.Q(analysis_queued_at__isnull=True)),
        ]

    def __str__(self) -> str:
        return f"{self.modality or self.format} image {self.instance_number or ''}".strip()

    @property
    def grey_dicom(self) -> bool:
        """A grey-scale DICOM image: one whose values (after the Modality LUT) a window maps."""
        from .imagefile import MONOCHROME

        return self.format == self.Format.DICOM and self.photometric in MONOCHROME


class ImagingFinding(models.Model):
    """One label of one model version on one image: probability, threshold, the finding, and
    the Grad-CAM heat map as a transparent PNG of the preview's shape, at most 128 px a side (the
    viewer stretches it over the image). The PNG is the file ``heatmap`` names, or, where
    ``heatmap_offset`` is set, ``heatmap_length`` bytes of it from there: a heat map pack holds the
    PNGs of the findings an imaging job encoded together (``imaging.jobs.HeatmapStore``)."""

    external_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    instance = models.ForeignKey(ImagingInstance, on_delete=models.PROTECT, related_name="findings")
    patient = models.ForeignKey("patients.Patient", on_delete=models.PROTECT, related_name="+")
    model_version = models.ForeignKey("cdss.ModelVersion", on_delete=models.PROTECT, related_name="+")
    label = models.CharField(max_length=64)
    probability = models.FloatField()
    threshold = models.FloatField()
    positive = models.BooleanField()
    heatmap = models.FileField(upload_to="imaging/", max_length=255, blank=True, db_index=True)  # the orphan sweep
    heatmap_offset = models.PositiveBigIntegerField(null=True, blank=True)  # bytes into the file; null: all of it
    heatmap_length = models.PositiveIntegerField(null=True, blank=True)
    job = models.ForeignKey("cdss.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["instance", "model_version", "label"], name="imgfinding_once_per_model"),
            models.CheckConstraint(condition=models.Q(probability__gte=0) & models.Q(probability__lte=1),
                                   name="imgfinding_probability_0_1"),
            models.CheckConstraint(condition=models.Q(heatmap_offset__isnull=True, heatmap_length__isnull=True)
                                   | models.Q(heatmap_offset__isnull=False, heatmap_length__isnull=False, heatmap_length__gt=0),
                                   name="imgfinding_heatmap_span"),
        ]
        indexes = [
            models.Index(fields=["patient", "-created_at"], name="imgfinding_patient_recent"),
            # the review list: flagged findings, newest first (imaging.selectors.imaging_review_list)
            models.Index(fields=["-created_at", "-id"], name="imgfinding_flagged_recent",
                         condition=models.Q(positive=True)),
        ]

    def __str__(self) -> str:
        return f"{self.label}: {self.probability:.3f} ({'positive' if self.positive else 'negative'})"


class FindingFeedback(models.Model):
    """A clinician's agreement or disagreement with a finding. Append-only: a change of mind is
    a new row; the latest row of a user is their current view."""

    class Verdict(models.TextChoices):
        AGREE = "agree", "Agree"
        DISAGREE = "disagree", "Disagree"

    external_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    finding = models.ForeignKey(ImagingFinding, on_delete=models.PROTECT, related_name="feedback")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    verdict = models.CharField(max_length=16, choices=Verdict.choices)
    comment = models.TextField(blank=True, max_length=2000)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "finding feedback"

    def __str__(self) -> str:
        return f"{self.get_verdict_display()} ({self.created_at:%Y-%m-%d})"


class ResultDelivery(models.Model):
    """One sending of a finding's DICOM result (``imaging.results``: its Secondary Capture or its
    Structured Report) to a PACS by C-STORE (``imaging.pacs``): where to, which object, its SOP
    Instance UID and how the PACS answered. A sending again is a new row (the same UID: the PACS
    replaces its copy)."""

    class Status(models.TextChoices):
        SENT = "sent", "Sent"
        REFUSED = "refused", "Refused by the PACS"

    class ObjectType(models.TextChoices):
        SECONDARY_CAPTURE = "sc", "Secondary Capture (heat map over the image, captioned)"
        STRUCTURED_REPORT = "sr", "Structured Report (the result as data)"

    finding = models.ForeignKey(ImagingFinding, on_delete=models.PROTECT, related_name="deliveries")
    patient = models.ForeignKey("patients.Patient", on_delete=models.PROTECT, related_name="+")
    destination = models.CharField(max_length=200, help_text="Called AE title @ host:port.")
    object_type = models.CharField("object", max_length=2, choices=ObjectType.choices,
                                   default=ObjectType.SECONDARY_CAPTURE)
    sop_instance_uid = models.CharField("SOP Instance UID", max_length=64)
    status = models.CharField(max_length=16, choices=Status.choices)
    detail = models.CharField(max_length=200, blank=True, help_text="The PACS's status code and its meaning.")
    job = models.ForeignKey("cdss.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["finding", "-created_at"], name="imgdelivery_finding_recent")]

    def __str__(self) -> str:
        return f"{self.sop_instance_uid} to {self.destination}: {self.status}"


class HeldImage(models.Model):
    """An image the DICOM listener received for a PatientID that no patient of its site has (yet):
    kept rather than refused (a modality often sends before the patient reaches this record, and
    many do not send a refused image again by themselves), until a patient with that MRN exists
    (the sweep then files it through the upload's checks: ``imaging.held``), an administrator
    discards it, or it has waited ``CDSS_IMAGING_HOLD_DAYS``. The file is removed from storage
    when it is filed (the image then has its own) or discarded; the row stays as the trail.

    Only what an administrator needs to match it is read from the file: the PatientID, the
    accession number (the order in the RIS), modality and study date; never names or birth dates."""

    class Status(models.TextChoices):
        HELD = "held", "Held: no patient with this PatientID yet"
        FILED = "filed", "Filed to the patient"
        REFUSED = "refused", "Could not be filed"
        DISCARDED = "discarded", "Discarded"

    external_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    site = models.ForeignKey("patients.Site", on_delete=models.PROTECT, related_name="+")
    patient_identifier = models.CharField("PatientID", max_length=64, help_text="The file's PatientID (0010,0020).")
    sop_instance_uid = models.CharField("SOP Instance UID", max_length=64)
    study_instance_uid = models.CharField("Study Instance UID", max_length=64, blank=True)
    accession_number = models.CharField(max_length=64, blank=True)
    modality = models.CharField(max_length=16, blank=True)
    study_date = models.DateField(null=True, blank=True)
    calling_ae = models.CharField("sent by (AE title)", max_length=16, blank=True)
    file = models.FileField(upload_to="imaging/", max_length=255, blank=True)  # emptied when filed or discarded
    size_bytes = models.BigIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.HELD)
    detail = models.CharField(max_length=200, blank=True, help_text="Why it could not be filed, or was discarded.")
    instance = models.ForeignKey(ImagingInstance, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
                                 help_text="The image it was filed as.")
    received_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")

    class Meta:
        ordering = ["-received_at", "-id"]
        permissions = [("resolve_heldimage", "Can file or discard held images")]
        constraints = [
            # held once: the same image sent again while it waits is the same row
            models.UniqueConstraint(fields=["sop_instance_uid"], condition=models.Q(status="held"),
                                    name="imgheld_held_once"),
        ]
        indexes = [
            # the sweep: held images by site and PatientID, the oldest first
            models.Index(fields=["site", "patient_identifier"], name="imgheld_waiting",
                         condition=models.Q(status="held")),
        ]

    def __str__(self) -> str:
        return f"{self.modality or 'image'} held {self.received_at:%Y-%m-%d %H:%M}" if self.received_at else "held image"

    @property
    def patient(self) -> Any:
        """The patient it was filed to (None while held, refused or discarded)."""
        return self.instance.patient if self.instance is not None else None
