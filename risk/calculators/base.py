"""The contract every calculator follows (pure Python, no Django).

A calculator declares its inputs (``Param``: name, kind, canonical unit, the source's valid
range) and computes from validated, unit-converted values. ``calculate(name, raw)`` is the one
entry point: it checks every input, converts quantities given as ``"5.5 mmol/L"``, reports every
problem at once (``CalculatorInputError``), never clamps silently, and returns a ``Result``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["quantity", "bool", "choice", "integer"]


class CalculatorInputError(ValueError):
    """Every problem with the inputs, each naming the input."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{name}: {problem}" for name, problem in problems))

    def as_dict(self) -> dict[str, str]:
        return dict(self.problems)


class UnknownCalculator(LookupError):
    pass


# --------------------------------------------------------------------------------------------
# Units. Each analyte ("dimension") has a canonical UCUM unit and the factors that bring other
# units to it: canonical = value * factor (or a function for temperature).

_MGDL_PER_MMOLL_CHOLESTEROL = 38.67  # cholesterol: 1 mmol/L = 38.67 mg/dL (MW 386.65 g/mol)
_UMOLL_PER_MGDL_CREATININE = 88.4  # creatinine: 1 mg/dL = 88.4 umol/L (MW 113.12 g/mol)
_UMOLL_PER_MGDL_BILIRUBIN = 17.1  # bilirubin: 1 mg/dL = 17.1 umol/L (MW 584.7 g/mol)
_MGDL_PER_MMOLL_GLUCOSE = 18.016  # glucose: 1 mmol/L = 18.016 mg/dL (MW 180.16 g/mol)
_MGDL_BUN_PER_MMOLL_UREA = 2.8  # urea 1 mmol/L = 2.8 mg/dL of urea nitrogen (2 x 14.007)

Converter = Callable[[float], float]


def _scale(factor: float) -> Converter:
    return lambda v: v * factor


DIMENSIONS: dict[str, tuple[str, dict[str, Converter]]] = {
    # dimension: (canonical unit, {accepted unit: converter to canonical})
    "years": ("a", {"a": _scale(1), "year": _scale(1), "years": _scale(1)}),
    "cholesterol": ("mg/dL", {"mg/dL": _scale(1), "mmol/L": _scale(_MGDL_PER_MMOLL_CHOLESTEROL)}),
    "creatinine": ("mg/dL", {"mg/dL": _scale(1), "umol/L": _scale(1 / _UMOLL_PER_MGDL_CREATININE)}),
    "bilirubin": ("mg/dL", {"mg/dL": _scale(1), "umol/L": _scale(1 / _UMOLL_PER_MGDL_BILIRUBIN)}),
    "glucose": ("mg/dL", {"mg/dL": _scale(1), "mmol/L": _scale(_MGDL_PER_MMOLL_GLUCOSE)}),
    "albumin": ("g/dL", {"g/dL": _scale(1), "g/L": _scale(0.1)}),
    "sodium": ("mmol/L", {"mmol/L": _scale(1), "meq/L": _scale(1)}),
    # BUN (urea nitrogen) in mg/dL; urea in mmol/L converts through 2.8.
    "bun": ("mg/dL", {"mg/dL": _scale(1), "mmol/L": _scale(_MGDL_BUN_PER_MMOLL_UREA)}),
    # Urea in mmol/L (CURB-65 is defined on urea > 7 mmol/L); BUN mg/dL converts through 2.8.
    "urea": ("mmol/L", {"mmol/L": _scale(1), "mg/dL": _scale(1 / _MGDL_BUN_PER_MMOLL_UREA)}),
    "pressure": ("mm[Hg]", {"mm[Hg]": _scale(1), "mmHg": _scale(1), "kPa": _scale(7.50062)}),
    "rate": ("/min", {"/min": _scale(1), "{beats}/min": _scale(1), "{breaths}/min": _scale(1)}),
    "percent": ("%", {"%": _scale(1)}),
    "temperature": ("Cel", {"Cel": _scale(1), "[degF]": lambda f: (f - 32) * 5 / 9}),
    "bmi": ("kg/m2", {"kg/m2": _scale(1)}),
    "length": ("cm", {"cm": _scale(1), "m": _scale(100), "[in_i]": _scale(2.54)}),
    "mass": ("kg", {"kg": _scale(1), "g": _scale(0.001), "[lb_av]": _scale(0.45359237)}),
    "egfr": ("mL/min/{1.73_m2}", {"mL/min/{1.73_m2}": _scale(1), "mL/min/1.73m2": _scale(1)}),
    "ratio": ("1", {"1": _scale(1), "{INR}": _scale(1)}),
}
_UNIT_ALIASES = {
    "mg/dl": "mg/dL", "mmol/l": "mmol/L", "umol/l": "umol/L", "µmol/l": "umol/L", "g/dl": "g/dL",
    "g/l": "g/L", "meq/l": "meq/L", "mmhg": "mm[Hg]", "mm[hg]": "mm[Hg]", "kpa": "kPa", "/min": "/min",
    "bpm": "/min", "degf": "[degF]", "[degf]": "[degF]", "degc": "Cel", "cel": "Cel", "°c": "Cel",
    "°f": "[degF]", "kg/m2": "kg/m2", "kg/m^2": "kg/m2", "cm": "cm", "in": "[in_i]", "[in_i]": "[in_i]",
    "kg": "kg", "lb": "[lb_av]", "[lb_av]": "[lb_av]", "%": "%", "a": "a", "years": "years", "year": "year",
    "ml/min/{1.73_m2}": "mL/min/{1.73_m2}", "ml/min/1.73m2": "mL/min/1.73m2", "1": "1", "{inr}": "{INR}",
    "m": "m", "g": "g",
}
_QUANTITY = re.compile(r"^\s*([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*(.*?)\s*$")


