"""The rules engine (pure Python, no Django): ``evaluate(rules, facts) -> list[Result]``.

A rule version's ``conditions`` is a JSON tree::

    {"all": [                                   # or "any"; one level of nested groups
        {"fact": "age", "op": "between", "value": [40, 75], "unit": "a"},
        {"fact": "observation:ldl", "op": ">=", "value": 70, "unit": "mg/dL", "lookback_days": 730,
         "name": "ldl"},
        {"any": [{"fact": "risk:pce_ascvd_10y", "op": ">=", "value": 7.5, "unit": "%"}, ...]},
        {"fact": "medication:statins", "op": "absent"}],
     "show": [{"fact": "risk:has_bled", "name": "has_bled"}]}   # shown in the card, not tested

Facts (``kind:argument[.attribute]``): ``age`` (a), ``sex``, ``pregnant``;
``observation:<value set>`` (latest value in the look-back window, canonical unit; options
``count`` and ``min_span_days``: at least ``count`` values meet the test, the first and last at
least ``min_span_days`` apart); ``condition:<value set>``, ``allergy:<value set>``,
``medication:<value set>`` (present/absent) and ``medication:<value set>.dose_mg``;
``genomic:<gene or allele>`` (phenotype text; ``=`` takes a list of accepted phenotypes);
``risk:<calculator>`` (value, unit as stored) and ``.category``; ``imaging:<label>``
(probability 0-1), ``.reported``, ``.reviewed`` and ``.disputed``; ``note:<value set>`` (an affirmed finding in a note);
``same-ingredient:medication`` and ``same-ingredient:allergy`` (present/absent): a medication
(ordered or active) that contains a drug ingredient the patient is allergic to, and that allergy
(``ingredient_pairs``: no value set, the allergy itself names the ingredient).

Operators: ``<  <=  >  >=  =  !=  present  absent  between  changed by``. ``changed by`` compares
the latest value with the oldest in the window: a negative threshold means "fell by at least",
a positive one "rose by at least" (``"relative": true``: in percent of the oldest).

Missing data never fires a comparison: the trace says the value is missing. A threshold's unit
must be a unit of the fact's analyte; ``compile_rule`` refuses a rule otherwise, naming the
condition and the accepted units (so a wrong unit is an error when the rule is saved).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .facts import Facts, ObservationFact
from .units import UnitError, canonical_unit, dimension_of, normalise_unit, to_canonical
from .valuesets import Members, ValueSetIndex

NUMERIC_OPS = ("<", "<=", ">", ">=")
OPERATORS = (*NUMERIC_OPS, "=", "!=", "present", "absent", "between", "changed by")
SEVERITIES = ("info", "warning", "critical")
# The yes/no attributes of an imaging finding (``imaging:<label>.<flag>``): a radiology report
# exists; a clinician has agreed or disagreed with the finding in the viewer; the latest of those
# verdicts is a disagreement.
IMAGING_FLAGS = ("reported", "reviewed", "disputed")
KINDS = ("age", "sex", "pregnant", "observation", "condition", "medication", "allergy", "genomic", "risk", "imaging",
         "note", "same-ingredient")
_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)(?:\.(value|unit|date))?\}")
DEFAULT_OBSERVATION_LOOKBACK = 365


class RuleDefinitionError(ValueError):
    """Every problem with a rule's definition, each naming where it is."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


# --------------------------------------------------------------------------------------------
# Compiled conditions


@dataclass
class Condition:
    name: str
    fact: str
    kind: str
    arg: str
    attr: str
    op: str
    value: Any
    unit: str
    lookback_days: int | None
    count: int = 1
    min_span_days: int = 0
    relative: bool = False
    threshold: Any = None  # in the fact's canonical unit
    members: Members | None = None
    dimension: str = ""

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": "condition", "name": self.name, "fact": self.fact, "op": self.op,
                               "threshold": self.value, "unit": self.unit}
        if self.lookback_days is not None:
            out["lookback_days"] = self.lookback_days
        if self.count > 1:
            out["count"] = self.count
            out["min_span_days"] = self.min_span_days
        return out


_COST = {"age": 0, "sex": 0, "pregnant": 0, "genomic": 1, "medication": 1, "condition": 1, "allergy": 1,
         "same-ingredient": 2, "risk": 2, "imaging": 2, "note": 2, "observation": 3}


