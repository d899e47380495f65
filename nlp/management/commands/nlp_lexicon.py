"""python manage.py nlp_lexicon status | load [FILE] [--replace] | export [FILE] | check [FILE]

The concept lexicon in the database (edited in the admin) and its file form (``nlp/lexicon.json``):

- ``status``: where the lexicon in use comes from, its concept count and pipeline version.
- ``load``: add the file's concepts that the database lacks (idempotent: a second run adds
  nothing); ``--replace`` also sets existing concepts to the file's content. Nothing is written
  when the file has any problem; every problem is listed.
- ``export``: the active database lexicon as a lexicon file (stdout, or FILE), for
  ``nlp_extract --lexicon`` or for review.
- ``check``: the problems of a file (default ``nlp/lexicon.json``), exit status 1 if any.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from nlp.lexicon_store import LexiconDataError, lexicon_check, lexicon_current, lexicon_export, lexicon_load

DEFAULT_FILE = Path(__file__).resolve().parents[2] / "lexicon.json"


def read_concepts(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CommandError(f"{path}: no such file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CommandError(f"{path}: not a UTF-8 JSON file ({exc})") from exc
    concepts = data.get("concepts") if isinstance(data, dict) else data
    if not isinstance(concepts, list):
        raise CommandError(f"{path}: a lexicon file is a list of concepts or {{\"concepts\": [...]}}")
    return concepts


class Command(BaseCommand):
    help = "Show, load, export or check the concept lexicon."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("status", help="the lexicon in use and its pipeline version")
        load = sub.add_parser("load", help="add the file's missing concepts (idempotent)")
        load.add_argument("file", nargs="?", default=str(DEFAULT_FILE))
        load.add_argument("--replace", action="store_true", help="also overwrite concepts that exist")
        export = sub.add_parser("export", help="write the active lexicon as JSON")
        export.add_argument("file", nargs="?", default="-")
        check = sub.add_parser("check", help="list the problems of a lexicon file")
        check.add_argument("file", nargs="?", default=str(DEFAULT_FILE))

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "status":
            lexicon = lexicon_current()
            self.stdout.write(f"source: {lexicon.source}\nconcepts: {len(lexicon.concepts)}\n"
                              f"pipeline version: {lexicon.version}")
        elif action == "load":
            try:
                counts = lexicon_load(read_concepts(Path(options["file"])), replace=options["replace"])
            except LexiconDataError as exc:
                raise CommandError(f"{options['file']}: nothing loaded: {exc}") from exc
            self.stdout.write(", ".join(f"{k} {v}" for k, v in counts.items()))
        elif action == "export":
            text = json.dumps(lexicon_export(), indent=1, ensure_ascii=False) + "\n"
            if options["file"] == "-":
                sys.stdout.write(text)
            else:
                Path(options["file"]).write_text(text, encoding="utf-8")
        else:
            problems = lexicon_check(read_concepts(Path(options["file"])))
            for problem in problems:
                self.stdout.write(problem)
            if problems:
                raise CommandError(f"{len(problems)} problems")
            self.stdout.write("no problems")
