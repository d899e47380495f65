"""Pharmacogenomic results of both FHIR shapes, end to end: a Bundle imported through the
importer, the facts loaded from the database, and the starter library's CPIC rules firing."""

from __future__ import annotations

import orjson
import pytest

from decision.engine import evaluate
from decision.load import fact_plan, load_facts
from decision.services import active_rules
from decision.starter import starter_load
from patients.models import Patient
from patients.services import fhir_import_bundle
from tests.patients.fhir_samples import GENOMIC_SHAPES, HGNC, genomic_bundle

pytestmark = pytest.mark.django_db
PGX = ("pgx-cyp2c19-clopidogrel", "pgx-hla-b5701-abacavir", "pgx-slco1b1-simvastatin")


def _fired(patient: Patient) -> dict[str, list[dict]]:
    plan = fact_plan()
    rules, _ = active_rules(value_sets=plan.value_sets)
    return {r.rule: r.trace for r in evaluate(rules, load_facts(patient, plan=plan)) if r.fired}


def test_genomic_results_of_both_shapes_fire_the_cpic_rules(site_a):
    starter_load()
    # shape 1 (CYP2C19 and SLCO1B1 from 48018-6 components) and shape 2 (HLA-B*57:01 in the code)
    first = genomic_bundle("c0000000-0000-4000-8000-000000000001", "MRN-PGX-1", GENOMIC_SHAPES,
                           medications=("clopidogrel 75 MG Oral Tablet", "abacavir 300 MG Oral Tablet",
                                        "simvastatin 40 MG Oral Tablet"))
    # shape 2 only: CYP2C19 named by an HGNC coding in the code, the result a string
    second = genomic_bundle("c0000000-0000-4000-8000-000000000002", "MRN-PGX-2", [
        {"id": "d0000000-0000-4000-8000-000000000001",
         "code": {"coding": [{"system": HGNC, "code": "HGNC:2621", "display": "CYP2C19"}]},
         "valueString": "Intermediate metabolizer"}], medications=("clopidogrel 75 MG Oral Tablet",))
    for bundle in (first, second):
        summary = fhir_import_bundle(orjson.dumps(bundle), site=site_a)
        assert summary.ok

    fired = _fired(Patient.objects.get(mrn="MRN-PGX-1"))
    assert set(PGX) <= set(fired)
    values = {t["fact"]: t for rule in PGX for t in fired[rule]}
    assert values["genomic:CYP2C19"]["value"] == "Poor metabolizer"
    assert values["genomic:HLA-B*57:01"]["value"] == "Positive"
    assert values["genomic:SLCO1B1"]["value"] == "Decreased function"
    assert all(values[k]["source"].startswith("GenomicResult:") for k in values if k.startswith("genomic:"))

    fired = _fired(Patient.objects.get(mrn="MRN-PGX-2"))
    assert "pgx-cyp2c19-clopidogrel" in fired and not {"pgx-hla-b5701-abacavir", "pgx-slco1b1-simvastatin"} & set(fired)
    cyp = next(t for t in fired["pgx-cyp2c19-clopidogrel"] if t["fact"] == "genomic:CYP2C19")
    assert cyp["value"] == "Intermediate metabolizer" and cyp["held"]