@dataclass
class Group:
    logic: str  # "all" | "any"
    items: list[Condition | Group]

    @property
    def fast_items(self) -> list[Condition | Group]:
        """The items, cheapest first: the untraced check stops sooner (the trace keeps the
        author's order)."""
        cached: list[Condition | Group] | None = self.__dict__.get("_fast")
        if cached is None:
            cached = sorted(self.items, key=lambda i: 4 if isinstance(i, Group) else _COST.get(i.kind, 3))
            self.__dict__["_fast"] = cached
        return cached


@dataclass
class CompiledRule:
    slug: str
    version: int
    severity: str
    root: Group
    show: list[Condition]
    summary_template: str
    detail_template: str = ""
    version_id: int | None = None
    shadow: bool = False


@dataclass
class Result:
    rule: str
    version: int
    version_id: int | None
    fired: bool
    severity: str
    summary: str
    detail: str
    trace: list[dict[str, Any]]
    shadow: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "version": self.version, "fired": self.fired, "severity": self.severity,
                "summary": self.summary, "detail": self.detail, "trace": self.trace}


# --------------------------------------------------------------------------------------------
# Compiling (validation)


def _default_name(fact: str) -> str:
    tail = fact.split(":", 1)[1] if ":" in fact else fact
    return re.sub(r"[^a-z0-9]+", "_", tail.lower()).strip("_") or "value"


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _compile_condition(raw: Any, where: str, value_sets: ValueSetIndex, problems: list[str],
                       known_risks: dict[str, str] | None) -> Condition | None:
    if not isinstance(raw, dict):
        problems.append(f"{where}: a condition must be an object")
        return None
    unknown = set(raw) - {"fact", "op", "value", "unit", "lookback_days", "name", "count", "min_span_days",
                          "relative"}
    if unknown:
        problems.append(f"{where}: unknown keys {', '.join(sorted(unknown))}")
    fact = raw.get("fact")
    op = raw.get("op")
    if not isinstance(fact, str) or not fact:
        problems.append(f"{where}: 'fact' is required")
        return None
    if op not in OPERATORS:
        problems.append(f"{where} ({fact}): operator {op!r} is not one of {', '.join(OPERATORS)}")
        return None
    kind, _, rest = fact.partition(":")
    arg, _, attr = rest.partition(".")
    if kind not in KINDS:
        problems.append(f"{where}: fact {fact!r} is not one of the kinds {', '.join(KINDS)}")
        return None
    before = len(problems)
    value: Any = raw.get("value")
    unit = str(raw.get("unit") or "")
    lookback = raw.get("lookback_days")
    if lookback is not None and (not isinstance(lookback, int) or isinstance(lookback, bool) or lookback <= 0):
        problems.append(f"{where} ({fact}): lookback_days must be a positive whole number of days")
    name = raw.get("name") or _default_name(fact)
    if not isinstance(name, str) or not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        problems.append(f"{where} ({fact}): name {name!r} must be lower-case letters, digits and _")
    cond = Condition(name=str(name), fact=fact, kind=kind, arg=arg, attr=attr, op=op, value=value, unit=unit,
                     lookback_days=lookback, count=int(raw.get("count", 1) or 1),
                     min_span_days=int(raw.get("min_span_days", 0) or 0), relative=bool(raw.get("relative", False)))

    # what each kind of fact accepts
    presence_only = kind in ("condition", "allergy", "note", "same-ingredient") or (kind == "medication" and not attr)
    if kind == "same-ingredient" and (arg not in ("medication", "allergy") or attr):
        problems.append(f"{where} ({fact}): use same-ingredient:medication (the order) or same-ingredient:allergy")
    if kind in ("observation", "condition", "medication", "allergy", "note"):
        members = value_sets.get(arg)
        if members is None:
            problems.append(f"{where} ({fact}): no value set {arg!r}")
        else:
            cond.members = members
            expected = {"observation": "observation", "condition": "condition", "medication": "medication",
                        "allergy": "allergy", "note": "condition"}[kind]
            if members.kind not in (expected, "other"):
                problems.append(f"{where} ({fact}): value set {arg!r} holds {members.kind} codes, not {expected}")
    if presence_only and op not in ("present", "absent"):
        problems.append(f"{where} ({fact}): only 'present' or 'absent' apply to this fact")
    if kind == "medication" and attr not in ("", "dose_mg"):
        problems.append(f"{where} ({fact}): a medication has no attribute {attr!r} (dose_mg)")
    if kind == "risk" and attr not in ("", "category"):
        problems.append(f"{where} ({fact}): a risk result has no attribute {attr!r} (category)")
    if kind == "imaging" and attr not in ("", *IMAGING_FLAGS):
        problems.append(f"{where} ({fact}): an imaging finding has no attribute {attr!r} "
                        f"({', '.join(IMAGING_FLAGS)})")
    if kind in ("age", "sex", "pregnant") and arg:
        problems.append(f"{where} ({fact}): {kind} takes no argument")
    if kind in ("genomic", "risk", "imaging") and not arg:
        problems.append(f"{where} ({fact}): name the {kind} ({kind}:NAME)")
    if op == "changed by" and kind != "observation":
        problems.append(f"{where} ({fact}): 'changed by' applies to observations only")
    if cond.count > 1 and (kind != "observation" or op not in (*NUMERIC_OPS, "between", "=", "!=")):
        problems.append(f"{where} ({fact}): 'count' applies to observation comparisons only")
    if len(problems) > before:
        return cond

    # the threshold and its unit
    if op in ("present", "absent"):
        if value is not None:
            problems.append(f"{where} ({fact}): '{op}' takes no value")
        return cond
    textual = kind in ("sex", "genomic") or attr in ("category",)
    boolean = kind == "pregnant" or (kind == "imaging" and attr in IMAGING_FLAGS)
    if textual:
        if op not in ("=", "!="):
            problems.append(f"{where} ({fact}): only '=' or '!=' apply to a text fact")
        elif not (isinstance(value, str) or (isinstance(value, list) and value
                                             and all(isinstance(v, str) for v in value))):
            problems.append(f"{where} ({fact}): the value must be a text or a list of texts")
        else:
            cond.threshold = frozenset(v.strip().lower() for v in ([value] if isinstance(value, str) else value))
        return cond
    if boolean:
        if op not in ("=", "!=") or not isinstance(value, bool):
            problems.append(f"{where} ({fact}): use '=' or '!=' with true or false")
        cond.threshold = value
        return cond
    # numeric
    if op == "between":
        if not (isinstance(value, list) and len(value) == 2 and all(_number(v) for v in value) and value[0] <= value[1]):
            problems.append(f"{where} ({fact}): 'between' takes [low, high] with low <= high (inclusive)")
            return cond
    elif not _number(value):
        problems.append(f"{where} ({fact}): the value must be a number")
        return cond
    dimension = ""
    if kind == "age":
        dimension = "years"
    elif kind == "observation" and cond.members is not None and cond.members.dimension:
        dimension = cond.members.dimension
    elif kind == "medication":
        dimension = "dose"
    elif kind == "imaging":
        dimension = "probability"
    elif kind == "risk" and known_risks is not None:
        if arg not in known_risks:
            problems.append(f"{where} ({fact}): no calculator or model {arg!r} "
                            f"(known: {', '.join(sorted(known_risks))})")
            return cond
        if known_risks[arg] and unit != known_risks[arg]:
            problems.append(f"{where} ({fact}): {arg} is in {known_risks[arg]!r}, not {unit!r}")
            return cond
    if dimension:
        cond.dimension = dimension
        try:
            unit_ = normalise_unit(unit or canonical_unit(dimension), dimension)
        except UnitError as exc:
            problems.append(f"{where} ({fact}): {exc}")
            return cond
        if op == "changed by" and cond.relative:
            cond.threshold = float(value)
        elif op == "changed by":
            # a difference: convert through the scale only (two points of a linear map)
            cond.threshold = to_canonical(float(value), unit_, dimension) - to_canonical(0.0, unit_, dimension)
        elif op == "between":
            cond.threshold = (to_canonical(float(value[0]), unit_, dimension),
                              to_canonical(float(value[1]), unit_, dimension))
        else:
            cond.threshold = to_canonical(float(value), unit_, dimension)
    else:
        if kind == "observation" and not unit and op not in ("=", "!="):
            problems.append(f"{where} ({fact}): give the threshold's unit (value set {arg!r} has no dimension, so "
                            "the recorded unit must equal it)")
        cond.threshold = tuple(float(v) for v in value) if op == "between" else float(value)
    return cond


