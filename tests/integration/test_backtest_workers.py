"""A backtest queued as jobs and run by a real Celery worker (on Redis and the test database)
gives the figures of the same backtest run in one process."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from cdss.models import Job
from decision.models import Backtest
from decision.services import (
    BACKTEST_KIND,
    backtest_queue,
    backtest_run,
    rule_create,
    rule_version_activate,
    rule_version_edit,
    value_sets_import,
)
from tests.factories import ObservationFactory, PatientFactory, UserFactory
from tests.integration.workers import wait_until

pytestmark = [
    pytest.mark.skipif(connection.vendor != "postgresql",
                       reason="workers share the test database: needs PostgreSQL (CI sets DATABASE_URL)"),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
    pytest.mark.django_db(transaction=True),
]
STARTER = Path(__file__).resolve().parents[2] / "decision" / "data" / "starter_value_sets.json"


def _ldl(value: float, at: dt.datetime) -> None:
    ObservationFactory(patient=PatientFactory(), code="18262-6", value_quantity=value, value_unit="mg/dL",
                       effective_at=at)


def test_a_backtest_run_by_a_worker_gives_the_in_process_figures(platform):
    value_sets_import(json.loads(STARTER.read_text()))
    user = UserFactory(username="rules-admin")
    ldl = {"fact": "observation:ldl", "op": ">=", "value": 190, "unit": "mg/dL", "lookback_days": 730}
    v1 = rule_version_activate(rule_create(slug="ldl-high", title="LDL high", user=user, conditions={"all": [ldl]},
                                           summary_template="LDL {ldl}", citation_source="test"), user=user)
    at = timezone.now() - dt.timedelta(days=5)
    for i in range(23):
        _ldl(120 + 5 * i, at)  # 120 .. 230 mg/dL
    draft = rule_version_edit(v1.rule, user=user, conditions={"all": [{**ldl, "value": 160}]})

    platform.worker()
    queued = backtest_queue(draft, user=user, chunk_size=5)
    assert queued.chunks == 5
    wait_until(lambda: Backtest.objects.get(pk=queued.pk).status in ("done", "failed"), timeout=120,
               what="the backtest's jobs to finish")
    queued.refresh_from_db()
    in_process = backtest_run(draft, user=user)

    def figures(bt: Backtest) -> tuple:
        return (bt.status, bt.patients, bt.fired, bt.compared_fired, bt.newly_fired, bt.no_longer_fired,
                [s["patient_id"] for s in bt.sample])

    assert figures(queued) == figures(in_process)
    # 160..230 fire for the draft (15), 190..230 for the active version (9)
    assert figures(queued)[1:6] == (23, 15, 9, 6, 0)
    jobs = Job.objects.filter(kind=BACKTEST_KIND, target_id=str(queued.pk))
    assert sorted(jobs.values_list("status", flat=True)) == ["succeeded"] * 5
    assert set(jobs.values_list("attempts", flat=True)) == {1}
    assert queued.chunks_done == 5
