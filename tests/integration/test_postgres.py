"""PostgreSQL-specific guarantees: uniqueness under concurrency, the latest-value index."""

from __future__ import annotations

import threading

import orjson
import pytest
from django.db import connection, connections

from patients import models as m
from patients.services import fhir_import_bundle
from tests.factories import ObservationFactory, SiteFactory
from tests.patients.fhir_samples import valid_bundle

postgres_only = pytest.mark.skipif(connection.vendor != "postgresql",
                                   reason="needs PostgreSQL (CI runs it with DATABASE_URL set)")


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_imports_of_one_bundle_give_one_set_of_rows():
    site = SiteFactory(code="concurrent")
    data = orjson.dumps(valid_bundle())
    barrier = threading.Barrier(4)
    results = []
    errors: list[dict[str, str]] = []

    def work() -> None:
        try:
            barrier.wait()
            summary = fhir_import_bundle(data, site=site)
            results.append(summary.ok)
            errors.extend(summary.as_dict()["errors"])
        except Exception as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append({"message": repr(exc)})
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 4, errors
    assert m.Patient.objects.count() == 1
    assert m.Observation.objects.filter(parent__isnull=True).count() == 2
    assert m.Observation.objects.filter(parent__isnull=False).count() == 2
    assert m.Encounter.objects.count() == 1


@postgres_only
@pytest.mark.django_db
def test_the_latest_value_of_a_code_for_a_patient_is_one_index_scan():
    obs = ObservationFactory()
    for _ in range(20):
        ObservationFactory(patient=obs.patient)
    qs = m.Observation.objects.filter(patient=obs.patient, code="2093-3").order_by("-effective_at")[:1]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_bitmapscan = off")
        sql, params = qs.query.sql_with_params()
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "obs_patient_code_latest" in plan, plan
    assert "Sort" not in plan, plan  # the index order answers ORDER BY ... DESC LIMIT 1
