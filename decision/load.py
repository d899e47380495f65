"""Facts from the database: ``load_facts(patient)`` and ``load_facts_bulk(patient_ids)``.

A fixed number of queries whatever the number of patients or rows (pinned in
tests/decision/test_load.py): patients, observations, conditions, medications, allergies,
genomic results, genomic observations of the second FHIR shape, latest risk assessments, note
findings; imaging findings come from a provider that adds its own fixed queries once the imaging
app stores findings. The value sets (``fact_plan``) cost three more queries, or none when a plan
is passed in (population runs build it once).

Genomic results arrive in two FHIR shapes (HL7 Genomics Reporting): (1) the gene in a component
48018-6 "Gene studied", the phenotype in a component 53040-2 or as the Observation's own value;
(2) the gene in the Observation's ``code`` (an HGNC coding, a coding display or the text) and the
result as its value (``valueCodeableConcept`` or ``valueString``). The importer makes a
``GenomicResult`` row for both (``patients.fhir.mapping``); rows stored before it read shape 2
and the top-level phenotype are still read here from the Observation rows (one more query).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import connection
from django.db.models import BooleanField, Exists, F, FloatField, Model, OuterRef, Q, Subquery
from django.db.models.expressions import RawSQL
from django.urls import reverse
from django.utils import timezone

from nlp.selectors import note_findings
from patients.fhir.resources import PGX_GENES
from patients.models import (
    ACTIVE_CONDITION,
    ENTERED_IN_ERROR,
    AllergyIntolerance,
    ClinicalNote,
    Condition,
    GenomicResult,
    MedicationRequest,
    Observation,
    Patient,
)
from patients.selectors import ACTIVE_MEDICATION_STATUSES
from risk.models import RiskAssessment

from .engine import RXNORM
from .facts import CodedFact, Facts, GenomicFact, ImagingFinding, NoteFinding, ObservationFact, RiskFact, dose_mg
from .units import ALL_DIMENSIONS, UnitError, canonical_unit, dimension_of, normalise_unit
from .valuesets import Members, ValueSetIndex, canonical_system

DEFAULT_LOOKBACK_DAYS = 3 * 365
PHENOTYPE_CODES = ("53040-2", "79716-7", "51963-7")
# CPIC genes (CPIC gene list, 2024) and HLA alleles, as they appear in an Observation's code.
_GENES = PGX_GENES
GENE_PATTERN = re.compile(_GENES, re.IGNORECASE)  # the same pattern runs in PostgreSQL (no \b there)
PREGNANCY_STATUS = "82810-3"  # LOINC Pregnancy status
PREGNANT_ANSWERS = frozenset({"LA15173-0", "77386006"})  # "Pregnant" (LOINC answer, SNOMED CT)
NOT_PREGNANT_ANSWERS = frozenset({"LA26683-5", "60001007"})


@dataclass
class FactPlan:
    """What to load: the value sets (for matching and the observation codes to read) and how far
    back to read observation history."""

    value_sets: ValueSetIndex = field(default_factory=dict)
    lookback_days: int = DEFAULT_LOOKBACK_DAYS
    risk_calculators: set[str] | None = None  # None: every calculator and model
    # RxNorm product code -> the ingredient codes it contains (the is-a table's RxNorm rows)
    ingredients: dict[str, frozenset[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.dimensions: dict[str, str] = {}
        for members in self.value_sets.values():
            if members.kind == "observation":
                for code in members.all_codes():
                    if members.dimension:
                        self.dimensions.setdefault(code, members.dimension)
                    else:
                        self.dimensions.setdefault(code, "")

    @property
    def observation_codes(self) -> set[str]:
        return set(self.dimensions) | {PREGNANCY_STATUS}

    def ingredients_of(self, system: str, code: str) -> tuple[str, ...]:
        """The RxNorm ingredient codes of an RxNorm-coded medication or allergy (none otherwise)."""
        if system != RXNORM or not code:
            return ()
        return tuple(sorted(self.ingredients.get(code, ())))


def fact_plan(*, lookback_days: int = DEFAULT_LOOKBACK_DAYS) -> FactPlan:
    """The value sets as a plan (three queries). The is-a query also reads every RxNorm row, so
    that a medication's ingredients are known (same-ingredient allergy checks)."""
    from .models import ConceptIsA, ValueSet, ValueSetCode

    sets = {vs.pk: vs for vs in ValueSet.objects.all()}
    codes = list(ValueSetCode.objects.values_list("value_set_id", "system", "code", "match"))
    parents = {(system, code) for _, system, code, match in codes if match == ValueSetCode.Match.IS_A}
    children: dict[tuple[str, str], set[str]] = {}
    ingredients: dict[str, set[str]] = {}
    if parents:
        query = Q(system=RXNORM)
        for system, code in parents:
            query |= Q(system=system, parent=code)
        for system, parent, child in ConceptIsA.objects.filter(query).values_list("system", "parent", "child"):
            children.setdefault((system, parent), set()).add(child)
            if system == RXNORM:
                ingredients.setdefault(child, set()).add(parent)
    exact: dict[int, dict[str, set[str]]] = {pk: {} for pk in sets}
    prefixes: dict[int, dict[str, list[str]]] = {pk: {} for pk in sets}
    names: dict[int, list[str]] = {pk: [] for pk in sets}
    for vs_id, system, code, match in codes:
        if match == ValueSetCode.Match.NAME:
            names[vs_id].append(code)
        elif match == ValueSetCode.Match.PREFIX:
            prefixes[vs_id].setdefault(system, []).append(code)
        else:
            bucket = exact[vs_id].setdefault(system, set())
            bucket.add(code)
            if match == ValueSetCode.Match.IS_A:
                bucket |= children.get((system, code), set())
    index: ValueSetIndex = {}
    for pk, vs in sets.items():
        index[vs.slug] = Members(
            slug=vs.slug, kind=vs.kind, dimension=vs.dimension,
            codes={system: frozenset(c) for system, c in exact[pk].items()},
            prefixes={system: tuple(p) for system, p in prefixes[pk].items()}, names=tuple(names[pk]),
        )
    return FactPlan(value_sets=index, lookback_days=lookback_days,
                    ingredients={child: frozenset(codes) for child, codes in ingredients.items()})


