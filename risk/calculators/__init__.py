"""Validated clinical calculators (pure Python, no Django). See base.py for the contract."""

from __future__ import annotations

from typing import Any

from .base import Calculator, CalculatorInputError, Result, UnknownCalculator

_REGISTRY: dict[str, Calculator] = {}


def register(calculator: Calculator) -> Calculator:
    if calculator.name in _REGISTRY:
        raise ValueError(f"calculator {calculator.name!r} registered twice")
    _REGISTRY[calculator.name] = calculator
    return calculator


def get(name: str) -> Calculator:
    _load()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownCalculator(f"no calculator {name!r} (known: {', '.join(sorted(_REGISTRY))})") from None


def all_calculators() -> list[Calculator]:
    _load()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def calculate(name: str, inputs: dict[str, Any]) -> Result:
    return get(name)(inputs)


_MODULES = ("cardiovascular", "prevent", "scores", "renal_liver", "diabetes")


def _load() -> None:
    import importlib

    for module in _MODULES:
        importlib.import_module(f"{__name__}.{module}")  # each module registers its calculators


__all__ = ["Calculator", "CalculatorInputError", "Result", "UnknownCalculator", "all_calculators", "calculate",
           "get", "register"]
