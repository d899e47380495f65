"""The admin of decision support: every page renders; saving an active version makes a draft; a
wrong unit is an error on the form; the activate action refuses failing tests."""

from __future__ import annotations

import json

import pytest
from django.apps import apps
from django.contrib.auth.models import User
from django.contrib.messages import get_messages
from django.urls import reverse

from decision.models import RuleTestCase, RuleVersion
from decision.starter import starter_load

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    client.force_login(User.objects.create_superuser("root", "root@example.org", "pw-0123456789"))
    starter_load()
    return client


def _form(version: RuleVersion, **changes) -> dict[str, str]:
    data = {"rule": str(version.rule_id), "severity": version.severity,
            "conditions": json.dumps(version.conditions), "summary_template": version.summary_template,
            "detail_template": version.detail_template, "rationale": version.rationale,
            "citation_source": version.citation_source, "citation_url": version.citation_url,
            "suggested_actions": json.dumps(version.suggested_actions),
            "override_reasons": json.dumps(version.override_reasons), "change_note": ""}
    data.update(changes)
    return data


def test_every_decision_admin_page_renders(admin_client):
    for model in apps.get_app_config("decision").get_models():
        name = f"admin:decision_{model._meta.model_name}"
        try:
            url = reverse(f"{name}_changelist")
        except Exception:  # noqa: BLE001 - models without an admin
            continue
        assert admin_client.get(url).status_code == 200, model
        obj = model._default_manager.first()
        if obj is not None:
            assert admin_client.get(reverse(f"{name}_change", args=[obj.pk])).status_code == 200, model


def test_saving_an_active_version_in_the_admin_makes_a_new_draft(admin_client):
    active = RuleVersion.objects.get(rule__slug="statin-ldl-190", status="active")
    url = reverse("admin:decision_ruleversion_change", args=[active.pk])
    response = admin_client.post(url, _form(active, severity="critical", change_note="more urgent"))
    assert response.status_code == 302
    active.refresh_from_db()
    draft = RuleVersion.objects.get(rule=active.rule, number=2)
    assert (active.status, active.severity, draft.status, draft.severity) == ("active", "warning", "draft",
                                                                              "critical")
    assert draft.tests_passed is True
    page = admin_client.get(reverse("admin:decision_ruleversion_change", args=[draft.pk])).content.decode()
    assert "<b>severity</b>" in page  # the diff with the version it was made from


def test_a_wrong_unit_is_an_error_on_the_form(admin_client):
    active = RuleVersion.objects.get(rule__slug="metformin-egfr-30", status="active")
    conditions = json.loads(json.dumps(active.conditions))
    conditions["all"][1]["unit"] = "mg/dL"
    response = admin_client.post(reverse("admin:decision_ruleversion_change", args=[active.pk]),
                                 _form(active, conditions=json.dumps(conditions)))
    assert response.status_code == 200
    assert "is not a unit of egfr" in response.content.decode()
    assert RuleVersion.objects.filter(rule=active.rule).count() == 1


def test_the_activate_action_refuses_a_draft_whose_tests_fail(admin_client):
    active = RuleVersion.objects.get(rule__slug="hba1c-9", status="active")
    admin_client.post(reverse("admin:decision_ruleversion_change", args=[active.pk]),
                      _form(active, summary_template="Poor control: {hba1c}"))
    draft = RuleVersion.objects.get(rule=active.rule, status="draft")
    assert draft.tests_passed is False  # a case expects "HbA1c 9.4 %" in the summary
    response = admin_client.post(reverse("admin:decision_ruleversion_changelist"),
                                 {"action": "activate", "_selected_action": [str(draft.pk)]})
    assert response.status_code == 302
    text = " ".join(str(m) for m in get_messages(response.wsgi_request))
    assert "test case(s) fail" in text
    draft.refresh_from_db()
    assert draft.status == "draft"
    RuleTestCase.objects.filter(rule=active.rule, name="HbA1c 9.4 % on metformin").update(expected_message="")
    admin_client.post(reverse("admin:decision_ruleversion_changelist"),
                      {"action": "activate", "_selected_action": [str(draft.pk)]})
    draft.refresh_from_db()
    active.refresh_from_db()
    assert (draft.status, active.status) == ("active", "retired")


def test_the_backtest_action_queues_jobs_and_shows_the_result_on_the_embedded_default(
        admin_client, eager, django_capture_on_commit_callbacks):
    from cdss.models import Job
    from decision.models import Backtest
    from tests.factories import PatientFactory

    PatientFactory.create_batch(3)
    draft = RuleVersion.objects.get(rule__slug="statin-ldl-190", status="active")
    admin_client.post(reverse("admin:decision_ruleversion_change", args=[draft.pk]),
                      _form(draft, change_note="to backtest"))
    draft = RuleVersion.objects.get(rule__slug="statin-ldl-190", status="draft")
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(reverse("admin:decision_ruleversion_changelist"),
                                     {"action": "backtest", "_selected_action": [str(draft.pk)]})
    text = " ".join(str(m) for m in get_messages(response.wsgi_request))
    bt = Backtest.objects.get(rule_version=draft)
    assert bt.status == "done" and bt.patients == 3 and bt.chunks == 1
    assert Job.objects.get(kind="decision.backtest", target_id=str(bt.pk)).status == "succeeded"
    # the test's transaction runs the jobs when the request is over, so the message is the queued one
    assert "backtest over 3 patients queued as 1 job(s)" in text
    page = admin_client.get(reverse("admin:decision_backtest_changelist")).content.decode()
    assert "1/1" in page
