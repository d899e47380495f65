"""Models of decision support: value sets, versioned rules, recommendations.

- ``ValueSet`` / ``ValueSetCode`` / ``ConceptIsA``: named code lists (SNOMED CT, ICD-10-CM, LOINC,
  RxNorm, or a name to match in the record's text), with an optional "is-a" expansion table.
- ``Rule`` is the stable identity (slug, who sees it, shadow mode); ``RuleVersion`` holds what a
  rule says (conditions, severity, texts, citation). Editing an active rule makes a new draft
  version; at most one version of a rule is active (partial unique constraint).
- ``RuleTestCase``: a small patient (facts as JSON) and the expected outcome; run when a version
  is saved, failures block activation.
- ``Recommendation``: what a rule version said about a patient, with its trace; one active per
  patient and rule (partial unique constraint); never deleted (``resolved`` when it stops firing).
- ``RecommendationAction``: accept / override (coded reason, comment) by a user, in-app or
  through CDS Hooks. ``Snooze``: hide a rule for a patient until a time.
- ``PatientEvaluation``: when a patient was last evaluated (the schedule's bookkeeping).
- ``Backtest``: a version run over the population, compared with the active version.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q


class CodeSystem(models.TextChoices):
    SNOMED = "http://snomed.info/sct", "SNOMED CT"
    ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm", "ICD-10-CM"
    LOINC = "http://loinc.org", "LOINC"
    RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm", "RxNorm"
    HGNC = "http://www.genenames.org", "HGNC (gene symbol)"
    TEXT = "text", "Name (matched in the display text)"


class Severity(models.TextChoices):
    INFO = "info", "Info"
    WARNING = "warning", "Warning"
    CRITICAL = "critical", "Critical"


SEVERITY_RANK = {Severity.CRITICAL: 0, Severity.WARNING: 1, Severity.INFO: 2}


def default_override_reasons() -> list[dict[str, str]]:
    """The reasons a clinician may give for not following a card: HL7 CDS Hooks Non-Adherence
    Reason codes (CDS Hooks 3.0.0-ballot, 2025, CodeSystem non-adherence-reason-codes, from the
    AHRQ CDSiC override taxonomy; the "clinical selection" value set's categories and sub-codes)."""
    system = "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes"
    return [
        {"system": system, "code": code, "display": display}
        for code, display in (
            ("cds-not-applicable", "Does not apply to this patient"),
            ("patient-ineligible", "Patient does not meet eligibility for the recommended action"),
            ("indication-order-exists", "An order for the recommended action already exists"),
            ("action-completed", "Recommended action was already completed"),
            ("action-unsuccessful", "Recommended action was previously unsuccessful"),
            ("cds-suboptimal-context", "Delivered in a context where it cannot be acted on"),
            ("recipient-disagrees-evidence", "Disagrees with the recommendation's evidence"),
        )
    ]


# --------------------------------------------------------------------------------------------
# Value sets


class ValueSet(models.Model):
    """A named list of codes (and, for medications, names) that rules refer to by slug."""

    class Kind(models.TextChoices):
        CONDITION = "condition", "Conditions"
        MEDICATION = "medication", "Medications"
        OBSERVATION = "observation", "Observations (laboratory, vital signs)"
        ALLERGY = "allergy", "Allergies"
        OTHER = "other", "Other"

    external_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    slug = models.SlugField(max_length=100, unique=True, help_text="The name rules use, e.g. 'statins'.")
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    description = models.TextField(blank=True)
    source = models.TextField(blank=True, help_text="Where the codes come from (VSAC OID, guideline...).")
    dimension = models.CharField(
        max_length=32, blank=True,
        help_text="Observations: the analyte's unit dimension (e.g. cholesterol, egfr, hba1c; see decision.units); "
                  "values are converted to its canonical unit.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class ValueSetCode(models.Model):
    """One member of a value set.

    ``match``: ``exact`` (the code), ``prefix`` (the code and every longer code that starts with
    it, e.g. ICD-10-CM ``E11`` covers ``E11.9``), ``is-a`` (the code and its descendants in the
    ``ConceptIsA`` table), ``name`` (``code`` is a word to find in the record's display text,
    case-insensitive, e.g. a medication's ingredient name).
    """

    class Match(models.TextChoices):
        EXACT = "exact", "Exact code"
        PREFIX = "prefix", "Code prefix"
        IS_A = "is-a", "Code and its descendants"
        NAME = "name", "Name in the display text"

    value_set = models.ForeignKey(ValueSet, on_delete=models.CASCADE, related_name="codes")
    system = models.CharField(max_length=200, choices=CodeSystem.choices)
    code = models.CharField(max_length=200)
    display = models.CharField(max_length=300, blank=True)
    match = models.CharField(max_length=8, choices=Match.choices, default=Match.EXACT)

    class Meta:
        ordering = ["value_set", "system", "code"]
        constraints = [
            models.UniqueConstraint(fields=["value_set", "system", "code", "match"], name="valuesetcode_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.get_system_display()} {self.code}"


class ConceptIsA(models.Model):
    """Optional "is-a" expansion: ``child`` is a (direct or indirect) subtype of ``parent``. Rows
    are loaded from a terminology release (transitive closure) by ``import_value_sets``."""

    system = models.CharField(max_length=200, choices=CodeSystem.choices)
    parent = models.CharField(max_length=200)
    child = models.CharField(max_length=200)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["system", "parent", "child"], name="conceptisa_unique"),
        ]
        indexes = [models.Index(fields=["system", "parent"], name="conceptisa_parent")]

    def __str__(self) -> str:
        return f"{self.child} is-a {self.parent}"


# --------------------------------------------------------------------------------------------
# Rules


class Rule(models.Model):
    """The identity of a rule across its versions, and who sees its recommendations."""

    class Category(models.TextChoices):
        PREVENTION = "prevention", "Prevention"
        MEDICATION_SAFETY = "medication-safety", "Medication safety"
        PHARMACOGENOMICS = "pharmacogenomics", "Pharmacogenomics"
        CHRONIC_DISEASE = "chronic-disease", "Chronic disease"
        ACUTE_CARE = "acute-care", "Acute care"
        DIAGNOSIS = "diagnosis", "Diagnosis and documentation"
        IMAGING = "imaging", "Imaging"
        OTHER = "other", "Other"

    external_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    slug = models.SlugField(max_length=100, unique=True)
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    category = models.CharField(max_length=32, choices=Category.choices, default=Category.OTHER)
    sites = models.ManyToManyField(
        "patients.Site", blank=True, related_name="+", help_text="Sites whose patients it applies to; none = all."
    )
    specialties = models.JSONField(
        default=list, blank=True, help_text='Specialties that see it, e.g. ["cardiology"]; empty = everyone.'
    )
    shadow = models.BooleanField(
        default=False, help_text="Shadow mode: recommendations are recorded but not shown to clinicians."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.title or self.slug

    def active_version(self) -> RuleVersion | None:
        return self.versions.filter(status=RuleVersion.Status.ACTIVE).first()


class RuleVersion(models.Model):
    """What a rule says, frozen once active: editing makes a new draft.

    ``conditions`` is a JSON tree, validated by ``decision.engine.validate_conditions``::

        {"all": [ {"fact": "observation:ldl", "op": ">=", "value": 190, "unit": "mg/dL",
                   "lookback_days": 730},
                  {"any": [ ... ]} ]}

    (``all``/``any`` at the top, one level of nesting). ``summary_template`` may show fact values
    with ``{name}`` placeholders (the condition's ``name``, see the engine).
    """

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        ACTIVE = "active", "Active"
        RETIRED = "retired", "Retired"

    external_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    rule = models.ForeignKey(Rule, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.DRAFT)
    severity = models.CharField(max_length=8, choices=Severity.choices, default=Severity.WARNING)
    conditions = models.JSONField(default=dict)
    summary_template = models.TextField(help_text="The card's one-line summary; {name} shows a fact's value.")
    detail_template = models.TextField(blank=True, help_text="Longer text under the summary; may show facts.")
    rationale = models.TextField(blank=True)
    citation_source = models.TextField(blank=True, help_text="Guideline or paper, year, table.")
    citation_url = models.URLField(max_length=500, blank=True)
    suggested_actions = models.JSONField(
        default=list, blank=True, help_text='[{"label": "Start a moderate-intensity statin", "type": "order"}]'
    )
    override_reasons = models.JSONField(default=default_override_reasons, blank=True)
    change_note = models.TextField(blank=True, help_text="What changed from the version it was made from.")
    based_on = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="The version this one was copied from (edit or restore).",
    )
    test_results = models.JSONField(default=list, blank=True, help_text="The rule test cases' last run.")
    tests_passed = models.BooleanField(null=True, blank=True, help_text="None: not run yet.")
    tested_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    activated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    activated_at = models.DateTimeField(null=True, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["rule", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["rule", "number"], name="ruleversion_number_unique"),
            models.UniqueConstraint(
                fields=["rule"], condition=Q(status="active"), name="ruleversion_one_active_per_rule"
            ),
        ]
        indexes = [models.Index(fields=["status"], name="ruleversion_status")]

    def __str__(self) -> str:
        return f"{self.rule.slug} v{self.number} ({self.status})"


class RuleTestCase(models.Model):
    """A small patient and what the rule should do with it. Belongs to the rule, so every new
    version is held to the same cases.

    ``facts`` uses the JSON form of ``decision.facts.Facts`` (see ``Facts.from_json``).
    """

    class Expect(models.TextChoices):
        FIRES = "fires", "Fires"
        DOES_NOT_FIRE = "does-not-fire", "Does not fire"

    external_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    rule = models.ForeignKey(Rule, on_delete=models.CASCADE, related_name="test_cases")
    name = models.CharField(max_length=200)
    facts = models.JSONField(default=dict)
    expect = models.CharField(max_length=16, choices=Expect.choices)
    expected_message = models.CharField(
        max_length=500, blank=True, help_text="Text the summary must contain when it fires (optional)."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["rule", "name"]
        constraints = [models.UniqueConstraint(fields=["rule", "name"], name="ruletestcase_name_unique")]

    def __str__(self) -> str:
        return f"{self.rule.slug}: {self.name}"


# --------------------------------------------------------------------------------------------
# Recommendations


class Recommendation(models.Model):
    """What a rule version said about a patient.

    Lifecycle: ``active`` -> ``accepted`` | ``overridden`` (a clinician's action) | ``resolved``
    (the rule no longer fires). Re-evaluation updates the open row (``closed_at`` is null); it
    never makes a second one. When an accepted or overridden recommendation stops firing, it is
    closed (``closed_at`` set) and keeps its status; the next firing opens a new row.
    """

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        ACCEPTED = "accepted", "Accepted"
        OVERRIDDEN = "overridden", "Overridden"
        RESOLVED = "resolved", "Resolved"

    external_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    patient = models.ForeignKey("patients.Patient", on_delete=models.PROTECT, related_name="+")
    rule = models.ForeignKey(Rule, on_delete=models.PROTECT, related_name="recommendations")
    rule_version = models.ForeignKey(RuleVersion, on_delete=models.PROTECT, related_name="recommendations")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    severity = models.CharField(max_length=8, choices=Severity.choices)
    shadow = models.BooleanField(default=False, help_text="Recorded in shadow mode: not shown to clinicians.")
    summary = models.TextField()
    detail = models.TextField(blank=True)
    trace = models.JSONField(default=list, blank=True)
    facts_digest = models.CharField(max_length=64, blank=True, help_text="Hash of the trace's facts.")
    first_fired_at = models.DateTimeField()
    last_fired_at = models.DateTimeField()
    status_changed_at = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-last_fired_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["patient", "rule"], condition=Q(status="active"),
                name="recommendation_one_active_per_patient_rule",
            ),
            models.UniqueConstraint(
                fields=["patient", "rule"], condition=Q(closed_at__isnull=True),
                name="recommendation_one_open_per_patient_rule",
            ),
        ]
        indexes = [
            models.Index(fields=["patient", "status"], name="rec_patient_status"),
            models.Index(fields=["rule", "status"], name="rec_rule_status"),
            models.Index(fields=["status", "severity"], name="rec_status_severity"),
        ]

    def __str__(self) -> str:
        return f"{self.rule.slug}: {self.status}"

    @property
    def severity_rank(self) -> int:
        return SEVERITY_RANK.get(Severity(self.severity), 9)


class RecommendationAction(models.Model):
    """A clinician's response to a recommendation (feedback). Append-only."""

    class Action(models.TextChoices):
        ACCEPT = "accept", "Accepted"
        OVERRIDE = "override", "Overridden"

    class Source(models.TextChoices):
        IN_APP = "in-app", "In the application"
        CDS_HOOKS = "cds-hooks", "CDS Hooks feedback"

    external_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    recommendation = models.ForeignKey(Recommendation, on_delete=models.PROTECT, related_name="actions")
    rule = models.ForeignKey(Rule, on_delete=models.PROTECT, related_name="+")
    rule_version = models.ForeignKey(RuleVersion, on_delete=models.PROTECT, related_name="+")
    action = models.CharField(max_length=16, choices=Action.choices)
    reason_code = models.CharField(max_length=100, blank=True)
    reason_display = models.CharField(max_length=300, blank=True)
    comment = models.TextField(blank=True)
    suggestion = models.CharField(max_length=300, blank=True, help_text="The suggested action accepted, if any.")
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.IN_APP)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="+")
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-at"]
        indexes = [
            models.Index(fields=["rule", "action", "at"], name="recaction_rule_action_at"),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.reason_code}".strip()


