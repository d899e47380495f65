"""Mapping FHIR R4 resources to the record's columns (pure Python, no Django).

``map_unit`` turns a parsed unit into rows per model, with references resolved inside the unit
where possible and left as lookups (``Ref``) for the database otherwise. Every problem is an
``Issue`` naming the entry and the field. Nothing here writes anything.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from .parse import Entry, Issue, Unit
from .resources import (
    BILLING_TYPES,
    HGNC,
    LOINC_GENE_STUDIED,
    LOINC_GENOTYPE_DISPLAY,
    LOINC_PHENOTYPE_CODES,
    PGX_GENES,
    RXNORM,
)

# Column widths (kept in step with patients.models).
MAX_DISPLAY = 500
MAX_CODE = 100
MAX_SYSTEM = 200
MAX_SHORT = 32
MAX_NAME = 200

_PGX_GENE = re.compile(PGX_GENES, re.IGNORECASE)
_ABSOLUTE_REF = re.compile(r"^(?:https?://[^?#]*/)?([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")
_CONDITIONAL_REF = re.compile(r"^([A-Z][A-Za-z]+)\?identifier=(?:([^|&]*)\|)?([^&]+)$")


@dataclass(frozen=True)
class Ref:
    """A reference to resolve against the database: by id, or by identifier (conditional)."""

    rtype: str
    fhir_id: str | None = None
    identifier: tuple[str, str] | None = None
    required: bool = False  # an unresolvable required reference is an error


@dataclass
class Row:
    model: str
    fhir_id: str
    location: str
    fields: dict[str, Any]
    refs: dict[str, Ref] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)
    content_hash: str = ""
    components: list[dict[str, Any]] = field(default_factory=list)
    genomic: dict[str, Any] | None = None


@dataclass
class MappedUnit:
    rows: dict[str, list[Row]] = field(default_factory=dict)
    skipped: Counter[str] = field(default_factory=Counter)
    errors: list[Issue] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.rows.setdefault(row.model, []).append(row)


def content_hash(raw: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(raw, option=orjson.OPT_SORT_KEYS)).hexdigest()


# ---------------------------------------------------------------------------------------------
# Small readers


class FieldError(ValueError):
    """A problem with one field of one resource; the mapper adds the location."""


def parse_datetime(value: Any, path: str) -> dt.datetime | None:
    """A FHIR date or dateTime as an aware datetime (partial dates: their first instant, UTC)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise FieldError(f"{path}: expected a date string, got {type(value).__name__}")
    text = value.strip()
    try:
        if re.fullmatch(r"\d{4}", text):
            return dt.datetime(int(text), 1, 1, tzinfo=dt.UTC)
        if re.fullmatch(r"\d{4}-\d{2}", text):
            return dt.datetime(int(text[:4]), int(text[5:7]), 1, tzinfo=dt.UTC)
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            d = dt.date.fromisoformat(text)
            return dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC)
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise FieldError(f"{path}: invalid date {value!r}") from None
    if parsed.tzinfo is None:
        raise FieldError(f"{path}: a dateTime with a time must carry a time zone ({value!r})")
    return parsed


def parse_date(value: Any, path: str) -> dt.date | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise FieldError(f"{path}: expected a date string, got {type(value).__name__}")
    text = value.strip()
    try:
        if re.fullmatch(r"\d{4}", text):
            return dt.date(int(text), 1, 1)
        if re.fullmatch(r"\d{4}-\d{2}", text):
            return dt.date(int(text[:4]), int(text[5:7]), 1)
        return dt.date.fromisoformat(text[:10]) if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text) else _bad_date(value, path)
    except ValueError:
        raise FieldError(f"{path}: invalid date {value!r}") from None


def _bad_date(value: Any, path: str) -> dt.date:
    raise FieldError(f"{path}: invalid date {value!r}")


