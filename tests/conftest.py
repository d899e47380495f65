"""Shared fixtures. Tests run on PostgreSQL when DATABASE_URL points at it (CI), else SQLite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.conf import settings

from tests.factories import PatientFactory, SiteFactory, clinician_of


def data_dir() -> Path:
    return Path(settings.CDSS_DATA_DIR)


def require_data(relative: str) -> Path:
    """The path under CDSS_DATA_DIR, or skip (fail when CDSS_REQUIRE_DATA=1, as in CI)."""
    path = data_dir() / relative
    if not path.exists():
        message = f"{path} is missing (set CDSS_DATA_DIR to the shared data folder)"
        if os.environ.get("CDSS_REQUIRE_DATA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def eager(settings):
    """Jobs run in-process after commit, as with no broker configured (the embedded default; a
    live server's thread reads the same settings and Celery app)."""
    from cdss.celery import app

    before = app.conf.task_always_eager
    settings.CELERY_TASK_ALWAYS_EAGER = True
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = before


@pytest.fixture
def site_a(db):
    return SiteFactory(code="site-a", name="Site A Hospital")


@pytest.fixture
def site_b(db):
    return SiteFactory(code="site-b", name="Site B Clinic")


@pytest.fixture
def clinician_a(site_a):
    return clinician_of(site_a, username="clin-a")


@pytest.fixture
def patient_a(site_a):
    return PatientFactory(site=site_a, family_name="Alpha", given_names="Ann")


@pytest.fixture
def patient_b(site_b):
    return PatientFactory(site=site_b, family_name="Bravo", given_names="Bob")


@pytest.fixture
def client_a(client, clinician_a):
    client.force_login(clinician_a)
    return client


@pytest.fixture(autouse=True)
def _fresh_rate_counters():
    """Each test starts with no request counted against any rate (cdss.throttling: the counters
    live in the default cache, which outlives a test)."""
    from django.core.cache import cache

    cache.clear()
