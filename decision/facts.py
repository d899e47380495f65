"""What rules may know about a patient: one plain object, no ORM rows (pure Python, no Django).

``decision.load`` builds ``Facts`` from the database; ``Facts.from_json`` builds them from a rule
test case (or a CDS Hooks prefetch mapped to the same shape). Every value keeps where it came
from (``source``: ``"Observation:123"``) and when, so a recommendation can show its evidence.

Observations are kept per code, newest first, over the longest look-back any rule uses, in the
canonical unit of their analyte where the code belongs to an observation value set with a unit
dimension (``decision.units``); "changed by" and "two values 90 days apart" read this history.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

_DOSE_MG = re.compile(r"(\d+(?:\.\d+)?)\s*(MG|mg|G|g|MCG|mcg)\b")


def _parse_dt(value: Any) -> dt.datetime | None:
    if value is None or isinstance(value, dt.datetime):
        return value
    parsed = dt.datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


@dataclass(frozen=True, slots=True)
class ObservationFact:
    code: str
    value: float | None
    unit: str  # canonical unit when the code's analyte is known, else as recorded
    at: dt.datetime
    source: str
    text: str = ""  # coded or string value (value display, value code, value string)
    value_code: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "value": self.value, "unit": self.unit, "at": _iso(self.at), "source": self.source,
                "text": self.text, "value_code": self.value_code}


@dataclass(frozen=True, slots=True)
class CodedFact:
    """A condition, medication or allergy: its code, name and dates. ``dose_mg`` is a medication's
    strength read from its RxNorm name ("simvastatin 40 MG Oral Tablet" -> 40.0). ``ingredients``:
    the RxNorm ingredient codes an RxNorm-coded medication (or allergy) contains, from the is-a
    table (``decision.load.FactPlan.ingredients``)."""

    system: str
    code: str
    display: str
    source: str
    at: dt.datetime | None = None
    status: str = ""
    dose_mg: float | None = None
    ingredients: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"system": self.system, "code": self.code, "display": self.display, "source": self.source,
                               "at": _iso(self.at), "status": self.status}
        if self.dose_mg is not None:
            out["dose_mg"] = self.dose_mg
        if self.ingredients:
            out["ingredients"] = list(self.ingredients)
        return out


@dataclass(frozen=True, slots=True)
class GenomicFact:
    gene: str
    phenotype: str
    diplotype: str
    at: dt.datetime | None
    source: str

    def as_dict(self) -> dict[str, Any]:
        return {"gene": self.gene, "phenotype": self.phenotype, "diplotype": self.diplotype, "at": _iso(self.at),
                "source": self.source}


@dataclass(frozen=True, slots=True)
class RiskFact:
    """The latest computed assessment of one calculator or model, with its explanation."""

    calculator: str
    value: float | None
    unit: str
    category: str
    at: dt.datetime | None
    source: str
    contributions: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"calculator": self.calculator, "value": self.value, "unit": self.unit, "category": self.category,
                "at": _iso(self.at), "source": self.source, "contributions": self.contributions}


@dataclass(frozen=True, slots=True)
class ImagingFinding:
    """A model's probability for one finding on one image (e.g. pneumonia on a chest film)."""

    label: str
    probability: float
    at: dt.datetime | None
    source: str
    heatmap_url: str = ""
    reported: bool = False  # a radiology report exists for the study
    viewer_url: str = ""  # the image in the viewer, this finding's heat map shown
    reviewed: bool = False  # a clinician has agreed or disagreed with the finding (imaging viewer)
    disputed: bool = False  # the most recent of those verdicts is a disagreement

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "probability": self.probability, "at": _iso(self.at), "source": self.source,
                "heatmap_url": self.heatmap_url, "reported": self.reported, "viewer_url": self.viewer_url,
                "reviewed": self.reviewed, "disputed": self.disputed}