def first_coding(concept: Any) -> tuple[str, str, str]:
    """(system, code, display) of a CodeableConcept's first coding, display falling back to text."""
    if not isinstance(concept, dict):
        return "", "", ""
    codings = concept.get("coding") or []
    text = concept.get("text") or ""
    if codings and isinstance(codings[0], dict):
        c = codings[0]
        return (
            str(c.get("system", ""))[:MAX_SYSTEM],
            str(c.get("code", ""))[:MAX_CODE],
            str(c.get("display") or text)[:MAX_DISPLAY],
        )
    return "", "", str(text)[:MAX_DISPLAY]


def status_code(concept: Any) -> str:
    """The code of a status CodeableConcept (clinicalStatus, verificationStatus)."""
    return first_coding(concept)[1][:MAX_SHORT]


def require(resource: dict[str, Any], key: str, rtype: str) -> Any:
    value = resource.get(key)
    if value in (None, "", [], {}):
        raise FieldError(f"{rtype}.{key} is required")
    return value


def human_name(names: Any) -> tuple[str, str]:
    """(family, given) from the first official name (else the first)."""
    if not isinstance(names, list) or not names:
        return "", ""
    chosen = next((n for n in names if isinstance(n, dict) and n.get("use") == "official"), names[0])
    if not isinstance(chosen, dict):
        return "", ""
    family = str(chosen.get("family", ""))
    given = " ".join(str(g) for g in chosen.get("given", []) if g)
    if not family and not given and chosen.get("text"):
        return str(chosen["text"])[:MAX_NAME], ""
    return family[:MAX_NAME], given[:MAX_NAME]


# ---------------------------------------------------------------------------------------------
# References


class Resolver:
    """Resolves reference strings against a unit's entries; what is not in the unit becomes a
    ``Ref`` for the database. ``rewrite`` gives the canonical ``Type/id`` form stored in ``raw``."""

    def __init__(self, entries: list[Entry]) -> None:
        self.by_url: dict[str, tuple[str, str]] = {}
        self.present: set[tuple[str, str]] = set()
        self.by_identifier: dict[tuple[str, str, str], str] = {}
        for entry in entries:
            res = entry.resource
            rtype = res["resourceType"]
            rid = resource_id(entry)
            if rid is None:
                continue
            self.present.add((rtype, rid))
            if entry.full_url:
                self.by_url[entry.full_url] = (rtype, rid)
            for ident in res.get("identifier", []) or []:
                if isinstance(ident, dict) and ident.get("value"):
                    self.by_identifier[(rtype, str(ident.get("system", "")), str(ident["value"]))] = rid

    def target(self, reference: str) -> tuple[str, str] | Ref | None:
        """(type, id) when found in the unit; a Ref to look up; None for a contained/unknown form."""
        if reference.startswith("#"):
            return None
        if reference.startswith(("urn:uuid:", "urn:oid:")):
            return self.by_url.get(reference)
        cond = _CONDITIONAL_REF.match(reference)
        if cond:
            rtype, system, value = cond.group(1), cond.group(2) or "", cond.group(3)
            found = self.by_identifier.get((rtype, system, value))
            return (rtype, found) if found else Ref(rtype, identifier=(system, value))
        lit = _ABSOLUTE_REF.match(reference)
        if lit:
            key = (lit.group(1), lit.group(2))
            return key if key in self.present else Ref(key[0], fhir_id=key[1])
        if reference in self.by_url:
            return self.by_url[reference]
        return None

    def resolve(self, value: Any, path: str, types: tuple[str, ...], *, required: bool) -> Ref | None:
        """A mapped reference field. Raises FieldError for a dangling or wrong-typed reference."""
        if not isinstance(value, dict) or not value.get("reference"):
            if required:
                raise FieldError(f"{path} is required")
            return None
        reference = value["reference"]
        if not isinstance(reference, str):
            raise FieldError(f"{path}.reference must be a string")
        found = self.target(reference)
        if found is None:
            if reference.startswith("#"):
                return None
            raise FieldError(f"{path}: unknown reference {reference!r} (not in this bundle)")
        if isinstance(found, Ref):
            if found.rtype not in types:
                raise FieldError(f"{path}: reference {reference!r} must point to {' or '.join(types)}")
            # A conditional reference that is not in the bundle is optional context (the
            # practitioner may live in another bundle); a literal one must exist.
            is_required = required or (found.fhir_id is not None and found.rtype in ("Patient", "Encounter"))
            return Ref(found.rtype, found.fhir_id, found.identifier, required=is_required)
        rtype, rid = found
        if rtype not in types:
            raise FieldError(f"{path}: reference {reference!r} points to a {rtype}, expected {' or '.join(types)}")
        return Ref(rtype, rid, required=True)

    def rewrite(self, node: Any) -> Any:
        """A copy of ``node`` with every resolvable reference in canonical ``Type/id`` form."""
        if isinstance(node, dict):
            out = {}
            for key, val in node.items():
                if key == "reference" and isinstance(val, str):
                    found = self.target(val)
                    if isinstance(found, tuple):
                        out[key] = f"{found[0]}/{found[1]}"
                    elif isinstance(found, Ref) and found.fhir_id:
                        out[key] = f"{found.rtype}/{found.fhir_id}"
                    else:
                        out[key] = val
                else:
                    out[key] = self.rewrite(val)
            return out
        if isinstance(node, list):
            return [self.rewrite(v) for v in node]
        return node


