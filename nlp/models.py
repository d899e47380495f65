"""Note extraction results: append-only, one extraction per note and pipeline version."""

from __future__ import annotations

import uuid

from django.conf import settings
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
    # Why the note could not be read (too long, or the pipeline failed on it); no facts then.
    error = models.CharField(max_length=300, blank=True)
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

    external_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
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


class NoteFactFeedback(models.Model):
    """A clinician's report that a fact found in a note is wrong, and in what way. Kept with the
    pipeline version and concept so that errors can be counted per version and per concept."""

    class Problem(models.TextChoices):
        CONCEPT = "concept", "Wrong concept (the words mean something else)"
        NOT_A_FINDING = "not-a-finding", "Not a finding at all"
        NEGATION = "negation", "Negation is wrong (present / absent)"
        EXPERIENCER = "experiencer", "Wrong person (patient / family / other)"
        HISTORICAL = "historical", "Wrong time (current / historical)"
        HYPOTHETICAL = "hypothetical", "Hypothetical or uncertain is wrong"
        SECTION = "section", "Wrong section"
        CODES = "codes", "Wrong codes"
        MEDICATION = "medication", "Wrong medication details (dose, route, frequency, status)"
        ALLERGY = "allergy", "Wrong allergy details (substance, reaction)"
        SPAN = "span", "Wrong words highlighted"
        OTHER = "other", "Something else"

    # Reports that say the fact does not hold as extracted (another concept, not a finding, the
    # opposite assertion, another person or time, other codes or medication details): from then on
    # decision support does not read the fact (``nlp.selectors.note_findings(disputed_by=...)``).
    # Wrong section, highlighted words or allergy details, or "something else", leave it read.
    DISPUTING = ("concept", "not-a-finding", "negation", "experiencer", "historical", "hypothetical", "codes",
                 "medication")

    external_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    fact = models.ForeignKey(NoteFact, on_delete=models.PROTECT, related_name="feedback")
    patient = models.ForeignKey("patients.Patient", on_delete=models.PROTECT, related_name="+")
    problem = models.CharField(max_length=32, choices=Problem.choices)
    comment = models.TextField(blank=True, max_length=2000)
    # Copied from the fact, for the admin's filters and per-version counts.
    concept_id = models.CharField(max_length=100, blank=True, db_index=True)
    kind = models.CharField(max_length=32, blank=True)
    pipeline_version = models.CharField(max_length=64, db_index=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "feedback on a note fact"
        verbose_name_plural = "feedback on note facts"

    def __str__(self) -> str:
        return f"{self.get_problem_display()}: {self.concept_id or self.kind}"


# --- the concept lexicon, as data edited in the admin ----------------------------------------


class LexiconConcept(models.Model):
    """A concept the extractor looks for: its preferred term, kind, the words that name it
    (``terms``) and its codes. Concepts are deactivated, not deleted: facts keep their id."""

    class Kind(models.TextChoices):
        # The kinds nlp.extract.KINDS knows.
        PROBLEM = "problem", "Problem"
        SYMPTOM = "symptom", "Symptom"
        FINDING = "finding", "Finding"
        PROCEDURE = "procedure", "Procedure"
        MEDICATION = "medication", "Medication"
        ALLERGEN = "allergen", "Allergen"

    concept_id = models.SlugField(
        "concept id", max_length=100, unique=True,
        help_text="Stable identifier (letters, digits, hyphens), stored with every fact found.",
    )
    preferred = models.CharField("preferred term", max_length=300)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    active = models.BooleanField(default=True, help_text="Inactive concepts are not looked for.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        # The lexicon's order is the order of creation (the order of nlp/lexicon.json for the seed).
        ordering = ["pk"]
        verbose_name = "lexicon concept"

    def __str__(self) -> str:
        return f"{self.preferred} ({self.concept_id})"


class LexiconTerm(models.Model):
    """A synonym or abbreviation of a concept. Synonyms match in any case; abbreviations of three
    characters or fewer match only with their exact case ("MI", not "mi")."""

    class Type(models.TextChoices):
        SYNONYM = "synonym", "Synonym"
        ABBREVIATION = "abbreviation", "Abbreviation"

    concept = models.ForeignKey(LexiconConcept, on_delete=models.CASCADE, related_name="terms")
    term_type = models.CharField("type", max_length=16, choices=Type.choices, default=Type.SYNONYM)
    text = models.CharField(max_length=200)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["concept", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["concept", "term_type", "text"], name="lexiconterm_once_per_concept"),
        ]

    def __str__(self) -> str:
        return self.text

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        from .lexicon_store import term_problem

        problem = term_problem(self.text)
        if problem:
            raise ValidationError({"text": problem[0].upper() + problem[1:] + "."})


class LexiconCode(models.Model):
    """A code of a concept in SNOMED CT, ICD-10-CM or RxNorm, so that a note finding can be
    treated like a coded record entry through the same value sets."""

    class System(models.TextChoices):
        SNOMED_CT = "http://snomed.info/sct", "SNOMED CT"
        ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm", "ICD-10-CM"
        RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm", "RxNorm"

    concept = models.ForeignKey(LexiconConcept, on_delete=models.CASCADE, related_name="codes")
    system = models.CharField(max_length=100, choices=System.choices)
    code = models.CharField(max_length=32)
    display = models.CharField(max_length=300, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["concept", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["concept", "system", "code"], name="lexiconcode_once_per_concept"),
        ]

    def __str__(self) -> str:
        return f"{self.get_system_display()} {self.code}"

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        from .lexicon_store import code_problem

        self.code = (self.code or "").strip()
        problem = code_problem(self.system, self.code)
        if problem:
            raise ValidationError({"code": problem[0].upper() + problem[1:] + "."})
