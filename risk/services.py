"""Risk assessments from the record: read in bulk, compute, write in bulk.

``risk_compute_for_patients`` is the one path for a single patient (the patient page's
"recalculate"), a changed record, and the whole population (batches of patients per job): a
fixed number of queries per batch, whatever its size.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from django.db import connection
from django.utils import timezone

from patients.models import ACTIVE_CONDITION, ENTERED_IN_ERROR, Condition, MedicationRequest, Observation, Patient
from patients.selectors import ACTIVE_MEDICATION_STATUSES

from .calculators import CalculatorInputError, all_calculators
from .models import RiskAssessment
from .record_inputs import (
    CodedFact,
    ObservationValue,
    RecordSnapshot,
    applicable,
    inputs_for,
    max_lookback_days,
    observation_codes,
)

RACE_CODES = {"2106-3": "white", "2054-5": "african_american"}  # CDC race categories (OMB)


def _race(extensions: Any) -> str | None:
    """Race from the US Core race extension (OMB category); any other category is "other"."""
    if not isinstance(extensions, list):
        return None
    for ext in extensions:
        if isinstance(ext, dict) and str(ext.get("url", "")).endswith("us-core-race"):
            for part in ext.get("extension", []) or []:
                if isinstance(part, dict) and part.get("url") == "ombCategory":
                    code = (part.get("valueCoding") or {}).get("code")
                    return RACE_CODES.get(str(code), "other")
    return None


def snapshots_load(patient_ids: Sequence[int], *, as_of: dt.datetime) -> dict[int, RecordSnapshot]:
    """Plain snapshots of many patients in four queries."""
    snapshots: dict[int, RecordSnapshot] = {}
    for pk, birth_date, sex, extensions in Patient.objects.filter(pk__in=patient_ids).values_list(
        "pk", "birth_date", "sex", "raw__extension"
    ):
        snapshots[pk] = RecordSnapshot(patient_id=pk, birth_date=birth_date, sex=sex, race=_race(extensions))
    if not snapshots:
        return snapshots
    since = as_of - dt.timedelta(days=max_lookback_days())
    obs = (
        Observation.objects.filter(patient_id__in=snapshots, code__in=observation_codes(),
                                   effective_at__gte=since, effective_at__lte=as_of)
        .exclude(status=ENTERED_IN_ERROR)
        .values_list("patient_id", "code", "value_quantity", "value_unit", "effective_at", "pk", "value_code")
    )
    if connection.vendor == "postgresql":
        # latest row per (patient, code), chosen by PostgreSQL
        obs = obs.order_by("patient_id", "code", "-effective_at", "-pk").distinct("patient_id", "code")
    for patient_id, code, value, unit, at, pk, value_code in obs.iterator(chunk_size=5000):
        if at is None:
            continue
        current = snapshots[patient_id].observations.get(code)
        if current is None or (at, pk) > (current.at, current.source_id):
            snapshots[patient_id].observations[code] = ObservationValue(code, value, unit, at, pk, value_code)
    for patient_id, system, code, display, pk in Condition.objects.filter(
        ACTIVE_CONDITION, patient_id__in=snapshots
    ).values_list("patient_id", "code_system", "code", "display", "pk"):
        snapshots[patient_id].conditions.append(CodedFact(system, code, display, pk))
    for patient_id, system, code, display, pk in MedicationRequest.objects.filter(
        patient_id__in=snapshots, status__in=ACTIVE_MEDICATION_STATUSES
    ).values_list("patient_id", "code_system", "code", "display", "pk"):
        snapshots[patient_id].medications.append(CodedFact(system, code, display, pk))
    return snapshots


@dataclass
class BatchSummary:
    patients: int
    computed: int
    missing_inputs: int
    invalid_inputs: int
    written: int


def assessments_for(snapshot: RecordSnapshot, *, as_of: dt.datetime, job_id: int | None = None) -> list[RiskAssessment]:
    """Unsaved assessments of every applicable calculator for one snapshot (pure computation)."""
    rows: list[RiskAssessment] = []
    for calculator in all_calculators():
        if not applicable(calculator.name, snapshot, as_of):
            continue
        mapped = inputs_for(calculator, snapshot, as_of)
        inputs = {name: item.as_dict() for name, item in mapped.values.items()}
        row = RiskAssessment(patient_id=snapshot.patient_id, calculator=calculator.name,
                             calculator_version=calculator.version, inputs=inputs, missing=mapped.missing,
                             problems=mapped.problems, as_of=as_of, job_id=job_id, citation=calculator.citation)
        if mapped.missing or mapped.problems:
            row.status = (RiskAssessment.Status.MISSING_INPUTS if mapped.missing
                          else RiskAssessment.Status.INVALID_INPUTS)
        else:
            try:
                result = calculator(mapped.raw())
            except CalculatorInputError as exc:
                row.status = RiskAssessment.Status.INVALID_INPUTS
                row.problems = exc.as_dict()
            else:
                row.status = RiskAssessment.Status.COMPUTED
                row.value = result.value
                row.unit = result.unit
                row.category = result.category or ""
                row.contributions = result.contributions
                row.details = result.details
        # The same inputs (values and their source rows) give the same key: a re-run writes nothing.
        row.inputs_hash = hashlib.sha256(orjson.dumps(
            {"inputs": inputs, "missing": mapped.missing, "problems": row.problems}, option=orjson.OPT_SORT_KEYS,
        )).hexdigest()
        rows.append(row)
    return rows


def risk_compute_for_patients(
    patient_ids: Iterable[int], *, as_of: dt.datetime | None = None, job_id: int | None = None
) -> BatchSummary:
    """Assess the patients and write new assessments (append-only; the same inputs once)."""
    as_of = as_of or timezone.now()
    ids = sorted(set(patient_ids))
    snapshots = snapshots_load(ids, as_of=as_of)
    rows = [row for snap in snapshots.values() for row in assessments_for(snap, as_of=as_of, job_id=job_id)]
    written = _write(rows)
    statuses = [row.status for row in rows]
    return BatchSummary(
        patients=len(snapshots),
        computed=statuses.count(RiskAssessment.Status.COMPUTED),
        missing_inputs=statuses.count(RiskAssessment.Status.MISSING_INPUTS),
        invalid_inputs=statuses.count(RiskAssessment.Status.INVALID_INPUTS),
        written=written,
    )


def _write(rows: list[RiskAssessment]) -> int:
    """Insert the rows whose key is new. Counting first keeps the figure exact (ignore_conflicts
    does not say which rows it skipped)."""
    if not rows:
        return 0
    keys = {(r.patient_id, r.calculator, r.calculator_version, r.inputs_hash) for r in rows}
    existing = set(
        RiskAssessment.objects.filter(
            patient_id__in={k[0] for k in keys}, inputs_hash__in={k[3] for k in keys}
        ).values_list("patient_id", "calculator", "calculator_version", "inputs_hash")
    )
    new = [r for r in rows if (r.patient_id, r.calculator, r.calculator_version, r.inputs_hash) not in existing]
    # ON CONFLICT DO NOTHING: a concurrent run with the same inputs cannot duplicate a row.
    RiskAssessment.objects.bulk_create(new, batch_size=1000, ignore_conflicts=True)
    return len(new)