@dataclass(frozen=True, slots=True)
class NoteFinding:
    """A concept found in a note, with its context. ``affirmed``: about the patient, now, and
    neither negated, hypothetical nor uncertain."""

    concept: str
    preferred: str
    codes: tuple[tuple[str, str], ...]  # (system, code)
    text: str
    start: int
    end: int
    note_id: str
    source: str
    at: dt.datetime | None = None
    negated: bool = False
    historical: bool = False
    hypothetical: bool = False
    uncertain: bool = False
    family: bool = False
    section: str = ""

    @property
    def affirmed(self) -> bool:
        return not (self.negated or self.historical or self.hypothetical or self.uncertain or self.family)

    def as_dict(self) -> dict[str, Any]:
        return {"concept": self.concept, "preferred": self.preferred, "codes": [list(c) for c in self.codes],
                "text": self.text, "start": self.start, "end": self.end, "note_id": self.note_id,
                "source": self.source, "at": _iso(self.at), "negated": self.negated, "historical": self.historical,
                "hypothetical": self.hypothetical, "uncertain": self.uncertain, "family": self.family,
                "section": self.section}


def dose_mg(display: str) -> float | None:
    """Strength in mg from an RxNorm clinical drug name ("atorvastatin 40 MG Oral Tablet")."""
    match = _DOSE_MG.search(display)
    if not match:
        return None
    number, unit = float(match.group(1)), match.group(2).lower()
    return number * 1000 if unit == "g" else number / 1000 if unit == "mcg" else number