def _compile_group(raw: Any, where: str, depth: int, value_sets: ValueSetIndex, problems: list[str],
                   known_risks: dict[str, str] | None) -> Group | None:
    keys = [k for k in ("all", "any") if k in raw] if isinstance(raw, dict) else []
    if len(keys) != 1:
        problems.append(f"{where}: a group must have exactly one of 'all' or 'any'")
        return None
    logic = keys[0]
    items = raw[logic]
    if not isinstance(items, list) or not items:
        problems.append(f"{where}.{logic}: must be a non-empty list")
        return None
    group = Group(logic=logic, items=[])
    for i, item in enumerate(items):
        path = f"{where}.{logic}[{i}]"
        if isinstance(item, dict) and ("all" in item or "any" in item):
            if depth >= 1:
                problems.append(f"{path}: groups nest one level only")
                continue
            sub = _compile_group(item, path, depth + 1, value_sets, problems, known_risks)
            if sub is not None:
                group.items.append(sub)
        else:
            cond = _compile_condition(item, path, value_sets, problems, known_risks)
            if cond is not None:
                group.items.append(cond)
    return group


def _names(group: Group) -> set[str]:
    out: set[str] = set()
    for item in group.items:
        out |= _names(item) if isinstance(item, Group) else {item.name}
    return out