def resource_id(entry: Entry) -> str | None:
    rid = entry.resource.get("id")
    if isinstance(rid, str) and rid:
        return rid
    if entry.full_url.startswith("urn:uuid:"):
        return entry.full_url[len("urn:uuid:"):]
    return None


# ---------------------------------------------------------------------------------------------
# Per-type mappers: (resource, resolver) -> Row fields and refs


Mapper = Callable[[dict[str, Any], Resolver, Row], None]


def _subject(res: dict[str, Any], rtype: str, resolver: Resolver, row: Row, key: str = "subject") -> None:
    ref = resolver.resolve(res.get(key), f"{rtype}.{key}", ("Patient",), required=True)
    assert ref is not None
    row.refs["patient"] = ref


def _encounter(res: dict[str, Any], rtype: str, resolver: Resolver, row: Row, value: Any = None) -> None:
    ref = resolver.resolve(value if value is not None else res.get("encounter"), f"{rtype}.encounter",
                           ("Encounter",), required=False)
    if ref:
        row.refs["encounter"] = ref


def _coded(row: Row, concept: Any) -> None:
    system, code, display = first_coding(concept)
    row.fields.update(code_system=system, code=code, display=display)


def map_organization(res: dict[str, Any], resolver: Resolver, row: Row) -> None:
    ident = next((i for i in res.get("identifier", []) or [] if isinstance(i, dict)), {})
    row.fields.update(
        name=str(res.get("name", ""))[:300],
        identifier_system=str(ident.get("system", ""))[:300],
        identifier_value=str(ident.get("value", ""))[:MAX_NAME],
    )


def map_practitioner(res: dict[str, Any], resolver: Resolver, row: Row) -> None:
    family, given = human_name(res.get("name"))
    idents = [i for i in res.get("identifier", []) or [] if isinstance(i, dict)]
    npi = next((i.get("value", "") for i in idents if i.get("system") == "http://hl7.org/fhir/sid/us-npi"), "")
    first = idents[0] if idents else {}
    prefix = ""
    names = res.get("name")
    if isinstance(names, list) and names and isinstance(names[0], dict) and names[0].get("prefix"):
        prefix = " ".join(names[0]["prefix"]) + " "
    row.fields.update(
        name=f"{prefix}{given} {family}".strip()[:300],
        npi=str(npi)[:32],
        identifier_system=str(first.get("system", ""))[:300],
        identifier_value=str(first.get("value", ""))[:MAX_NAME],
    )


SEX_VALUES = {"female", "male", "other", "unknown"}


