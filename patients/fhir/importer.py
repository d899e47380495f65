"""Writing mapped FHIR units to the database: atomic per unit, idempotent, counted.

Idempotency is enforced by PostgreSQL: every row has a unique key (``fhir_id`` for
organizations and practitioners, ``(site, fhir_id)`` for patients, ``(patient, fhir_id)`` for
clinical facts) and new rows are written with ``INSERT ... ON CONFLICT DO UPDATE``, so two
concurrent imports of the same bundle still give one row. A read of the existing keys and
content hashes beforehand only serves to count (created / updated / unchanged) and to skip rows
whose content did not change.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError, IntegrityError, connection, transaction
from django.utils import timezone

from cdss.audit import audit_record_many
from cdss.jobs.triggers import record_changed

from .. import models as m
from .mapping import MappedUnit, Ref, Row, content_hash, map_unit
from .parse import Issue, Unit

MODEL_ORDER = (
    "Organization",
    "Practitioner",
    "Patient",
    "Encounter",
    "Condition",
    "Observation",
    "MedicationRequest",
    "AllergyIntolerance",
    "Procedure",
    "Immunization",
    "ClinicalNote",
)
MODELS: dict[str, Any] = {
    "Organization": m.Organization,
    "Practitioner": m.Practitioner,
    "Patient": m.Patient,
    "Encounter": m.Encounter,
    "Condition": m.Condition,
    "Observation": m.Observation,
    "MedicationRequest": m.MedicationRequest,
    "AllergyIntolerance": m.AllergyIntolerance,
    "Procedure": m.Procedure,
    "Immunization": m.Immunization,
    "ClinicalNote": m.ClinicalNote,
    "GenomicResult": m.GenomicResult,
}
# Reference field on the row -> (model column, target model name)
REF_COLUMNS = {
    "encounter": "encounter_id",
    "service_provider": "service_provider_id",
    "practitioner": "practitioner_id",
    "requester": "requester_id",
    "author": "author_id",
}


@dataclass
class UnitResult:
    label: str
    ok: bool = True
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    skipped: Counter[str] = field(default_factory=Counter)
    errors: list[Issue] = field(default_factory=list)
    patient_ids: set[int] = field(default_factory=set)

    @property
    def resources(self) -> int:
        """Resources read from the unit (stored, unchanged or skipped)."""
        stored = sum(c["created"] + c["updated"] + c["unchanged"] for k, c in self.counts.items()
                     if k not in ("Observation component", "GenomicResult"))
        return stored + sum(self.skipped.values())


class _Abort(Exception):
    pass


def import_unit(unit: Unit, *, site: m.Site, user: Any = None, request: Any = None) -> UnitResult:
    """Import one parsed unit atomically. On any error nothing is written and every error is
    reported with its location."""
    result = UnitResult(label=unit.label)
    mapped = map_unit(unit)
    result.skipped = mapped.skipped
    if mapped.errors:
        result.ok = False
        result.errors = mapped.errors
        return result
    try:
        with transaction.atomic():
            writer = _Writer(site=site, mapped=mapped, result=result)
            writer.run()
            if result.errors:
                raise _Abort
            if result.patient_ids:
                audit_record_many(user=user, action="import", target="fhir-import", request=request,
                                  patient_ids=result.patient_ids)
                if any(c["created"] or c["updated"] for c in result.counts.values()):
                    # Analyses of the changed record (risk scores...) are queued in this transaction.
                    record_changed(result.patient_ids, user=user, reason="fhir-import")
    except _Abort:
        result.ok = False
    except IntegrityError as exc:
        result.ok = False
        result.errors.append(Issue("", f"conflicts with stored data ({_db_message(exc)})"))
    except DatabaseError as exc:
        result.ok = False
        result.errors.append(Issue("", f"the database refused a value ({_db_message(exc)})"))
    if not result.ok:
        result.counts = {}
        result.patient_ids = set()
    return result


def _db_message(exc: Exception) -> str:
    # The driver's first line names the constraint or column; never the row's values.
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


class _Writer:
    def __init__(self, *, site: m.Site, mapped: MappedUnit, result: UnitResult) -> None:
        self.site = site
        self.mapped = mapped
        self.result = result
        # (FHIR type, fhir_id) -> pk, for everything written or found in this unit.
        self.pks: dict[tuple[str, str], int] = {}
        self.patient_of_encounter: dict[int, int] = {}
        self.by_identifier: dict[tuple[str, str, str], int] = {}

    # -- helpers ---------------------------------------------------------------------------

    def error(self, row: Row, message: str) -> None:
        self.result.errors.append(Issue(row.location, message))

    def rows(self, model: str) -> list[Row]:
        return self.mapped.rows.get(model, [])

    def all_refs(self, rtype: str) -> list[Ref]:
        return [ref for rows in self.mapped.rows.values() for row in rows for ref in row.refs.values()
                if ref.rtype == rtype]

    def lookup(self, row: Row, ref: Ref) -> int | None:
        pk = None
        if ref.fhir_id is not None:
            pk = self.pks.get((ref.rtype, ref.fhir_id))
        elif ref.identifier is not None:
            pk = self.by_identifier.get((ref.rtype, *ref.identifier))
        if pk is None and ref.required:
            target = f"{ref.rtype}/{ref.fhir_id}" if ref.fhir_id else f"{ref.rtype}?identifier={'|'.join(ref.identifier or ())}"
            self.error(row, f"unknown reference {target!r} (not in this bundle nor stored"
                            f"{' for this site' if ref.rtype == 'Patient' else ''})")
        return pk

    # -- steps -----------------------------------------------------------------------------

    def run(self) -> None:
        for rtype, model in (("Organization", m.Organization), ("Practitioner", m.Practitioner)):
            self.write_shared(rtype, model)
        self.write_patients()
        if self.result.errors:
            return
        self.load_stored_encounters()
        for name in MODEL_ORDER[3:]:
            self.write_clinical(name)
            if self.result.errors:
                return

    def write_shared(self, rtype: str, model: Any) -> None:
        rows = self.rows(rtype)
        pks = self.upsert(rtype, model, ("fhir_id",), [((r.fhir_id,), self.values(r), r) for r in rows])
        for (fhir_id,), pk in pks.items():
            self.pks[(rtype, fhir_id)] = pk
        # References to stored rows: by id, or by identifier (conditional references).
        refs = [r for r in self.all_refs(rtype) if (r.fhir_id and (rtype, r.fhir_id) not in self.pks) or r.identifier]
        ids = {r.fhir_id for r in refs if r.fhir_id}
        values = {r.identifier[1] for r in refs if r.identifier}
        if ids:
            for pk, fhir_id in model.objects.filter(fhir_id__in=ids).values_list("pk", "fhir_id"):
                self.pks[(rtype, fhir_id)] = pk
        if values:
            for pk, system, value in model.objects.filter(identifier_value__in=values).values_list(
                "pk", "identifier_system", "identifier_value"
            ):
                self.by_identifier[(rtype, system, value)] = pk
                self.by_identifier.setdefault((rtype, "", value), pk)
        for row in rows:  # identifiers of rows written in this unit
            pk = self.pks[(rtype, row.fhir_id)]
            system, value = row.fields.get("identifier_system", ""), row.fields.get("identifier_value", "")
            if value:
                self.by_identifier[(rtype, system, value)] = pk

    def write_patients(self) -> None:
        rows = self.rows("Patient")
        _lock_patients(self.site.pk, sorted(r.fhir_id for r in rows))
        items = []
        for row in rows:
            values = self.values(row)
            values["site_id"] = self.site.pk
            items.append(((self.site.pk, row.fhir_id), values, row))
        pks = self.upsert("Patient", m.Patient, ("site_id", "fhir_id"), items)
        for (_, fhir_id), pk in pks.items():
            self.pks[("Patient", fhir_id)] = pk
        missing = {r.fhir_id for r in self.all_refs("Patient") if r.fhir_id and ("Patient", r.fhir_id) not in self.pks}
        if missing:
            for pk, fhir_id in m.Patient.objects.filter(site=self.site, fhir_id__in=missing).values_list("pk", "fhir_id"):
                self.pks[("Patient", fhir_id)] = pk
        self.result.patient_ids.update(pks.values())

    def load_stored_encounters(self) -> None:
        in_unit = {r.fhir_id for r in self.rows("Encounter")}
        wanted = {r.fhir_id for r in self.all_refs("Encounter") if r.fhir_id and r.fhir_id not in in_unit}
        patients = {pk for (t, _), pk in self.pks.items() if t == "Patient"}
        if wanted and patients:
            for pk, fhir_id, patient_id in m.Encounter.objects.filter(
                patient_id__in=patients, fhir_id__in=wanted
            ).values_list("pk", "fhir_id", "patient_id"):
                self.pks[("Encounter", fhir_id)] = pk
                self.patient_of_encounter[pk] = patient_id

    def write_clinical(self, name: str) -> None:
        model = MODELS[name]
        items = []
        for row in self.rows(name):
            values = self.values(row)
            patient_id = self.lookup(row, row.refs["patient"])
            if patient_id is None:
                continue
            values["patient_id"] = patient_id
            for key, column in REF_COLUMNS.items():
                ref = row.refs.get(key)
                if ref is None:
                    continue
                pk = self.lookup(row, ref)
                if key == "encounter" and pk is not None and self.patient_of_encounter.get(pk, patient_id) != patient_id:
                    self.error(row, f"encounter Encounter/{ref.fhir_id} belongs to another patient")
                    continue
                values[column] = pk
            items.append(((patient_id, row.fhir_id), values, row))
        if self.result.errors:
            return
        pks = self.upsert(name, model, ("patient_id", "fhir_id"), items)
        for item_key, _values, row in items:
            pk = pks[item_key]
            self.pks[(str(row.raw["resourceType"]), row.fhir_id)] = pk
            if name == "Encounter":
                self.patient_of_encounter[pk] = item_key[0]
        self.result.patient_ids.update(patient_id for (patient_id, _) in pks)
        if name == "Observation":
            self.write_observation_parts(items, pks)

    def write_observation_parts(self, items: list[tuple[tuple[Any, ...], dict[str, Any], Row]],
                                pks: dict[tuple[Any, ...], int]) -> None:
        components, genomics = [], []
        for key, values, row in items:
            parent_id = pks[key]
            patient_id = values["patient_id"]
            shared = {k: values.get(k) for k in ("patient_id", "encounter_id", "status", "category", "effective_at",
                                                 "issued_at")}
            for i, comp in enumerate(row.components):
                fhir_id = f"{row.fhir_id}.component[{i}]"
                raw = row.raw["component"][i]
                child = dict(shared, **comp, parent_id=parent_id, fhir_id=fhir_id, raw=raw,
                             content_hash=content_hash({"parent": row.content_hash, "i": i}))
                components.append(((patient_id, fhir_id), child, row))
            if row.genomic:
                genomic = dict(patient_id=patient_id, observation_id=parent_id, fhir_id=row.fhir_id,
                               status=values["status"], effective_at=values.get("effective_at"),
                               raw={}, content_hash=row.content_hash, **row.genomic)
                genomics.append(((patient_id, row.fhir_id), genomic, row))
        self.upsert("Observation component", m.Observation, ("patient_id", "fhir_id"), components)
        self.upsert("GenomicResult", m.GenomicResult, ("patient_id", "fhir_id"), genomics)

    # -- the upsert ------------------------------------------------------------------------

    @staticmethod
    def values(row: Row) -> dict[str, Any]:
        return dict(row.fields, fhir_id=row.fhir_id, raw=row.raw, content_hash=row.content_hash)

    def upsert(
        self,
        label: str,
        model: Any,
        key: tuple[str, ...],
        items: Iterable[tuple[tuple[Any, ...], dict[str, Any], Row]],
    ) -> dict[tuple[Any, ...], int]:
        """Insert new rows, update changed ones, leave unchanged ones alone; return key -> pk."""
        # One order for every writer, so that two imports sharing rows cannot deadlock.
        items = sorted(items, key=lambda item: tuple(str(part) for part in item[0]))
        counts = self.result.counts.setdefault(label, Counter())
        if not items:
            return {}
        filters: dict[str, Any] = {f"{k}__in": {item[0][i] for item in items} for i, k in enumerate(key)}
        existing = {
            tuple(rec[:-2]): (rec[-2], rec[-1])
            for rec in model.objects.filter(**filters).values_list(*key, "pk", "content_hash")  # type: ignore[attr-defined]
        }
        pks: dict[tuple[Any, ...], int] = {}
        new_objs, changed_objs = [], []
        update_fields: set[str] = set()
        for item_key, values, _row in items:
            update_fields.update(values)
            if item_key in existing:
                pk, stored_hash = existing[item_key]
                pks[item_key] = pk
                if stored_hash == values["content_hash"]:
                    counts["unchanged"] += 1
                else:
                    changed_objs.append(model(pk=pk, **values))
                    counts["updated"] += 1
            else:
                new_objs.append((item_key, model(**values)))
                counts["created"] += 1
        now = timezone.now()
        columns = sorted(f for f in update_fields if f not in key)
        if new_objs:
            objs = [obj for _, obj in new_objs]
            # ON CONFLICT DO UPDATE: a concurrent import of the same rows cannot duplicate them.
            model.objects.bulk_create(  # type: ignore[attr-defined]
                objs,
                batch_size=500,
                update_conflicts=True,
                unique_fields=[k.removesuffix("_id") if k.endswith("_id") and k != "fhir_id" else k for k in key],
                update_fields=[c.removesuffix("_id") if c.endswith("_id") and c != "fhir_id" else c for c in columns],
            )
            for (item_key, _), obj in zip(new_objs, objs, strict=True):
                pks[item_key] = obj.pk
        if changed_objs:
            for obj in changed_objs:
                obj.updated_at = now  # type: ignore[attr-defined]
            model.objects.bulk_update(  # type: ignore[attr-defined]
                changed_objs,
                [c.removesuffix("_id") if c.endswith("_id") and c != "fhir_id" else c for c in columns] + ["updated_at"],
                batch_size=500,
            )
        return pks



def _lock_patients(site_id: int, fhir_ids: list[str]) -> None:
    """Serialise concurrent imports of the same patients (PostgreSQL advisory locks, released at
    commit). ``ON CONFLICT`` covers one unique key only; a patient has two (``fhir_id`` and MRN),
    so without this two imports of one new patient could race on the MRN. SQLite serialises
    writers by itself."""
    if connection.vendor != "postgresql" or not fhir_ids:
        return
    keys = sorted({int.from_bytes(hashlib.blake2b(f"patient:{site_id}:{fid}".encode(), digest_size=8).digest(),
                                  "big", signed=True) for fid in fhir_ids})
    with connection.cursor() as cursor:
        for key in keys:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])
