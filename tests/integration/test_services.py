"""The real services CI provides: PostgreSQL behind the ORM, Redis behind Celery."""

from __future__ import annotations

import os

import pytest
from django.db import connection

from cdss.celery import app


@pytest.mark.django_db
def test_the_test_database_is_the_configured_engine():
    expected = "postgresql" if os.environ.get("DATABASE_URL", "").startswith("postgres") else "sqlite"
    assert connection.vendor == expected


def test_celery_reaches_the_broker_or_runs_in_process():
    if os.environ.get("CELERY_BROKER_URL"):
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=2)
            assert conn.connected
        assert app.conf.task_always_eager is False
    else:
        assert app.conf.task_always_eager is True