class Snooze(models.Model):
    """A rule hidden for one patient until a time (the rule still evaluates; its card is hidden)."""

    external_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    patient = models.ForeignKey("patients.Patient", on_delete=models.PROTECT, related_name="+")
    rule = models.ForeignKey(Rule, on_delete=models.PROTECT, related_name="snoozes")
    until = models.DateTimeField()
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="+")
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-until"]
        indexes = [models.Index(fields=["patient", "rule", "-until"], name="snooze_patient_rule_until")]

    def __str__(self) -> str:
        return f"{self.rule.slug} until {self.until:%Y-%m-%d %H:%M}"


class PatientEvaluation(models.Model):
    """When a patient's record was last evaluated against the active rules."""

    patient = models.OneToOneField("patients.Patient", on_delete=models.CASCADE, related_name="+")
    evaluated_at = models.DateTimeField()
    fired = models.PositiveIntegerField(default=0)
    job = models.ForeignKey("cdss.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    def __str__(self) -> str:
        return f"evaluated {self.evaluated_at:%Y-%m-%d %H:%M}"


class Backtest(models.Model):
    """A rule version run over the population (no recommendation written), compared with the
    rule's active version: how many patients each fires for, and a sample with traces. Queued
    from the admin it runs as ``decision.backtest`` jobs, one per chunk of patients; each job's
    counts land in ``parts`` and the last one to finish adds them up."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    external_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    rule_version = models.ForeignKey(RuleVersion, on_delete=models.CASCADE, related_name="backtests")
    compared_with = models.ForeignKey(
        RuleVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="The rule's active version when the backtest ran.",
    )
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.QUEUED)
    patients = models.PositiveIntegerField(default=0)
    fired = models.PositiveIntegerField(default=0)
    compared_fired = models.PositiveIntegerField(default=0)
    newly_fired = models.PositiveIntegerField(default=0, help_text="Fires for the draft, not for the active one.")
    no_longer_fired = models.PositiveIntegerField(default=0, help_text="Fires for the active one, not the draft.")
    sample = models.JSONField(default=list, blank=True, help_text="A few patients' results with traces.")
    chunks = models.PositiveIntegerField(default=0, help_text="Jobs the population was split into (0: in-process).")
    parts = models.JSONField(default=dict, blank=True,
                             help_text="Each finished job's counts and sample, by chunk number.")
    error = models.TextField(blank=True)
    seconds = models.FloatField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    job = models.ForeignKey("cdss.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"backtest of {self.rule_version} ({self.status})"

    def as_dict(self) -> dict[str, Any]:
        return {"patients": self.patients, "fired": self.fired, "compared_fired": self.compared_fired,
                "newly_fired": self.newly_fired, "no_longer_fired": self.no_longer_fired}

    @property
    def chunks_done(self) -> int:
        return len(self.parts or {})
