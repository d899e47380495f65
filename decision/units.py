"""Units of the quantities rules compare (pure Python, no Django).

Each analyte ("dimension") has one canonical UCUM unit; the record's values are converted to it
when facts are loaded, and a rule's threshold is converted to it when the rule is checked, so a
rule written in mmol/L compares correctly with a record in mg/dL. The risk calculators' table
(``risk.calculators.base.DIMENSIONS``) is reused and extended with the analytes rules need.
"""

from __future__ import annotations

from collections.abc import Callable

from risk.calculators.base import _UNIT_ALIASES, DIMENSIONS

Converter = Callable[[float], float]


def _scale(factor: float) -> Converter:
    return lambda v: v * factor


# HbA1c: NGSP % = 0.09148 x IFCC mmol/mol + 2.152 (Hoelzel et al., Clin Chem 2004;50:166-74, the
# IFCC-NGSP master equation; valid over the clinical range, 4-15 %).
_HBA1C = ("%", {"%": _scale(1), "mmol/mol": lambda v: 0.09148 * v + 2.152})

EXTRA_DIMENSIONS: dict[str, tuple[str, dict[str, Converter]]] = {
    "hba1c": _HBA1C,
    "probability": ("1", {"1": _scale(1), "%": _scale(0.01)}),
    "points": ("points", {"points": _scale(1), "{score}": _scale(1), "1": _scale(1)}),
    "potassium": ("mmol/L", {"mmol/L": _scale(1), "meq/L": _scale(1)}),
    "days": ("d", {"d": _scale(1), "wk": _scale(7), "a": _scale(365.25)}),
    "dose": ("mg", {"mg": _scale(1), "g": _scale(1000), "ug": _scale(0.001), "mcg": _scale(0.001)}),
}
ALL_DIMENSIONS: dict[str, tuple[str, dict[str, Converter]]] = {**DIMENSIONS, **EXTRA_DIMENSIONS}
# Analytes whose rules name them by the laboratory (LDL, eGFR...) rather than the physics.
ALIASES = {"ldl": "cholesterol", "hdl": "cholesterol", "egfr": "egfr", "a1c": "hba1c"}
_EXTRA_UNIT_ALIASES = {"mmol/mol": "mmol/mol", "meq/l": "meq/L", "mg": "mg", "points": "points", "d": "d"}


class UnitError(ValueError):
    pass


def dimension_of(name: str) -> str:
    name = ALIASES.get(name, name)
    if name not in ALL_DIMENSIONS:
        raise UnitError(f"unknown quantity kind {name!r} (known: {', '.join(sorted(ALL_DIMENSIONS))})")
    return name


def canonical_unit(dimension: str) -> str:
    return ALL_DIMENSIONS[dimension_of(dimension)][0]


def accepted_units(dimension: str) -> list[str]:
    return sorted(ALL_DIMENSIONS[dimension_of(dimension)][1])


def normalise_unit(unit: str, dimension: str) -> str:
    """The table's spelling of a unit, or UnitError naming the accepted units."""
    converters = ALL_DIMENSIONS[dimension_of(dimension)][1]
    if unit in converters:
        return unit
    alias = _UNIT_ALIASES.get(unit.lower()) or _EXTRA_UNIT_ALIASES.get(unit.lower())
    if alias in converters:
        return alias  # type: ignore[return-value]
    raise UnitError(f"unit {unit!r} is not a unit of {dimension} (accepted: {', '.join(sorted(converters))})")


def to_canonical(value: float, unit: str, dimension: str) -> float:
    converters = ALL_DIMENSIONS[dimension_of(dimension)][1]
    return converters[normalise_unit(unit or canonical_unit(dimension), dimension)](value)
