"""Facts from a CDS Hooks prefetch: the second builder beside ``decision.load.load_facts``.

The prefetch's FHIR R4 resources (Patient, Observation, Condition, MedicationRequest,
AllergyIntolerance) are read by the importer's own per-type mappers (``patients.fhir.mapping``), so
a value means the same whether it was imported or prefetched; then the same selection and unit
normalisation as ``load_facts`` apply (observation codes of the value sets, canonical units of
their analyte, active conditions and medications, allergies not refuted or resolved, genomic
results in both FHIR shapes, pregnancy). Nothing is written and no query is made.

Prefetch semantics (CDS Hooks 2.0.1, "Prefetch template" and "Prefetch tokens"): a key sent as
``null`` means the query ran and found nothing; a key the client left out was not satisfied (the
caller then reads the stored record, or answers 412); a key whose value is an OperationOutcome
failed, and is treated as left out. For order-select and order-sign, the draft MedicationRequests
of ``context.draftOrders`` are added as medications being ordered.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from decision.facts import CodedFact, Facts, GenomicFact, ObservationFact, dose_mg
from decision.load import (
    GENE_PATTERN,
    PHENOTYPE_CODES,
    FactPlan,
    gene_keys,
    pregnancy,
    set_genomic,
)
from decision.units import UnitError, canonical_unit, to_canonical
from decision.valuesets import canonical_system
from patients.fhir.mapping import MAPPERS, FieldError, Resolver, Row, medication_mapper, resource_id
from patients.fhir.parse import Entry
from risk import record_inputs
from risk.record_inputs import ObservationValue, RecordSnapshot
from risk.services import race_from_extensions

# What each prefetch key of the discovery document holds (see cdshooks.catalog).
CATEGORY_OF_KEY = {"patient": "patient", "observations": "observations", "genomics": "genomics",
                   "conditions": "conditions", "medications": "medications", "allergies": "allergies"}
ACTIVE_CONDITION_STATUSES = frozenset({"active", "recurrence", "relapse"})
ACTIVE_MEDICATION_STATUSES = frozenset({"active", "on-hold", "draft"})  # patients.selectors
INACTIVE_ALLERGY = frozenset({"inactive", "resolved"})
READ_TYPES = frozenset({"Patient", "Observation", "Condition", "AllergyIntolerance"})  # + MedicationRequest
MAX_RESOURCES = 5000  # resources per request (prefetch and draft orders together)
MAX_ERRORS_SHOWN = 20


class PrefetchError(ValueError):
    """The prefetch or the draft orders cannot be read; ``problems`` name each place."""

    def __init__(self, problems: list[str], *, too_large: bool = False) -> None:
        self.problems = problems
        self.too_large = too_large
        super().__init__("; ".join(problems))


@dataclass
class PrefetchFacts:
    facts: Facts
    supplied: set[str] = field(default_factory=set)  # categories the prefetch answered (null included)
    failed: set[str] = field(default_factory=set)  # keys answered with an OperationOutcome
    patient_found: bool = False
    draft_sources: list[str] = field(default_factory=list)  # "MedicationRequest/<id>" of the draft orders
    selected_sources: set[str] = field(default_factory=set)
    # What the risk calculators may read of the prefetch (for a patient not stored here)
    snapshot: RecordSnapshot = field(default_factory=lambda: RecordSnapshot(0, None, "unknown", None))


Located = tuple[str, dict[str, Any], str]  # (location, resource, fullUrl)


def _resources(value: Any, where: str, problems: list[str]) -> tuple[list[Located], bool]:
    """The resources of one prefetch value (a resource or a Bundle), and whether it is an error
    (an OperationOutcome instead of data)."""
    if not isinstance(value, dict):
        problems.append(f"{where} must be a FHIR resource, a Bundle or null")
        return [], False
    rtype = value.get("resourceType")
    if rtype == "OperationOutcome":
        return [], True
    if rtype != "Bundle":
        if not isinstance(rtype, str):
            problems.append(f"{where} has no resourceType")
            return [], False
        return [(where, value, "")], False
    out = []
    entries = value.get("entry") or []
    if not isinstance(entries, list):
        problems.append(f"{where}.entry must be a list")
        return [], False
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            problems.append(f"{where}.entry[{i}] must be an object")
            continue
        resource = entry.get("resource")
        if resource is None:
            continue
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            problems.append(f"{where}.entry[{i}].resource has no resourceType")
            continue
        if resource["resourceType"] == "OperationOutcome":  # search warnings (entry.search.mode "outcome")
            continue
        out.append((f"{where}.entry[{i}]", resource, str(entry.get("fullUrl") or "")))
    return out, False


def _patient_of(row: Row) -> str | None:
    ref = row.refs.get("patient")
    return ref.fhir_id if ref is not None else None


def facts_from_prefetch(
    *, patient_id: str, prefetch: dict[str, Any] | None, plan: FactPlan, as_of: dt.datetime,
    draft_orders: dict[str, Any] | None = None, selections: list[str] | None = None,
) -> PrefetchFacts:
    """Facts of one patient from a prefetch (and draft orders). Raises PrefetchError naming every
    unreadable place: a value that is not a resource, a resource the mapping refuses, a resource
    about another patient, too many resources."""
    problems: list[str] = []
    prefetch = prefetch or {}
    out = PrefetchFacts(facts=Facts(patient_id=0, as_of=as_of))
    collected: list[Located] = []
    for key, value in prefetch.items():
        category = CATEGORY_OF_KEY.get(key)
        if value is None:
            if category:
                out.supplied.add(category)
            continue
        resources, failed = _resources(value, f"prefetch.{key}", problems)
        if failed:
            out.failed.add(key)
            continue
        if category:
            out.supplied.add(category)
        collected.extend(resources)
    drafts: list[Located] = []
    if draft_orders is not None:
        drafts, _ = _resources(draft_orders, "context.draftOrders", problems)
    if len(collected) + len(drafts) > MAX_RESOURCES:
        raise PrefetchError([f"the request holds {len(collected) + len(drafts)} resources; the limit is "
                             f"{MAX_RESOURCES}"], too_large=True)
    if problems:
        raise PrefetchError(problems[:MAX_ERRORS_SHOWN])

    # One unit for the mapping: each resource once (a resource may come under several keys).
    entries: list[Entry] = []
    seen: set[tuple[str, str]] = set()
    draft_keys: list[tuple[str, str]] = []
    for n, (location, resource, full_url) in enumerate(drafts + collected):
        rid = resource.get("id")
        if (not isinstance(rid, str) or not rid) and full_url.startswith("urn:uuid:"):
            rid = full_url[len("urn:uuid:"):]
        if not isinstance(rid, str) or not rid:
            rid = f"unidentified-{n}"
            resource = {**resource, "id": rid}
        rkey = (str(resource["resourceType"]), rid)
        if n < len(drafts) and rkey[0] == "MedicationRequest":
            draft_keys.append(rkey)
        if rkey in seen:
            continue
        seen.add(rkey)
        entries.append(Entry(location=location, resource=resource, full_url=full_url))
    rows, errors = _map(entries)
    if errors:
        raise PrefetchError(errors[:MAX_ERRORS_SHOWN])
    for model_rows in rows.values():
        for row in model_rows:
            owner = row.fhir_id if row.model == "Patient" else _patient_of(row)
            if owner is not None and owner != patient_id:
                problems.append(f"{row.location}: {row.model} is about another patient than context.patientId")
    if problems:
        raise PrefetchError(problems[:MAX_ERRORS_SHOWN])

    facts = out.facts
    draft_set = set(draft_keys)
    out.draft_sources = [f"{t}/{i}" for t, i in draft_keys]
    out.selected_sources = {s for s in (selections or []) if s in set(out.draft_sources)}
    for row in rows.get("Patient", []):
        out.patient_found = True
        f = row.fields
        facts.sex = f.get("sex") or "unknown"
        out.snapshot.sex, out.snapshot.birth_date = facts.sex, f.get("birth_date")
        out.snapshot.race = race_from_extensions(row.raw.get("extension"))
        birth = f.get("birth_date")
        if birth is not None:
            deceased_at = f.get("deceased_at")
            end = deceased_at.date() if deceased_at and deceased_at.date() < as_of.date() else as_of.date()
            facts.age = end.year - birth.year - ((end.month, end.day) < (birth.month, birth.day))
    _observations(facts, rows.get("Observation", []), plan, as_of)
    _risk_observations(out.snapshot, rows.get("Observation", []), as_of)
    for row in rows.get("Condition", []):
        f = row.fields
        if f.get("clinical_status") in ACTIVE_CONDITION_STATUSES and f.get("status") != "entered-in-error":
            facts.conditions.append(CodedFact(canonical_system(f["code_system"]), f["code"], f["display"],
                                              f"Condition/{row.fhir_id}", f.get("onset_at"), f["clinical_status"]))
            out.snapshot.conditions.append(record_inputs.CodedFact(f["code_system"], f["code"], f["display"],
                                                                   row.fhir_id))
    meds = rows.get("MedicationRequest", [])
    # Draft orders first: a rule's evidence then names the order being placed.
    meds.sort(key=lambda r: ("MedicationRequest", r.fhir_id) not in draft_set)
    for row in meds:
        f = row.fields
        is_draft = ("MedicationRequest", row.fhir_id) in draft_set
        if is_draft or f.get("status") in ACTIVE_MEDICATION_STATUSES:
            system = canonical_system(f["code_system"])
            facts.medications.append(CodedFact(system, f["code"], f["display"], f"MedicationRequest/{row.fhir_id}",
                                               f.get("authored_at"), "draft" if is_draft else f["status"],
                                               dose_mg(f["display"]), plan.ingredients_of(system, f["code"])))
            if not is_draft:  # an order being placed is not yet a treatment the scores count
                out.snapshot.medications.append(record_inputs.CodedFact(f["code_system"], f["code"], f["display"],
                                                                        row.fhir_id))
    for row in rows.get("AllergyIntolerance", []):
        f = row.fields
        if f.get("status") in ("entered-in-error", "refuted") or f.get("clinical_status") in INACTIVE_ALLERGY:
            continue
        system = canonical_system(f["code_system"])
        facts.allergies.append(CodedFact(system, f["code"], f["display"], f"AllergyIntolerance/{row.fhir_id}",
                                         f.get("recorded_at"), f.get("clinical_status", ""),
                                         ingredients=plan.ingredients_of(system, f["code"])))
    pregnancy(facts, plan)
    return out


def _map(entries: list[Entry]) -> tuple[dict[str, list[Row]], list[str]]:
    """The importer's per-type mappers (``patients.fhir.mapping``) over the resources rules read;
    unlike ``map_unit`` no stored form (canonical references, content hash) is made, since nothing
    is stored."""
    resolver = Resolver(entries)
    medications = {(e.resource["resourceType"], rid): e.resource for e in entries
                   if e.resource["resourceType"] == "Medication" and (rid := resource_id(e))}
    rows: dict[str, list[Row]] = {}
    errors: list[str] = []
    for entry in entries:
        res = entry.resource
        rtype = res["resourceType"]
        if rtype == "MedicationRequest":
            model, mapper = "MedicationRequest", medication_mapper(medications)
        elif rtype in READ_TYPES:
            model, mapper = MAPPERS[rtype]
        else:
            continue  # other resources are not read by rules
        row = Row(model=model, fhir_id=str(res["id"]), location=entry.location, fields={}, raw=res)
        try:
            mapper(res, resolver, row)
        except FieldError as exc:
            errors.append(f"{entry.location}: {exc}")
            continue
        rows.setdefault(model, []).append(row)
    return rows, errors


def _observations(facts: Facts, rows: list[Row], plan: FactPlan, as_of: dt.datetime) -> None:
    """As ``decision.load``: codes of the value sets, within the look-back, canonical units; and
    genomic results of both FHIR shapes."""
    since = as_of - dt.timedelta(days=plan.lookback_days)
    codes = plan.observation_codes
    for row in rows:
        f = row.fields
        if f.get("status") == "entered-in-error":
            continue
        at = f.get("effective_at")
        source = f"Observation/{row.fhir_id}"
        if row.genomic:
            g = row.genomic
            if at is None or at <= as_of:
                phenotype = g["phenotype"] or f.get("value_display") or f.get("value_string") or ""
                for key in gene_keys(g["gene"], g["diplotype"]):
                    set_genomic(facts, key, GenomicFact(key, phenotype, g["diplotype"], at, source))
        elif f["code"] in PHENOTYPE_CODES or GENE_PATTERN.search(f"{_code_text(row)} {f['display']}"):
            match = GENE_PATTERN.search(f"{_code_text(row)} {f['display']}")
            result = f.get("value_display") or f.get("value_string") or f.get("value_code")
            if match is not None and result and (at is None or at <= as_of):
                gene = match.group(1).upper()
                set_genomic(facts, gene, GenomicFact(gene, result, "", at, source))
        code = f["code"]
        if code not in codes or at is None or not since <= at <= as_of:
            continue
        value, unit = f.get("value_quantity"), f.get("value_unit", "")
        dimension = plan.dimensions.get(code, "")
        if value is not None and dimension:
            try:
                value = to_canonical(value, unit, dimension)
                unit = canonical_unit(dimension)
            except UnitError:
                pass  # kept as recorded; the engine reports the unit it cannot compare
        facts.observations.setdefault(code, []).append(ObservationFact(
            code=code, value=value, unit=unit, at=at, source=source,
            text=f.get("value_display") or f.get("value_string") or f.get("value_code", ""),
            value_code=f.get("value_code", "")))
    for values in facts.observations.values():
        values.sort(key=lambda o: o.at, reverse=True)


def _risk_observations(snapshot: RecordSnapshot, rows: list[Row], as_of: dt.datetime) -> None:
    """The latest value per code that a risk calculator reads (``risk.record_inputs``: the same
    codes and look-back as the risk job), in the unit recorded (the calculators convert)."""
    codes = record_inputs.observation_codes()
    since = as_of - dt.timedelta(days=record_inputs.max_lookback_days())
    latest = snapshot.observations
    for row in rows:
        f = row.fields
        at = f.get("effective_at")
        if f.get("status") == "entered-in-error" or f["code"] not in codes or at is None or not since <= at <= as_of:
            continue
        current = latest.get(f["code"])
        if current is None or at > current.at:
            latest[f["code"]] = ObservationValue(f["code"], f.get("value_quantity"), f.get("value_unit", ""), at,
                                                 row.fhir_id, f.get("value_code", ""))


def _code_text(row: Row) -> str:
    code = row.raw.get("code") if isinstance(row.raw, dict) else None
    return str(code.get("text") or "") if isinstance(code, dict) else ""
