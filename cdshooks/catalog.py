"""The CDS services offered, and the active rules each evaluates.

- ``patient-view`` (hook patient-view): every active rule not in shadow mode.
- ``order-select`` and ``order-sign`` (those hooks): the medication rules that can fire on a drug
  being ordered, i.e. rules of the medication-safety and pharmacogenomics categories with a
  condition that a medication is present (or on its dose) or a same-ingredient condition:
  drug-allergy, drug-genotype (the pgx-* starter rules) and renal dosing (metformin-egfr-30).

Each service's prefetch templates ask for what its rules read (CDS Hooks 2.0.1, "Prefetch
template"; only the recommended query subset: instance read, search by patient, token equality
on ``code``/``status``/``clinical-status``, ``_sort``, ``_count``).

The compiled rules, the value sets and the templates are cached per process and rebuilt when a
rule version, a rule or a value set changes (one query checks a fingerprint of those tables).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import connection

from decision.engine import CompiledRule, Condition, Group, needs
from decision.load import PHENOTYPE_CODES, FactPlan, fact_plan
from decision.models import ConceptIsA, Rule, RuleVersion, ValueSet, ValueSetCode
from decision.services import active_rules, plan_for_rules
from risk import record_inputs

ORDER_CATEGORIES = frozenset({Rule.Category.MEDICATION_SAFETY, Rule.Category.PHARMACOGENOMICS})
LOINC = "http://loinc.org"
OBSERVATION_COUNT = 200  # newest observations asked for (recent values and history for "changed by")
GENOMIC_CODES = ("69548-6", *PHENOTYPE_CODES)  # Genetic variant assessment; phenotype codes (decision.load)
PATIENT = "{{context.patientId}}"


@dataclass(frozen=True)
class ServiceDef:
    id: str
    hook: str
    title: str
    description: str
    required_context: tuple[str, ...]


SERVICES: dict[str, ServiceDef] = {
    "patient-view": ServiceDef(
        "patient-view", "patient-view", "Decision support for the opened patient",
        "Evaluates every active rule (prevention, medication safety, pharmacogenomics, chronic disease, acute care, "
        "diagnosis, imaging) on the patient's record and returns a card for each rule that fires, with the reason.",
        ("userId", "patientId")),
    "order-select": ServiceDef(
        "order-select", "order-select", "Medication order checks",
        "Checks the selected draft medication orders against the patient's allergies, pharmacogenomic results and "
        "kidney function (drug-allergy, drug-genotype and renal dosing rules).",
        ("userId", "patientId", "selections", "draftOrders")),
    "order-sign": ServiceDef(
        "order-sign", "order-sign", "Medication order checks at signing",
        "Checks the draft medication orders being signed against the patient's allergies, pharmacogenomic results "
        "and kidney function (drug-allergy, drug-genotype and renal dosing rules).",
        ("userId", "patientId", "draftOrders")),
}


@dataclass
class RuleMeta:
    """What a card shows of a rule version besides the engine's result."""

    rule_id: int
    slug: str
    title: str
    category: str
    number: int
    rationale: str
    citation_source: str
    citation_url: str
    suggested_actions: list[dict[str, Any]]
    override_reasons: list[dict[str, Any]]


@dataclass
class Catalog:
    plan: FactPlan
    rules: dict[str, list[CompiledRule]]  # service id -> rules
    sites: dict[int, set[int]]  # rule version id -> sites it is limited to
    meta: dict[int, RuleMeta]  # rule version id -> meta
    categories: dict[str, set[str]]  # service id -> data categories its rules read
    prefetch: dict[str, dict[str, str]] = field(default_factory=dict)  # service id -> templates


def _conditions(items: Iterable[Condition | Group]) -> Iterable[Condition]:
    for item in items:
        if isinstance(item, Group):
            yield from _conditions(item.items)
        else:
            yield item


def _all_conditions(rule: CompiledRule) -> list[Condition]:
    return [*_conditions(rule.root.items), *rule.show]


def _orders_rule(rule: CompiledRule, category: str) -> bool:
    return category in ORDER_CATEGORIES and any(
        (c.kind == "medication" and (c.op == "present" or c.attr == "dose_mg"))
        or (c.kind == "same-ingredient" and c.op == "present") for c in _all_conditions(rule))


def data_categories(rules: Iterable[CompiledRule]) -> set[str]:
    """The prefetch categories the rules read (risk, imaging and note results are stored only)."""
    out: set[str] = set()
    for rule in rules:
        for c in _all_conditions(rule):
            if c.kind in ("age", "sex"):
                out.add("patient")
            elif c.kind == "pregnant":
                out |= {"conditions", "observations"}
            elif c.kind == "observation":
                out.add("observations")
            elif c.kind == "condition":
                out.add("conditions")
            elif c.kind == "medication":
                out.add("medications")
            elif c.kind == "allergy":
                out.add("allergies")
            elif c.kind == "same-ingredient":
                out |= {"medications", "allergies"}
            elif c.kind == "genomic":
                out.add("genomics")
    return out