# --------------------------------------------------------------------------------------------
# Imaging: a provider hook


# LOINC document types of a radiology report: 18748-4 "Diagnostic imaging study", 18782-3
# "Radiology Study observation (narrative)", 18726-0 "Radiology studies (set)".
RADIOLOGY_REPORT_CODES = ("18748-4", "18782-3", "18726-0")

ImagingProvider = Callable[[Sequence[int], dt.datetime], dict[int, list[ImagingFinding]]]


def imaging_findings_bulk(patient_ids: Sequence[int], as_of: dt.datetime) -> dict[int, list[ImagingFinding]]:
    """Findings of the active imaging models per patient, in one query: label, probability, the
    study date (else when the image was analysed), the heat map's page address, and ``reported``:
    whether the patient has a radiology report (a note whose type is one of
    ``RADIOLOGY_REPORT_CODES``, from a DiagnosticReport or a DocumentReference) written on or after
    the study date (else after the analysis) and by ``as_of``. A report is matched to the patient's
    imaging by date, not by accession number, which FHIR reports rarely carry. ``reviewed``: a
    clinician agreed or disagreed with the finding in the viewer by ``as_of``; ``disputed``: the
    latest of those verdicts is a disagreement."""
    from imaging.models import FindingFeedback
    from imaging.models import ImagingFinding as FindingRow

    ids = list(patient_ids)
    out: dict[int, list[ImagingFinding]] = {}
    if not ids:
        return out
    reports = (
        ClinicalNote.objects.filter(patient_id=OuterRef("patient_id"), code__in=RADIOLOGY_REPORT_CODES,
                                    written_at__lte=as_of)
        .exclude(status=ENTERED_IN_ERROR)
    )
    rows = (
        FindingRow.objects.filter(_any(FindingRow, "patient_id", ids), model_version__active=True)
        .annotate(
            report_since_study=Exists(reports.filter(written_at__date__gte=OuterRef("instance__series__study__study_date"))),
            report_since_reading=Exists(reports.filter(written_at__gte=OuterRef("created_at"))),
            latest_verdict=Subquery(FindingFeedback.objects.filter(finding=OuterRef("pk"), created_at__lte=as_of)
                                    .order_by("-created_at", "-pk").values("verdict")[:1]),
        )
        .values_list("patient_id", "patient__external_id", "external_id", "pk", "label", "probability",
                     "instance__series__study__study_date", "created_at", "report_since_study",
                     "report_since_reading", "instance__external_id", "latest_verdict")
    )
    for (patient_id, patient_uuid, finding_uuid, pk, label, probability, study_date, created_at, since_study,
         since_reading, instance_uuid, verdict) in rows:
        at = dt.datetime.combine(study_date, dt.time(), tzinfo=dt.UTC) if study_date else created_at
        if at > as_of:
            continue
        url = reverse("imaging-heatmap", kwargs={"external_id": patient_uuid, "finding_id": finding_uuid})
        viewer = reverse("imaging-viewer", kwargs={"external_id": patient_uuid, "instance_id": instance_uuid})
        out.setdefault(patient_id, []).append(ImagingFinding(
            label=label, probability=probability, at=at, source=f"ImagingFinding:{pk}", heatmap_url=url,
            reported=bool(since_study if study_date else since_reading), viewer_url=f"{viewer}?finding={finding_uuid}",
            reviewed=verdict is not None, disputed=verdict == FindingFeedback.Verdict.DISAGREE))
    return out


