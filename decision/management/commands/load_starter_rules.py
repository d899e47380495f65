"""python manage.py load_starter_rules [--if-no-rules]"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from decision.engine import RuleDefinitionError
from decision.models import Rule
from decision.services import ActivationRefused, ValueSetImportError
from decision.starter import RULES, starter_load


class Command(BaseCommand):
    help = ("Load or update the starter rule library and its value sets (idempotent). A starter rule changed "
            "in the admin gets the library's version back: use --if-no-rules to load only into an empty library.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--if-no-rules", action="store_true",
                            help="Do nothing when any rule exists (what ./run demo does: edits made in the admin stay)")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["if_no_rules"] and Rule.objects.exists():
            self.stdout.write(f"{Rule.objects.count()} rules already defined: the starter library is not loaded again")
            return
        try:
            summary = starter_load()
        except (RuleDefinitionError, ActivationRefused, ValueSetImportError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"{len(RULES)} starter rules: {summary.created} created, {summary.new_versions} new "
                          f"versions activated, {summary.unchanged} unchanged")