def map_patient(res: dict[str, Any], resolver: Resolver, row: Row) -> None:
    family, given = human_name(res.get("name"))
    gender = res.get("gender", "unknown")
    if gender not in SEX_VALUES:
        raise FieldError(f"Patient.gender: {gender!r} is not one of female, male, other, unknown")
    deceased_at = parse_datetime(res.get("deceasedDateTime"), "Patient.deceasedDateTime")
    deceased = bool(res.get("deceasedBoolean")) or deceased_at is not None
    mrn = ""
    for ident in res.get("identifier", []) or []:
        if not isinstance(ident, dict):
            continue
        codes = {c.get("code") for c in (ident.get("type") or {}).get("coding", []) if isinstance(c, dict)}
        if "MR" in codes and ident.get("value"):
            mrn = str(ident["value"])
            break
    row.fields.update(
        mrn=(mrn or row.fhir_id)[:100],
        family_name=family,
        given_names=given,
        birth_date=parse_date(res.get("birthDate"), "Patient.birthDate"),
        sex=gender,
        deceased=deceased,
        deceased_at=deceased_at,
        active=res.get("active", True) is not False,
    )


def map_encounter(res: dict[str, Any], resolver: Resolver, row: Row) -> None:
    require(res, "status", "Encounter")
    require(res, "class", "Encounter")
    _subject(res, "Encounter", resolver, row)
    klass = res.get("class")
    types = res.get("type") or []
    reasons = res.get("reasonCode") or []
    _coded(row, types[0] if types else None)
    period = res.get("period") or {}
    row.fields.update(
        status=str(res["status"])[:MAX_SHORT],
        class_code=str(klass.get("code", "") if isinstance(klass, dict) else "")[:MAX_SHORT],
        period_start=parse_datetime(period.get("start"), "Encounter.period.start"),
        period_end=parse_datetime(period.get("end"), "Encounter.period.end"),
        reason_display=first_coding(reasons[0])[2] if reasons else "",
    )
    provider = resolver.resolve(res.get("serviceProvider"), "Encounter.serviceProvider", ("Organization",),
                                required=False)
    if provider:
        row.refs["service_provider"] = provider
    for i, part in enumerate(res.get("participant") or []):
        if isinstance(part, dict) and part.get("individual"):
            ref = resolver.resolve(part["individual"], f"Encounter.participant[{i}].individual",
                                   ("Practitioner", "PractitionerRole", "RelatedPerson"), required=False)
            if ref and ref.rtype == "Practitioner":
                row.refs["practitioner"] = ref
                break


def map_condition(res: dict[str, Any], resolver: Resolver, row: Row) -> None:
    require(res, "code", "Condition")
    _subject(res, "Condition", resolver, row)
    _encounter(res, "Condition", resolver, row)
    _coded(row, res["code"])
    cats = res.get("category") or []
    row.fields.update(
        status=status_code(res.get("verificationStatus")) or "confirmed",
        clinical_status=status_code(res.get("clinicalStatus")),
        category=first_coding(cats[0])[1][:64] if cats else "",
        onset_at=parse_datetime(res.get("onsetDateTime") or (res.get("onsetPeriod") or {}).get("start"),
                                "Condition.onset"),
        abatement_at=parse_datetime(res.get("abatementDateTime") or (res.get("abatementPeriod") or {}).get("end"),
                                    "Condition.abatement"),
        recorded_at=parse_datetime(res.get("recordedDate"), "Condition.recordedDate"),
    )


def _value_fields(node: dict[str, Any], path: str) -> dict[str, Any]:
    """value[x] of an Observation or one of its components."""
    out: dict[str, Any] = dict(value_quantity=None, value_unit="", value_comparator="", value_code_system="",
                               value_code="", value_display="", value_string="")
    if "valueQuantity" in node:
        qty = node["valueQuantity"]
        if not isinstance(qty, dict):
            raise FieldError(f"{path}.valueQuantity must be an object")
        value = qty.get("value")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise FieldError(f"{path}.valueQuantity.value must be a number, got {value!r}")
        unit = qty.get("code") or qty.get("unit")
        if not unit:
            raise FieldError(f"{path}.valueQuantity has no unit (a UCUM 'code' or 'unit' is required)")
        out.update(value_quantity=float(value), value_unit=str(unit)[:64],
                   value_comparator=str(qty.get("comparator", ""))[:2])
    elif "valueCodeableConcept" in node:
        system, code, display = first_coding(node["valueCodeableConcept"])
        out.update(value_code_system=system, value_code=code, value_display=display)
    elif "valueString" in node:
        out["value_string"] = str(node["valueString"])
    elif "valueBoolean" in node:
        out["value_string"] = "true" if node["valueBoolean"] else "false"
    elif "valueInteger" in node:
        out.update(value_quantity=float(node["valueInteger"]), value_unit="1")
    return out


