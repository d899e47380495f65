"""Risk results: append-only assessments, one per calculator run with distinct inputs."""

from __future__ import annotations

import uuid

from django.db import models


class RiskAssessment(models.Model):
    """One calculator (or model) applied to one patient's record at one time.

    Append-only: a re-run with new inputs adds a row (the latest row per calculator is current);
    a re-run with the same inputs writes nothing (unique key on the inputs' hash). ``inputs``
    keeps each value used with its unit, date and source row, so the result can be explained and
    reproduced; ``missing`` lists the inputs the record lacked (nothing is guessed).
    """

    class Status(models.TextChoices):
        COMPUTED = "computed", "Computed"
        MISSING_INPUTS = "missing-inputs", "Missing inputs"
        INVALID_INPUTS = "invalid-inputs", "Inputs out of the source's range"

    external_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    patient = models.ForeignKey("patients.Patient", on_delete=models.PROTECT, related_name="+")
    calculator = models.CharField(max_length=64)
    calculator_version = models.CharField(max_length=64)
    status = models.CharField(max_length=16, choices=Status.choices)
    value = models.FloatField(null=True, blank=True)
    unit = models.CharField(max_length=32, blank=True)
    category = models.CharField(max_length=64, blank=True)
    contributions = models.JSONField(default=dict, blank=True)
    inputs = models.JSONField(default=dict, blank=True)
    missing = models.JSONField(default=list, blank=True)
    problems = models.JSONField(default=dict, blank=True)
    details = models.JSONField(default=dict, blank=True)
    citation = models.TextField(blank=True)
    inputs_hash = models.CharField(max_length=64)
    as_of = models.DateTimeField(help_text="The record was read as of this time.")
    computed_at = models.DateTimeField(auto_now_add=True)
    job = models.ForeignKey("cdss.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["-computed_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["patient", "calculator", "calculator_version", "inputs_hash"],
                name="riskassessment_same_inputs_once",
            ),
        ]
        indexes = [
            models.Index(fields=["patient", "calculator", "-computed_at"], name="risk_patient_calc_latest"),
            models.Index(fields=["calculator", "status"], name="risk_calc_status"),
        ]

    def __str__(self) -> str:
        shown = f"{self.value:g} {self.unit}" if self.value is not None else self.get_status_display()
        return f"{self.calculator}: {shown}"
