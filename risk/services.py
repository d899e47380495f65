"""Risk assessments from the record: read in bulk, compute, write in bulk.

``risk_compute_for_patients`` is the one path for a single patient (the patient page's
"recalculate"), a changed record, and the whole population (batches of patients per job): a
fixed number of queries per batch, whatever its size.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Collection, Iterable, Sequence
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
    heart_disease_features,
    inputs_for,
    max_lookback_days,
    observation_codes,
)

RACE_CODES = {"2106-3": "white", "2054-5": "african_american"}  # CDC race categories (OMB)


def race_from_extensions(extensions: Any) -> str | None:
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
        snapshots[pk] = RecordSnapshot(patient_id=pk, birth_date=birth_date, sex=sex, race=race_from_extensions(extensions))
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


def assessments_for(snapshot: RecordSnapshot, *, as_of: dt.datetime, job_id: int | None = None,
                    calculators: Collection[str] | None = None) -> list[dict[str, Any]]:
    """The assessments of every applicable calculator (or of those named) for one snapshot, as
    plain column values (pure computation; model instances would cost more than the arithmetic at
    population scale). CDS Hooks scores a patient known only from a prefetch with it."""
    rows: list[dict[str, Any]] = []
    for calculator in all_calculators():
        if calculators is not None and calculator.name not in calculators:
            continue
        if not applicable(calculator.name, snapshot, as_of):
            continue
        mapped = inputs_for(calculator, snapshot, as_of)
        inputs = {name: item.as_dict() for name, item in mapped.values.items()}
        row: dict[str, Any] = dict(
            patient_id=snapshot.patient_id, calculator=calculator.name, calculator_version=calculator.version,
            status="", value=None, unit="", category="", contributions={}, inputs=inputs, missing=mapped.missing,
            problems=mapped.problems, details={}, citation=calculator.citation, as_of=as_of, job_id=job_id,
        )
        if mapped.missing or mapped.problems:
            row["status"] = (RiskAssessment.Status.MISSING_INPUTS if mapped.missing
                             else RiskAssessment.Status.INVALID_INPUTS)
        else:
            try:
                result = calculator(mapped.raw())
            except CalculatorInputError as exc:
                row["status"] = RiskAssessment.Status.INVALID_INPUTS
                row["problems"] = exc.as_dict()
            else:
                row.update(status=RiskAssessment.Status.COMPUTED, value=result.value, unit=result.unit,
                           category=result.category or "", contributions=result.contributions,
                           details=result.details)
        # The same inputs (values and their source rows) give the same key: a re-run writes nothing.
        row["inputs_hash"] = hashlib.sha256(orjson.dumps(
            {"inputs": inputs, "missing": mapped.missing, "problems": row["problems"]}, option=orjson.OPT_SORT_KEYS,
        )).hexdigest()
        rows.append(row)
    return rows


MODEL_CALCULATOR = "heart_disease_model"


def _model_rows(snapshots: dict[int, RecordSnapshot], *, as_of: dt.datetime, job_id: int | None) -> list[dict[str, Any]]:
    """The trained heart-disease model, where a version is active: computed only for records that
    hold every input; otherwise a row listing what is missing (nothing is imputed)."""
    from cdss.model_registry import model_version_active

    from .predict import HEART_DISEASE, heart_disease_predict

    mv = model_version_active(HEART_DISEASE)
    if mv is None or not snapshots:
        return []
    from .models_ml.heart_disease import INPUT_NAMES

    citation = (f"{mv.dataset}. Model {mv.name} {mv.version} ({mv.architecture}), trained on the UCI Cleveland "
                "data (a referral population: 46% prevalence); figures in the model registry.")
    rows = []
    for snapshot in snapshots.values():
        mapped = heart_disease_features(snapshot, as_of, INPUT_NAMES)
        inputs = {name: item.as_dict() for name, item in mapped.values.items()}
        row: dict[str, Any] = dict(
            patient_id=snapshot.patient_id, calculator=MODEL_CALCULATOR, calculator_version=mv.version, status="",
            value=None, unit="", category="", contributions={}, inputs=inputs, missing=mapped.missing,
            problems={}, details={"model_external_id": str(mv.external_id)}, citation=citation, as_of=as_of,
            job_id=job_id,
        )
        if mapped.missing:
            row["status"] = RiskAssessment.Status.MISSING_INPUTS
        else:
            answer = heart_disease_predict({name: item.value for name, item in mapped.values.items()}, mv=mv)
            row["status"] = answer["status"]
            row["problems"] = answer.get("problems") or {}
            if answer["status"] == "computed":
                row.update(value=round(100 * float(answer["probability"]), 1), unit="%",
                           contributions=answer.get("contributions") or {},
                           details={**row["details"], "method": answer.get("method", "")})
        row["inputs_hash"] = hashlib.sha256(orjson.dumps(
            {"inputs": inputs, "missing": mapped.missing, "model": mv.version}, option=orjson.OPT_SORT_KEYS,
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
    rows += _model_rows(snapshots, as_of=as_of, job_id=job_id)
    written = _write(rows)
    statuses = [row["status"] for row in rows]
    return BatchSummary(
        patients=len(snapshots),
        computed=statuses.count(RiskAssessment.Status.COMPUTED),
        missing_inputs=statuses.count(RiskAssessment.Status.MISSING_INPUTS),
        invalid_inputs=statuses.count(RiskAssessment.Status.INVALID_INPUTS),
        written=written,
    )


def _write(rows: list[dict[str, Any]]) -> int:
    """Insert the rows whose key is new. Counting first keeps the figure exact (ignore_conflicts
    does not say which rows it skipped)."""
    if not rows:
        return 0
    if connection.vendor == "postgresql" and len(rows) > 50:
        return _copy_insert(rows)  # ON CONFLICT DO NOTHING reports exactly how many were new
    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return (r["patient_id"], r["calculator"], r["calculator_version"], r["inputs_hash"])

    keys = {key(r) for r in rows}
    existing = set(
        RiskAssessment.objects.filter(
            patient_id__in={k[0] for k in keys}, inputs_hash__in={k[3] for k in keys}
        ).values_list("patient_id", "calculator", "calculator_version", "inputs_hash")
    )
    new = [RiskAssessment(**r) for r in rows if key(r) not in existing]
    # ON CONFLICT DO NOTHING: a concurrent run with the same inputs cannot duplicate a row.
    RiskAssessment.objects.bulk_create(new, batch_size=1000, ignore_conflicts=True)
    return len(new)


_COPY_COLUMNS = ("external_id", "patient_id", "calculator", "calculator_version", "status", "value", "unit",
                 "category", "contributions", "inputs", "missing", "problems", "details", "citation", "inputs_hash",
                 "as_of", "computed_at", "job_id")
_JSON_COLUMNS = frozenset({"contributions", "inputs", "missing", "problems", "details"})


def _copy_insert(rows: list[dict[str, Any]]) -> int:
    """Population-sized writes on PostgreSQL: COPY into a temporary table, then one INSERT ...
    ON CONFLICT DO NOTHING, so the unique key still holds against a concurrent run. (Django's
    INSERT quotes every parameter in Python; for tens of thousands of JSON-heavy rows COPY is
    several times faster.)"""
    import uuid

    from django.db import transaction

    table = RiskAssessment._meta.db_table
    columns = ", ".join(_COPY_COLUMNS)
    now = timezone.now()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"CREATE TEMP TABLE risk_copy ON COMMIT DROP AS SELECT {columns} FROM {table} WITH NO DATA")  # noqa: S608
        raw = cursor.cursor  # the psycopg cursor under Django's wrapper
        with raw.copy(f"COPY risk_copy ({columns}) FROM STDIN") as copy:
            for row in rows:
                record = []
                for column in _COPY_COLUMNS:
                    if column == "external_id":
                        value: Any = uuid.uuid4()
                    elif column == "computed_at":
                        value = now
                    else:
                        value = row[column]
                        if column in _JSON_COLUMNS:
                            value = orjson.dumps(value).decode()
                    record.append(value)
                copy.write_row(record)
        cursor.execute(
            f"INSERT INTO {table} ({columns}) SELECT {columns} FROM risk_copy "  # noqa: S608 - fixed names
            "ON CONFLICT (patient_id, calculator, calculator_version, inputs_hash) DO NOTHING"
        )
        inserted = cursor.rowcount
        cursor.execute("DROP TABLE risk_copy")
    return int(inserted)