def map_observation(res: dict[str, Any], resolver: Resolver, row: Row) -> None:
    require(res, "status", "Observation")
    require(res, "code", "Observation")
    _subject(res, "Observation", resolver, row)
    _encounter(res, "Observation", resolver, row)
    _coded(row, res["code"])
    cats = res.get("category") or []
    effective = res.get("effectiveDateTime") or (res.get("effectivePeriod") or {}).get("start") \
        or res.get("effectiveInstant")
    row.fields.update(
        status=str(res["status"])[:MAX_SHORT],
        category=first_coding(cats[0])[1][:64] if cats else "",
        effective_at=parse_datetime(effective, "Observation.effective"),
        issued_at=parse_datetime(res.get("issued"), "Observation.issued"),
        **_value_fields(res, "Observation"),
    )
    gene = diplotype = phenotype = ""
    for i, comp in enumerate(res.get("component") or []):
        path = f"Observation.component[{i}]"
        if not isinstance(comp, dict) or not comp.get("code"):
            raise FieldError(f"{path}.code is required")
        system, code, display = first_coding(comp["code"])
        values = _value_fields(comp, path)
        row.components.append(dict(code_system=system, code=code, display=display, **values))
        if code == LOINC_GENE_STUDIED:
            gene = values["value_display"] or values["value_code"] or values["value_string"]
        elif code == LOINC_GENOTYPE_DISPLAY:
            diplotype = values["value_display"] or values["value_code"] or values["value_string"]
        elif code in LOINC_PHENOTYPE_CODES:
            phenotype = values["value_display"] or values["value_code"] or values["value_string"]
    top = row.fields
    result = top["value_display"] or top["value_string"] or top["value_code"]
    if not gene and top["value_quantity"] is None and result:
        # the second shape: the gene named in the Observation's own code, the result its value
        gene = gene_in_code(res["code"])
    if gene:
        row.genomic = dict(gene=gene[:64], diplotype=diplotype[:128], phenotype=(phenotype or result)[:200])


def gene_in_code(concept: Any) -> str:
    """The gene an Observation's code names (HL7 Genomics Reporting, gene in ``code``): an HGNC
    coding's display (or its code when that is the symbol), else a pharmacogene or HLA allele in
    a coding's display or the text, e.g. "CYP2C19 gene targeted mutation analysis" or
    "HLA-B*57:01". Empty when it names none."""
    if not isinstance(concept, dict):
        return ""
    codings = [c for c in concept.get("coding") or [] if isinstance(c, dict)]
    for c in codings:
        if str(c.get("system", "")).rstrip("/").startswith(HGNC):
            symbol = str(c.get("display") or "").strip()
            code = str(c.get("code") or "").strip()
            if symbol or (code and not code.upper().startswith("HGNC:")):
                return symbol or code
    text = " ".join([str(concept.get("text") or "")] + [str(c.get("display") or "") for c in codings])
    match = _PGX_GENE.search(text)
    return match.group(1).upper() if match else ""


