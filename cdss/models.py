"""Base pieces every app uses: the audit log, jobs, and the model registry."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class AuditEvent(models.Model):
    """One read or write of a patient's data: who, which patient, what, when, from where."""

    class Action(models.TextChoices):
        VIEW = "view", "View"
        CREATE = "create", "Create"
        UPDATE = "update", "Update"
        IMPORT = "import", "Import"
        EXPORT = "export", "Export"
        SEARCH = "search", "Search"
        BREAK_GLASS = "break-glass", "Break-glass"

    external_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    at = models.DateTimeField(auto_now_add=True, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    patient = models.ForeignKey(
        "patients.Patient", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    action = models.CharField(max_length=16, choices=Action.choices)
    # What was touched, e.g. "patient-page", "api:$everything", "fhir-import".
    target = models.CharField(max_length=100)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    detail = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["-at"]
        indexes = [models.Index(fields=["patient", "-at"]), models.Index(fields=["user", "-at"])]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.user_id} {self.action} {self.target}"


class Job(models.Model):
    """One unit of queued work. The row is the truth; the broker message is only a doorbell.

    Lifecycle: ``queued`` -> ``running`` (claimed with a lease) -> ``succeeded``; an attempt that
    raises goes back to ``queued`` (``failed`` while it waits out its back-off), and after
    ``max_attempts`` the job is ``dead`` with its last error. A worker that dies leaves its
    lease to expire; the reaper re-queues the job.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed (will retry)"
        DEAD = "dead", "Dead"
        CANCELLED = "cancelled", "Cancelled"

    external_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    kind = models.CharField(max_length=64, db_index=True)
    queue = models.CharField(max_length=32)
    patient = models.ForeignKey(
        "patients.Patient", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # What the job works on, e.g. ("patients.clinicalnote", "42"); empty for population jobs.
    target_type = models.CharField(max_length=100, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    params = models.JSONField(default=dict, blank=True)
    input_hash = models.CharField(max_length=64, blank=True)
    version = models.CharField(max_length=64, blank=True)
    idempotency_key = models.CharField(max_length=300, unique=True)

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    attempts = models.PositiveSmallIntegerField(default=0)
    max_attempts = models.PositiveSmallIntegerField(default=3)
    available_at = models.DateTimeField(help_text="Not run before this time (retry back-off).")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    progress = models.PositiveSmallIntegerField(default=0)
    progress_message = models.CharField(max_length=200, blank=True)
    error = models.TextField(blank=True)
    result = models.JSONField(default=dict, blank=True)
    worker = models.CharField(max_length=200, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    published_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=models.Q(progress__lte=100), name="job_progress_0_100"),
        ]
        indexes = [
            # the relay: queued jobs not yet published (or due again)
            models.Index(fields=["status", "available_at"], name="job_status_available"),
            # the reaper: running jobs by lease expiry
            models.Index(fields=["status", "lease_expires_at"], name="job_status_lease"),
            models.Index(fields=["patient", "-created_at"], name="job_patient_recent"),
            models.Index(fields=["kind", "status"], name="job_kind_status"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk} {self.status}"

    @property
    def is_finished(self) -> bool:
        return self.status in (self.Status.SUCCEEDED, self.Status.DEAD, self.Status.CANCELLED)

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class ModelVersion(models.Model):
    """One trained model file with what it was trained on and how well it did: the registry.

    Rows are never edited after registration except ``active``: at most one version per name is
    active (a partial unique constraint), and that is the one predictions use. ``metrics`` holds
    one object per split (``train``, ``validation``, ``test``), each with ``n``, ``prevalence``,
    ``auc`` and ``auc_ci95``, ``brier``, ``calibration_slope`` and ``calibration_intercept``,
    plus whatever the trainer adds (``candidates``, ``cv``); an NLP assertion version
    (``nlp.assertion_registry``) holds its cross-validated figures per flag instead
    (``evaluation``, ``rows``, ``groups``, ``flags``: head, rules and combined precision / recall /
    F1). ``calibration`` holds the binned predicted-vs-observed points per split for the plot. ``file_path`` is relative to
    ``settings.CDSS_MODEL_DIR``; ``file_sha256`` is checked before the file is loaded.
    """

    class Kind(models.TextChoices):
        RISK = "risk", "Risk"
        IMAGING = "imaging", "Imaging"
        NLP = "nlp", "NLP"

    external_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=64, help_text='What the model predicts, e.g. "heart_disease".')
    version = models.CharField(max_length=32, help_text="Date and sequence number: 2026.11.25-1.")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    architecture = models.CharField(max_length=64)
    dataset = models.TextField(help_text="Data set name, file and its sha256.")
    split = models.TextField(help_text="How the rows were split between training, validation and test.")
    features = models.JSONField(default=list, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    calibration = models.JSONField(default=dict, blank=True)
    file_path = models.CharField(max_length=255)
    file_sha256 = models.CharField(max_length=64)
    trained_at = models.DateTimeField()
    training_seconds = models.FloatField(null=True, blank=True)
    active = models.BooleanField(default=False)
    notes = models.TextField(blank=True)
    registered_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "-trained_at"]
        constraints = [
            models.UniqueConstraint(fields=["name", "version"], name="modelversion_name_version_unique"),
            models.UniqueConstraint(
                fields=["name"], condition=models.Q(active=True), name="modelversion_one_active_per_name"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} {self.version}{' (active)' if self.active else ''}"

    def split_metrics(self, split: str = "test") -> dict[str, object]:
        figures = self.metrics.get(split) if isinstance(self.metrics, dict) else None
        return figures if isinstance(figures, dict) else {}
