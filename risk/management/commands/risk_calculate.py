"""python manage.py risk_calculate NAME --json '{...}'  |  python manage.py risk_calculate --list"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from risk.calculators import CalculatorInputError, UnknownCalculator, all_calculators, get


class Command(BaseCommand):
    help = "Run a validated clinical calculator on JSON inputs, or list the calculators."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", nargs="?", help="Calculator name (see --list)")
        parser.add_argument("--json", dest="inputs", help="The inputs as a JSON object")
        parser.add_argument("--list", action="store_true", help="List every calculator with its inputs and units")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["list"]:
            self.stdout.write(json.dumps([c.describe() for c in all_calculators()], indent=2))
            return
        if not options["name"]:
            raise CommandError("Name a calculator (or use --list).")
        try:
            calculator = get(options["name"])
        except UnknownCalculator as exc:
            raise CommandError(str(exc)) from None
        raw = options["inputs"] or "{}"
        try:
            inputs = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise CommandError(f"--json is not valid JSON ({exc.msg} at position {exc.pos})") from None
        try:
            result = calculator(inputs)
        except CalculatorInputError as exc:
            self.stderr.write(json.dumps({"error": {"code": "invalid_input", "message": str(exc),
                                                    "details": exc.as_dict()}}))
            raise CommandError(f"invalid input for {calculator.name}: {exc}") from None
        self.stdout.write(json.dumps(result.as_dict(), indent=2))
