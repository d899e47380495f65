"""Property-based run of the whole API against its own OpenAPI schema (schemathesis, offline).

The schema is fetched through the WSGI app with a clinician's token, then for every operation a
bounded number of generated requests (path ids drawn half the time from real rows of the
clinician's site, so that the 200 paths run too) is checked: no 5xx, responses and their content
types as documented, status codes documented. A second pass sends the same kind of requests
without credentials: every one must be refused with 401 (no endpoint is open).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from cdss.jobs.runner import job_enqueue
from cdss.wsgi import application

pytestmark = [pytest.mark.django_db]


@pytest.fixture(autouse=True)
def keep_the_test_connection():
    """The app is called as a WSGI server would, which closes the database connection at the end
    of each request; the test's transaction lives on that connection, so (as Django's test client
    does) the signal handler is off for the test."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)

@pytest.fixture(autouse=True)
def no_rate_limits(settings):
    """Hundreds of requests a minute from one user: the conformance run is not about rates
    (tests/api/test_throttling.py is; a 429 is documented on every operation all the same)."""
    rest = settings.REST_FRAMEWORK
    settings.REST_FRAMEWORK = {**rest, "DEFAULT_THROTTLE_RATES": {scope: None for scope in
                                                                  rest["DEFAULT_THROTTLE_RATES"]}}


# DICOMweb STOW-RS (POST /api/imaging/dicomweb/studies) takes multipart/related bodies, which
# schemathesis does not make by itself: raw bytes, some shaped like a multipart body.
schemathesis.openapi.media_type("multipart/related", st.one_of(
    st.binary(max_size=256),
    st.builds(lambda head, part: b"--b\r\nContent-Type: application/dicom\r\n\r\n" + head + part + b"\r\n--b--",
              st.sampled_from([b"", b"DICM", b"\x00" * 128 + b"DICM"]), st.binary(max_size=128)),
))

EXAMPLES_PER_OPERATION = 25
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def _real_ids(record: Any) -> dict[str, str]:
    job = job_enqueue(kind="test.patient_probe", patient=record.patient, inputs={"n": 1})
    return {"patient": str(record.patient.external_id), "recommendation": str(record.recommendation.external_id),
            "job": str(job.external_id), "note": str(record.note.external_id)}


def _path_ids(path: str, ids: dict[str, str]) -> dict[str, str]:
    """The real ids for the operation's path parameters."""
    out = {}
    if "{external_id}" in path:
        head = path.split("/")[2]
        out["external_id"] = ids[{"patients": "patient", "recommendations": "recommendation", "jobs": "job"}[head]]
    if "{note_id}" in path:
        out["note_id"] = ids["note"]
    if "{name}" in path:
        out["name"] = "egfr_ckd_epi_2021"
    return out


def _probe(operation: Any, real: dict[str, str], headers: dict[str, str], check: Any, seen: list[int]) -> Any:
    @given(case=operation.as_strategy(), use_real=st.booleans())
    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def probe(case: Any, use_real: bool) -> None:
        if use_real and real:
            case.path_parameters = {**(case.path_parameters or {}), **real}
        response = case.call(headers=headers)
        seen.append(response.status_code)
        check(case, response)

    return probe


def _run(schema: Any, ids: dict[str, str], headers: dict[str, str], check: Any) -> tuple[int, int, list[str]]:
    operations = examples = 0
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        real = _path_ids(operation.path, ids)
        operations += 1
        seen: list[int] = []

        probe = _probe(operation, real, headers, check, seen)
        try:
            probe()
        except Exception as exc:  # noqa: BLE001 - each operation's failure is collected, then all reported
            failures.append(f"{operation.method.upper()} {operation.path}: {str(exc)[:1500]}")
        examples += len(seen)
    return operations, examples, failures


def test_no_server_errors_and_responses_as_documented(record_a, record_b, clinician_a, capsys):
    token = Token.objects.create(user=clinician_a)
    headers = {"Authorization": f"Token {token.key}"}
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application, headers=headers)
    ids = _real_ids(record_a)
    statuses: Counter[int] = Counter()

    def check(case: Any, response: Any) -> None:
        statuses[response.status_code] += 1
        case.validate_response(response, checks=CHECKS, headers=headers)

    started = time.perf_counter()
    operations, examples, failures = _run(schema, ids, headers, check)
    with capsys.disabled():
        print(f"\nschemathesis: {operations} operations, {examples} requests, {len(failures)} failing operations, "
              f"statuses {dict(sorted(statuses.items()))}, {time.perf_counter() - started:.1f} s")
    assert operations >= 20
    assert not failures, "\n\n".join(failures[:3])
    assert statuses[200] > 0 and not any(code >= 500 for code in statuses)
    assert not failures, "\n\n".join(failures)


def test_without_credentials_every_operation_is_refused(record_a, clinician_a):
    token = Token.objects.create(user=clinician_a)
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application,
                                            headers={"Authorization": f"Token {token.key}"})
    ids = _real_ids(record_a)
    statuses: Counter[int] = Counter()

    def check(case: Any, response: Any) -> None:
        statuses[response.status_code] += 1
        assert response.status_code == 401, f"{case.method} {case.formatted_path}: {response.status_code}"

    operations, examples, failures = _run(schema, ids, {}, check)
    assert operations >= 20 and examples >= operations
    assert not failures, "\n\n".join(failures)
    assert set(statuses) == {401}