def compile_rule(
    *, slug: str, version: int, severity: str, conditions: Any, summary_template: str, detail_template: str = "",
    value_sets: ValueSetIndex, version_id: int | None = None, shadow: bool = False,
    known_risks: dict[str, str] | None = None,
) -> CompiledRule:
    """Check a rule's definition and prepare it for evaluation. ``known_risks`` maps calculator
    and model names to their units (None: risk names are not checked). Raises
    RuleDefinitionError listing every problem."""
    problems: list[str] = []
    if severity not in SEVERITIES:
        problems.append(f"severity {severity!r} is not one of {', '.join(SEVERITIES)}")
    root = None
    show: list[Condition] = []
    if not isinstance(conditions, dict):
        problems.append("conditions must be a JSON object with 'all' or 'any'")
    else:
        unknown = set(conditions) - {"all", "any", "show"}
        if unknown:
            problems.append(f"conditions: unknown keys {', '.join(sorted(unknown))}")
        root = _compile_group({k: v for k, v in conditions.items() if k != "show"}, "conditions", 0, value_sets,
                              problems, known_risks)
        for i, raw in enumerate(conditions.get("show") or []):
            if not isinstance(raw, dict) or "fact" not in raw:
                problems.append(f"conditions.show[{i}]: needs a 'fact'")
                continue
            cond = _compile_condition({**raw, "op": "present"}, f"conditions.show[{i}]", value_sets, problems,
                                      known_risks)
            if cond is not None:
                show.append(cond)
    if not summary_template.strip():
        problems.append("the summary text is required")
    if root is not None:
        names = _names(root) | {c.name for c in show} | {"age", "sex"}
        for template, label in ((summary_template, "summary"), (detail_template, "detail")):
            for match in _PLACEHOLDER.finditer(template):
                if match.group(1) not in names:
                    problems.append(f"{label} text: {{{match.group(1)}}} is not the name of a condition "
                                    f"(names: {', '.join(sorted(names))})")
            stray = _PLACEHOLDER.sub("", template)
            if re.search(r"\{[^}]*\}", stray):
                problems.append(f"{label} text: placeholders are {{name}}, {{name.value}}, {{name.unit}} or "
                                "{name.date} with a condition's name")
    if problems or root is None:
        raise RuleDefinitionError(problems or ["conditions are empty"])
    return CompiledRule(slug=slug, version=version, severity=severity, root=root, show=show,
                        summary_template=summary_template, detail_template=detail_template, version_id=version_id,
                        shadow=shadow)


# --------------------------------------------------------------------------------------------
# Evaluating


@dataclass
class Found:
    """The value a condition used, with its evidence."""

    value: Any = None
    unit: str = ""
    at: dt.datetime | None = None
    source: str = ""
    present: bool = False
    explanation: dict[str, Any] = field(default_factory=dict)
    problem: str = ""
    values: list[ObservationFact] = field(default_factory=list)


def _in_window(at: dt.datetime | None, facts: Facts, days: int | None) -> bool:
    if days is None or at is None:
        return days is None
    return facts.as_of - dt.timedelta(days=days) <= at <= facts.as_of