IMAGING_PROVIDER: ImagingProvider = imaging_findings_bulk


# --------------------------------------------------------------------------------------------
# Loading


def load_facts(patient: Patient, *, as_of: dt.datetime | None = None, plan: FactPlan | None = None) -> Facts:
    facts = load_facts_bulk([patient.pk], as_of=as_of, plan=plan)
    return facts[patient.pk]


def load_facts_bulk(
    patient_ids: Iterable[int], *, as_of: dt.datetime | None = None, plan: FactPlan | None = None
) -> dict[int, Facts]:
    """Facts of many patients in a fixed number of queries."""
    as_of = as_of or timezone.now()
    plan = plan or fact_plan()
    ids = sorted(set(patient_ids))
    out: dict[int, Facts] = {}
    today = as_of.date()
    for pk, birth, sex, deceased_at in Patient.objects.filter(_any(Patient, "id", ids)).values_list(
        "pk", "birth_date", "sex", "deceased_at"
    ):
        age = None
        if birth is not None:
            end = deceased_at.date() if deceased_at and deceased_at.date() < today else today
            age = end.year - birth.year - ((end.month, end.day) < (birth.month, birth.day))
        out[pk] = Facts(patient_id=pk, as_of=as_of, age=age, sex=sex)
    if not out:
        return out
    ids = list(out)
    _observations(out, ids, as_of, plan)
    _coded(out, ids, as_of, plan)
    _genomics(out, ids, as_of)
    add_risks(out, ids, as_of, plan)
    add_notes(out, ids, as_of)
    for pk, findings in IMAGING_PROVIDER(ids, as_of).items():
        if pk in out:
            out[pk].imaging = findings
    for facts in out.values():
        pregnancy(facts, plan)
    return out


def _any(model: type[Model], column: str, values: list[Any]) -> RawSQL | Q:
    """``column = ANY(array)`` with the values as one array parameter: for thousands of ids this
    costs far less than ``IN (...)`` with one parameter each, in Django and in PostgreSQL. Other
    databases (the embedded SQLite default) get the ``IN``."""
    if connection.vendor != "postgresql":
        return Q(**{f"{column}__in": values})
    # table and column names are this module's constants, never input; the values are parameters
    return RawSQL(f'"{model._meta.db_table}"."{column}" = ANY(%s)', (values,),  # noqa: S611
                  output_field=BooleanField())


def _epoch(model: type[Model], column: str) -> RawSQL | F:
    """A timestamp as seconds since 1970 (a float is read much faster than a timestamptz); other
    databases give the datetime itself (``_moment`` reads both)."""
    if connection.vendor != "postgresql":
        return F(column)
    return RawSQL(f'EXTRACT(EPOCH FROM "{model._meta.db_table}"."{column}")::float8', (),  # noqa: S611
                  output_field=FloatField())


def _moment(value: float | dt.datetime) -> dt.datetime:
    return value if isinstance(value, dt.datetime) else dt.datetime.fromtimestamp(value, dt.UTC)