def _observation_codes(rules: list[CompiledRule]) -> list[str]:
    """The codes of the rules' observation value sets, and, where a rule reads a risk score, the
    codes the risk calculators read (a patient known only from the prefetch is scored from it)."""
    codes: set[str] = set()
    for rule in rules:
        for c in _all_conditions(rule):
            if c.kind == "observation" and c.members is not None:
                codes |= c.members.all_codes()
    if needs(rules)[0]:
        codes |= record_inputs.observation_codes()
    return sorted(codes)


def _templates(categories: set[str], rules: list[CompiledRule]) -> dict[str, str]:
    out: dict[str, str] = {}
    if "patient" in categories:
        out["patient"] = f"Patient/{PATIENT}"
    codes = _observation_codes(rules)
    if "observations" in categories and codes:
        out["observations"] = (f"Observation?patient={PATIENT}&code=" + ",".join(f"{LOINC}|{c}" for c in codes)
                               + f"&_sort=-date&_count={OBSERVATION_COUNT}")
    if "genomics" in categories:
        out["genomics"] = f"Observation?patient={PATIENT}&code=" + ",".join(f"{LOINC}|{c}" for c in GENOMIC_CODES)
    if "conditions" in categories:
        out["conditions"] = f"Condition?patient={PATIENT}&clinical-status=active"
    if "medications" in categories:
        out["medications"] = f"MedicationRequest?patient={PATIENT}&status=active"
    if "allergies" in categories:
        out["allergies"] = f"AllergyIntolerance?patient={PATIENT}&clinical-status=active"
    return out


def _build() -> Catalog:
    plan = fact_plan()
    compiled, sites = active_rules(value_sets=plan.value_sets)
    versions = RuleVersion.objects.filter(pk__in=[r.version_id for r in compiled]).select_related("rule")
    meta = {
        v.pk: RuleMeta(rule_id=v.rule_id, slug=v.rule.slug, title=v.rule.title, category=v.rule.category,
                       number=v.number, rationale=v.rationale, citation_source=v.citation_source,
                       citation_url=v.citation_url, suggested_actions=list(v.suggested_actions or []),
                       override_reasons=list(v.override_reasons or []))
        for v in versions
    }
    shown = [r for r in compiled if not r.shadow and r.version_id in meta]
    rules = {
        "patient-view": shown,
        "order-select": [r for r in shown if _orders_rule(r, meta[r.version_id or 0].category)],
    }
    rules["order-sign"] = rules["order-select"]
    categories = {sid: data_categories(rs) for sid, rs in rules.items()}
    # Read only what the rules use (their risk calculators, their longest look-back).
    plan = plan_for_rules(plan, shown)
    catalog = Catalog(plan=plan, rules=rules, sites=sites, meta=meta, categories=categories)
    catalog.prefetch = {sid: _templates(categories[sid], rules[sid]) for sid in rules}
    return catalog


_lock = threading.Lock()
_cached: tuple[tuple[Any, ...], Catalog] | None = None


def _fingerprint() -> tuple[Any, ...]:
    rv, rule, vs, vsc, isa = (m._meta.db_table for m in (RuleVersion, Rule, ValueSet, ValueSetCode, ConceptIsA))
    if connection.vendor == "postgresql":
        active = f"SELECT string_agg(id::text, ',' ORDER BY id) FROM {rv} WHERE status = 'active'"  # noqa: S608
    else:  # the embedded SQLite default: group_concat keeps the order of the ordered subquery
        active = f"SELECT group_concat(id, ',') FROM (SELECT id FROM {rv} WHERE status = 'active' ORDER BY id)"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT (SELECT count(*) FROM {rv}), (SELECT max(activated_at) FROM {rv}), "  # noqa: S608 (table names)
            f"(SELECT max(retired_at) FROM {rv}), ({active}), (SELECT max(updated_at) FROM {rule}), "
            f"(SELECT max(updated_at) FROM {vs}), (SELECT count(*) FROM {vs}), (SELECT max(id) FROM {vsc}), "
            f"(SELECT max(id) FROM {isa})")
        row = cursor.fetchone()
    return tuple(row or ())


def catalog_get() -> Catalog:
    """The current catalog (rebuilt when the rules or value sets changed)."""
    global _cached
    key = _fingerprint()
    cached = _cached
    if cached is not None and cached[0] == key:
        return cached[1]
    with _lock:
        built = _build()
        _cached = (key, built)
        return built


def discovery(catalog: Catalog) -> dict[str, Any]:
    """The discovery document: ``{"services": [...]}`` with no empty member."""
    services = []
    for sid, definition in SERVICES.items():
        entry: dict[str, Any] = {"hook": definition.hook, "id": sid, "title": definition.title,
                                 "description": definition.description}
        templates = catalog.prefetch.get(sid)
        if templates:
            entry["prefetch"] = templates
        services.append(entry)
    return {"services": services}
