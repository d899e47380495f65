#!/usr/bin/env python
"""Benchmark: risk scoring of a synthetic population, end to end, on PostgreSQL.

    .venv/bin/python bench/risk.py [--patients 10000] [--database-url postgres://.../cdss_bench_risk]

Recreates the scratch database, writes a synthetic population (demographics, lipids, blood
pressure, BMI, kidney labs, smoking status, diabetes/hypertension/AF diagnoses, statins and
antihypertensives), then measures:
1. in-process: ``risk_compute_for_patients`` over batches of 500 (read record, compute every
   applicable calculator, write assessments), patients/s and assessments/s;
2. the same through the job platform: ``jobs enqueue risk --patients all`` (batch jobs) with ONE
   Celery worker process on a private Redis, from enqueue to the last job done;
3. the idempotent re-run (nothing new to write).
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import recreate_database  # noqa: E402


def populate(n: int, as_of: dt.datetime) -> None:
    from patients import models as m

    rng = random.Random(7)
    site, _ = m.Site.objects.get_or_create(code="bench", defaults={"name": "Bench"})
    race_ext = {
        "white": [{"url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race",
                   "extension": [{"url": "ombCategory", "valueCoding": {"code": "2106-3"}}]}],
        "african_american": [{"url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race",
                              "extension": [{"url": "ombCategory", "valueCoding": {"code": "2054-5"}}]}],
    }
    patients = [
        m.Patient(site=site, fhir_id=f"p{i}", mrn=f"B{i:07d}", family_name=f"Bench{i}", given_names="Pat",
                  birth_date=dt.date(as_of.year - rng.randint(35, 85), rng.randint(1, 12), rng.randint(1, 28)),
                  sex=rng.choice(["female", "male"]),
                  raw={"extension": race_ext[rng.choice(["white", "white", "african_american"])]})
        for i in range(n)
    ]
    m.Patient.objects.bulk_create(patients, batch_size=2000)
    obs, conds, meds = [], [], []
    for p in patients:
        day = as_of - dt.timedelta(days=rng.randint(5, 300))
        values = [
            ("2093-3", rng.gauss(200, 35), "mg/dL"), ("2085-9", rng.gauss(52, 12), "mg/dL"),
            ("8480-6", rng.gauss(132, 16), "mm[Hg]"), ("8462-4", rng.gauss(80, 10), "mm[Hg]"),
            ("39156-5", rng.gauss(28, 5), "kg/m2"), ("2160-0", rng.gauss(1.0, 0.25), "mg/dL"),
            ("33914-3", rng.gauss(85, 18), "mL/min/{1.73_m2}"), ("8867-4", rng.gauss(74, 10), "/min"),
        ]
        for j, (code, value, unit) in enumerate(values):
            obs.append(m.Observation(patient=p, fhir_id=f"o{p.fhir_id}-{j}", status="final", code=code,
                                     value_quantity=round(max(value, 0.3), 2), value_unit=unit, effective_at=day))
        obs.append(m.Observation(patient=p, fhir_id=f"o{p.fhir_id}-smoke", status="final", code="72166-2",
                                 value_code=rng.choice(["266919005", "266919005", "8517006", "449868002"]),
                                 effective_at=day))
        for code, display, share in (("44054006", "Diabetes mellitus type 2", 0.12),
                                     ("38341003", "Hypertension", 0.3), ("49436004", "Atrial fibrillation", 0.05)):
            if rng.random() < share:
                conds.append(m.Condition(patient=p, fhir_id=f"c{p.fhir_id}-{code}", status="confirmed",
                                         clinical_status="active", code_system="http://snomed.info/sct", code=code,
                                         display=display))
        for code, display, share in (("617310", "atorvastatin 20 MG Oral Tablet", 0.2),
                                     ("314076", "lisinopril 10 MG Oral Tablet", 0.25)):
            if rng.random() < share:
                meds.append(m.MedicationRequest(patient=p, fhir_id=f"m{p.fhir_id}-{code}", status="active",
                                                intent="order", code=code, display=display))
    m.Observation.objects.bulk_create(obs, batch_size=5000)
    m.Condition.objects.bulk_create(conds, batch_size=5000)
    m.MedicationRequest.objects.bulk_create(meds, batch_size=5000)
    print(f"population: {n} patients, {len(obs)} observations, {len(conds)} conditions, {len(meds)} medications")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/cdss_bench_risk")
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()

    recreate_database(args.database_url)
    os.environ["DATABASE_URL"] = args.database_url
    os.environ["DJANGO_SETTINGS_MODULE"] = "cdss.settings"
    os.environ["DJANGO_DEBUG"] = "false"
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from cdss.celery import app
    from cdss.models import Job
    from patients.models import Patient
    from risk.models import RiskAssessment
    from risk.services import risk_compute_for_patients

    call_command("migrate", verbosity=0)
    as_of = timezone.now()
    start = time.perf_counter()
    populate(args.patients, as_of)
    print(f"populated in {time.perf_counter() - start:.1f} s; PostgreSQL {connection.cursor().connection.info.server_version}")

    ids = list(Patient.objects.order_by("pk").values_list("pk", flat=True))
    batches = [ids[i:i + args.batch] for i in range(0, len(ids), args.batch)]

    # 1. in process
    start = time.perf_counter()
    written = computed = 0
    with CaptureQueriesContext(connection) as ctx:
        summary = risk_compute_for_patients(batches[0], as_of=as_of)
    queries_per_batch = len(ctx.captured_queries)
    written, computed = summary.written, summary.computed
    for batch in batches[1:]:
        summary = risk_compute_for_patients(batch, as_of=as_of)
        written += summary.written
        computed += summary.computed
    elapsed = time.perf_counter() - start
    print(f"in-process, one thread: {len(ids)} patients in {elapsed:.2f} s = {len(ids) / elapsed:,.0f} patients/s; "
          f"{written} assessments written ({written / elapsed:,.0f}/s), {computed} computed; "
          f"{queries_per_batch} SQL queries per batch of {args.batch}")

    start = time.perf_counter()
    again = sum(risk_compute_for_patients(b, as_of=as_of).written for b in batches)
    elapsed = time.perf_counter() - start
    print(f"re-run with the same record: {again} new rows, {len(ids) / elapsed:,.0f} patients/s")

    # 2. through the job platform, one worker process
    from tests.integration.workers import WORKER_ARGS, CeleryProcess, RedisServer, free_port, wait_until

    RiskAssessment.objects.all().delete()
    redis = RedisServer(free_port(), Path("/tmp"))
    redis.start()
    app.conf.broker_url = app.conf.broker_read_url = app.conf.broker_write_url = redis.url
    app.conf.task_always_eager = False
    from django.conf import settings

    settings.CELERY_TASK_ALWAYS_EAGER = False
    env = {**os.environ, "CELERY_BROKER_URL": redis.url, "DATABASE_URL": args.database_url,
           "DJANGO_SETTINGS_MODULE": "cdss.settings"}
    worker = CeleryProcess([*WORKER_ARGS, "-n", "bench-risk@%h"], env, ROOT / "var" / "bench-risk-worker.log").start()
    try:
        time.sleep(3)  # worker start-up
        start = time.perf_counter()
        with transaction.atomic():
            from cdss.jobs import runner

            jobs = [runner.job_enqueue(kind="risk", params={"patient_ids": b}, inputs={"bench": time.time()})
                    for b in batches]
        job_ids = [j.pk for j in jobs]
        wait_until(lambda: Job.objects.filter(pk__in=job_ids, status="succeeded").count() == len(job_ids),
                   timeout=600, interval=0.2, what="the risk jobs")
        elapsed = time.perf_counter() - start
        rows = RiskAssessment.objects.count()
        print(f"job platform, ONE worker process (prefork, concurrency 2): {len(ids)} patients in {elapsed:.2f} s = "
              f"{len(ids) / elapsed:,.0f} patients/s ({len(job_ids)} jobs of {args.batch}; {rows} assessments)")
    finally:
        worker.stop()
        redis.stop()
    print("goal: at least 1,000 patients/s end to end")


if __name__ == "__main__":
    main()