def _observations(out: dict[int, Facts], ids: list[int], as_of: dt.datetime, plan: FactPlan) -> None:
    since = as_of - dt.timedelta(days=plan.lookback_days)
    dimensions = plan.dimensions
    rows = (
        Observation.objects.filter(_any(Observation, "patient_id", ids))
        .filter(code__in=plan.observation_codes, effective_at__gte=since, effective_at__lte=as_of)
        .exclude(status=ENTERED_IN_ERROR)
        .annotate(at_epoch=_epoch(Observation, "effective_at"))
        .order_by("patient_id", "code", "-effective_at", "-pk")
        .values_list("patient_id", "code", "value_quantity", "value_unit", "at_epoch", "pk", "value_code",
                     "value_display", "value_string")
    )
    # one converter per (recorded unit, analyte): the table lookups happen once, not per row
    converters: dict[tuple[str, str], tuple[Callable[[float], float], str] | None] = {}
    # one fetch (no server-side cursor): a batch's rows fit in memory and a cursor costs more
    for patient_id, code, value, unit, epoch, pk, value_code, value_display, value_string in rows:
        if epoch is None:
            continue
        at = _moment(epoch)
        dimension = dimensions.get(code, "")
        if value is not None and dimension:
            key = (unit, dimension)
            if key not in converters:
                converters[key] = _converter(unit, dimension)
            converter = converters[key]
            if converter is not None:
                value = converter[0](value)
                unit = converter[1]
            # else: kept as recorded; the engine reports the unit it cannot compare
        out[patient_id].observations.setdefault(code, []).append(ObservationFact(
            code, value, unit, at, f"Observation:{pk}", value_display or value_string or value_code, value_code,
        ))


def _converter(unit: str, dimension: str) -> tuple[Callable[[float], float], str] | None:
    try:
        normalised = normalise_unit(unit or canonical_unit(dimension), dimension)
    except UnitError:
        return None
    return ALL_DIMENSIONS[dimension_of(dimension)][1][normalised], canonical_unit(dimension)


def _coded(out: dict[int, Facts], ids: list[int], as_of: dt.datetime, plan: FactPlan) -> None:
    for patient_id, system, code, display, pk, onset, status in Condition.objects.filter(
        ACTIVE_CONDITION, _any(Condition, "patient_id", ids)
    ).values_list("patient_id", "code_system", "code", "display", "pk", "onset_at", "clinical_status"):
        out[patient_id].conditions.append(CodedFact(canonical_system(system), code, display, f"Condition:{pk}",
                                                    onset, status))
    for patient_id, system, code, display, pk, authored, status in MedicationRequest.objects.filter(
        _any(MedicationRequest, "patient_id", ids), status__in=ACTIVE_MEDICATION_STATUSES
    ).values_list("patient_id", "code_system", "code", "display", "pk", "authored_at", "status"):
        system = canonical_system(system)
        out[patient_id].medications.append(CodedFact(system, code, display, f"MedicationRequest:{pk}", authored, status,
                                                     dose_mg(display), plan.ingredients_of(system, code)))
    for patient_id, system, code, display, pk, recorded, status in (
        AllergyIntolerance.objects.filter(_any(AllergyIntolerance, "patient_id", ids))
        .exclude(status__in=[ENTERED_IN_ERROR, "refuted"])
        .exclude(clinical_status__in=["inactive", "resolved"])
        .values_list("patient_id", "code_system", "code", "display", "pk", "recorded_at", "clinical_status")
    ):
        system = canonical_system(system)
        out[patient_id].allergies.append(CodedFact(system, code, display, f"AllergyIntolerance:{pk}", recorded, status,
                                                   ingredients=plan.ingredients_of(system, code)))


def gene_keys(gene: str, diplotype: str) -> list[str]:
    """The names rules use for a result: the gene symbol, and for an HLA allele tested as
    present/absent also the allele ("HLA-B" with "*57:01" -> "HLA-B*57:01")."""
    gene = gene.strip().upper()
    keys = [gene]
    match = re.search(r"\*?(\d{2}:\d{2})", diplotype)
    if gene.startswith("HLA-") and "*" not in gene and match:
        keys.append(f"{gene}*{match.group(1)}")
    return keys


def set_genomic(facts: Facts, key: str, fact: GenomicFact) -> None:
    current = facts.genomics.get(key)
    if current is None or (fact.at or dt.datetime.min.replace(tzinfo=dt.UTC)) >= (
        current.at or dt.datetime.min.replace(tzinfo=dt.UTC)
    ):
        facts.genomics[key] = fact