# An allergy that no longer holds (HL7 FHIR R4 AllergyIntolerance clinicalStatus and
# verificationStatus); the loaders leave these out, a test case may state them.
ALLERGY_NOT_HELD = frozenset({"inactive", "resolved", "refuted", "entered-in-error"})
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
# What an allergy's name says besides its substance ("Allergy to lisinopril", "Penicillin (substance)").
_ALLERGY_WORDS = re.compile(r"\b(?:adverse\s+(?:drug\s+)?)?(?:allerg(?:y|ies|ic)|hypersensitivity|intolerance|"
                            r"sensitivity|reaction)\b(?:\s+(?:to|of))?|\((?:substance|product|medicinal product)\)")
# Names that are not one ingredient: a class, or no substance at all.
_NOT_AN_INGREDIENT = frozenset({"drug", "drugs", "medication", "medications", "medicine", "medicines", "substance",
                                "no known", "unknown", "nkda", "nka", "food", "multiple drug", "multiple drugs"})


def allergen_name(display: str) -> str:
    """The substance an allergy names, lower case ("Allergy to lisinopril" -> "lisinopril"); ""
    when it names none or only a class ("Drug allergy")."""
    name = _ALLERGY_WORDS.sub(" ", display.lower())
    name = " ".join(re.sub(r"[^a-z0-9/-]+", " ", name).split())
    if len(name) < 4 or name in _NOT_AN_INGREDIENT or name.startswith("no known"):
        return ""
    return name


@dataclass(frozen=True)
class IngredientPair:
    allergy: Any  # CodedFact
    medication: Any  # CodedFact
    ingredient: str
    how: str


def ingredient_pairs(facts: Facts) -> list[IngredientPair]:
    """Each (medication, allergy) where the medication contains the allergy's ingredient, in the
    medications' order (a CDS Hooks request lists its draft orders first). An allergy held (not
    inactive, resolved, refuted or entered in error) matches a medication:

    * by code: both RxNorm, and the allergy's code or ingredients (``CodedFact.ingredients``, from
      the is-a table) meet the medication's code or ingredients;
    * by name: the allergy's substance name (``allergen_name``) is a whole word or phrase of the
      medication's name (RxNorm names list their ingredients: "lisinopril 10 MG Oral Tablet").
    """
    cached = facts.cache.get("same-ingredient")
    if cached is not None:
        pairs: list[IngredientPair] = cached
        return pairs
    held = [a for a in facts.allergies if a.status not in ALLERGY_NOT_HELD]
    named = [(a, allergen_name(a.display)) for a in held]
    patterns = {name: re.compile(r"(?<![a-z0-9])" + re.escape(name) + r"(?![a-z0-9])") for _, name in named if name}
    pairs = []
    for med in facts.medications:
        med_codes = {med.code, *med.ingredients} - {""} if med.system == RXNORM else set()
        med_name = med.display.lower()
        for allergy, name in named:
            shared = sorted(med_codes & ({allergy.code, *allergy.ingredients} - {""})) if allergy.system == RXNORM \
                else []
            if shared:
                pairs.append(IngredientPair(allergy, med, shared[0], f"RxNorm code {shared[0]} in both"))
            elif name and patterns[name].search(med_name):
                pairs.append(IngredientPair(allergy, med, name, f"the allergy's substance {name!r} is in the "
                                                                "medication's name"))
    facts.cache["same-ingredient"] = pairs
    return pairs


def _matching(facts: Facts, kind: str, members: Members) -> list[Any]:
    key = (kind, members.slug)
    cached = facts.cache.get(key)
    if cached is not None:
        result: list[Any] = cached
        return result
    if kind == "condition":
        found: list[Any] = [c for c in facts.conditions if members.matches(c.system, c.code, c.display)]
    elif kind == "medication":
        found = [c for c in facts.medications if members.matches(c.system, c.code, c.display)]
    elif kind == "allergy":
        found = [c for c in facts.allergies
                 if c.status not in ALLERGY_NOT_HELD and members.matches(c.system, c.code, c.display)]
    elif kind == "note":
        found = [n for n in facts.notes if n.affirmed and (n.concept == members.slug or any(
            members.matches(system, code) for system, code in n.codes))]
    else:  # observation: every value of every code of the set, newest first
        observations = facts.observations
        lists = [observations[code] for code in members.flat_codes if code in observations]
        if len(lists) == 1:
            found = lists[0]  # already newest first
        else:
            found = [o for values in lists for o in values]
            found.sort(key=lambda o: o.at, reverse=True)
    facts.cache[key] = found
    return found


