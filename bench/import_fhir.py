#!/usr/bin/env python
"""Benchmark: FHIR import throughput into PostgreSQL, and the patient page's cost.

    .venv/bin/python bench/import_fhir.py [--database-url postgres://postgres@127.0.0.1:5432/cdss_bench]

Recreates the named database (it must be a scratch database), imports the Synthea folder under
CDSS_DATA_DIR (fhir/synthea-r4), imports it again (the idempotent pass), then measures the
patient page for a patient with 1,000 observations: SQL queries and server time (median of 50).
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import recreate_database  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/cdss_bench")
    parser.add_argument("--observations", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--broker-url", default="redis://127.0.0.1:6379/15",
                        help="Where the jobs an import queues are published (as in production; purged after)")
    args = parser.parse_args()
    # With a broker, the risk jobs an import queues wait for workers, as in production; without
    # one they would run inside the import and be counted in its time.
    os.environ["CELERY_BROKER_URL"] = args.broker_url

    recreate_database(args.database_url)
    os.environ["DATABASE_URL"] = args.database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cdss.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from patients import models as m
    from patients.services import fhir_import_paths, site_get_default

    call_command("migrate", verbosity=0)
    folder = Path(settings.CDSS_DATA_DIR) / "fhir" / "synthea-r4"
    if not folder.is_dir():
        sys.exit(f"{folder} is missing; set CDSS_DATA_DIR")
    site = site_get_default()

    from cdss.celery import app

    print(f"database: PostgreSQL {connection.cursor().connection.info.server_version}, data: {folder}")
    for label in ("first import", "second import (no changes)"):
        start = time.perf_counter()
        summary = fhir_import_paths([folder], site=site)
        elapsed = time.perf_counter() - start
        assert summary.ok, summary.as_dict()["errors"][:3]
        totals = summary.totals()
        written = sum(c["created"] + c["updated"] for c in totals.values())
        print(f"{label}: {len(summary.units)} bundles, {summary.resources} resources in {elapsed:.2f} s "
              f"= {summary.resources / elapsed:,.0f} resources/s ({written} rows written)")

    # The patient page with a large record.
    from django.contrib.auth.models import User

    patient = m.Patient.objects.order_by("pk").first()
    assert patient is not None
    import datetime as dt

    codes = [("8480-6", "Systolic blood pressure", "mm[Hg]"), ("8867-4", "Heart rate", "/min"),
             ("2093-3", "Cholesterol", "mg/dL"), ("4548-4", "Hemoglobin A1c", "%"), ("29463-7", "Body weight", "kg")]
    base = dt.datetime(2015, 1, 1, tzinfo=dt.UTC)
    existing = m.Observation.objects.filter(patient=patient).count()
    m.Observation.objects.bulk_create(
        m.Observation(patient=patient, fhir_id=f"bench-{i}", status="final", category="vital-signs",
                      code=codes[i % 5][0], display=codes[i % 5][1], value_unit=codes[i % 5][2],
                      value_quantity=100 + (i % 37), effective_at=base + dt.timedelta(days=i))
        for i in range(max(0, args.observations - existing))
    )
    total_obs = m.Observation.objects.filter(patient=patient).count()
    user = User.objects.create_user("bench", password="bench-password-1")
    m.SiteMembership.objects.create(user=user, site=site)
    client = Client()
    client.force_login(user)
    url = f"/patients/{patient.external_id}/"
    client.get(url)  # warm up
    times = []
    with CaptureQueriesContext(connection) as ctx:
        client.get(url)
    queries = len(ctx.captured_queries)
    for _ in range(args.repeat):
        start = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200
    print(f"patient page: {total_obs} observations, {queries} SQL queries per view, server time median "
          f"{statistics.median(times):.1f} ms, p95 {sorted(times)[int(0.95 * len(times)) - 1]:.1f} ms "
          f"({args.repeat} requests)")
    from cdss.models import Job

    with app.connection_for_write() as conn:
        purged = sum(app.amqp.queues[q].bind(conn.default_channel).purge() or 0 for q in ("risk",)
                     if q in app.amqp.queues)
    print(f"jobs queued by the imports: {Job.objects.count()} (their messages purged: {purged})")


if __name__ == "__main__":
    main()
