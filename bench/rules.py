#!/usr/bin/env python
"""Benchmark: the starter rule library over a synthetic population, on PostgreSQL, one process.

    .venv/bin/python bench/rules.py [--patients 10000] [--database-url postgres://.../cdss_bench_rules]

Recreates the scratch database, bulk-creates a synthetic population (demographics; LDL, HbA1c,
eGFR series and vital signs; AF, diabetes and CKD diagnoses; statins incl. simvastatin 40 mg,
metformin, clopidogrel, anticoagulants; CYP2C19 and SLCO1B1 results; note findings), computes
the risk assessments once (not timed with the rules), loads the starter library, then measures:
1. facts loading + evaluation of every active rule, nothing written (patients/s, queries/batch);
2. the same with recommendations written (``patients_evaluate``) and the re-run (updates only);
3. a backtest of a draft version of one rule over the whole population beside its active one;
4. the same backtest queued as jobs (one per chunk of patients), run in this process as on the
   embedded default (no broker).
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

SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


def populate(n: int, as_of: dt.datetime) -> None:
    from nlp.models import NoteExtraction, NoteFact
    from patients import models as m

    rng = random.Random(11)
    site, _ = m.Site.objects.get_or_create(code="bench", defaults={"name": "Bench"})
    patients = [
        m.Patient(site=site, fhir_id=f"p{i}", mrn=f"R{i:07d}", family_name=f"Bench{i}", given_names="Pat",
                  birth_date=dt.date(as_of.year - rng.randint(30, 88), rng.randint(1, 12), rng.randint(1, 28)),
                  sex=rng.choice(["female", "male"]))
        for i in range(n)
    ]
    m.Patient.objects.bulk_create(patients, batch_size=2000)
    obs: list[m.Observation] = []
    conds: list[m.Condition] = []
    meds: list[m.MedicationRequest] = []
    genes: list[m.GenomicResult] = []
    notes: list[m.ClinicalNote] = []
    for p in patients:
        for visit in range(3):
            day = as_of - dt.timedelta(days=rng.randint(5, 120) + 150 * visit)
            values = [
                ("2093-3", rng.gauss(200, 35), "mg/dL"), ("2085-9", rng.gauss(52, 12), "mg/dL"),
                ("18262-6", rng.gauss(125, 35), "mg/dL"), ("8480-6", rng.gauss(132, 16), "mm[Hg]"),
                ("8462-4", rng.gauss(80, 10), "mm[Hg]"), ("4548-4", rng.gauss(6.6, 1.5), "%"),
                ("33914-3", rng.gauss(72, 20), "mL/min/{1.73_m2}"), ("2160-0", rng.gauss(1.0, 0.25), "mg/dL"),
            ]
            for j, (code, value, unit) in enumerate(values):
                obs.append(m.Observation(patient=p, fhir_id=f"o{p.fhir_id}-{visit}-{j}", status="final",
                                         code=code, value_quantity=round(max(value, 0.3), 2), value_unit=unit,
                                         effective_at=day))
        obs.append(m.Observation(patient=p, fhir_id=f"o{p.fhir_id}-smoke", status="final", code="72166-2",
                                 value_code=rng.choice(["266919005", "8517006", "449868002"]),
                                 effective_at=as_of - dt.timedelta(days=30)))
        for code, display, share in (("44054006", "Diabetes mellitus type 2", 0.15),
                                     ("38341003", "Hypertension", 0.3), ("49436004", "Atrial fibrillation", 0.08),
                                     ("433144002", "Chronic kidney disease stage 3", 0.05)):
            if rng.random() < share:
                conds.append(m.Condition(patient=p, fhir_id=f"c{p.fhir_id}-{code}", status="confirmed",
                                         clinical_status="active", code_system=SNOMED, code=code, display=display))
        for code, display, share in (("617310", "atorvastatin 20 MG Oral Tablet", 0.2),
                                     ("", "simvastatin 40 MG Oral Tablet", 0.06),
                                     ("860975", "24 HR metformin hydrochloride 500 MG Extended Release Oral Tablet",
                                      0.12),
                                     ("309362", "clopidogrel 75 MG Oral Tablet", 0.06),
                                     ("855332", "warfarin sodium 5 MG Oral Tablet", 0.04),
                                     ("314076", "lisinopril 10 MG Oral Tablet", 0.25)):
            if rng.random() < share:
                meds.append(m.MedicationRequest(patient=p, fhir_id=f"m{p.fhir_id}-{display[:12]}", status="active",
                                                intent="order", code_system=RXNORM if code else "", code=code,
                                                display=display))
        for gene, phenotypes in (("CYP2C19", ("Normal metabolizer", "Intermediate metabolizer", "Poor metabolizer")),
                                 ("SLCO1B1", ("Normal function", "Decreased function"))):
            if rng.random() < 0.1:
                genes.append(m.GenomicResult(patient=p, fhir_id=f"g{p.fhir_id}-{gene}", gene=gene,
                                             phenotype=rng.choice(phenotypes), effective_at=as_of))
        if rng.random() < 0.2:
            notes.append(m.ClinicalNote(patient=p, fhir_id=f"n{p.fhir_id}", source_type="typed", text="...",
                                        written_at=as_of - dt.timedelta(days=rng.randint(1, 200))))
    m.Observation.objects.bulk_create(obs, batch_size=5000)
    m.Condition.objects.bulk_create(conds, batch_size=5000)
    m.MedicationRequest.objects.bulk_create(meds, batch_size=5000)
    m.GenomicResult.objects.bulk_create(genes, batch_size=5000)
    m.ClinicalNote.objects.bulk_create(notes, batch_size=5000)
    extractions = NoteExtraction.objects.bulk_create(
        [NoteExtraction(note=note, patient_id=note.patient_id, pipeline_version="bench") for note in notes])
    facts = []
    for ext in extractions:
        for concept, code in (("heart-failure", "84114007"), ("atrial-fibrillation", "49436004")):
            if rng.random() < 0.5:
                facts.append(NoteFact(extraction=ext, patient_id=ext.patient_id, kind="problem", concept_id=concept,
                                      preferred=concept, codes=[{"system": SNOMED, "code": code}], text=concept,
                                      start=0, end=len(concept), stage="bench", negated=rng.random() < 0.3))
    NoteFact.objects.bulk_create(facts, batch_size=5000)
    print(f"population: {n} patients, {len(obs)} observations, {len(conds)} conditions, {len(meds)} medications, "
          f"{len(genes)} genomic results, {len(facts)} note findings")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/cdss_bench_rules")
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--reuse", action="store_true", help="Measure on the population already there")
    args = parser.parse_args()

    if not args.reuse:
        recreate_database(args.database_url)
    os.environ["DATABASE_URL"] = args.database_url
    os.environ["DJANGO_SETTINGS_MODULE"] = "cdss.settings"
    os.environ["DJANGO_DEBUG"] = "false"
    # the embedded default: jobs run in this process once their transaction commits
    os.environ["CELERY_BROKER_URL"] = ""
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz")
    import django

    django.setup()
    import logging

    logging.getLogger("celery").setLevel(logging.WARNING)  # the embedded jobs' task lines
    from django.core.management import call_command
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from decision.load import fact_plan
    from decision.models import Recommendation, Rule
    from decision.services import (
        active_rules,
        backtest_queue,
        backtest_run,
        evaluate_batch,
        patients_evaluate,
        plan_for_rules,
        rule_version_edit,
    )
    from decision.starter import starter_load
    from patients.models import Patient
    from risk.services import risk_compute_for_patients

    call_command("migrate", verbosity=0)
    as_of = timezone.now()
    start = time.perf_counter()
    if not args.reuse:
        populate(args.patients, as_of)
        ids = list(Patient.objects.order_by("pk").values_list("pk", flat=True))
        for i in range(0, len(ids), 1000):
            risk_compute_for_patients(ids[i:i + 1000], as_of=as_of)
        starter_load()
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")  # planner statistics, as autovacuum keeps them in production
    else:
        Recommendation.objects.all().delete()
        Rule.objects.get(slug="statin-ldl-190").versions.filter(status="draft").delete()
    ids = list(Patient.objects.order_by("pk").values_list("pk", flat=True))
    print(f"population ready in {time.perf_counter() - start:.1f} s; "
          f"PostgreSQL {connection.cursor().connection.info.server_version}; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs")

    plan = fact_plan()
    rules = active_rules(value_sets=plan.value_sets)
    plan = plan_for_rules(plan, rules[0])
    batches = [ids[i:i + args.batch] for i in range(0, len(ids), args.batch)]

    # 1. facts + evaluation, nothing written
    start, cpu = time.perf_counter(), time.process_time()
    fired = 0
    with CaptureQueriesContext(connection) as ctx:
        results = evaluate_batch(batches[0], rules[0], rules[1], plan=plan)
    queries = len(ctx.captured_queries)
    fired += sum(r.fired for rs in results.values() for r in rs)
    for batch in batches[1:]:
        results = evaluate_batch(batch, rules[0], rules[1], plan=plan)
        fired += sum(r.fired for rs in results.values() for r in rs)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"facts + evaluation ({len(rules[0])} rules), one process: {len(ids)} patients in {elapsed:.2f} s = "
          f"{len(ids) / elapsed:,.0f} patients/s (this process's CPU: {cpu:.2f} s = {len(ids) / cpu:,.0f} "
          f"patients per CPU second; the rest is PostgreSQL and waiting for a CPU); {fired} rules fired; "
          f"{queries} SQL queries per batch of {args.batch}")

    # 2. with recommendations written, then the re-run
    summary = patients_evaluate(ids, plan=plan, rules=rules, batch_size=args.batch)
    print(f"evaluation + recommendations written: {summary.patients / summary.seconds:,.0f} patients/s "
          f"({summary.opened} opened in {summary.seconds:.2f} s)")
    summary = patients_evaluate(ids, plan=plan, rules=rules, batch_size=args.batch)
    print(f"re-run (updates, no duplicates): {summary.patients / summary.seconds:,.0f} patients/s; "
          f"{summary.opened} opened, {summary.updated} updated; "
          f"{Recommendation.objects.count()} recommendations in all")
    by_rule = Recommendation.objects.values_list("rule__slug").order_by("rule__slug")
    counts: dict[str, int] = {}
    for (slug,) in by_rule:
        counts[slug] = counts.get(slug, 0) + 1
    print("fired per rule: " + ", ".join(f"{k} {v}" for k, v in counts.items()))

    # 3. backtest of a draft beside the active version
    rule = Rule.objects.get(slug="statin-ldl-190")
    active = rule.versions.get(status="active")
    conditions = {"all": [c if c.get("fact") != "observation:ldl" else {**c, "value": 160}
                          for c in active.conditions["all"]]}
    draft = rule_version_edit(rule, conditions=conditions, change_note="bench: LDL 160")
    bt = backtest_run(draft, batch_size=args.batch)
    print(f"backtest of {rule.slug} v{draft.number} (LDL >= 160) beside v{active.number} over {bt.patients} "
          f"patients: {bt.seconds:.2f} s; fires {bt.fired} (active {bt.compared_fired}; +{bt.newly_fired} "
          f"-{bt.no_longer_fired})")
    # 4. the same backtest as jobs (one per chunk), run here as on the embedded default
    start = time.perf_counter()
    queued = backtest_queue(draft, chunk_size=args.batch)
    queued.refresh_from_db()
    elapsed = time.perf_counter() - start
    same = (queued.fired, queued.compared_fired, queued.newly_fired, queued.no_longer_fired) == (
        bt.fired, bt.compared_fired, bt.newly_fired, bt.no_longer_fired)
    print(f"the same backtest as {queued.chunks} jobs run in this process: {queued.status} in {elapsed:.2f} s; "
          f"fires {queued.fired} ({'the same figures' if same else 'DIFFERENT figures'})")
    print("goals: at least 1,000 patients/s with facts loading; backtest under 30 s for 10,000")


if __name__ == "__main__":
    main()