def _resolve(cond: Condition, facts: Facts) -> Found:
    kind = cond.kind
    if kind == "age":
        return Found(facts.age, "a", source="Patient.birthDate", present=facts.age is not None)
    if kind == "sex":
        known = facts.sex in ("female", "male")
        return Found(facts.sex if known else None, source="Patient.gender", present=known)
    if kind == "pregnant":
        return Found(facts.pregnant, source="pregnancy status", present=facts.pregnant is not None)
    if kind == "observation":
        assert cond.members is not None
        window = cond.lookback_days or DEFAULT_OBSERVATION_LOOKBACK
        values = [o for o in _matching(facts, "observation", cond.members) if _in_window(o.at, facts, window)]
        if not values:
            return Found(problem=f"no value in the last {window} days")
        latest = values[0]
        problem = ""
        if cond.dimension and latest.value is not None and latest.unit != canonical_unit(cond.dimension):
            problem = f"recorded unit {latest.unit!r} cannot be compared with {cond.unit!r}"
        elif not cond.dimension and cond.unit and latest.value is not None and latest.unit != cond.unit:
            problem = f"recorded unit {latest.unit!r} differs from the rule's {cond.unit!r}"
        value: Any = latest.value if latest.value is not None else latest.text
        return Found(value, latest.unit, latest.at, latest.source, True, problem=problem, values=values)
    if kind == "same-ingredient":
        pairs = ingredient_pairs(facts)
        if not pairs:
            return Found(present=False)
        pair = pairs[0]
        item = pair.medication if cond.arg == "medication" else pair.allergy
        return Found(item.display or item.code, at=item.at, source=item.source, present=True,
                     explanation={"ingredient": pair.ingredient, "matched_by": pair.how,
                                  "allergy": pair.allergy.display or pair.allergy.code,
                                  "allergy_source": pair.allergy.source,
                                  "medication": pair.medication.display or pair.medication.code,
                                  "medication_source": pair.medication.source,
                                  "matches": list(dict.fromkeys(
                                      (p.medication if cond.arg == "medication" else p.allergy).source
                                      for p in pairs))[:5],
                                  "pairs": [{"medication": p.medication.source, "allergy": p.allergy.source,
                                             "ingredient": p.ingredient} for p in pairs[:5]]})
    if kind in ("condition", "allergy", "note") or (kind == "medication" and not cond.attr):
        assert cond.members is not None
        items = _matching(facts, kind, cond.members)
        if kind == "note" and cond.lookback_days is not None:
            items = [n for n in items if _in_window(n.at, facts, cond.lookback_days)]
        if not items:
            return Found(present=False)
        first = items[0]
        if kind == "note":
            return Found(first.preferred or first.text, at=first.at, source=first.source, present=True,
                         explanation={"note_id": first.note_id, "start": first.start, "end": first.end,
                                      "text": first.text, "section": first.section})
        return Found(first.display or first.code, at=first.at, source=first.source, present=True,
                     explanation={"code": first.code, "system": first.system,
                                  "matches": [c.source for c in items][:5]})
    if kind == "medication":  # .dose_mg: the highest dose among the matching medications
        assert cond.members is not None
        doses = [m for m in _matching(facts, "medication", cond.members) if m.dose_mg is not None]
        if not doses:
            return Found(problem="no matching medication with a dose")
        top = max(doses, key=lambda m: m.dose_mg or 0.0)
        return Found(top.dose_mg, "mg", top.at, top.source, True, explanation={"display": top.display})
    if kind == "genomic":
        result = facts.genomics.get(cond.arg.upper())
        if result is None:
            return Found(problem="no result for this gene")
        return Found(result.phenotype, at=result.at, source=result.source, present=bool(result.phenotype),
                     explanation={"gene": result.gene, "diplotype": result.diplotype})
    if kind == "risk":
        risk = facts.risks.get(cond.arg)
        if risk is None or risk.value is None:
            return Found(problem="not computed (missing inputs)" if risk else "no assessment",
                         source=risk.source if risk else "")
        if cond.lookback_days is not None and not _in_window(risk.at, facts, cond.lookback_days):
            return Found(problem=f"assessed more than {cond.lookback_days} days ago", source=risk.source)
        risk_explanation = {"contributions": risk.contributions, "category": risk.category}
        if cond.attr == "category":
            return Found(risk.category, at=risk.at, source=risk.source, present=bool(risk.category),
                         explanation=risk_explanation)
        if risk.unit != cond.unit and cond.unit:
            return Found(risk.value, risk.unit, risk.at, risk.source, True, explanation=risk_explanation,
                         problem=f"stored in {risk.unit!r}, the rule says {cond.unit!r}")
        return Found(risk.value, risk.unit, risk.at, risk.source, True, explanation=risk_explanation)
    # imaging: the most probable finding with this label in the window
    findings = [f for f in facts.imaging if f.label.lower() == cond.arg.lower()
                and _in_window(f.at, facts, cond.lookback_days)]
    if not findings:
        return Found(problem="no finding in the window")
    top = max(findings, key=lambda f: f.probability)
    explanation: dict[str, Any] = {"heatmap_url": top.heatmap_url, "viewer_url": top.viewer_url,
                                   "probability": top.probability, "reported": top.reported,
                                   "reviewed": top.reviewed, "disputed": top.disputed}
    if cond.attr in IMAGING_FLAGS:
        return Found(getattr(top, cond.attr), at=top.at, source=top.source, present=True, explanation=explanation)
    return Found(top.probability, "1", top.at, top.source, True, explanation=explanation)