def canonical_unit(dimension: str) -> str:
    return DIMENSIONS[dimension][0]


def convert(value: Any, dimension: str) -> float:
    """A number (already in the canonical unit) or "number unit" -> number in the canonical unit.
    Raises ValueError naming the problem (the caller adds the input's name)."""
    canonical, converters = DIMENSIONS[dimension]
    if isinstance(value, bool):
        raise ValueError(f"expected a number in {canonical}, got a boolean")
    if isinstance(value, int | float):
        number, unit = float(value), canonical
    elif isinstance(value, str):
        match = _QUANTITY.match(value)
        if not match:
            raise ValueError(f"expected a number with a UCUM unit such as '12 {canonical}', got {value!r}")
        number = float(match.group(1))
        raw_unit = match.group(2) or canonical
        unit = raw_unit if raw_unit in converters else _UNIT_ALIASES.get(raw_unit.lower(), raw_unit)
        if unit not in converters:
            accepted = ", ".join(sorted(converters))
            raise ValueError(f"unit {raw_unit!r} is not a unit of this input (accepted: {accepted})")
    else:
        raise ValueError(f"expected a number in {canonical}, got {type(value).__name__}")
    if not math.isfinite(number):
        raise ValueError("must be a finite number")
    return converters[unit](number)


# --------------------------------------------------------------------------------------------
# Inputs and results


@dataclass(frozen=True)
class Param:
    name: str
    kind: Kind
    description: str
    dimension: str = ""  # for quantities: a key of DIMENSIONS
    minimum: float | None = None  # valid range in the canonical unit, from the source
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    required: bool = True
    default: Any = None

    @property
    def unit(self) -> str:
        return canonical_unit(self.dimension) if self.kind == "quantity" else ""

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.kind, "description": self.description,
                               "required": self.required}
        if self.kind == "quantity":
            out["unit"] = self.unit
            out["accepted_units"] = sorted(DIMENSIONS[self.dimension][1])
        if self.minimum is not None or self.maximum is not None:
            out["range"] = [self.minimum, self.maximum]
        if self.choices:
            out["choices"] = list(self.choices)
        if not self.required:
            out["default"] = self.default
        return out

    def parse(self, value: Any) -> Any:
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"expected true or false, got {value!r}")
            return value
        if self.kind == "choice":
            if value not in self.choices:
                raise ValueError(f"expected one of {', '.join(map(repr, self.choices))}, got {value!r}")
            return value
        if self.kind == "integer":
            if isinstance(value, bool) or not isinstance(value, int | float) or float(value) != int(value):
                raise ValueError(f"expected a whole number, got {value!r}")
            number: float = int(value)
        else:
            number = convert(value, self.dimension)
        if self.minimum is not None and number < self.minimum:
            raise ValueError(f"{number:g} {self.unit} is below the valid range {self._range()}")
        if self.maximum is not None and number > self.maximum:
            raise ValueError(f"{number:g} {self.unit} is above the valid range {self._range()}")
        return number

    def _range(self) -> str:
        lo = "" if self.minimum is None else f"{self.minimum:g}"
        hi = "" if self.maximum is None else f"{self.maximum:g}"
        return f"{lo}-{hi} {self.unit}".strip()


@dataclass
class Result:
    value: float
    unit: str
    category: str | None
    contributions: dict[str, float]
    citation: str
    calculator: str = ""
    version: str = ""
    inputs: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "calculator": self.calculator,
            "version": self.version,
            "value": self.value,
            "unit": self.unit,
            "category": self.category,
            "contributions": self.contributions,
            "inputs": self.inputs,
            "citation": self.citation,
        }
        if self.details:
            out["details"] = self.details
        return out


@dataclass(frozen=True)
class Calculator:
    name: str
    title: str
    version: str
    citation: str
    params: tuple[Param, ...]
    compute: Callable[[Mapping[str, Any]], Result]
    unit: str = ""

    def validate(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(raw, Mapping):
            raise CalculatorInputError([("inputs", "expected a JSON object of inputs")])
        problems: list[tuple[str, str]] = []
        values: dict[str, Any] = {}
        known = {p.name for p in self.params}
        for name in raw:
            if name not in known:
                problems.append((name, f"is not an input of {self.name} (inputs: {', '.join(sorted(known))})"))
        for param in self.params:
            if param.name not in raw or raw[param.name] is None:
                if param.required:
                    problems.append((param.name, "is required"))
                else:
                    values[param.name] = param.default
                continue
            try:
                values[param.name] = param.parse(raw[param.name])
            except ValueError as exc:
                problems.append((param.name, str(exc)))
        if problems:
            raise CalculatorInputError(problems)
        return values

    def __call__(self, raw: Mapping[str, Any]) -> Result:
        values = self.validate(raw)
        result = self.compute(values)
        result.calculator = self.name
        result.version = self.version
        result.citation = result.citation or self.citation
        result.inputs = {k: v for k, v in values.items()}
        return result

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "version": self.version, "unit": self.unit,
                "citation": self.citation, "inputs": [p.describe() for p in self.params]}


# Shared input definitions (the names every calculator uses).
def age(minimum: float, maximum: float) -> Param:
    return Param("age", "quantity", "Age in years", dimension="years", minimum=minimum, maximum=maximum)


SEX = Param("sex", "choice", "Sex at birth", choices=("female", "male"))


def flag(name: str, description: str, *, required: bool = True) -> Param:
    return Param(name, "bool", description, required=required, default=False if not required else None)