def map_medication_request(res: dict[str, Any], resolver: Resolver, row: Row, *,
                           medications: dict[tuple[str, str], dict[str, Any]] | None = None) -> None:
    require(res, "status", "MedicationRequest")
    require(res, "intent", "MedicationRequest")
    _subject(res, "MedicationRequest", resolver, row)
    _encounter(res, "MedicationRequest", resolver, row)
    concept = res.get("medicationCodeableConcept")
    if concept is None:
        ref = res.get("medicationReference")
        if not isinstance(ref, dict) or not ref.get("reference"):
            raise FieldError("MedicationRequest.medication[x] is required")
        target = resolver.target(str(ref["reference"]))
        med = (medications or {}).get(target) if isinstance(target, tuple) else None
        if med is None:
            raise FieldError(f"MedicationRequest.medicationReference: unknown reference {ref['reference']!r}")
        concept = med.get("code")
    system, code, display = first_coding(concept)
    # Prefer the RxNorm coding when the concept carries several.
    for coding in (concept or {}).get("coding", []) if isinstance(concept, dict) else []:
        if isinstance(coding, dict) and coding.get("system") == RXNORM:
            system, code = RXNORM, str(coding.get("code", ""))[:MAX_CODE]
            display = str(coding.get("display") or display)[:MAX_DISPLAY]
            break
    dosage = res.get("dosageInstruction") or []
    dosage_text = "; ".join(str(d.get("text")) for d in dosage if isinstance(d, dict) and d.get("text"))
    period = ((res.get("dispenseRequest") or {}).get("validityPeriod")) or {}
    row.fields.update(
        code_system=system, code=code, display=display,
        status=str(res["status"])[:MAX_SHORT],
        intent=str(res["intent"])[:MAX_SHORT],
        dosage_text=dosage_text,
        authored_at=parse_datetime(res.get("authoredOn"), "MedicationRequest.authoredOn"),
        period_start=parse_datetime(period.get("start"), "MedicationRequest.dispenseRequest.validityPeriod.start"),
        period_end=parse_datetime(period.get("end"), "MedicationRequest.dispenseRequest.validityPeriod.end"),
    )
    requester = resolver.resolve(res.get("requester"), "MedicationRequest.requester",
                                 ("Practitioner", "PractitionerRole", "Organization", "Patient", "RelatedPerson",
                                  "Device"), required=False)
    if requester and requester.rtype == "Practitioner":
        row.refs["requester"] = requester


def map_allergy(res: dict[str, Any], resolver: Resolver, row: Row) -> None:
    _subject(res, "AllergyIntolerance", resolver, row, key="patient")
    _coded(row, res.get("code"))
    reactions = []
    for reaction in res.get("reaction") or []:
        if isinstance(reaction, dict):
            for man in reaction.get("manifestation") or []:
                reactions.append(first_coding(man)[2])
    cats = res.get("category") or []
    row.fields.update(
        status=status_code(res.get("verificationStatus")) or "confirmed",
        clinical_status=status_code(res.get("clinicalStatus")),
        allergy_type=str(res.get("type", ""))[:MAX_SHORT],
        category=str(cats[0] if cats else "")[:64],
        criticality=str(res.get("criticality", ""))[:MAX_SHORT],
        reaction=", ".join(r for r in reactions if r)[:MAX_DISPLAY],
        onset_at=parse_datetime(res.get("onsetDateTime"), "AllergyIntolerance.onsetDateTime"),
        recorded_at=parse_datetime(res.get("recordedDate"), "AllergyIntolerance.recordedDate"),
    )


def map_procedure(res: dict[str, Any], resolver: Resolver, row: Row) -> None:
    require(res, "status", "Procedure")
    _subject(res, "Procedure", resolver, row)
    _encounter(res, "Procedure", resolver, row)
    _coded(row, res.get("code"))
    period = res.get("performedPeriod") or {}
    start = res.get("performedDateTime") or period.get("start")
    row.fields.update(
        status=str(res["status"])[:MAX_SHORT],
        performed_start=parse_datetime(start, "Procedure.performed"),
        performed_end=parse_datetime(period.get("end"), "Procedure.performedPeriod.end"),
    )


def map_immunization(res: dict[str, Any], resolver: Resolver, row: Row) -> None:
    require(res, "status", "Immunization")
    require(res, "vaccineCode", "Immunization")
    _subject(res, "Immunization", resolver, row, key="patient")
    _encounter(res, "Immunization", resolver, row)
    _coded(row, res["vaccineCode"])
    row.fields.update(
        status=str(res["status"])[:MAX_SHORT],
        occurrence_at=parse_datetime(res.get("occurrenceDateTime"), "Immunization.occurrenceDateTime"),
    )