_COMPARE: dict[str, Callable[[float, Any], bool]] = {
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
    "=": lambda a, b: a == b, "!=": lambda a, b: a != b, "between": lambda a, b: b[0] <= a <= b[1],
}


def _holds(cond: Condition, found: Found) -> tuple[bool, dict[str, Any]]:
    extra: dict[str, Any] = {}
    op = cond.op
    if op == "present":
        return found.present, extra
    if op == "absent":
        return not found.present, extra
    if found.problem or not found.present or found.value is None:
        return False, extra
    if isinstance(cond.threshold, frozenset):
        text = str(found.value).strip().lower()
        return (text in cond.threshold) == (op == "="), extra
    if isinstance(cond.threshold, bool):
        return (bool(found.value) == cond.threshold) == (op == "="), extra
    if not _number(found.value):
        return False, {"problem": f"value {found.value!r} is not a number"}
    if op == "changed by":
        numbers = [o for o in found.values if o.value is not None]
        if len(numbers) < 2:
            return False, {"problem": "fewer than two values in the window"}
        latest, oldest = numbers[0], numbers[-1]
        assert latest.value is not None and oldest.value is not None
        delta = latest.value - oldest.value
        if cond.relative:
            if oldest.value == 0:
                return False, {"problem": "the oldest value is 0"}
            delta = 100 * delta / oldest.value
        extra = {"change": round(delta, 3), "from": {"value": oldest.value, "at": oldest.at.isoformat(),
                                                     "source": oldest.source}}
        threshold = cond.threshold
        return (delta <= threshold if threshold < 0 else delta >= threshold if threshold > 0 else delta != 0), extra
    compare = _COMPARE[op]
    if cond.count > 1:
        meeting = [o for o in found.values if o.value is not None and compare(o.value, cond.threshold)]
        extra = {"values": [{"value": o.value, "at": o.at.isoformat(), "source": o.source} for o in meeting[:10]]}
        if len(meeting) < cond.count:
            return False, extra
        span = (meeting[0].at - meeting[-1].at).days
        extra["span_days"] = span
        return span >= cond.min_span_days, extra
    return compare(float(found.value), cond.threshold), extra


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{round(value, 2):g}"
    return "" if value is None else str(value)


def _trace_entry(cond: Condition, facts: Facts) -> tuple[bool, dict[str, Any], Found]:
    found = _resolve(cond, facts)
    held, extra = _holds(cond, found)
    entry = cond.describe()
    entry.update(held=held, value=found.value, value_unit=found.unit, at=found.at.isoformat() if found.at else None,
                 source=found.source, missing=not found.present and cond.op not in ("present", "absent"))
    if found.problem:
        entry["problem"] = found.problem
    if found.explanation:
        entry["explanation"] = found.explanation
    entry.update(extra)
    return held, entry, found


