"""The database keeps one active recommendation per patient and rule, one active version per rule."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from decision.models import Recommendation, Rule, RuleVersion, default_override_reasons

pytestmark = pytest.mark.django_db


def _rule() -> tuple[Rule, RuleVersion]:
    rule = Rule.objects.create(slug="r", title="R")
    version = RuleVersion.objects.create(rule=rule, number=1, status="active", summary_template="s",
                                         conditions={"all": []})
    return rule, version


def test_a_second_active_version_of_a_rule_is_refused():
    rule, _ = _rule()
    with pytest.raises(IntegrityError), transaction.atomic():
        RuleVersion.objects.create(rule=rule, number=2, status="active", summary_template="s")
    RuleVersion.objects.create(rule=rule, number=2, status="draft", summary_template="s")


def test_a_second_active_recommendation_for_a_patient_and_rule_is_refused(patient_a):
    rule, version = _rule()
    now = timezone.now()
    fields = dict(patient=patient_a, rule=rule, rule_version=version, severity="warning", summary="s",
                  first_fired_at=now, last_fired_at=now, status_changed_at=now)
    Recommendation.objects.create(**fields)
    with pytest.raises(IntegrityError), transaction.atomic():
        Recommendation.objects.create(**fields)
    # a resolved (closed) one beside the active one is allowed: history is kept
    Recommendation.objects.create(**fields | {"status": "resolved", "closed_at": now})


def test_override_reasons_default_to_the_cds_hooks_codes():
    _, version = _rule()
    codes = {r["code"] for r in version.override_reasons}
    assert {"cds-not-applicable", "patient-ineligible", "action-completed", "recipient-disagrees-evidence"} <= codes
    assert all(r["system"] == "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes"
               for r in default_override_reasons())