@dataclass
class Facts:
    patient_id: int
    as_of: dt.datetime
    age: int | None = None
    sex: str = "unknown"
    pregnant: bool | None = None  # None: not recorded
    observations: dict[str, list[ObservationFact]] = field(default_factory=dict)  # code -> newest first
    conditions: list[CodedFact] = field(default_factory=list)
    medications: list[CodedFact] = field(default_factory=list)
    allergies: list[CodedFact] = field(default_factory=list)
    genomics: dict[str, GenomicFact] = field(default_factory=dict)  # gene (upper case) -> latest
    risks: dict[str, RiskFact] = field(default_factory=dict)  # calculator -> latest computed
    imaging: list[ImagingFinding] = field(default_factory=list)
    notes: list[NoteFinding] = field(default_factory=list)
    # the engine memoises value-set matches here (one patient, many rules)
    cache: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    # -- JSON form (rule test cases, CDS Hooks) ------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "patient_id": self.patient_id, "as_of": _iso(self.as_of), "age": self.age, "sex": self.sex,
            "pregnant": self.pregnant,
            "observations": [o.as_dict() for values in self.observations.values() for o in values],
            "conditions": [c.as_dict() for c in self.conditions],
            "medications": [c.as_dict() for c in self.medications],
            "allergies": [c.as_dict() for c in self.allergies],
            "genomics": [g.as_dict() for g in self.genomics.values()],
            "risks": [r.as_dict() for r in self.risks.values()],
            "imaging": [i.as_dict() for i in self.imaging],
            "notes": [n.as_dict() for n in self.notes],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], *, as_of: dt.datetime | None = None) -> Facts:
        """Facts from their JSON form. Dates may be ISO strings or, for test cases, ``days_ago``
        (an integer counted back from ``as_of``). Raises ValueError naming the bad entry."""
        if not isinstance(data, dict):
            raise ValueError("facts must be a JSON object")
        when = as_of or _parse_dt(data.get("as_of")) or dt.datetime.now(dt.UTC)

        def at(entry: dict[str, Any], where: str) -> dt.datetime | None:
            try:
                if "days_ago" in entry:
                    return when - dt.timedelta(days=float(entry["days_ago"]))
                return _parse_dt(entry.get("at"))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{where}: bad date ({exc})") from None

        def coded(entries: Any, kind: str) -> list[CodedFact]:
            out = []
            for i, e in enumerate(_entries(entries, kind)):
                display = str(e.get("display", ""))
                dose = e.get("dose_mg", dose_mg(display) if kind == "medications" else None)
                ingredients = e.get("ingredients") or []
                if not isinstance(ingredients, list):
                    raise ValueError(f"{kind}[{i}]: 'ingredients' must be a list of RxNorm codes")
                out.append(CodedFact(system=str(e.get("system", "")), code=str(e.get("code", "")), display=display,
                                     source=str(e.get("source", f"test:{kind}[{i}]")), at=at(e, f"{kind}[{i}]"),
                                     status=str(e.get("status", "active")),
                                     dose_mg=float(dose) if dose is not None else None,
                                     ingredients=tuple(str(c) for c in ingredients)))
            return out

        facts = cls(patient_id=int(data.get("patient_id", 0)), as_of=when, age=data.get("age"),
                    sex=str(data.get("sex", "unknown")), pregnant=data.get("pregnant"))
        for i, e in enumerate(_entries(data.get("observations"), "observations")):
            if "code" not in e:
                raise ValueError(f"observations[{i}]: 'code' is required")
            obs_at = at(e, f"observations[{i}]")
            if obs_at is None:
                raise ValueError(f"observations[{i}]: a date ('at' or 'days_ago') is required")
            value = e.get("value")
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise ValueError(f"observations[{i}]: 'value' must be a number")
            facts.observations.setdefault(str(e["code"]), []).append(ObservationFact(
                code=str(e["code"]), value=None if value is None else float(value), unit=str(e.get("unit", "")),
                at=obs_at, source=str(e.get("source", f"test:observations[{i}]")), text=str(e.get("text", "")),
                value_code=str(e.get("value_code", ""))))
        for values in facts.observations.values():
            values.sort(key=lambda o: o.at, reverse=True)
        facts.conditions = coded(data.get("conditions"), "conditions")
        facts.medications = coded(data.get("medications"), "medications")
        facts.allergies = coded(data.get("allergies"), "allergies")
        for i, e in enumerate(_entries(data.get("genomics"), "genomics")):
            if "gene" not in e:
                raise ValueError(f"genomics[{i}]: 'gene' is required")
            gene = str(e["gene"]).upper()
            facts.genomics[gene] = GenomicFact(gene=gene, phenotype=str(e.get("phenotype", "")),
                                               diplotype=str(e.get("diplotype", "")), at=at(e, f"genomics[{i}]"),
                                               source=str(e.get("source", f"test:genomics[{i}]")))
        for i, e in enumerate(_entries(data.get("risks"), "risks")):
            if "calculator" not in e:
                raise ValueError(f"risks[{i}]: 'calculator' is required")
            facts.risks[str(e["calculator"])] = RiskFact(
                calculator=str(e["calculator"]), value=e.get("value"), unit=str(e.get("unit", "")),
                category=str(e.get("category", "")), at=at(e, f"risks[{i}]"),
                source=str(e.get("source", f"test:risks[{i}]")), contributions=dict(e.get("contributions") or {}))
        for i, e in enumerate(_entries(data.get("imaging"), "imaging")):
            facts.imaging.append(ImagingFinding(
                label=str(e.get("label", "")), probability=float(e.get("probability", 0.0)), at=at(e, f"imaging[{i}]"),
                source=str(e.get("source", f"test:imaging[{i}]")), heatmap_url=str(e.get("heatmap_url", "")),
                reported=bool(e.get("reported", False)), viewer_url=str(e.get("viewer_url", "")),
                reviewed=bool(e.get("reviewed", False) or e.get("disputed", False)),
                disputed=bool(e.get("disputed", False))))
        for i, e in enumerate(_entries(data.get("notes"), "notes")):
            codes = tuple((str(c[0]), str(c[1])) if isinstance(c, list | tuple) else (str(c.get("system", "")),
                                                                                     str(c.get("code", "")))
                          for c in e.get("codes", []))
            facts.notes.append(NoteFinding(
                concept=str(e.get("concept", "")), preferred=str(e.get("preferred", "")), codes=codes,
                text=str(e.get("text", "")), start=int(e.get("start", 0)), end=int(e.get("end", 0)),
                note_id=str(e.get("note_id", "")), source=str(e.get("source", f"test:notes[{i}]")),
                at=at(e, f"notes[{i}]"), negated=bool(e.get("negated", False)),
                historical=bool(e.get("historical", False)), hypothetical=bool(e.get("hypothetical", False)),
                uncertain=bool(e.get("uncertain", False)), family=bool(e.get("family", False)),
                section=str(e.get("section", ""))))
        return facts


def _entries(value: Any, kind: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(e, dict) for e in value):
        raise ValueError(f"{kind} must be a list of objects")
    return value
