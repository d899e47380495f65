"""python manage.py load_starter_rules"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from decision.engine import RuleDefinitionError
from decision.services import ActivationRefused, ValueSetImportError
from decision.starter import RULES, starter_load


class Command(BaseCommand):
    help = "Load or update the starter rule library and its value sets (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            summary = starter_load()
        except (RuleDefinitionError, ActivationRefused, ValueSetImportError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"{len(RULES)} starter rules: {summary.created} created, {summary.new_versions} new "
                          f"versions activated, {summary.unchanged} unchanged")
