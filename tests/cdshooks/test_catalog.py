"""The service catalog: which rules each service evaluates, and its rebuild when rules change."""

from __future__ import annotations

import pytest

from cdshooks.catalog import catalog_get
from decision.models import Rule, RuleVersion
from decision.services import rule_version_edit

pytestmark = pytest.mark.django_db


def test_order_services_take_the_medication_rules_that_fire_on_an_order(starter):
    catalog = catalog_get()
    order = {r.slug for r in catalog.rules["order-select"]}
    assert order == {"drug-allergy", "metformin-egfr-30", "pgx-cyp2c19-clopidogrel", "pgx-hla-b5701-abacavir",
                     "pgx-slco1b1-simvastatin"}
    assert {r.slug for r in catalog.rules["order-sign"]} == order
    assert len(catalog.rules["patient-view"]) == 13
    assert catalog.categories["order-select"] == {"observations", "medications", "genomics", "allergies"}


def test_the_catalog_follows_rule_changes(starter):
    assert "sepsis-screen" in {r.slug for r in catalog_get().rules["patient-view"]}
    rule = Rule.objects.get(slug="sepsis-screen")
    rule.shadow = True
    rule.save()
    assert "sepsis-screen" not in {r.slug for r in catalog_get().rules["patient-view"]}
    RuleVersion.objects.filter(rule__slug="hba1c-9").update(status=RuleVersion.Status.RETIRED)
    assert "hba1c-9" not in {r.slug for r in catalog_get().rules["patient-view"]}


def test_a_new_active_version_is_used(starter):
    rule = Rule.objects.get(slug="statin-ldl-190")
    active = rule.versions.get(status="active")
    draft = rule_version_edit(rule, summary_template="LDL {ldl}: start a high-intensity statin (changed).")
    RuleVersion.objects.filter(pk=active.pk).update(status="retired")
    RuleVersion.objects.filter(pk=draft.pk).update(status="active")
    meta = {m.slug: m.number for m in catalog_get().meta.values()}
    assert meta["statin-ldl-190"] == draft.number == 2
