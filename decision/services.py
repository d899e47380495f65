"""Writes of decision support: value sets, rule versions and their tests, recommendations.

Rule governance: an active version is never edited; editing makes (or updates) the rule's one
draft, whose test cases run on every save; activation re-checks the definition and the tests,
retires the previous active version and records who and when, all in one transaction. Any old
version can be restored as a new draft.

Recommendations: ``apply_results`` keeps one open recommendation per patient and rule; it updates
the open one while the rule fires (never a duplicate), resolves it when the rule stops firing
(kept, never deleted), and opens a new one when it fires again later.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from patients.models import Patient

from .engine import CompiledRule, Result, RuleDefinitionError, compile_rule, evaluate, needs
from .facts import Facts
from .load import FactPlan, fact_plan, load_facts_bulk
from .models import (
    Backtest,
    CodeSystem,
    ConceptIsA,
    PatientEvaluation,
    Recommendation,
    RecommendationAction,
    Rule,
    RuleTestCase,
    RuleVersion,
    Severity,
    Snooze,
    ValueSet,
    ValueSetCode,
)
from .units import UnitError, dimension_of
from .valuesets import ValueSetIndex

SYSTEMS = {"snomed": CodeSystem.SNOMED, "sct": CodeSystem.SNOMED, "icd10cm": CodeSystem.ICD10CM,
           "icd-10-cm": CodeSystem.ICD10CM, "loinc": CodeSystem.LOINC, "rxnorm": CodeSystem.RXNORM,
           "hgnc": CodeSystem.HGNC, "text": CodeSystem.TEXT, "name": CodeSystem.TEXT}
VERSION_FIELDS = ("severity", "conditions", "summary_template", "detail_template", "rationale", "citation_source",
                  "citation_url", "suggested_actions", "override_reasons")


class ValueSetImportError(ValueError):
    pass


class ActivationRefused(ValueError):
    pass


class ActionRefused(ValueError):
    pass


# --------------------------------------------------------------------------------------------
# Value sets


def _system(value: str, where: str) -> str:
    value = value.strip()
    if value in CodeSystem.values:
        return value
    try:
        return str(SYSTEMS[value.lower()])
    except KeyError:
        raise ValueSetImportError(f"{where}: unknown code system {value!r} (use one of "
                                  f"{', '.join(sorted(SYSTEMS))} or a system URI)") from None


@dataclass
class ValueSetImportSummary:
    value_sets: int
    codes: int
    is_a: int


def value_sets_import(data: dict[str, Any]) -> ValueSetImportSummary:
    """Create or replace value sets (their codes are replaced as a whole) and add is-a rows, in
    one transaction. ``data``: {"value_sets": [{slug, name, kind, dimension?, description?,
    source?, codes: [{system, code, display?, match?}]}], "is_a": [{system, parent, child}]}."""
    if not isinstance(data, dict) or not isinstance(data.get("value_sets", []), list):
        raise ValueSetImportError("expected an object with a 'value_sets' list")
    kinds = set(ValueSet.Kind.values)
    matches = set(ValueSetCode.Match.values)
    prepared: list[tuple[dict[str, Any], list[ValueSetCode]]] = []
    for i, raw in enumerate(data.get("value_sets", [])):
        where = f"value_sets[{i}]"
        if not isinstance(raw, dict) or not raw.get("slug") or not raw.get("kind"):
            raise ValueSetImportError(f"{where}: 'slug' and 'kind' are required")
        if raw["kind"] not in kinds:
            raise ValueSetImportError(f"{where} ({raw['slug']}): kind {raw['kind']!r} is not one of "
                                      f"{', '.join(sorted(kinds))}")
        dimension = str(raw.get("dimension") or "")
        if dimension:
            try:
                dimension = dimension_of(dimension)
            except UnitError as exc:
                raise ValueSetImportError(f"{where} ({raw['slug']}): {exc}") from None
        codes = []
        seen = set()
        for j, c in enumerate(raw.get("codes") or []):
            cwhere = f"{where}.codes[{j}]"
            if not isinstance(c, dict) or not str(c.get("code", "")).strip():
                raise ValueSetImportError(f"{cwhere}: 'code' is required")
            match = c.get("match") or ("name" if str(c.get("system", "")).lower() in ("text", "name") else "exact")
            if match not in matches:
                raise ValueSetImportError(f"{cwhere}: match {match!r} is not one of {', '.join(sorted(matches))}")
            system = CodeSystem.TEXT.value if match == "name" else _system(str(c.get("system", "")), cwhere)
            key = (system, str(c["code"]).strip(), match)
            if key in seen:
                continue
            seen.add(key)
            codes.append(ValueSetCode(system=system, code=key[1], display=str(c.get("display", ""))[:300],
                                      match=match))
        fields = dict(name=str(raw.get("name") or raw["slug"])[:200], kind=raw["kind"], dimension=dimension,
                      description=str(raw.get("description", "")), source=str(raw.get("source", "")))
        prepared.append(({"slug": raw["slug"], **fields}, codes))
    is_a = []
    for i, r in enumerate(data.get("is_a") or []):
        if not isinstance(r, dict) or not r.get("parent") or not r.get("child"):
            raise ValueSetImportError(f"is_a[{i}]: 'parent' and 'child' are required")
        is_a.append(ConceptIsA(system=_system(str(r.get("system", "")), f"is_a[{i}]"), parent=str(r["parent"]),
                               child=str(r["child"])))
    with transaction.atomic():
        total = 0
        for fields, codes in prepared:
            slug = fields.pop("slug")
            vs, _ = ValueSet.objects.update_or_create(slug=slug, defaults=fields)
            vs.codes.all().delete()
            for code in codes:
                code.value_set = vs
            ValueSetCode.objects.bulk_create(codes)
            total += len(codes)
        ConceptIsA.objects.bulk_create(is_a, ignore_conflicts=True)
    return ValueSetImportSummary(value_sets=len(prepared), codes=total, is_a=len(is_a))


def value_sets_import_file(path: Path) -> ValueSetImportSummary:
    """JSON (the form above) or CSV with the columns value_set, name, kind, dimension, system,
    code, display, match (one row per code; the set's columns repeat)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            return value_sets_import(json.loads(text))
        except json.JSONDecodeError as exc:
            raise ValueSetImportError(f"{path.name}: not valid JSON ({exc})") from None
    if path.suffix.lower() != ".csv":
        raise ValueSetImportError(f"{path.name}: expected a .json or .csv file")
    reader = csv.DictReader(io.StringIO(text))
    required = {"value_set", "kind", "system", "code"}
    if not reader.fieldnames or not required <= set(reader.fieldnames):
        raise ValueSetImportError(f"{path.name}: the columns {', '.join(sorted(required))} are required")
    sets: dict[str, dict[str, Any]] = {}
    for n, row in enumerate(reader, start=2):
        slug = (row.get("value_set") or "").strip()
        if not slug:
            raise ValueSetImportError(f"{path.name} line {n}: value_set is empty")
        entry = sets.setdefault(slug, {"slug": slug, "name": row.get("name") or slug, "kind": row.get("kind"),
                                       "dimension": row.get("dimension") or "", "codes": []})
        entry["codes"].append({"system": row.get("system", ""), "code": row.get("code", ""),
                               "display": row.get("display", ""), "match": row.get("match") or None})
    return value_sets_import({"value_sets": list(sets.values())})


# --------------------------------------------------------------------------------------------
# Rules: compile, versions, tests


def known_risks() -> dict[str, str]:
    """Calculator and model names with the unit of their value."""
    from risk.calculators import all_calculators

    out = {c.name: c.unit for c in all_calculators()}
    out["heart_disease_model"] = "%"
    return out


def rule_version_compile(version: RuleVersion, *, value_sets: ValueSetIndex | None = None) -> CompiledRule:
    if value_sets is None:
        value_sets = fact_plan().value_sets
    return compile_rule(
        slug=version.rule.slug, version=version.number, severity=version.severity, conditions=version.conditions,
        summary_template=version.summary_template, detail_template=version.detail_template, value_sets=value_sets,
        version_id=version.pk, shadow=version.rule.shadow, known_risks=known_risks(),
    )


def _test_facts(case: RuleTestCase, as_of: dt.datetime) -> Facts:
    return Facts.from_json(case.facts, as_of=as_of)


def rule_version_run_tests(version: RuleVersion, *, value_sets: ValueSetIndex | None = None) -> list[dict[str, Any]]:
    """Run the rule's test cases against this version; store and return the outcomes."""
    as_of = timezone.now()
    try:
        compiled = rule_version_compile(version, value_sets=value_sets)
    except RuleDefinitionError as exc:
        outcomes = [{"case": "(definition)", "passed": False, "message": str(exc)}]
    else:
        outcomes = []
        for case in version.rule.test_cases.all():
            try:
                facts = _test_facts(case, as_of)
            except (ValueError, TypeError) as exc:
                outcomes.append({"case": case.name, "passed": False, "message": f"bad facts: {exc}"})
                continue
            result = evaluate([compiled], facts)[0]
            expected_fire = case.expect == RuleTestCase.Expect.FIRES
            passed = result.fired == expected_fire
            message = ""
            if not passed:
                message = f"expected it to {'fire' if expected_fire else 'not fire'}; it " \
                          f"{'fired' if result.fired else 'did not fire'}"
            elif expected_fire and case.expected_message and case.expected_message not in result.summary:
                passed = False
                message = f"summary {result.summary!r} does not contain {case.expected_message!r}"
            outcomes.append({"case": case.name, "passed": passed, "message": message, "summary": result.summary,
                             "fired": result.fired})
    version.test_results = outcomes
    version.tests_passed = all(o["passed"] for o in outcomes)
    version.tested_at = timezone.now()
    if version.pk:
        RuleVersion.objects.filter(pk=version.pk).update(test_results=outcomes, tests_passed=version.tests_passed,
                                                         tested_at=version.tested_at)
    return outcomes


def rule_create(*, slug: str, title: str, user: Any = None, category: str = Rule.Category.OTHER,
                description: str = "", shadow: bool = False, specialties: Sequence[str] = (),
                **version_fields: Any) -> RuleVersion:
    """A new rule with its first version, a draft (checked before it is written)."""
    with transaction.atomic():
        rule = Rule.objects.create(slug=slug, title=title, category=category, description=description, shadow=shadow,
                                   specialties=list(specialties))
        return rule_version_edit(rule, user=user, **version_fields)


def rule_version_edit(rule: Rule, *, user: Any = None, change_note: str = "", **fields: Any) -> RuleVersion:
    """Save a change to a rule as its draft: the existing draft is updated, otherwise a new draft
    copies the latest version with the changes. The definition is checked first
    (RuleDefinitionError, nothing written) and the test cases run on save."""
    unknown = set(fields) - set(VERSION_FIELDS)
    if unknown:
        raise ValueError(f"not fields of a rule version: {', '.join(sorted(unknown))}")
    with transaction.atomic():
        Rule.objects.select_for_update().filter(pk=rule.pk).first()
        latest = rule.versions.order_by("-number").first()
        if latest is not None and latest.status == RuleVersion.Status.DRAFT:
            draft = latest
        else:
            draft = RuleVersion(rule=rule, number=(latest.number + 1) if latest else 1, created_by=_user(user),
                                based_on=latest)
            if latest is not None:
                for name in VERSION_FIELDS:
                    setattr(draft, name, getattr(latest, name))
        for name, value in fields.items():
            setattr(draft, name, value)
        if change_note:
            draft.change_note = change_note
        draft.status = RuleVersion.Status.DRAFT
        rule_version_compile(draft)  # raises before anything is written
        draft.save()
        rule_version_run_tests(draft)
        return draft


def rule_version_activate(version: RuleVersion, *, user: Any = None) -> RuleVersion:
    """Make a tested draft the rule's active version (the previous one is retired)."""
    version.refresh_from_db()
    if version.status == RuleVersion.Status.ACTIVE:
        return version
    try:
        rule_version_compile(version)
    except RuleDefinitionError as exc:
        raise ActivationRefused(f"{version}: the definition has problems: {exc}") from None
    # The outcomes are stored even when activation is refused, so the admin shows why.
    outcomes = rule_version_run_tests(version)
    failed = [o for o in outcomes if not o["passed"]]
    if failed:
        raise ActivationRefused(f"{version}: {len(failed)} test case(s) fail: "
                                + "; ".join(f"{o['case']}: {o['message']}" for o in failed))
    with transaction.atomic():
        Rule.objects.select_for_update().filter(pk=version.rule_id).first()
        version.refresh_from_db()
        if version.status != RuleVersion.Status.DRAFT:
            raise ActivationRefused(f"{version} is {version.status}, not a draft")
        now = timezone.now()
        RuleVersion.objects.filter(rule_id=version.rule_id, status=RuleVersion.Status.ACTIVE).update(
            status=RuleVersion.Status.RETIRED, retired_at=now)
        version.status = RuleVersion.Status.ACTIVE
        version.activated_by = _user(user)
        version.activated_at = now
        version.save(update_fields=["status", "activated_by", "activated_at"])
        return version


def rule_version_restore(version: RuleVersion, *, user: Any = None) -> RuleVersion:
    """A new draft with the content of an old version (activate it to put it back in use)."""
    fields = {name: getattr(version, name) for name in VERSION_FIELDS}
    with transaction.atomic():
        latest = version.rule.versions.order_by("-number").first()
        if latest is not None and latest.status == RuleVersion.Status.DRAFT:
            latest.based_on = version
            latest.save(update_fields=["based_on"])
        draft = rule_version_edit(version.rule, user=user, change_note=f"restored from version {version.number}",
                                  **fields)
        if draft.based_on_id != version.pk:
            RuleVersion.objects.filter(pk=draft.pk).update(based_on=version)
            draft.based_on = version
        return draft


def rule_version_retire(version: RuleVersion) -> None:
    RuleVersion.objects.filter(pk=version.pk).update(status=RuleVersion.Status.RETIRED, retired_at=timezone.now())


def rule_version_diff(old: RuleVersion | None, new: RuleVersion) -> list[dict[str, Any]]:
    """The fields that differ between two versions (for the admin)."""
    out = []
    for name in VERSION_FIELDS:
        before = getattr(old, name) if old is not None else None
        after = getattr(new, name)
        if before != after:
            out.append({"field": name, "before": before, "after": after})
    return out


def _user(user: Any) -> Any:
    return user if getattr(user, "is_authenticated", False) else None


def active_rules(*, value_sets: ValueSetIndex | None = None) -> tuple[list[CompiledRule], dict[int, set[int]]]:
    """The active versions, compiled, and the sites each rule is limited to (rule version id ->
    site ids; absent = every site). A version that no longer compiles (a value set it names was
    removed) is left out, not guessed."""
    value_sets = value_sets if value_sets is not None else fact_plan().value_sets
    risks = known_risks()
    compiled: list[CompiledRule] = []
    sites: dict[int, set[int]] = {}
    versions = list(RuleVersion.objects.filter(status=RuleVersion.Status.ACTIVE).select_related("rule")
                    .prefetch_related("rule__sites").order_by("rule__slug"))
    for v in versions:
        try:
            compiled.append(compile_rule(
                slug=v.rule.slug, version=v.number, severity=v.severity, conditions=v.conditions,
                summary_template=v.summary_template, detail_template=v.detail_template, value_sets=value_sets,
                version_id=v.pk, shadow=v.rule.shadow, known_risks=risks))
        except RuleDefinitionError:
            continue
        site_ids = {s.pk for s in v.rule.sites.all()}
        if site_ids:
            sites[v.pk] = site_ids
    return compiled, sites


def plan_for_rules(plan: FactPlan, rules: Sequence[CompiledRule]) -> FactPlan:
    """The plan narrowed to what the rules read (risk calculators, observation history)."""
    calculators, longest = needs(rules)
    narrowed = FactPlan(value_sets=plan.value_sets, lookback_days=longest, risk_calculators=calculators,
                        ingredients=plan.ingredients)
    return narrowed


# --------------------------------------------------------------------------------------------
# Recommendations


def _digest(trace: list[dict[str, Any]]) -> str:
    return hashlib.sha256(orjson.dumps(trace, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()


@dataclass
class ApplySummary:
    opened: int = 0
    updated: int = 0
    resolved: int = 0


def recommendations_apply(results: dict[int, list[Result]], *, now: dt.datetime | None = None) -> ApplySummary:
    """Write many patients' results: a fixed number of queries per call. Only the rules present in
    a patient's results are touched (a rule not evaluated is left as it is)."""
    now = now or timezone.now()
    summary = ApplySummary()
    if not results:
        return summary
    version_ids = {r.version_id for rs in results.values() for r in rs if r.version_id is not None}
    rule_of_version = dict(RuleVersion.objects.filter(pk__in=version_ids).values_list("pk", "rule_id"))
    with transaction.atomic():
        open_recs = {
            (rec.patient_id, rec.rule_id): rec
            for rec in Recommendation.objects.select_for_update().filter(
                patient_id__in=list(results), rule_id__in=set(rule_of_version.values()), closed_at__isnull=True)
        }
        new: list[Recommendation] = []
        changed: list[Recommendation] = []
        touched: list[int] = []
        for patient_id, patient_results in results.items():
            for result in patient_results:
                if result.version_id is None:
                    continue
                rule_id = rule_of_version[result.version_id]
                rec = open_recs.get((patient_id, rule_id))
                if result.fired:
                    digest = _digest(result.trace)
                    if rec is None:
                        new.append(Recommendation(
                            patient_id=patient_id, rule_id=rule_id, rule_version_id=result.version_id,
                            severity=result.severity, shadow=result.shadow, summary=result.summary,
                            detail=result.detail, trace=result.trace, facts_digest=digest, first_fired_at=now,
                            last_fired_at=now, status_changed_at=now))
                        continue
                    summary.updated += 1
                    same = (rec.rule_version_id == result.version_id and rec.facts_digest == digest
                            and rec.summary == result.summary and rec.severity == result.severity
                            and rec.shadow == result.shadow and rec.detail == result.detail)
                    if same or rec.status != Recommendation.Status.ACTIVE:
                        # still firing for the same reasons (or already answered): only the time moves
                        touched.append(rec.pk)
                        continue
                    rec.last_fired_at = now
                    rec.rule_version_id = result.version_id
                    rec.severity, rec.shadow = result.severity, result.shadow
                    rec.summary, rec.detail, rec.trace, rec.facts_digest = (
                        result.summary, result.detail, result.trace, digest)
                    changed.append(rec)
                elif rec is not None:
                    if rec.status == Recommendation.Status.ACTIVE:
                        rec.status = Recommendation.Status.RESOLVED
                        rec.status_changed_at = now
                    rec.closed_at = now
                    changed.append(rec)
                    summary.resolved += 1
        Recommendation.objects.bulk_create(new, batch_size=2000)
        if touched:
            Recommendation.objects.filter(pk__in=touched).update(last_fired_at=now, updated_at=now)
        Recommendation.objects.bulk_update(
            changed, ["status", "status_changed_at", "closed_at", "last_fired_at", "rule_version", "severity",
                      "shadow", "summary", "detail", "trace", "facts_digest", "updated_at"], batch_size=2000)
        summary.opened = len(new)
    return summary


def apply_results(patient: Patient, results: list[Result], *, now: dt.datetime | None = None) -> ApplySummary:
    """One patient's results (see ``recommendations_apply``)."""
    return recommendations_apply({patient.pk: results}, now=now)


def recommendation_accept(rec: Recommendation, *, user: Any, suggestion: str = "",
                          source: str = RecommendationAction.Source.IN_APP, comment: str = "") -> RecommendationAction:
    return _act(rec, user=user, action=RecommendationAction.Action.ACCEPT, reason_code="", comment=comment,
                suggestion=suggestion, source=source)


def recommendation_override(rec: Recommendation, *, user: Any, reason_code: str, comment: str = "",
                            source: str = RecommendationAction.Source.IN_APP) -> RecommendationAction:
    """Override with one of the version's coded reasons; a comment is required for critical ones."""
    reasons = {r.get("code"): r for r in rec.rule_version.override_reasons}
    if reason_code not in reasons:
        raise ActionRefused(f"override reason {reason_code!r} is not one of {', '.join(sorted(map(str, reasons)))}")
    if rec.severity == Severity.CRITICAL and not comment.strip():
        raise ActionRefused("a comment is required to override a critical recommendation")
    return _act(rec, user=user, action=RecommendationAction.Action.OVERRIDE, reason_code=reason_code,
                reason_display=str(reasons[reason_code].get("display", "")), comment=comment, source=source)


def _act(rec: Recommendation, *, user: Any, action: str, reason_code: str, comment: str, source: str,
         suggestion: str = "", reason_display: str = "") -> RecommendationAction:
    with transaction.atomic():
        locked = Recommendation.objects.select_for_update().get(pk=rec.pk)
        if locked.status != Recommendation.Status.ACTIVE:
            raise ActionRefused(f"the recommendation is {locked.status}, not active")
        now = timezone.now()
        locked.status = (Recommendation.Status.ACCEPTED if action == RecommendationAction.Action.ACCEPT
                         else Recommendation.Status.OVERRIDDEN)
        locked.status_changed_at = now
        locked.save(update_fields=["status", "status_changed_at", "updated_at"])
        rec.status, rec.status_changed_at = locked.status, now
        return RecommendationAction.objects.create(
            recommendation=locked, rule_id=locked.rule_id, rule_version_id=locked.rule_version_id, action=action,
            reason_code=reason_code, reason_display=reason_display, comment=comment, suggestion=suggestion,
            source=source, user=_user(user))


def snooze_create(*, patient: Patient, rule: Rule, until: dt.datetime, user: Any = None, comment: str = "") -> Snooze:
    if until <= timezone.now():
        raise ActionRefused("a snooze must end in the future")
    return Snooze.objects.create(patient=patient, rule=rule, until=until, user=_user(user), comment=comment)


# --------------------------------------------------------------------------------------------
# Evaluation


@dataclass
class EvaluationSummary:
    patients: int
    fired: int
    opened: int
    updated: int
    resolved: int
    seconds: float


def patients_evaluate(
    patient_ids: Iterable[int], *, as_of: dt.datetime | None = None, plan: FactPlan | None = None,
    rules: tuple[list[CompiledRule], dict[int, set[int]]] | None = None, compute_risk: bool = False,
    job_id: int | None = None, batch_size: int = 2000,
) -> EvaluationSummary:
    """Evaluate the active rules for the patients and write their recommendations, in batches.
    ``compute_risk``: first bring the risk assessments up to date (in-process)."""
    started = time.perf_counter()
    ids = sorted(set(patient_ids))
    plan = plan or fact_plan()
    compiled, sites = rules or active_rules(value_sets=plan.value_sets)
    plan = plan_for_rules(plan, compiled)
    totals = EvaluationSummary(0, 0, 0, 0, 0, 0.0)
    for i in range(0, len(ids), batch_size):
        batch = ids[i:i + batch_size]
        if compute_risk:
            from risk.services import risk_compute_for_patients

            risk_compute_for_patients(batch, as_of=as_of, job_id=job_id)
        results = evaluate_batch(batch, compiled, sites, as_of=as_of, plan=plan)
        applied = recommendations_apply(results)
        applied.resolved += recommendations_close_retired(
            batch, [r.version_id for r in compiled if r.version_id is not None])
        now = timezone.now()
        PatientEvaluation.objects.bulk_create(
            [PatientEvaluation(patient_id=pk, evaluated_at=now, fired=sum(r.fired for r in rs), job_id=job_id)
             for pk, rs in results.items()],
            update_conflicts=True, unique_fields=["patient"], update_fields=["evaluated_at", "fired", "job"])
        totals.patients += len(results)
        totals.fired += sum(r.fired for rs in results.values() for r in rs)
        totals.opened += applied.opened
        totals.updated += applied.updated
        totals.resolved += applied.resolved
    totals.seconds = time.perf_counter() - started
    return totals


def evaluate_batch(patient_ids: Sequence[int], compiled: list[CompiledRule], sites: dict[int, set[int]], *,
                   as_of: dt.datetime | None = None, plan: FactPlan | None = None) -> dict[int, list[Result]]:
    """Results (fired or not) per patient, nothing written."""
    facts = load_facts_bulk(patient_ids, as_of=as_of, plan=plan)
    site_of: dict[int, int] = {}
    if sites:
        site_of = dict(Patient.objects.filter(pk__in=list(facts)).values_list("pk", "site_id"))
    out: dict[int, list[Result]] = {}
    for pk, f in facts.items():
        if not sites:
            out[pk] = evaluate(compiled, f, trace_all=False)
            continue
        applies = [r for r in compiled if r.version_id not in sites or site_of.get(pk) in sites[r.version_id]]
        # a rule limited to other sites does not fire here (an open recommendation from before the
        # limit is resolved)
        out[pk] = evaluate(applies, f, trace_all=False) + [
            Result(rule=r.slug, version=r.version, version_id=r.version_id, fired=False, severity=r.severity,
                   summary="", detail="", trace=[], shadow=r.shadow) for r in compiled if r not in applies]
    return out


def recommendations_close_retired(patient_ids: Sequence[int], active_version_ids: Iterable[int], *,
                                  now: dt.datetime | None = None) -> int:
    """Resolve the open recommendations of rules that no longer have an active version."""
    now = now or timezone.now()
    rule_ids = RuleVersion.objects.filter(pk__in=list(active_version_ids)).values("rule_id")
    stale = Recommendation.objects.filter(patient_id__in=list(patient_ids), closed_at__isnull=True).exclude(
        rule_id__in=rule_ids)
    with transaction.atomic():
        closed = stale.filter(status=Recommendation.Status.ACTIVE).update(
            status=Recommendation.Status.RESOLVED, status_changed_at=now, closed_at=now, updated_at=now)
        closed += stale.update(closed_at=now, updated_at=now)
    return closed


def patients_needing_evaluation(*, stale_after: dt.timedelta = dt.timedelta(hours=24), limit: int = 50000) -> list[int]:
    """Patients never evaluated, evaluated longer ago than ``stale_after`` (look-back windows
    move with time), or with risk assessments or note extractions newer than their evaluation
    (the results of the risk and nlp jobs)."""
    from nlp.models import NoteExtraction
    from risk.models import RiskAssessment

    cutoff = timezone.now() - stale_after
    evaluated = dict(PatientEvaluation.objects.values_list("patient_id", "evaluated_at"))
    ids = set(Patient.objects.filter(active=True).exclude(pk__in=[
        pk for pk, at in evaluated.items() if at >= cutoff]).values_list("pk", flat=True)[:limit])
    for model, column in ((RiskAssessment, "computed_at"), (NoteExtraction, "created_at")):
        newest = model.objects.filter(**{f"{column}__gte": cutoff}).values("patient_id").annotate(at=Max(column))
        for row in newest:
            at = evaluated.get(row["patient_id"])
            if at is None or row["at"] > at:
                ids.add(row["patient_id"])
    return sorted(ids)[:limit]


def decision_sweep(*, batch_size: int = 500) -> int:
    """Queue decision jobs (batches of patients) for every patient that needs an evaluation; the
    schedule's task. Returns the number of jobs queued."""
    from cdss.jobs.runner import job_enqueue

    from .jobs import DECISION_KIND

    ids = patients_needing_evaluation()
    count = 0
    with transaction.atomic():
        for i in range(0, len(ids), batch_size):
            batch = ids[i:i + batch_size]
            job_enqueue(kind=DECISION_KIND, params={"patient_ids": batch},
                        inputs={"reason": "schedule", "at": timezone.now().isoformat()})
            count += 1
    return count


# --------------------------------------------------------------------------------------------
# Backtest
#
# A backtest runs a version (typically a draft) over the population beside the version that was
# active when it was asked for; nothing but the Backtest row is written. ``backtest_queue`` splits
# the population into chunks, one ``decision.backtest`` job each (Celery workers, or in-process
# on the embedded default); ``backtest_run`` does the same chunks one after the other in this
# process (the bench and the tests compare both). Every chunk is evaluated as of the time the
# backtest was created, so chunks run minutes apart still describe one moment.

BACKTEST_SAMPLE = 10
BACKTEST_CHUNK = 2000
BACKTEST_KIND = "decision.backtest"


def _backtest_rules(bt: Backtest) -> tuple[FactPlan, list[CompiledRule]]:
    """The plan and the compiled rules of a backtest: its version, then the compared one if any."""
    plan = fact_plan()
    rules = [rule_version_compile(bt.rule_version, value_sets=plan.value_sets)]
    if bt.compared_with is not None:
        rules.append(rule_version_compile(bt.compared_with, value_sets=plan.value_sets))
    return plan_for_rules(plan, rules), rules


def backtest_chunk(bt: Backtest, patient_ids: Sequence[int], *, sample_size: int = BACKTEST_SAMPLE,
                   plan: FactPlan | None = None, rules: list[CompiledRule] | None = None) -> dict[str, Any]:
    """Counts and a sample (the first patients, by id, it fires for) over some patients; reads only."""
    if plan is None or rules is None:
        plan, rules = _backtest_rules(bt)
    part: dict[str, Any] = {"patients": 0, "fired": 0, "compared_fired": 0, "newly_fired": 0, "no_longer_fired": 0,
                            "sample": []}
    compared = len(rules) > 1
    facts = load_facts_bulk(patient_ids, as_of=bt.created_at, plan=plan)
    for pk in sorted(facts):
        results = evaluate(rules, facts[pk], trace_all=False)
        d = results[0].fired
        a = results[1].fired if compared else False
        part["patients"] += 1
        part["fired"] += d
        part["compared_fired"] += a
        part["newly_fired"] += d and not a
        part["no_longer_fired"] += a and not d
        if d and len(part["sample"]) < sample_size:
            part["sample"].append({"patient_id": pk, "summary": results[0].summary, "trace": results[0].trace,
                                   "active_fires": a})
    # JSON types only (the part is stored as is)
    return orjson.loads(orjson.dumps(part, default=str))


def _backtest_total(bt: Backtest, sample_size: int) -> None:
    """Add up the parts into the row's figures (chunk order: the sample is the same as a run in
    one process would take)."""
    parts = [bt.parts[k] for k in sorted(bt.parts, key=int)]
    for name in ("fired", "compared_fired", "newly_fired", "no_longer_fired"):
        setattr(bt, name, sum(int(p[name]) for p in parts))
    bt.sample = [s for p in parts for s in p["sample"]][:sample_size]


def backtest_run(version: RuleVersion, *, patient_ids: Sequence[int] | None = None, user: Any = None,
                 sample_size: int = BACKTEST_SAMPLE, batch_size: int = BACKTEST_CHUNK,
                 job_id: int | None = None, progress: Callable[[int, int], None] | None = None) -> Backtest:
    """The whole backtest in this process, chunk after chunk (the same code as the jobs);
    ``progress(done, total)`` is called with patient counts after each chunk."""
    started = time.perf_counter()
    ids, chunks = _backtest_chunks(patient_ids, batch_size)
    active_version = _other_active_version(version)
    bt = Backtest.objects.create(rule_version=version, compared_with=active_version, status=Backtest.Status.RUNNING,
                                 created_by=_user(user), job_id=job_id)
    parts = {}
    try:
        plan, rules = _backtest_rules(bt)
        done = 0
        for n, chunk in enumerate(chunks):
            parts[str(n)] = backtest_chunk(bt, chunk, sample_size=sample_size, plan=plan, rules=rules)
            done += len(chunk)
            if progress is not None:
                progress(done, len(ids))
    except Exception as exc:
        backtest_fail(bt.pk, f"{type(exc).__name__} while running in process")
        raise
    bt.parts = parts
    bt.patients = len(ids)
    _backtest_total(bt, sample_size)
    bt.status, bt.finished_at, bt.seconds = Backtest.Status.DONE, timezone.now(), time.perf_counter() - started
    bt.save()
    return bt


def _other_active_version(version: RuleVersion) -> RuleVersion | None:
    """The rule's active version a backtest of ``version`` is compared with (None: none, or itself)."""
    return version.rule.versions.filter(status=RuleVersion.Status.ACTIVE).exclude(pk=version.pk).first()


def _population() -> list[int]:
    return list(Patient.objects.filter(active=True).order_by("pk").values_list("pk", flat=True))


class BacktestChunkSizeError(ValueError):
    """A backtest asked for with chunks of fewer than one patient."""


def _backtest_chunks(patient_ids: Sequence[int] | None, size: int) -> tuple[list[int], list[list[int]]]:
    """The patients (given, else the active population by id) and their chunks of ``size``."""
    if size < 1:
        raise BacktestChunkSizeError(f"must be at least 1, got {size}")
    ids = list(patient_ids) if patient_ids is not None else _population()
    return ids, [ids[i:i + size] for i in range(0, len(ids), size)]


def backtest_queue(version: RuleVersion, *, patient_ids: Sequence[int] | None = None, user: Any = None,
                   sample_size: int = BACKTEST_SAMPLE, chunk_size: int = BACKTEST_CHUNK) -> Backtest:
    """Queue a backtest as jobs: the population (fixed now) in chunks of ``chunk_size`` patients,
    one job each. The row shows the status; the last job to finish writes the totals."""
    from cdss.jobs.runner import job_enqueue

    ids, chunks = _backtest_chunks(patient_ids, chunk_size)
    active_version = _other_active_version(version)
    with transaction.atomic():
        bt = Backtest.objects.create(rule_version=version, compared_with=active_version, created_by=_user(user),
                                     status=Backtest.Status.QUEUED if chunks else Backtest.Status.DONE,
                                     patients=len(ids), chunks=len(chunks))
        if not chunks:
            bt.finished_at, bt.seconds = bt.created_at, 0.0
            bt.save(update_fields=["finished_at", "seconds"])
        for n, chunk in enumerate(chunks):
            job = job_enqueue(kind=BACKTEST_KIND, target=bt, user=user,
                              params={"chunk": n, "patient_ids": chunk, "sample_size": sample_size})
            if n == 0:
                Backtest.objects.filter(pk=bt.pk).update(job=job)
                bt.job = job
    return bt


def backtest_part_write(backtest_id: int, chunk: int, part: dict[str, Any], *, sample_size: int) -> Backtest | None:
    """Store one job's part (again if the job ran twice: the same key, the same part) and, once
    every chunk is in, the totals. Runs in the transaction that marks the job succeeded; the row
    lock orders jobs finishing together. None if the backtest was deleted meanwhile."""
    bt = Backtest.objects.select_for_update().filter(pk=backtest_id).first()
    if bt is None:
        return None
    bt.parts = {**(bt.parts or {}), str(chunk): part}
    if bt.status != Backtest.Status.FAILED:
        if len(bt.parts) >= bt.chunks:
            _backtest_total(bt, sample_size)
            bt.status, bt.finished_at = Backtest.Status.DONE, timezone.now()
            bt.seconds = (bt.finished_at - bt.created_at).total_seconds()
        else:
            bt.status = Backtest.Status.RUNNING
    bt.save()
    return bt


def backtest_fail(backtest_id: int, message: str) -> int:
    """Record that a backtest cannot finish (a job gave up); the message names the chunk and the
    job, never a patient."""
    return Backtest.objects.filter(pk=backtest_id).exclude(status=Backtest.Status.DONE).update(
        status=Backtest.Status.FAILED, error=message[:2000], finished_at=timezone.now())


def backtests_fail_abandoned() -> int:
    """Unfinished backtests one of whose jobs is dead or cancelled (a worker lost for good) are
    failed; the schedule's sweep runs this."""
    from cdss.models import Job

    count = 0
    open_ids = list(Backtest.objects.filter(status__in=[Backtest.Status.QUEUED, Backtest.Status.RUNNING])
                    .values_list("pk", flat=True))
    if not open_ids:
        return 0
    given_up = (Job.objects.filter(kind=BACKTEST_KIND, target_type="decision.backtest",
                                   target_id__in=[str(pk) for pk in open_ids],
                                   status__in=[Job.Status.DEAD, Job.Status.CANCELLED])
                .values_list("target_id", "pk", "status").order_by("pk"))
    seen: set[str] = set()
    for target_id, job_pk, status in given_up:
        if target_id in seen:
            continue
        seen.add(target_id)
        count += backtest_fail(int(target_id), f"job #{job_pk} is {status}; the backtest cannot finish")
    return count