def _evaluate_group(group: Group, facts: Facts, depth: int, trace: list[dict[str, Any]],
                    values: dict[str, Found]) -> bool:
    results: list[bool] = []
    from_held: set[str] = set()
    for item in group.items:
        if isinstance(item, Group):
            sub: list[dict[str, Any]] = []
            sub_values: dict[str, Found] = {}
            held = _evaluate_group(item, facts, depth + 1, sub, sub_values)
            # Branches may share names ({drug}, {allergy}): a placeholder shows the first branch
            # that held, so the text names the evidence that fired the rule.
            for key, found in sub_values.items():
                if held and key not in from_held:
                    values[key] = found
                    from_held.add(key)
                elif key not in values:
                    values[key] = found
            trace.append({"kind": "group", "logic": item.logic, "held": held, "items": sub})
        else:
            held, entry, found = _trace_entry(item, facts)
            values[item.name] = found
            trace.append(entry)
        results.append(held)
    return all(results) if group.logic == "all" else any(results)


def render(template: str, values: dict[str, Found]) -> str:
    def sub(match: re.Match[str]) -> str:
        found = values.get(match.group(1))
        if found is None or found.value is None:
            return "(not recorded)"
        part = match.group(2)
        if part == "unit":
            return found.unit
        if part == "date":
            return found.at.date().isoformat() if found.at else "(no date)"
        if part == "value" or not found.unit or found.unit in ("1", "a"):
            return _fmt(found.value)
        return f"{_fmt(found.value)} {found.unit}"

    return _PLACEHOLDER.sub(sub, template)


def _check(cond: Condition, facts: Facts) -> bool:
    return _holds(cond, _resolve(cond, facts))[0]


def _fast(group: Group, facts: Facts) -> bool:
    """Whether a group holds, stopping at the first condition that decides it (no trace)."""
    items = group.fast_items
    if group.logic == "all":
        return all(_fast(i, facts) if isinstance(i, Group) else _check(i, facts) for i in items)
    return any(_fast(i, facts) if isinstance(i, Group) else _check(i, facts) for i in items)


def evaluate(rules: Iterable[CompiledRule], facts: Facts, *, trace_all: bool = True) -> list[Result]:
    """Each rule, fired or not, with its trace. ``trace_all=False`` traces only the rules that
    fire (a rule that does not fire gets an empty trace): population runs store no trace for
    them, and stopping at the first failing condition is several times faster."""
    results = []
    for rule in rules:
        trace: list[dict[str, Any]] = []
        values: dict[str, Found] = {}
        if not trace_all and not _fast(rule.root, facts):
            results.append(Result(rule=rule.slug, version=rule.version, version_id=rule.version_id, fired=False,
                                   severity=rule.severity, summary="", detail="", trace=[], shadow=rule.shadow))
            continue
        fired = _evaluate_group(rule.root, facts, 0, trace, values)
        summary = detail = ""
        if fired:
            for cond in rule.show:
                found = _resolve(cond, facts)
                values[cond.name] = found
                entry = {"kind": "shown", "name": cond.name, "fact": cond.fact, "value": found.value,
                         "value_unit": found.unit, "at": found.at.isoformat() if found.at else None,
                         "source": found.source}
                if found.explanation:
                    entry["explanation"] = found.explanation
                trace.append(entry)
            values.setdefault("age", Found(facts.age, "a", present=facts.age is not None))
            values.setdefault("sex", Found(facts.sex, present=True))
            summary = render(rule.summary_template, values)
            detail = render(rule.detail_template, values)
        results.append(Result(rule=rule.slug, version=rule.version, version_id=rule.version_id, fired=fired,
                              severity=rule.severity, summary=summary, detail=detail, trace=trace,
                              shadow=rule.shadow))
    return results


def fired_only(rules: Sequence[CompiledRule], facts: Facts) -> list[Result]:
    return [r for r in evaluate(rules, facts, trace_all=False) if r.fired]


def needs(rules: Iterable[CompiledRule]) -> tuple[set[str], int]:
    """What the rules read: the risk calculators they name, and their longest look-back (days)."""
    calculators: set[str] = set()
    longest = DEFAULT_OBSERVATION_LOOKBACK

    def walk(items: Iterable[Condition | Group]) -> None:
        nonlocal longest
        for item in items:
            if isinstance(item, Group):
                walk(item.items)
                continue
            if item.kind == "risk":
                calculators.add(item.arg)
            if item.kind == "observation" and item.lookback_days:
                longest = max(longest, item.lookback_days)

    for rule in rules:
        walk(rule.root.items)
        walk(rule.show)
    return calculators, longest


def dimension_name(value: str) -> str:
    """Check a value set's dimension (for the admin): the table's name, or UnitError."""
    return dimension_of(value)
