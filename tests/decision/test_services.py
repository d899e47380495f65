"""Rule governance, rule tests, recommendations' lifecycle, value-set import, the decision job."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from cdss.jobs.runner import job_enqueue, job_run
from decision.engine import RuleDefinitionError
from decision.jobs import DECISION_KIND
from decision.load import fact_plan
from decision.models import (
    ConceptIsA,
    PatientEvaluation,
    Recommendation,
    RecommendationAction,
    Rule,
    RuleTestCase,
    RuleVersion,
    ValueSet,
)
from decision.selectors import recommendations_for_patient
from decision.services import (
    ActionRefused,
    ActivationRefused,
    ValueSetImportError,
    backtest_run,
    patients_evaluate,
    recommendation_accept,
    recommendation_override,
    rule_create,
    rule_version_activate,
    rule_version_edit,
    rule_version_restore,
    snooze_create,
    value_sets_import,
    value_sets_import_file,
)
from tests.factories import ObservationFactory, PatientFactory, UserFactory

pytestmark = pytest.mark.django_db
STARTER = Path(__file__).resolve().parents[2] / "decision" / "data" / "starter_value_sets.json"
LDL_190 = {"all": [{"fact": "observation:ldl", "op": ">=", "value": 190, "unit": "mg/dL", "lookback_days": 730}]}


@pytest.fixture
def value_sets(db):
    value_sets_import(json.loads(STARTER.read_text()))


@pytest.fixture
def admin_user(db):
    return UserFactory(username="rules-admin")


def _ldl_rule(user, severity: str = "warning", **kw) -> RuleVersion:
    version = rule_create(slug=kw.pop("slug", "ldl-high"), title="LDL high", user=user, severity=severity,
                          conditions=LDL_190, summary_template="LDL {ldl}", citation_source="test", **kw)
    RuleTestCase.objects.create(rule=version.rule, name="high", expect="fires", expected_message="LDL 200",
                                facts={"observations": [{"code": "18262-6", "value": 200, "unit": "mg/dL",
                                                         "days_ago": 5}]})
    return version


def _ldl(patient, value: float, days_ago: float = 5) -> None:
    ObservationFactory(patient=patient, code="18262-6", value_quantity=value, value_unit="mg/dL",
                       effective_at=timezone.now() - dt.timedelta(days=days_ago))


# -- governance -----------------------------------------------------------------------------------


def test_editing_an_active_rule_makes_a_new_draft_and_activation_records_who(value_sets, admin_user):
    v1 = rule_version_activate(_ldl_rule(admin_user), user=admin_user)
    assert v1.status == "active" and v1.activated_by == admin_user and v1.activated_at is not None
    v2 = rule_version_edit(v1.rule, user=admin_user, severity="critical", change_note="more urgent")
    v1.refresh_from_db()
    assert (v2.number, v2.status, v2.based_on_id, v1.status) == (2, "draft", v1.pk, "active")
    # a second edit updates the same draft
    v2b = rule_version_edit(v1.rule, user=admin_user, summary_template="LDL {ldl} (check)")
    assert v2b.pk == v2.pk and v2b.severity == "critical"
    rule_version_activate(v2b, user=admin_user)
    v1.refresh_from_db()
    assert v1.status == "retired" and v1.retired_at is not None
    assert RuleVersion.objects.filter(rule=v1.rule, status="active").get().number == 2


def test_a_failing_test_case_blocks_activation(value_sets, admin_user):
    version = _ldl_rule(admin_user)
    RuleTestCase.objects.create(rule=version.rule, name="wrongly expected", expect="does-not-fire",
                                facts={"observations": [{"code": "18262-6", "value": 250, "unit": "mg/dL",
                                                         "days_ago": 1}]})
    with pytest.raises(ActivationRefused, match="wrongly expected: expected it to not fire; it fired"):
        rule_version_activate(version, user=admin_user)
    version.refresh_from_db()
    assert version.status == "draft" and version.tests_passed is False


def test_tests_run_when_a_draft_is_saved(value_sets, admin_user):
    version = _ldl_rule(admin_user)
    edited = rule_version_edit(version.rule, user=admin_user, summary_template="High LDL: {ldl}")
    assert edited.tests_passed is False  # the case expects "LDL 200" in the summary
    assert "does not contain 'LDL 200'" in edited.test_results[0]["message"]


def test_a_wrong_unit_is_refused_when_the_rule_is_saved_and_nothing_is_written(value_sets, admin_user):
    with pytest.raises(RuleDefinitionError, match="unit 'mmol/mol' is not a unit of cholesterol"):
        rule_create(slug="bad", title="Bad", user=admin_user, severity="warning", summary_template="x",
                    conditions={"all": [{"fact": "observation:ldl", "op": ">", "value": 1, "unit": "mmol/mol"}]})
    assert not Rule.objects.filter(slug="bad").exists()


def test_any_version_can_be_restored_as_a_new_draft(value_sets, admin_user):
    v1 = rule_version_activate(_ldl_rule(admin_user), user=admin_user)
    v2 = rule_version_activate(rule_version_edit(v1.rule, user=admin_user, summary_template="LDL 200? {ldl}"),
                               user=admin_user)
    restored = rule_version_restore(v1, user=admin_user)
    assert restored.number == 3 and restored.status == "draft" and restored.based_on_id == v1.pk
    assert restored.summary_template == v1.summary_template
    rule_version_activate(restored, user=admin_user)
    v2.refresh_from_db()
    assert v2.status == "retired"


# -- recommendations ------------------------------------------------------------------------------


def test_re_evaluation_updates_the_active_recommendation_and_never_duplicates_it(value_sets, admin_user, patient_a):
    v1 = rule_version_activate(_ldl_rule(admin_user), user=admin_user)
    _ldl(patient_a, 200)
    patients_evaluate([patient_a.pk])
    patients_evaluate([patient_a.pk])
    rec = Recommendation.objects.get(patient=patient_a)
    assert rec.status == "active" and rec.rule_version == v1 and rec.summary == "LDL 200 mg/dL"
    assert rec.trace[0]["source"].startswith("Observation:")
    # a new version fires: the same row now points at it
    v2 = rule_version_activate(rule_version_edit(v1.rule, user=admin_user, summary_template="LDL 200 {ldl}!"),
                               user=admin_user)
    _ldl(patient_a, 210, days_ago=1)
    patients_evaluate([patient_a.pk])
    rec = Recommendation.objects.get(patient=patient_a)
    assert rec.rule_version == v2 and rec.summary == "LDL 200 210 mg/dL!" and rec.last_fired_at > rec.first_fired_at


def test_a_recommendation_is_resolved_and_kept_when_the_rule_stops_firing(value_sets, admin_user, patient_a):
    rule_version_activate(_ldl_rule(admin_user), user=admin_user)
    _ldl(patient_a, 200, days_ago=10)
    patients_evaluate([patient_a.pk])
    _ldl(patient_a, 120, days_ago=1)
    summary = patients_evaluate([patient_a.pk])
    assert summary.resolved == 1
    rec = Recommendation.objects.get(patient=patient_a)
    assert rec.status == "resolved" and rec.closed_at is not None
    _ldl(patient_a, 230, days_ago=0.5)
    patients_evaluate([patient_a.pk])
    assert list(Recommendation.objects.filter(patient=patient_a).order_by("pk").values_list("status", flat=True)) == [
        "resolved", "active"]


def test_accept_and_override_record_who_why_and_where(value_sets, admin_user, patient_a, clinician_a):
    rule_version_activate(_ldl_rule(admin_user, severity="critical"), user=admin_user)
    _ldl(patient_a, 200)
    patients_evaluate([patient_a.pk])
    rec = Recommendation.objects.get(patient=patient_a)
    with pytest.raises(ActionRefused, match="comment is required"):
        recommendation_override(rec, user=clinician_a, reason_code="patient-ineligible")
    with pytest.raises(ActionRefused, match="not one of"):
        recommendation_override(rec, user=clinician_a, reason_code="bored", comment="x")
    action = recommendation_override(rec, user=clinician_a, reason_code="patient-ineligible", comment="statin myopathy",
                                     source="cds-hooks")
    rec.refresh_from_db()
    assert rec.status == "overridden"
    assert (action.user, action.reason_code, action.source, action.rule_version_id) == (
        clinician_a, "patient-ineligible", "cds-hooks", rec.rule_version_id)
    assert action.reason_display
    with pytest.raises(ActionRefused, match="overridden, not active"):
        recommendation_accept(rec, user=clinician_a)
    # still firing: the overridden one stays quiet, no new active one
    patients_evaluate([patient_a.pk])
    assert Recommendation.objects.filter(patient=patient_a).count() == 1
    assert RecommendationAction.objects.count() == 1


def test_snoozed_and_shadow_rules_are_hidden_from_the_clinician(value_sets, admin_user, patient_a, clinician_a):
    shadow = _ldl_rule(admin_user, slug="ldl-shadow")
    Rule.objects.filter(pk=shadow.rule_id).update(shadow=True)
    rule_version_activate(shadow, user=admin_user)
    visible = rule_version_activate(_ldl_rule(admin_user), user=admin_user)
    _ldl(patient_a, 200)
    patients_evaluate([patient_a.pk])
    assert Recommendation.objects.filter(patient=patient_a, shadow=True).count() == 1
    shown = recommendations_for_patient(patient_a, user=clinician_a)
    assert [r.rule.slug for r in shown] == ["ldl-high"]
    snooze_create(patient=patient_a, rule=visible.rule, until=timezone.now() + dt.timedelta(days=30),
                  user=clinician_a)
    assert recommendations_for_patient(patient_a, user=clinician_a) == []


def test_rules_limited_to_sites_and_specialties(value_sets, admin_user, patient_a, patient_b, site_b, clinician_a):
    version = _ldl_rule(admin_user)
    version.rule.sites.add(site_b)
    rule_version_activate(version, user=admin_user)
    _ldl(patient_a, 200)
    _ldl(patient_b, 200)
    patients_evaluate([patient_a.pk, patient_b.pk])
    assert list(Recommendation.objects.values_list("patient_id", flat=True)) == [patient_b.pk]
    version.rule.sites.clear()
    Rule.objects.filter(pk=version.rule_id).update(specialties=["cardiology"])
    patients_evaluate([patient_a.pk])
    assert Recommendation.objects.filter(patient=patient_a).exists()
    assert recommendations_for_patient(patient_a, user=clinician_a) == []  # clinician_a has no specialty
    # limited to site B again: patient A's open recommendation is resolved
    version.rule.sites.add(site_b)
    patients_evaluate([patient_a.pk])
    assert Recommendation.objects.get(patient=patient_a).status == "resolved"


# -- the job ----------------------------------------------------------------------------------------


def test_the_decision_job_evaluates_and_running_it_twice_adds_nothing(value_sets, admin_user, patient_a):
    rule_version_activate(_ldl_rule(admin_user), user=admin_user)
    _ldl(patient_a, 200)
    job = job_enqueue(kind=DECISION_KIND, patient=patient_a, inputs={"reason": "test"})
    assert job_run(job.pk) == "succeeded"
    job.refresh_from_db()
    assert job.result["fired"] == 1 and job.result["opened"] == 1
    batch = job_enqueue(kind=DECISION_KIND, params={"patient_ids": [patient_a.pk]}, inputs={"reason": "again"})
    assert job_run(batch.pk) == "succeeded"
    assert Recommendation.objects.filter(patient=patient_a).count() == 1
    assert PatientEvaluation.objects.get(patient=patient_a).fired == 1


def test_new_risk_results_queue_an_evaluation_of_the_patient_once(value_sets, admin_user, patient_a, patient_b):
    from cdss.models import Job
    from risk.jobs import RISK_KIND

    rule_version_activate(_ldl_rule(admin_user), user=admin_user)
    _ldl(patient_a, 200)
    risk = job_enqueue(kind=RISK_KIND, patient=patient_a, inputs={"reason": "test"})
    assert job_run(risk.pk) == "succeeded"
    follow = Job.objects.get(kind=DECISION_KIND, patient=patient_a)
    assert follow.status == "queued"
    # debounced: a second risk job while that evaluation waits adds none
    again = job_enqueue(kind=RISK_KIND, patient=patient_a, inputs={"reason": "test again"})
    assert job_run(again.pk) == "succeeded"
    assert Job.objects.filter(kind=DECISION_KIND, patient=patient_a).count() == 1
    assert job_run(follow.pk) == "succeeded"
    assert Recommendation.objects.filter(patient=patient_a, status="active").count() == 1
    # once it has run, new results queue a new one; a population batch queues a batch evaluation
    third = job_enqueue(kind=RISK_KIND, patient=patient_a, inputs={"reason": "third"})
    assert job_run(third.pk) == "succeeded"
    assert Job.objects.filter(kind=DECISION_KIND, patient=patient_a, status="queued").count() == 1
    batch = job_enqueue(kind=RISK_KIND, params={"patient_ids": [patient_b.pk, patient_a.pk]}, inputs={"r": 1})
    assert job_run(batch.pk) == "succeeded"
    follow_batch = Job.objects.get(kind=DECISION_KIND, patient__isnull=True)
    assert follow_batch.params == {"patient_ids": sorted([patient_a.pk, patient_b.pk])}


def test_the_results_of_nlp_and_imaging_jobs_are_followed_by_an_evaluation():
    from cdss.jobs import triggers
    from decision.jobs import evaluate_after_results

    for kind in ("risk", "nlp", "imaging"):
        assert evaluate_after_results in triggers._AFTER.get(kind, [])
    assert evaluate_after_results not in triggers._AFTER.get(DECISION_KIND, [])


def test_a_record_change_queues_a_decision_job(value_sets, patient_a):
    from cdss.jobs.triggers import record_changed
    from cdss.models import Job

    record_changed([patient_a.pk])
    assert Job.objects.filter(kind=DECISION_KIND, patient=patient_a).exists()


def test_the_sweep_queues_patients_with_newer_risk_results(value_sets, patient_a, patient_b):
    from cdss.models import Job
    from decision.services import decision_sweep, patients_needing_evaluation
    from risk.models import RiskAssessment

    now = timezone.now()
    PatientEvaluation.objects.create(patient=patient_a, evaluated_at=now)
    PatientEvaluation.objects.create(patient=patient_b, evaluated_at=now)
    assert patients_needing_evaluation() == []
    RiskAssessment.objects.create(patient=patient_b, calculator="qsofa", calculator_version="1", status="computed",
                                  value=2, unit="points", inputs_hash="x", as_of=now)
    assert patients_needing_evaluation() == [patient_b.pk]
    assert decision_sweep() == 1
    assert Job.objects.get(kind=DECISION_KIND).params == {"patient_ids": [patient_b.pk]}


# -- value sets -----------------------------------------------------------------------------------


def test_value_sets_import_from_csv_and_match_by_is_a_code_and_name(tmp_path, value_sets):
    path = tmp_path / "vs.csv"
    path.write_text("value_set,name,kind,dimension,system,code,display,match\n"
                    "beta-blockers,Beta blockers,medication,,rxnorm,6918,metoprolol,is-a\n"
                    "beta-blockers,Beta blockers,medication,,text,bisoprolol,,name\n")
    summary = value_sets_import_file(path)
    assert (summary.value_sets, summary.codes) == (1, 2)
    ConceptIsA.objects.create(system="http://www.nlm.nih.gov/research/umls/rxnorm", parent="6918", child="866412")
    members = fact_plan().value_sets["beta-blockers"]
    assert members.matches("http://www.nlm.nih.gov/research/umls/rxnorm", "866412")  # product of metoprolol
    assert members.matches("", "", "Bisoprolol fumarate 5 MG Oral Tablet")
    assert not members.matches("http://www.nlm.nih.gov/research/umls/rxnorm", "197361", "amlodipine 5 MG")


def test_a_bad_value_set_file_writes_nothing(tmp_path, db):
    with pytest.raises(ValueSetImportError, match=r"value_sets\[1\] \(b\): kind 'drug'"):
        value_sets_import({"value_sets": [{"slug": "a", "kind": "condition", "codes": [{"system": "snomed",
                                                                                        "code": "1"}]},
                                          {"slug": "b", "kind": "drug"}]})
    with pytest.raises(ValueSetImportError, match="unknown code system 'umls'"):
        value_sets_import({"value_sets": [{"slug": "a", "kind": "condition", "codes": [{"system": "umls",
                                                                                        "code": "1"}]}]})
    with pytest.raises(ValueSetImportError, match="unknown quantity kind 'weirdness'"):
        value_sets_import({"value_sets": [{"slug": "a", "kind": "observation", "dimension": "weirdness"}]})
    assert not ValueSet.objects.exists()
    bad = tmp_path / "x.json"
    bad.write_text("{")
    with pytest.raises(CommandError, match="not valid JSON"):
        call_command("import_value_sets", str(bad))


# -- backtest -------------------------------------------------------------------------------------


def test_a_backtest_compares_a_draft_with_the_active_version(value_sets, admin_user, site_a):
    v1 = rule_version_activate(_ldl_rule(admin_user), user=admin_user)
    patients = [PatientFactory(site=site_a) for _ in range(4)]
    for p, value in zip(patients, (150, 170, 195, 230), strict=True):
        _ldl(p, value)
    draft = rule_version_edit(v1.rule, user=admin_user, conditions={"all": [
        {"fact": "observation:ldl", "op": ">=", "value": 160, "unit": "mg/dL", "lookback_days": 730}]})
    bt = backtest_run(draft, user=admin_user)
    assert (bt.patients, bt.fired, bt.compared_fired, bt.newly_fired, bt.no_longer_fired) == (4, 3, 2, 1, 0)
    assert bt.status == "done" and len(bt.sample) == 3 and bt.sample[0]["trace"]
    assert not Recommendation.objects.exists()


def _backtest_setup(admin_user, site_a) -> RuleVersion:
    v1 = rule_version_activate(_ldl_rule(admin_user), user=admin_user)
    for value in (150, 170, 195, 230, 165):
        _ldl(PatientFactory(site=site_a), value)
    return rule_version_edit(v1.rule, user=admin_user, conditions={"all": [
        {"fact": "observation:ldl", "op": ">=", "value": 160, "unit": "mg/dL", "lookback_days": 730}]})


def _figures(bt) -> tuple:
    return (bt.patients, bt.fired, bt.compared_fired, bt.newly_fired, bt.no_longer_fired,
            [s["patient_id"] for s in bt.sample])


def test_a_backtest_queued_as_jobs_gives_the_counts_of_one_run_in_process(
        value_sets, admin_user, site_a, eager, django_capture_on_commit_callbacks):
    from cdss.models import Job
    from decision.services import BACKTEST_KIND, backtest_queue

    draft = _backtest_setup(admin_user, site_a)
    in_process = backtest_run(draft, user=admin_user)
    with django_capture_on_commit_callbacks(execute=True):
        queued = backtest_queue(draft, user=admin_user, chunk_size=2)
    queued.refresh_from_db()
    jobs = Job.objects.filter(kind=BACKTEST_KIND, target_id=str(queued.pk))
    assert (queued.status, queued.chunks, queued.chunks_done) == ("done", 3, 3)
    assert sorted(jobs.values_list("status", flat=True)) == ["succeeded"] * 3
    assert _figures(queued) == _figures(in_process)
    assert _figures(queued)[1:5] == (4, 2, 2, 0)
    assert queued.sample[0]["trace"] and queued.compared_with.status == "active"
    # a job's own result holds counts only; the traces are in the backtest row
    assert all("sample" not in r for r in jobs.values_list("result", flat=True))
    assert not Recommendation.objects.exists()


def test_the_backtest_command_reports_counts_in_process_and_as_jobs(
        value_sets, admin_user, site_a, eager, capsys, django_capture_on_commit_callbacks):
    from decision.models import Backtest
    from patients.models import Patient

    draft = _backtest_setup(admin_user, site_a)
    slug = draft.rule.slug
    call_command("backtest_rule", slug, "--json", "--chunk-size", "2")
    here = json.loads(capsys.readouterr().out)
    assert (here["version"], here["compared_with"], here["status"]) == (draft.number, draft.number - 1, "done")
    assert [here[k] for k in ("patients", "fired", "compared_fired", "newly_fired", "no_longer_fired")] == [5, 4, 2, 2, 0]
    with django_capture_on_commit_callbacks(execute=True):  # the jobs run when the test's transaction "commits"
        call_command("backtest_rule", slug, "--jobs", "--chunk-size", "2")
        out = capsys.readouterr().out
        assert f"{slug} v{draft.number} (draft): backtest queued over 5 patients in 3 job(s)" in out
    queued = Backtest.objects.order_by("-pk").first()
    assert queued is not None and str(queued.external_id) != here["backtest"] and queued.status == "done"
    assert [getattr(queued, k) for k in ("patients", "fired", "compared_fired", "newly_fired", "no_longer_fired")] == [
        5, 4, 2, 2, 0]

    call_command("backtest_rule", slug, "--number", str(draft.number - 1))  # the active one: compared with none
    out = capsys.readouterr().out
    assert f"{slug} v{draft.number - 1} (active): fires for 2 of 5 patients (40.0%)" in out
    assert "no other active version to compare with" in out
    for patient in Patient.objects.all():  # counts only: no patient named
        assert patient.mrn not in out and patient.family_name not in out
    for bad, message in (([slug, "--number", "99"], "has no version 99"), (["no-such-rule"], "no rule 'no-such-rule'"),
                         ([slug, "--chunk-size", "0"], "--chunk-size must be at least 1")):
        with pytest.raises(CommandError, match=message):
            call_command("backtest_rule", *bad)


def test_a_backtest_part_stored_twice_counts_once(value_sets, admin_user, site_a, eager,
                                                 django_capture_on_commit_callbacks):
    from decision.services import backtest_part_write, backtest_queue

    draft = _backtest_setup(admin_user, site_a)
    with django_capture_on_commit_callbacks(execute=True):
        bt = backtest_queue(draft, user=admin_user, chunk_size=2)
    bt.refresh_from_db()
    before = _figures(bt)
    again = backtest_part_write(bt.pk, 1, bt.parts["1"], sample_size=10)
    assert again is not None and _figures(again) == before


def test_a_backtest_whose_job_gives_up_is_failed_with_the_job_named(value_sets, admin_user, site_a, eager,
                                                                   django_capture_on_commit_callbacks):
    from cdss.models import Job
    from decision.services import backtest_queue

    draft = _backtest_setup(admin_user, site_a)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        bt = backtest_queue(draft, user=admin_user, chunk_size=10)
    ValueSet.objects.filter(slug="ldl").delete()  # the draft no longer compiles
    for callback in callbacks:
        callback()
    bt.refresh_from_db()
    job = Job.objects.get(kind="decision.backtest", target_id=str(bt.pk))
    assert (job.status, job.attempts) == ("dead", job.max_attempts)
    assert bt.status == "failed" and f"job #{job.pk}" in bt.error and "RuleDefinitionError" in bt.error


def test_the_sweep_fails_a_backtest_whose_job_is_dead(value_sets, admin_user, site_a):
    from cdss.models import Job
    from decision.services import backtest_queue, backtests_fail_abandoned

    draft = _backtest_setup(admin_user, site_a)
    bt = backtest_queue(draft, user=admin_user, chunk_size=2)  # queued, not run (no commit in this test)
    assert backtests_fail_abandoned() == 0
    job = Job.objects.filter(kind="decision.backtest", target_id=str(bt.pk)).order_by("pk").last()
    Job.objects.filter(pk=job.pk).update(status=Job.Status.DEAD)  # as the reaper leaves a lost job
    assert backtests_fail_abandoned() == 1
    bt.refresh_from_db()
    assert bt.status == "failed" and f"job #{job.pk} is dead" in bt.error


def test_rule_statistics_count_responses_and_overrides_by_reason(value_sets, admin_user, site_a, clinician_a):
    from decision.selectors import rule_statistics

    version = rule_version_activate(_ldl_rule(admin_user), user=admin_user)
    patients = [PatientFactory(site=site_a) for _ in range(3)]
    for p in patients:
        _ldl(p, 200)
    patients_evaluate([p.pk for p in patients])
    recs = list(Recommendation.objects.order_by("pk"))
    recommendation_accept(recs[0], user=clinician_a)
    recommendation_override(recs[1], user=clinician_a, reason_code="patient-ineligible")
    stats = rule_statistics(version.rule_id)
    assert stats["fired"] == 3 and stats["accepted"] == 1 and stats["overridden"] == 1
    assert stats["overrides_by_reason"] == {"patient-ineligible": 1}
    assert stats["override_rate_by_week"][0]["override_rate"] == 0.5


def test_retiring_a_rule_resolves_its_open_recommendations(value_sets, admin_user, patient_a):
    from decision.services import rule_version_retire

    version = rule_version_activate(_ldl_rule(admin_user), user=admin_user)
    _ldl(patient_a, 200)
    patients_evaluate([patient_a.pk])
    rule_version_retire(version)
    summary = patients_evaluate([patient_a.pk])
    rec = Recommendation.objects.get(patient=patient_a)
    assert summary.resolved == 1 and rec.status == "resolved" and rec.closed_at is not None
