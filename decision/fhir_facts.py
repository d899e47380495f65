"""Facts from FHIR R4 resources, e.g. a CDS Hooks prefetch (pure Python, no Django).

The same ``Facts`` as ``decision.load`` builds from the database, from the resources a CDS client
sends: Patient, Observation (including both genomic shapes), Condition, MedicationRequest and
AllergyIntolerance; Bundles are unpacked. Observation values are converted to the canonical unit
of their analyte with the same table (``decision.units``) and the same code-to-analyte map.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections.abc import Iterable, Mapping
from typing import Any

from .facts import CodedFact, Facts, GenomicFact, ObservationFact, dose_mg
from .units import UnitError, canonical_unit, to_canonical
from .valuesets import canonical_system

GENE_STUDIED = "48018-6"
PHENOTYPE_CODES = frozenset({"53040-2", "79716-7", "51963-7"})
_GENE = re.compile(r"(HLA-[ABC]\*\d{2}:\d{2}|CYP2C19|CYP2C9|CYP2D6|CYP2B6|CYP3A5|CYP4F2|SLCO1B1|DPYD|TPMT|NUDT15|"
                   r"UGT1A1|VKORC1|G6PD|IFNL3|RYR1|CACNA1S|CFTR|MT-RNR1|ABCG2)", re.IGNORECASE)
ACTIVE_CLINICAL = frozenset({"active", "recurrence", "relapse"})
ACTIVE_MEDICATION = frozenset({"active", "on-hold", "draft"})


def _dt(value: Any) -> dt.datetime | None:
    if not value:
        return None
    text = str(value)
    if len(text) == 10:
        text += "T00:00:00+00:00"
    parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _coding(concept: Any) -> tuple[str, str, str]:
    if not isinstance(concept, dict):
        return "", "", ""
    codings = concept.get("coding") or [{}]
    first = codings[0] if isinstance(codings[0], dict) else {}
    return (canonical_system(str(first.get("system", ""))), str(first.get("code", "")),
            str(first.get("display") or concept.get("text") or ""))


def _status_code(concept: Any) -> str:
    return _coding(concept)[1] if isinstance(concept, dict) else str(concept or "")


def _value_text(node: Mapping[str, Any]) -> str:
    if "valueCodeableConcept" in node:
        _, code, display = _coding(node["valueCodeableConcept"])
        return display or code
    return str(node.get("valueString", ""))


def _resources(items: Iterable[Any]) -> Iterable[dict[str, Any]]:
    for item in items:
        if not isinstance(item, dict):
            continue
        if item.get("resourceType") == "Bundle":
            yield from _resources(e.get("resource") for e in item.get("entry") or [] if isinstance(e, dict))
        else:
            yield item


def facts_from_fhir(resources: Iterable[Any], *, as_of: dt.datetime, dimensions: Mapping[str, str]) -> Facts:
    """Facts of one patient from FHIR resources (or Bundles of them). ``dimensions`` maps an
    observation code to its analyte (``FactPlan.dimensions``)."""
    facts = Facts(patient_id=0, as_of=as_of)
    for res in _resources(resources):
        kind = res.get("resourceType")
        source = f"{kind}/{res.get('id', '')}"
        if kind == "Patient":
            born = _dt(res.get("birthDate"))
            if born is not None:
                day = as_of.date()
                facts.age = day.year - born.year - ((day.month, day.day) < (born.month, born.day))
            facts.sex = str(res.get("gender", "unknown"))
        elif kind == "Observation":
            if res.get("status") == "entered-in-error":
                continue
            _observation(facts, res, source, as_of, dimensions)
        elif kind == "Condition":
            if _status_code(res.get("clinicalStatus")) in ACTIVE_CLINICAL and \
                    _status_code(res.get("verificationStatus")) not in ("entered-in-error", "refuted"):
                system, code, display = _coding(res.get("code"))
                facts.conditions.append(CodedFact(system, code, display, source, _dt(res.get("onsetDateTime")),
                                                  "active"))
        elif kind == "MedicationRequest":
            if res.get("status") in ACTIVE_MEDICATION:
                system, code, display = _coding(res.get("medicationCodeableConcept"))
                facts.medications.append(CodedFact(system, code, display, source, _dt(res.get("authoredOn")),
                                                   str(res.get("status")), dose_mg(display)))
        elif kind == "AllergyIntolerance" and _status_code(res.get("clinicalStatus")) not in (
                "inactive", "resolved") and _status_code(res.get("verificationStatus")) not in (
                "entered-in-error", "refuted"):
            system, code, display = _coding(res.get("code"))
            facts.allergies.append(CodedFact(system, code, display, source, _dt(res.get("recordedDate"))))
    for values in facts.observations.values():
        values.sort(key=lambda o: o.at, reverse=True)
    return facts


def _observation(facts: Facts, res: dict[str, Any], source: str, as_of: dt.datetime,
                 dimensions: Mapping[str, str]) -> None:
    at = _dt(res.get("effectiveDateTime") or (res.get("effectivePeriod") or {}).get("start")
             or res.get("effectiveInstant") or res.get("issued"))
    if at is None or at > as_of:
        return
    _, code, display = _coding(res.get("code"))
    components = [c for c in res.get("component") or [] if isinstance(c, dict)]
    gene = next((_value_text(c) for c in components if _coding(c.get("code"))[1] == GENE_STUDIED), "")
    if not gene:
        match = _GENE.search(f"{(res.get('code') or {}).get('text', '')} {display}")
        gene = match.group(1) if match else ""
    if gene:
        phenotype = next((_value_text(c) for c in components if _coding(c.get("code"))[1] in PHENOTYPE_CODES), "") \
            or _value_text(res)
        if phenotype:
            key = gene.strip().upper()
            facts.genomics[key] = GenomicFact(key, phenotype, "", at, source)
            return
    for node, node_code in [(res, code)] + [(c, _coding(c.get("code"))[1]) for c in components]:
        qty = node.get("valueQuantity")
        value, unit = None, ""
        if isinstance(qty, dict) and isinstance(qty.get("value"), int | float):
            value, unit = float(qty["value"]), str(qty.get("code") or qty.get("unit") or "")
            dimension = dimensions.get(node_code, "")
            if dimension:
                # a unit the table does not know is kept as recorded: the engine reports it
                with contextlib.suppress(UnitError):
                    value, unit = to_canonical(value, unit, dimension), canonical_unit(dimension)
        text = _value_text(node)
        if value is None and not text:
            continue
        value_code = _coding(node.get("valueCodeableConcept"))[1] if "valueCodeableConcept" in node else ""
        facts.observations.setdefault(node_code, []).append(
            ObservationFact(node_code, value, unit, at, source, text, value_code))