def _genomics(out: dict[int, Facts], ids: list[int], as_of: dt.datetime) -> None:
    # Shape 1: rows the importer made (gene from a 48018-6 component).
    for patient_id, gene, diplotype, phenotype, at, pk, top_display, top_string in (
        GenomicResult.objects.filter(_any(GenomicResult, "patient_id", ids)).exclude(status=ENTERED_IN_ERROR)
        .values_list("patient_id", "gene", "diplotype", "phenotype", "effective_at", "pk",
                     "observation__value_display", "observation__value_string")
    ):
        if at is not None and at > as_of:
            continue
        phenotype = phenotype or top_display or top_string or ""
        for key in gene_keys(gene, diplotype):
            set_genomic(out[patient_id], key, GenomicFact(key, phenotype, diplotype, at, f"GenomicResult:{pk}"))
    # Shape 2: the gene named in the Observation's code, the result as its value.
    rows = (
        # genomic results are coded or text values: numeric rows are skipped before the regex
        Observation.objects.filter(_any(Observation, "patient_id", ids), parent__isnull=True,
                                   genomic_result__isnull=True, value_quantity__isnull=True)
        .filter(Q(code__in=PHENOTYPE_CODES) | Q(display__iregex=_GENES))
        .exclude(status=ENTERED_IN_ERROR)
        .values_list("patient_id", "display", "raw__code__text", "value_display", "value_string", "value_code",
                     "effective_at", "pk")
    )
    for patient_id, display, code_text, value_display, value_string, value_code, at, pk in rows:
        if at is not None and at > as_of:
            continue
        match = GENE_PATTERN.search(f"{code_text or ''} {display}")
        result = value_display or value_string or value_code
        if match is None or not result:
            continue
        gene = match.group(1).upper()
        set_genomic(out[patient_id], gene, GenomicFact(gene, result, "", at, f"Observation:{pk}"))


def add_risks(out: dict[int, Facts], ids: list[int], as_of: dt.datetime, plan: FactPlan) -> None:
    """The current assessment per calculator is the latest row: when it lacks inputs the score
    is unknown now (value None), even if an older row had one."""
    rows = (
        RiskAssessment.objects.filter(_any(RiskAssessment, "patient_id", ids), as_of__lte=as_of)
        .filter(**({"calculator__in": plan.risk_calculators} if plan.risk_calculators is not None else {}))
        .order_by("patient_id", "calculator", "-computed_at", "-pk")
        .values_list("patient_id", "calculator", "status", "value", "unit", "category", "contributions", "as_of",
                     "pk")
    )
    if connection.vendor == "postgresql":
        rows = rows.distinct("patient_id", "calculator")  # the latest row per calculator, chosen by PostgreSQL
    for patient_id, calculator, status, value, unit, category, contributions, at, pk in rows:
        if calculator in out[patient_id].risks:
            continue  # an older row (other databases return them all, latest first)
        computed = status == RiskAssessment.Status.COMPUTED
        out[patient_id].risks[calculator] = RiskFact(
            calculator=calculator, value=value if computed else None, unit=unit, category=category if computed else "",
            at=at, source=f"RiskAssessment:{pk}", contributions=contributions if computed else {},
        )


def add_notes(out: dict[int, Facts], ids: list[int], as_of: dt.datetime) -> None:
    """What each note's current extraction says (``nlp.selectors.note_findings``, one query; the
    most recent extraction of a note counts), for notes written by ``as_of``: the conditions
    (affirmed, possible, negated, a relative's) and the medications the patient takes. Allergy
    statements are left out: an allergy to a drug is not the drug; so are the facts a clinician
    reported wrong by ``as_of`` (another concept, not a finding, the opposite assertion, another
    person or time, other codes or medication details: ``NoteFactFeedback.DISPUTING``)."""
    found = note_findings(ids, disputed_by=as_of)
    for patient_id, findings in found.items():
        if patient_id not in out:
            continue
        notes = out[patient_id].notes
        for f in (*findings.affirmed, *findings.possible, *findings.negated, *findings.family, *findings.medications):
            if f.note_date is not None and f.note_date > as_of:
                continue
            notes.append(NoteFinding(
                concept=f.concept_id, preferred=f.preferred,
                codes=tuple((canonical_system(c.system), c.code) for c in f.codes),
                text=f.text, start=f.start, end=f.end, note_id=str(f.note_id), source=f"NoteFact:{f.fact_id}",
                at=f.note_date, negated=f.negated, historical=f.historical, hypothetical=f.hypothetical,
                uncertain=f.uncertain, family=f.experiencer != "patient", section=f.section,
            ))


def pregnancy(facts: Facts, plan: FactPlan) -> None:
    """Pregnant: an active condition in the ``pregnancy`` value set, or the latest pregnancy
    status observation (LOINC 82810-3); None when the record says neither."""
    members = plan.value_sets.get("pregnancy")
    if members is not None and any(members.matches(c.system, c.code, c.display) for c in facts.conditions):
        facts.pregnant = True
        return
    status = facts.observations.get(PREGNANCY_STATUS)
    if status:
        code = status[0].value_code
        facts.pregnant = True if code in PREGNANT_ANSWERS else False if code in NOT_PREGNANT_ANSWERS else None
