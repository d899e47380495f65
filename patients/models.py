"""The patient record, modelled on FHIR R4 so that import and export map field to field.

Every clinical row keeps:
- ``external_id``: the UUID used in every URL and API (integer keys never leave the server);
- ``fhir_id``: the resource id it came from (unique per patient, enforced by PostgreSQL);
- ``raw``: the FHIR JSON as imported, with references rewritten to ``Type/id``;
- ``content_hash``: SHA-256 of ``raw``, so a re-import of the same content writes nothing.

Clinical facts are never deleted: they are marked ``entered-in-error`` (see
``patients.services.clinical_fact_mark_entered_in_error``).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q

ENTERED_IN_ERROR = "entered-in-error"


class Site(models.Model):
    """A hospital or clinic. Clinicians see the patients of the sites they belong to."""

    external_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    code = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="SiteMembership", related_name="sites", blank=True
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class SiteMembership(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    site = models.ForeignKey(Site, on_delete=models.CASCADE)
    specialty = models.CharField(max_length=100, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "site"], name="site_membership_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.user} @ {self.site}"


class FhirBacked(models.Model):
    """Columns shared by every row that mirrors a FHIR resource."""

    external_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    fhir_id = models.CharField(max_length=200)
    raw = models.JSONField(default=dict, blank=True)
    content_hash = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class Organization(FhirBacked):
    """A FHIR Organization (provider, payer...). One row per organization across bundles."""

    name = models.CharField(max_length=300, blank=True)
    identifier_system = models.CharField(max_length=300, blank=True)
    identifier_value = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["fhir_id"], name="organization_fhir_id_unique")]
        indexes = [models.Index(fields=["identifier_system", "identifier_value"])]

    def __str__(self) -> str:
        return self.name or self.fhir_id


class Practitioner(FhirBacked):
    """A FHIR Practitioner. One row per practitioner across bundles."""

    name = models.CharField(max_length=300, blank=True)
    npi = models.CharField("NPI", max_length=32, blank=True)
    identifier_system = models.CharField(max_length=300, blank=True)
    identifier_value = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["fhir_id"], name="practitioner_fhir_id_unique")]
        indexes = [models.Index(fields=["identifier_system", "identifier_value"])]

    def __str__(self) -> str:
        return self.name or self.fhir_id


class Patient(FhirBacked):
    class Sex(models.TextChoices):
        FEMALE = "female", "Female"
        MALE = "male", "Male"
        OTHER = "other", "Other"
        UNKNOWN = "unknown", "Unknown"

    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="patients")
    mrn = models.CharField("MRN", max_length=100)
    family_name = models.CharField(max_length=200, blank=True)
    given_names = models.CharField(max_length=200, blank=True)
    birth_date = models.DateField(null=True, blank=True)
    sex = models.CharField(max_length=16, choices=Sex.choices, default=Sex.UNKNOWN)
    deceased = models.BooleanField(default=False)
    deceased_at = models.DateTimeField(null=True, blank=True)
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["family_name", "given_names"]
        constraints = [
            models.UniqueConstraint(fields=["site", "mrn"], name="patient_site_mrn_unique"),
            models.UniqueConstraint(fields=["site", "fhir_id"], name="patient_site_fhir_id_unique"),
        ]
        indexes = [
            models.Index(fields=["site", "family_name", "given_names"]),
            models.Index(fields=["mrn"]),
        ]

    def __str__(self) -> str:
        return f"{self.display_name} ({self.mrn})"

    @property
    def display_name(self) -> str:
        return f"{self.family_name.upper()}, {self.given_names}".strip(", ")

    def age_on(self, when: dt.date) -> int | None:
        """Age in whole years on ``when`` (None without a birth date)."""
        if self.birth_date is None:
            return None
        end = self.deceased_at.date() if self.deceased_at and self.deceased_at.date() < when else when
        years = end.year - self.birth_date.year
        if (end.month, end.day) < (self.birth_date.month, self.birth_date.day):
            years -= 1
        return years


class BreakGlassAccess(models.Model):
    """A clinician's emergency access to a patient of a site they do not belong to: asked for with
    a reason, granted for ``CDSS_BREAK_GLASS_HOURS``, kept for review (admin, read-only). Every
    page seen meanwhile is in the audit log as usual; the grant itself is audited as
    ``break-glass``."""

    external_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="break_glass")
    reason = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    expires_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "break-glass access"
        verbose_name_plural = "break-glass accesses"
        indexes = [models.Index(fields=["user", "expires_at"])]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.user_id} -> {self.patient_id}"


class ClinicalQuerySet(models.QuerySet[Any]):
    def current(self) -> ClinicalQuerySet:
        """Rows that are not marked entered-in-error."""
        return self.exclude(status=ENTERED_IN_ERROR)


class ClinicalFact(FhirBacked):
    """A fact about one patient. ``status`` holds the FHIR status (or verification status)."""

    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=32, blank=True, db_index=True)

    objects = ClinicalQuerySet.as_manager()

    class Meta:
        abstract = True

    @property
    def entered_in_error(self) -> bool:
        return self.status == ENTERED_IN_ERROR


class Coded(models.Model):
    """The first coding of a CodeableConcept, plus its text."""

    code_system = models.CharField(max_length=200, blank=True)
    code = models.CharField(max_length=100, blank=True)
    display = models.CharField(max_length=500, blank=True)

    class Meta:
        abstract = True


def _patient_fhir_unique(name: str) -> models.UniqueConstraint:
    return models.UniqueConstraint(fields=["patient", "fhir_id"], name=f"{name}_patient_fhir_id_unique")


class Encounter(ClinicalFact, Coded):
    class_code = models.CharField(max_length=32, blank=True)
    period_start = models.DateTimeField(null=True, blank=True)
    period_end = models.DateTimeField(null=True, blank=True)
    reason_display = models.CharField(max_length=500, blank=True)
    service_provider = models.ForeignKey(
        Organization, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    practitioner = models.ForeignKey(
        Practitioner, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        ordering = ["-period_start"]
        constraints = [_patient_fhir_unique("encounter")]
        indexes = [models.Index(fields=["patient", "-period_start"])]

    def __str__(self) -> str:
        return f"{self.display or self.class_code} {self.period_start:%Y-%m-%d}" if self.period_start else self.display


class Condition(ClinicalFact, Coded):
    """``status`` is the verification status; ``clinical_status`` active/resolved/..."""

    encounter = models.ForeignKey(Encounter, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    clinical_status = models.CharField(max_length=32, blank=True)
    category = models.CharField(max_length=64, blank=True)
    onset_at = models.DateTimeField(null=True, blank=True)
    abatement_at = models.DateTimeField(null=True, blank=True)
    recorded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-onset_at"]
        constraints = [_patient_fhir_unique("condition")]
        indexes = [
            models.Index(fields=["patient", "clinical_status"]),
            models.Index(fields=["patient", "code_system", "code"]),
        ]

    def __str__(self) -> str:
        return self.display or self.code

    @property
    def is_active(self) -> bool:
        return self.clinical_status in {"active", "recurrence", "relapse"} and not self.entered_in_error


class Observation(ClinicalFact, Coded):
    """A measurement or finding. Components (e.g. systolic and diastolic blood pressure) are
    stored as child rows with ``parent`` set, so that "latest systolic BP" is one index lookup
    like any other code."""

    encounter = models.ForeignKey(Encounter, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="components"
    )
    category = models.CharField(max_length=64, blank=True, db_index=True)
    value_quantity = models.FloatField(null=True, blank=True)
    value_unit = models.CharField("UCUM unit", max_length=64, blank=True)
    value_comparator = models.CharField(max_length=2, blank=True)
    value_code_system = models.CharField(max_length=200, blank=True)
    value_code = models.CharField(max_length=100, blank=True)
    value_display = models.CharField(max_length=500, blank=True)
    value_string = models.TextField(blank=True)
    effective_at = models.DateTimeField(null=True, blank=True)
    issued_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-effective_at"]
        constraints = [_patient_fhir_unique("observation")]
        indexes = [
            # "Latest value of code X for patient P": one descending index scan, first row.
            models.Index(fields=["patient", "code", "-effective_at"], name="obs_patient_code_latest"),
            models.Index(fields=["patient", "category", "-effective_at"], name="obs_patient_cat_time"),
        ]

    def __str__(self) -> str:
        return f"{self.display or self.code}: {self.value_text}"

    @property
    def value_text(self) -> str:
        if self.value_quantity is not None:
            return f"{self.value_comparator}{self.value_quantity:g} {self.value_unit}".strip()
        return self.value_display or self.value_code or self.value_string


class MedicationRequest(ClinicalFact, Coded):
    """``code`` is the RxNorm code where the source gives one (``code_system`` says)."""

    encounter = models.ForeignKey(Encounter, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    intent = models.CharField(max_length=32, blank=True)
    dosage_text = models.TextField(blank=True)
    authored_at = models.DateTimeField(null=True, blank=True)
    period_start = models.DateTimeField(null=True, blank=True)
    period_end = models.DateTimeField(null=True, blank=True)
    requester = models.ForeignKey(Practitioner, null=True, blank=True, on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["-authored_at"]
        constraints = [_patient_fhir_unique("medicationrequest")]
        indexes = [
            models.Index(fields=["patient", "status"]),
            models.Index(fields=["patient", "code_system", "code"]),
        ]

    def __str__(self) -> str:
        return self.display or self.code


class AllergyIntolerance(ClinicalFact, Coded):
    """``status`` is the verification status."""

    clinical_status = models.CharField(max_length=32, blank=True)
    allergy_type = models.CharField(max_length=32, blank=True)
    category = models.CharField(max_length=64, blank=True)
    criticality = models.CharField(max_length=32, blank=True)
    reaction = models.CharField(max_length=500, blank=True)
    onset_at = models.DateTimeField(null=True, blank=True)
    recorded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["display"]
        constraints = [_patient_fhir_unique("allergyintolerance")]
        indexes = [models.Index(fields=["patient", "clinical_status"])]

    def __str__(self) -> str:
        return self.display or self.code


class Procedure(ClinicalFact, Coded):
    encounter = models.ForeignKey(Encounter, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    performed_start = models.DateTimeField(null=True, blank=True)
    performed_end = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-performed_start"]
        constraints = [_patient_fhir_unique("procedure")]
        indexes = [models.Index(fields=["patient", "-performed_start"])]

    def __str__(self) -> str:
        return self.display or self.code


class Immunization(ClinicalFact, Coded):
    """``code`` is the vaccine code (CVX in Synthea)."""

    encounter = models.ForeignKey(Encounter, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    occurrence_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-occurrence_at"]
        constraints = [_patient_fhir_unique("immunization")]
        indexes = [models.Index(fields=["patient", "-occurrence_at"])]

    def __str__(self) -> str:
        return self.display or self.code


class ClinicalNote(ClinicalFact, Coded):
    """A note's text. From a FHIR DocumentReference, a DiagnosticReport's presentedForm, or typed
    in. ``code`` is the note type (LOINC document type in Synthea)."""

    class Source(models.TextChoices):
        DOCUMENT_REFERENCE = "DocumentReference", "DocumentReference"
        DIAGNOSTIC_REPORT = "DiagnosticReport", "DiagnosticReport"
        TYPED = "typed", "Typed in"

    source_type = models.CharField(max_length=32, choices=Source.choices)
    encounter = models.ForeignKey(Encounter, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    author = models.ForeignKey(Practitioner, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    author_display = models.CharField(max_length=300, blank=True)
    written_at = models.DateTimeField(null=True, blank=True)
    content_type = models.CharField(max_length=100, blank=True)
    text = models.TextField(blank=True)

    class Meta:
        ordering = ["-written_at"]
        constraints = [_patient_fhir_unique("clinicalnote")]
        indexes = [models.Index(fields=["patient", "-written_at"])]

    def __str__(self) -> str:
        return f"{self.display or 'Note'} {self.written_at:%Y-%m-%d}" if self.written_at else (self.display or "Note")


class GenomicResult(ClinicalFact):
    """A pharmacogenomic or genetic result (gene, diplotype, phenotype), from a FHIR Observation
    in the genomics profile (components 48018-6 gene studied, 84413-4 genotype display,
    53040-2/79716-7 phenotype)."""

    observation = models.OneToOneField(
        Observation, null=True, blank=True, on_delete=models.PROTECT, related_name="genomic_result"
    )
    gene = models.CharField(max_length=64)
    diplotype = models.CharField(max_length=128, blank=True)
    phenotype = models.CharField(max_length=200, blank=True)
    effective_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["gene"]
        constraints = [_patient_fhir_unique("genomicresult")]
        indexes = [models.Index(fields=["patient", "gene", "-effective_at"])]

    def __str__(self) -> str:
        return f"{self.gene} {self.diplotype} {self.phenotype}".strip()


CLINICAL_MODELS: tuple[type[ClinicalFact], ...] = (
    Encounter,
    Condition,
    Observation,
    MedicationRequest,
    AllergyIntolerance,
    Procedure,
    Immunization,
    ClinicalNote,
    GenomicResult,
)

ACTIVE_CONDITION = Q(clinical_status__in=["active", "recurrence", "relapse"]) & ~Q(status=ENTERED_IN_ERROR)
