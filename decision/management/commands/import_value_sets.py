"""python manage.py import_value_sets FILE.json|FILE.csv"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from decision.services import ValueSetImportError, value_sets_import_file


class Command(BaseCommand):
    help = "Create or replace value sets (and is-a rows) from a JSON or CSV file, all or nothing."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["file"]
        if not path.is_file():
            raise CommandError(f"{path} does not exist")
        try:
            summary = value_sets_import_file(path)
        except ValueSetImportError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"{summary.value_sets} value sets, {summary.codes} codes, {summary.is_a} is-a rows")
