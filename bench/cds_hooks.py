#!/usr/bin/env python
"""Benchmark: CDS Hooks calls end to end (JWT check, request parsing, prefetch mapping, stored
results, rule evaluation, cards stored), on PostgreSQL, one process, through Django's test client
(the full middleware stack; no network hop).

    .venv/bin/python bench/cds_hooks.py [--calls 300] [--observations 200]
        [--database-url postgres://.../cdss_bench_cds_hooks]

Recreates the scratch database, loads the starter rules, registers a client with an RSA key,
stores one patient (AF, CHA2DS2-VASc from the risk job) and then times:
1. patient-view for a patient known only from the prefetch (200 observations, medications,
   conditions, genotypes);
2. patient-view for the stored patient with the same prefetch (stored risk results merged);
3. order-select of clopidogrel for a CYP2C19 poor metabolizer.
Tokens are signed before the timing (signing is the EHR's work). Prints p50/p95/p99 per
scenario; the goal is p95 < 200 ms for a 200-observation prefetch. Asserts nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import production_django  # noqa: E402

LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SERIES = (("33914-3", 45.0, "mL/min/{1.73_m2}"), ("18262-6", 150.0, "mg/dL"), ("4548-4", 7.5, "%"),
          ("2160-0", 1.3, "mg/dL"))


def _days_ago(now: dt.datetime, n: float) -> str:
    return (now - dt.timedelta(days=n)).isoformat()


def prefetch(pid: str, n_obs: int, now: dt.datetime) -> dict[str, Any]:
    obs = []
    for i in range(n_obs):
        code, base, unit = SERIES[i % len(SERIES)]
        obs.append({"resource": {
            "resourceType": "Observation", "id": f"o{i}", "status": "final",
            "code": {"coding": [{"system": LOINC, "code": code}]}, "subject": {"reference": f"Patient/{pid}"},
            "effectiveDateTime": _days_ago(now, 3 + i * 4),
            "valueQuantity": {"value": round(base * (0.9 + (i % 7) * 0.03), 2), "unit": unit, "code": unit}}})
    meds = [("860975", "24 HR metformin hydrochloride 500 MG Extended Release Oral Tablet"),
            ("309362", "clopidogrel 75 MG Oral Tablet"), ("312961", "simvastatin 20 MG Oral Tablet")]
    return {
        "patient": {"resourceType": "Patient", "id": pid, "gender": "male", "birthDate": "1956-04-02"},
        "observations": {"resourceType": "Bundle", "type": "searchset", "entry": obs},
        "medications": {"resourceType": "Bundle", "type": "searchset", "entry": [
            {"resource": {"resourceType": "MedicationRequest", "id": f"m{i}", "status": "active", "intent": "order",
                          "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": c, "display": d}]},
                          "subject": {"reference": f"Patient/{pid}"}}} for i, (c, d) in enumerate(meds)]},
        "conditions": {"resourceType": "Bundle", "type": "searchset", "entry": [
            {"resource": {"resourceType": "Condition", "id": "c1", "subject": {"reference": f"Patient/{pid}"},
                          "clinicalStatus": {"coding": [{"code": "active"}]},
                          "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006",
                                               "display": "Diabetes mellitus type 2"}]}}}]},
        "allergies": None,
        "genomics": {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": {
            "resourceType": "Observation", "id": "g1", "status": "final", "subject": {"reference": f"Patient/{pid}"},
            "code": {"coding": [{"system": LOINC, "code": "69548-6"}]}, "effectiveDateTime": _days_ago(now, 300),
            "component": [
                {"code": {"coding": [{"system": LOINC, "code": "48018-6"}]},
                 "valueCodeableConcept": {"coding": [{"code": "CYP2C19", "display": "CYP2C19"}]}},
                {"code": {"coding": [{"system": LOINC, "code": "53040-2"}]},
                 "valueCodeableConcept": {"text": "Poor metabolizer"}}]}}]},
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    low, high = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--observations", type=int, default=200)
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/cdss_bench_cds_hooks")
    args = parser.parse_args()

    production_django(args.database_url)
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.utils import timezone

    from cdshooks.models import IssuedCard, TrustedClient
    from decision.starter import starter_load
    from patients.models import Condition, Patient, Site
    from risk.models import RiskAssessment

    call_command("migrate", verbosity=0)
    starter_load()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {**jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "bench"}
    issuer = "https://ehr.bench.example"
    TrustedClient.objects.create(name="Bench EHR", issuer=issuer, jwks={"keys": [jwk]})
    now = timezone.now()
    site = Site.objects.create(code="bench", name="Bench")
    stored = Patient.objects.create(site=site, fhir_id="stored-1", mrn="B1", sex="male",
                                    birth_date=dt.date(1950, 1, 1))
    Condition.objects.create(patient=stored, fhir_id="af", code_system="http://snomed.info/sct", code="49436004",
                             display="Atrial fibrillation", clinical_status="active", status="confirmed")
    RiskAssessment.objects.create(patient=stored, calculator="cha2ds2_vasc", calculator_version="1",
                                  status="computed", value=3.0, unit="points", inputs_hash="b", as_of=now)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")

    client = Client()
    base = "https://testserver"

    def token(path: str) -> str:
        t = int(time.time())
        return jwt.encode({"iss": issuer, "aud": base + path, "exp": t + 300, "iat": t, "jti": str(uuid.uuid4())},
                          key, algorithm="RS384", headers={"kid": "bench", "typ": "JWT"})

    def body_for(scenario: str) -> tuple[str, dict[str, Any]]:
        if scenario == "order-select":
            pid = "visitor"
            pf = prefetch(pid, args.observations, now)
            draft = {"resourceType": "MedicationRequest", "id": "draft-1", "status": "draft", "intent": "order",
                     "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "309362",
                                                               "display": "clopidogrel 75 MG Oral Tablet"}]},
                     "subject": {"reference": f"Patient/{pid}"}}
            pf["medications"] = None
            return "order-select", {
                "hook": "order-select", "hookInstance": str(uuid.uuid4()),
                "context": {"userId": "Practitioner/1", "patientId": pid, "selections": ["MedicationRequest/draft-1"],
                            "draftOrders": {"resourceType": "Bundle", "type": "collection",
                                            "entry": [{"resource": draft}]}},
                "prefetch": {k: pf[k] for k in ("observations", "medications", "genomics", "allergies")}}
        pid = "stored-1" if scenario == "patient-view (stored patient)" else "visitor"
        return "patient-view", {"hook": "patient-view", "hookInstance": str(uuid.uuid4()),
                                "context": {"userId": "Practitioner/1", "patientId": pid},
                                "prefetch": prefetch(pid, args.observations, now)}

    size = len(json.dumps(body_for("patient-view (prefetch only)")[1]))
    print(f"PostgreSQL {connection.cursor().connection.info.server_version}; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; prefetch of {args.observations} observations "
          f"({size / 1024:.0f} KiB request)")
    for scenario in ("patient-view (prefetch only)", "patient-view (stored patient)", "order-select"):
        service, _ = body_for(scenario)
        path = f"/cds-services/{service}"
        calls = []
        for _ in range(args.calls + 10):
            _, body = body_for(scenario)
            calls.append((json.dumps(body), token(path)))
        times: list[float] = []
        cpu: list[float] = []
        cards = 0
        for i, (data, tok) in enumerate(calls):
            start, cpu_start = time.perf_counter(), time.process_time()
            response = client.post(path, data=data, content_type="application/json", secure=True,
                                   HTTP_AUTHORIZATION=f"Bearer {tok}")
            elapsed = (time.perf_counter() - start) * 1000
            cpu_ms = (time.process_time() - cpu_start) * 1000
            if response.status_code != 200:
                raise SystemExit(f"{scenario}: HTTP {response.status_code} {response.content[:300]!r}")
            if i >= 10:  # the first calls warm the caches (compiled rules, value sets)
                times.append(elapsed)
                cpu.append(cpu_ms)
                cards = len(response.json()["cards"])
        print(f"{scenario}: {len(times)} calls, {cards} card(s) each; p50 {percentile(times, 0.5):.1f} ms, "
              f"p95 {percentile(times, 0.95):.1f} ms, p99 {percentile(times, 0.99):.1f} ms, "
              f"mean {statistics.fmean(times):.1f} ms, max {max(times):.1f} ms; this process's CPU per call: p50 "
              f"{percentile(cpu, 0.5):.1f} ms, p95 {percentile(cpu, 0.95):.1f} ms")
    print(f"{IssuedCard.objects.count()} cards stored; goal: p95 < 200 ms with a {args.observations}-observation "
          "prefetch")


if __name__ == "__main__":
    main()