def _attachment_text(attachment: Any, path: str) -> tuple[str, str]:
    """(text, content type) of an inline text attachment."""
    if not isinstance(attachment, dict):
        raise FieldError(f"{path} must be an Attachment object")
    ctype = str(attachment.get("contentType", ""))[:100]
    data = attachment.get("data")
    if data is None:
        return "", ctype  # a URL-only attachment: kept in raw, text not fetched (no network)
    try:
        blob = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise FieldError(f"{path}.data is not valid base64") from None
    charset = "utf-8"
    match = re.search(r"charset=([\w\-]+)", ctype)
    if match:
        charset = match.group(1)
    try:
        text = blob.decode(charset)
    except (UnicodeDecodeError, LookupError):
        raise FieldError(f"{path}.data is not text in {charset}") from None
    if "\x00" in text:
        raise FieldError(f"{path}.data contains a NUL character")
    return text, ctype


def map_document_reference(res: dict[str, Any], resolver: Resolver, row: Row) -> None:
    require(res, "status", "DocumentReference")
    content = require(res, "content", "DocumentReference")
    _subject(res, "DocumentReference", resolver, row)
    context = res.get("context") or {}
    encounters = context.get("encounter") or []
    if encounters:
        _encounter(res, "DocumentReference", resolver, row, value=encounters[0])
    _coded(row, res.get("type"))
    texts, ctype = [], ""
    for i, item in enumerate(content if isinstance(content, list) else []):
        text, ctype_i = _attachment_text((item or {}).get("attachment"), f"DocumentReference.content[{i}].attachment")
        if text:
            texts.append(text)
            ctype = ctype or ctype_i
    authors = res.get("author") or []
    _author(res, resolver, row, authors[0] if authors else None, "DocumentReference.author[0]")
    row.fields.update(
        source_type="DocumentReference",
        status=str(res["status"])[:MAX_SHORT],
        written_at=parse_datetime(res.get("date"), "DocumentReference.date"),
        content_type=ctype,
        text="\n\n".join(texts),
    )


def map_diagnostic_report_note(res: dict[str, Any], resolver: Resolver, row: Row) -> None:
    require(res, "status", "DiagnosticReport")
    require(res, "code", "DiagnosticReport")
    _subject(res, "DiagnosticReport", resolver, row)
    _encounter(res, "DiagnosticReport", resolver, row)
    _coded(row, res["code"])
    texts, ctype = [], ""
    for i, form in enumerate(res.get("presentedForm") or []):
        text, ctype_i = _attachment_text(form, f"DiagnosticReport.presentedForm[{i}]")
        if text:
            texts.append(text)
            ctype = ctype or ctype_i
    performers = res.get("performer") or []
    _author(res, resolver, row, performers[0] if performers else None, "DiagnosticReport.performer[0]")
    row.fields.update(
        source_type="DiagnosticReport",
        status=str(res["status"])[:MAX_SHORT],
        written_at=parse_datetime(res.get("effectiveDateTime") or res.get("issued"), "DiagnosticReport.effective"),
        content_type=ctype,
        text="\n\n".join(texts),
    )


def _author(res: dict[str, Any], resolver: Resolver, row: Row, value: Any, path: str) -> None:
    row.fields["author_display"] = str((value or {}).get("display", ""))[:300] if isinstance(value, dict) else ""
    ref = resolver.resolve(value, path, ("Practitioner", "PractitionerRole", "Organization", "Device", "Patient",
                                         "RelatedPerson", "CareTeam"), required=False)
    if ref and ref.rtype == "Practitioner":
        row.refs["author"] = ref


MAPPERS: dict[str, tuple[str, Mapper]] = {
    "Organization": ("Organization", map_organization),
    "Practitioner": ("Practitioner", map_practitioner),
    "Patient": ("Patient", map_patient),
    "Encounter": ("Encounter", map_encounter),
    "Condition": ("Condition", map_condition),
    "Observation": ("Observation", map_observation),
    "AllergyIntolerance": ("AllergyIntolerance", map_allergy),
    "Procedure": ("Procedure", map_procedure),
    "Immunization": ("Immunization", map_immunization),
    "DocumentReference": ("ClinicalNote", map_document_reference),
}


