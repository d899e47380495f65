"""Note extraction results: append-only, one extraction per note and pipeline version."""

from __future__ import annotations

import uuid

from django.db import models


class NoteExtraction(models.Model):
    """The facts one pipeline version found in one note. Re-running the same version writes
    nothing (unique key); a new version adds a new extraction beside the old one."""

    external_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    note = models.ForeignKey("patients.ClinicalNote", on_delete=models.PROTECT, related_name="+")
    patient = models.ForeignKey("patients.Patient", on_delete=models.PROTECT, related_name="+")
    pipeline_version = models.CharField(max_length=64)
    sections = models.JSONField(default=list, blank=True)
    fact_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    job = models.ForeignKey("cdss.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["note", "pipeline_version"], name="noteextraction_once_per_version"),
        ]
        indexes = [models.Index(fields=["patient", "-created_at"], name="noteext_patient_recent")]

    def __str__(self) -> str:
        return f"{self.pipeline_version}: {self.fact_count} facts"


class NoteFact(models.Model):
    """One finding in a note, with its span, section, context and the stage that produced it."""

    extraction = models.ForeignKey(NoteExtraction, on_delete=models.PROTECT, related_name="facts")
    patient = models.ForeignKey("patients.Patient", on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=32)
    concept_id = models.CharField(max_length=100, blank=True)
    preferred = models.CharField(max_length=300, blank=True)
    codes = models.JSONField(default=list, blank=True)
    text = models.CharField(max_length=500)
    start = models.PositiveIntegerField()
    end = models.PositiveIntegerField()
    section = models.CharField(max_length=100, blank=True)
    negated = models.BooleanField(default=False)
    historical = models.BooleanField(default=False)
    hypothetical = models.BooleanField(default=False)
    uncertain = models.BooleanField(default=False)
    experiencer = models.CharField(max_length=16, default="patient")
    family_relation = models.CharField(max_length=64, blank=True)
    stage = models.CharField(max_length=64)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["extraction", "start"]
        indexes = [models.Index(fields=["patient", "concept_id"], name="notefact_patient_concept")]

    def __str__(self) -> str:
        return f"{self.preferred or self.text} [{self.start}:{self.end}]"
