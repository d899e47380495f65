"""The admin's pages of decision support: per-rule statistics (fired, accepted, overridden by
reason, override rate by month) and the diff between two versions of a rule."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from decision.models import Recommendation, RecommendationAction, RuleVersion, Snooze
from decision.selectors import rule_statistics_detail, rule_statistics_list
from decision.views import version_diff
from tests.decision.test_actions import make_rec, make_rule
from tests.factories import PatientFactory, UserFactory

JAN = dt.datetime(2026, 1, 10, 9, tzinfo=dt.UTC)
FEB = dt.datetime(2026, 2, 3, 14, tzinfo=dt.UTC)
MAR = dt.datetime(2026, 3, 21, 23, 30, tzinfo=dt.UTC)


def answer(rec: Recommendation, action: str, *, at: dt.datetime, reason: str = "", display: str = "",
           source: str = "in-app") -> RecommendationAction:
    """An answer at a given time (``at`` is auto_now_add: set after the insert)."""
    row = RecommendationAction.objects.create(
        recommendation=rec, rule=rec.rule, rule_version=rec.rule_version, action=action, reason_code=reason,
        reason_display=display, source=source)
    RecommendationAction.objects.filter(pk=row.pk).update(at=at)
    status = Recommendation.Status.ACCEPTED if action == "accept" else Recommendation.Status.OVERRIDDEN
    Recommendation.objects.filter(pk=rec.pk).update(status=status)
    return row


@pytest.fixture
def fired(site_a):
    """Rule ``statin-ldl-190`` fired for 9 recommendations (8 patients; one patient fired twice, in
    two episodes), plus 2 in shadow mode; versions 1 and 2. Answers:
    January: 2 accepted, 1 overridden (not applicable); February: 1 accepted, 3 overridden (2 not
    applicable, 1 action completed, the latter through CDS Hooks); March: nothing answered. Open:
    patient 0's second episode (active, snoozed) and one more in March (active); 1 resolved. A second
    rule fired once, never answered."""
    v1 = make_rule("statin-ldl-190")
    RuleVersion.objects.filter(pk=v1.pk).update(status=RuleVersion.Status.RETIRED)
    v2 = RuleVersion.objects.create(rule=v1.rule, number=2, status=RuleVersion.Status.ACTIVE, severity="critical",
                                    conditions=v1.conditions, summary_template="v2")
    patients = [PatientFactory.create(site=site_a) for _ in range(8)]
    recs = [make_rec(p, v1 if i < 4 else v2, fired_at=JAN) for i, p in enumerate(patients)]
    make_rec(PatientFactory.create(site=site_a), v2, shadow=True, fired_at=JAN)
    make_rec(PatientFactory.create(site=site_a), v2, shadow=True, fired_at=JAN)
    na, done = ("cds-not-applicable", "Does not apply to this patient"), ("action-completed", "Action completed")
    answer(recs[0], "accept", at=JAN)
    answer(recs[1], "accept", at=JAN + dt.timedelta(days=2))
    answer(recs[2], "override", at=JAN, reason=na[0], display=na[1])
    answer(recs[3], "accept", at=FEB)
    answer(recs[4], "override", at=FEB, reason=na[0], display=na[1])
    answer(recs[5], "override", at=FEB, reason=na[0], display=na[1])
    answer(recs[6], "override", at=FEB, reason=done[0], display=done[1], source="cds-hooks")
    Recommendation.objects.filter(pk=recs[7].pk).update(status=Recommendation.Status.RESOLVED, closed_at=MAR)
    Recommendation.objects.filter(pk=recs[0].pk).update(closed_at=FEB)  # answered, then stopped firing
    again = make_rec(patients[0], v2, fired_at=FEB)  # patient 0's second episode
    Snooze.objects.create(patient=again.patient, rule=again.rule, until=timezone.now() + dt.timedelta(days=2))
    make_rec(PatientFactory.create(site=site_a), v2, fired_at=MAR)
    other = make_rule("hba1c-9", severity="info")
    make_rec(PatientFactory.create(site=site_a), other, fired_at=FEB)
    return v1.rule


def test_the_statistics_of_a_rule_count_what_was_shown_and_how_it_was_answered(fired):
    with CaptureQueriesContext(connection) as queries:
        stats = rule_statistics_detail(rule=fired)
    assert len(queries) == 7  # 5, and 2 for CDS Hooks feedback with no recommendation (cdshooks.selectors)
    assert (stats.fired, stats.shadow, stats.patients) == (10, 2, 9)
    assert (stats.accepted, stats.overridden, stats.answered) == (3, 4, 7)
    assert stats.override_rate == pytest.approx(4 / 7)
    assert stats.answer_rate == pytest.approx(7 / 10)
    assert (stats.active, stats.snoozed, stats.resolved) == (1, 1, 1)
    assert [(r.code, r.display, r.count) for r in stats.reasons] == [
        ("cds-not-applicable", "Does not apply to this patient", 3), ("action-completed", "Action completed", 1)]
    assert [(p.month.isoformat(), p.accepted, p.overridden) for p in stats.months] == [
        ("2026-01-01", 2, 1), ("2026-02-01", 1, 3)]
    assert stats.months[0].override_rate == pytest.approx(1 / 3)
    assert stats.months[1].override_rate == pytest.approx(3 / 4)
    assert stats.versions == [
        {"number": 2, "status": "active", "severity": "critical", "fired": 6, "accepted": 0, "overridden": 3},
        {"number": 1, "status": "retired", "severity": "warning", "fired": 4, "accepted": 3, "overridden": 1},
    ]


def test_since_limits_the_statistics_to_a_period(fired):
    stats = rule_statistics_detail(rule=fired, since=FEB - dt.timedelta(days=1))
    assert (stats.accepted, stats.overridden) == (1, 3)
    assert stats.fired == 2  # patient 0's second episode (February) and the March one
    assert [p.month.isoformat() for p in stats.months] == ["2026-02-01"]


def test_a_rule_never_answered_has_no_override_rate(fired):
    stats = rule_statistics_detail(rule=fired.__class__.objects.get(slug="hba1c-9"))
    assert (stats.fired, stats.answered, stats.override_rate, stats.months, stats.reasons) == (1, 0, None, [], [])


def test_the_overview_puts_the_highest_override_rate_first(fired):
    make_rule("never-fired")
    with CaptureQueriesContext(connection) as queries:
        rows = rule_statistics_list()
    assert len(queries) == 6  # 4, and 2 for CDS Hooks feedback with no recommendation
    assert [(r.rule.slug, r.fired, r.accepted, r.overridden, r.severity) for r in rows] == [
        ("statin-ldl-190", 10, 3, 4, "critical"), ("hba1c-9", 1, 0, 0, "info"), ("never-fired", 0, 0, 0, "warning")]


# --- The pages --------------------------------------------------------------------------------


@pytest.fixture
def rules_admin(db):
    user = UserFactory.create(username="rules-admin", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_rule", content_type__app_label="decision"))
    return user


@pytest.fixture
def admin_client(client: Client, rules_admin) -> Client:
    client.force_login(rules_admin)
    return client


def test_the_statistics_page_shows_the_numbers_and_the_chart_data(admin_client: Client, fired):
    response = admin_client.get(reverse("rule-statistics", args=[fired.slug]))
    assert response.status_code == 200
    content = response.content.decode()
    assert '<dd data-stat="fired">10</dd>' in content
    assert '<dd data-stat="override-rate">57 %</dd>' in content  # 4 / 7
    assert '<tr data-reason="cds-not-applicable"><td>Does not apply to this patient</td>' in content
    match = re.search(r'<script id="rule-stats-data" type="application/json">(.*?)</script>', content, re.S)
    assert match is not None
    data = json.loads(match.group(1))
    assert data["months"] == ["2026-01-01", "2026-02-01"]
    assert (data["accepted"], data["overridden"], data["override_rate"]) == ([2, 1], [1, 3], [33.3, 75.0])
    assert data["reasons"]["counts"] == [3, 1]
    assert "vendor/plotly/plotly.min.js" in content and "js/decision_stats.js" in content
    assert "cdn" not in content.lower()


def test_the_period_filter_of_the_statistics_page(admin_client: Client, fired):
    content = admin_client.get(reverse("rule-statistics", args=[fired.slug]) + "?days=30").content.decode()
    assert '<dd data-stat="fired">' in content
    assert '<option value="30" selected>' in content


def test_the_overview_page_links_each_rule(admin_client: Client, fired):
    content = admin_client.get(reverse("rule-statistics-overview")).content.decode()
    rows = re.findall(r'<tr data-rule="([^"]+)">', content)
    assert rows == ["statin-ldl-190", "hba1c-9"]
    assert reverse("rule-statistics", args=["statin-ldl-190"]) in content


def test_the_rules_admin_pages_link_to_statistics_and_the_diff(client: Client, fired, db):
    superuser = UserFactory.create(username="root", is_staff=True, is_superuser=True)
    client.force_login(superuser)
    change = client.get(reverse("admin:decision_rule_change", args=[fired.pk])).content.decode()
    assert reverse("rule-statistics", args=[fired.slug]) in change
    assert reverse("rule-version-diff", args=[fired.slug]) in change
    changelist = client.get(reverse("admin:decision_rule_changelist")).content.decode()
    assert reverse("rule-statistics-overview") in changelist
    v2 = fired.versions.get(number=2)
    v2.based_on = fired.versions.get(number=1)
    v2.save()
    version_page = client.get(reverse("admin:decision_ruleversion_change", args=[v2.pk])).content.decode()
    assert f'{reverse("rule-version-diff", args=[fired.slug])}?a=1&amp;b=2' in version_page


@pytest.mark.parametrize("name", ["rule-statistics", "rule-version-diff", "rule-statistics-overview"])
def test_admin_pages_need_staff_with_the_rule_permission(client: Client, client_a: Client, fired, name, db):
    args = [] if name == "rule-statistics-overview" else [fired.slug]
    page = reverse(name, args=args)
    # a clinician (not staff): sent to the admin login
    response = client_a.get(page)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    # staff without the permission: refused
    client.force_login(UserFactory.create(username="staff-only", is_staff=True))
    assert client.get(page).status_code == 403


def test_an_unknown_rule_is_a_404(admin_client: Client, db):
    assert admin_client.get(reverse("rule-statistics", args=["nope"])).status_code == 404


# --- The version diff -------------------------------------------------------------------------


@pytest.fixture
def versions(db):
    v1 = make_rule("ckd-suspected")
    v1.conditions = {"all": [{"fact": "observation:egfr", "op": "<", "value": 60, "unit": "mL/min/{1.73_m2}",
                              "count": 2, "min_span_days": 90}]}
    v1.save()
    RuleVersion.objects.filter(pk=v1.pk).update(status=RuleVersion.Status.RETIRED)
    v1.refresh_from_db()
    v2 = RuleVersion.objects.create(
        rule=v1.rule, number=2, status=RuleVersion.Status.ACTIVE, severity="warning",
        conditions={"all": [{"fact": "observation:egfr", "op": "<", "value": 60, "unit": "mL/min/{1.73_m2}",
                             "count": 2, "min_span_days": 90},
                            {"fact": "condition:ckd", "op": "absent"}]},
        summary_template=v1.summary_template, rationale=v1.rationale, citation_source=v1.citation_source,
        citation_url=v1.citation_url, change_note="Only when CKD is not on the problem list")
    v3 = RuleVersion.objects.create(
        rule=v1.rule, number=3, status=RuleVersion.Status.DRAFT, severity="info", conditions=v2.conditions,
        summary_template="CKD suspected: two eGFR below 60", rationale=v1.rationale,
        citation_source=v1.citation_source, citation_url=v1.citation_url)
    return v1, v2, v3


def test_the_diff_shows_changed_conditions_and_texts_line_by_line(versions):
    v1, v2, v3 = versions
    changed, same = version_diff(v1, v2)
    names = [d.name for d in changed]
    assert names == ["conditions", "status", "change_note"]
    conditions = changed[0].lines
    assert ("add", '+      "fact": "condition:ckd",') in conditions
    assert ("add", '+      "op": "absent"') in conditions
    assert not [line for css, line in conditions if css == "del" and "egfr" in line]  # unchanged part stays
    assert "summary_template" in same and "severity" in same
    changed, _ = version_diff(v2, v3)
    assert [d.name for d in changed] == ["severity", "summary_template", "status", "change_note"]
    assert ("del", "-warning") in changed[0].lines and ("add", "+info") in changed[0].lines


def test_the_diff_page_compares_the_active_version_with_the_newest_by_default(admin_client: Client, versions):
    content = admin_client.get(reverse("rule-version-diff", args=["ckd-suspected"])).content.decode()
    assert "Version 2 (active) → version 3 (draft)" in content
    assert '<div class="rec-diff" data-field="severity">' in content
    assert '<div class="add">+CKD suspected: two eGFR below 60</div>' in content
    chosen = admin_client.get(reverse("rule-version-diff", args=["ckd-suspected"]) + "?a=1&b=2").content.decode()
    assert "Version 1 (retired) → version 2 (active)" in chosen
    assert '<div class="add">+      &quot;fact&quot;: &quot;condition:ckd&quot;,</div>' in chosen
    missing = admin_client.get(reverse("rule-version-diff", args=["ckd-suspected"]) + "?a=9&b=2")
    assert missing.status_code == 404


def test_a_rule_with_one_version_has_nothing_to_compare(admin_client: Client, db):
    make_rule("single")
    content = admin_client.get(reverse("rule-version-diff", args=["single"])).content.decode()
    assert "nothing to compare" in content