def medication_mapper(medications: dict[tuple[str, str], dict[str, Any]]) -> Mapper:
    def mapper(res: dict[str, Any], resolver: Resolver, row: Row) -> None:
        map_medication_request(res, resolver, row, medications=medications)

    return mapper


# HL7 v3 ObservationValue "AIAST" (Artificial Intelligence asserted): the security label of
# content an AI system asserted (HL7 FHIR R4 security labels; the code system since THO 5.x).
V3_OBSERVATION_VALUE = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"
AI_ASSERTED = "AIAST"


def ai_asserted(res: dict[str, Any]) -> bool:
    meta = res.get("meta")
    labels = meta.get("security") if isinstance(meta, dict) else None
    return any(isinstance(c, dict) and c.get("system") == V3_OBSERVATION_VALUE and c.get("code") == AI_ASSERTED
               for c in labels or [])


def map_unit(unit: Unit) -> MappedUnit:
    """Map every entry of a parsed unit; collect every problem rather than stopping at the first."""
    out = MappedUnit(errors=list(unit.errors))
    resolver = Resolver(unit.entries)
    medications = {
        (e.resource["resourceType"], rid): e.resource
        for e in unit.entries
        if e.resource["resourceType"] == "Medication" and (rid := resource_id(e))
    }
    # Synthea writes each note twice: a DiagnosticReport with presentedForm and a DocumentReference
    # that names the report in its identifier. Keep the DocumentReference only.
    documented = {
        str(ident.get("value"))
        for e in unit.entries
        if e.resource["resourceType"] == "DocumentReference"
        for ident in e.resource.get("identifier", []) or []
        if isinstance(ident, dict)
    }
    seen: set[tuple[str, str]] = set()
    model: str
    mapper: Mapper
    for entry in unit.entries:
        res = entry.resource
        rtype = res["resourceType"]
        if rtype in BILLING_TYPES:
            out.skipped[f"{rtype} (billing)"] += 1
            continue
        if rtype == "Medication":
            out.skipped["Medication (read into MedicationRequest)"] += 1
            continue
        if rtype == "Observation" and ai_asserted(res):
            # An imaging model's finding (this system's export, or another's): it stays with its
            # image, not in the record's observations, so an export imported again changes nothing.
            out.skipped["Observation (asserted by an AI model)"] += 1
            continue
        if rtype == "DiagnosticReport":
            if not res.get("presentedForm"):
                out.skipped["DiagnosticReport (no presentedForm)"] += 1
                continue
            if f"urn:uuid:{res.get('id')}" in documented or entry.full_url in documented:
                out.skipped["DiagnosticReport (same note as a DocumentReference)"] += 1
                continue
            model, mapper = "ClinicalNote", map_diagnostic_report_note
        elif rtype == "MedicationRequest":
            model = "MedicationRequest"
            mapper = medication_mapper(medications)
        elif rtype in MAPPERS:
            model, mapper = MAPPERS[rtype]
        else:
            out.skipped[f"{rtype} (not stored)"] += 1
            continue
        rid = resource_id(entry)
        if rid is None:
            out.errors.append(Issue(entry.location, f"{rtype} has no id and no urn:uuid fullUrl, so it cannot be "
                                                    "imported idempotently"))
            continue
        if len(rid) > 200:
            out.errors.append(Issue(entry.location, f"{rtype}.id is longer than 200 characters"))
            continue
        if (rtype, rid) in seen:
            out.errors.append(Issue(entry.location, f"{rtype}/{rid} appears twice in this bundle"))
            continue
        seen.add((rtype, rid))
        row = Row(model=model, fhir_id=rid, location=entry.location, fields={})
        try:
            mapper(res, resolver, row)
        except FieldError as exc:
            out.errors.append(Issue(entry.location, str(exc)))
            continue
        row.raw = resolver.rewrite(res)
        row.raw["id"] = rid
        row.content_hash = content_hash(row.raw)
        out.add(row)
    return out
