"""python manage.py nlp_extract FILE

Prints the facts of one note as JSON: ``{"pipeline_version", "sections", "facts"}`` (see
``nlp.extract``). FILE ``-`` reads stdin. The note must be UTF-8: otherwise the command fails
naming the first bad byte's offset. Errors never quote the note.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from nlp.extract import LexiconError, extract, load_lexicon


def decode_note(data: bytes, *, source: str) -> str:
    """The note as text, or CommandError naming the offset of the first byte that is not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CommandError(f"{source}: not valid UTF-8 (byte offset {exc.start})") from exc


class Command(BaseCommand):
    help = "Facts (concepts with context, codes, medications, allergies) of a note, as JSON."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="the note, UTF-8; '-' for stdin")
        parser.add_argument("--lexicon", help="a lexicon JSON file instead of nlp/lexicon.json")
        parser.add_argument("--compact", action="store_true", help="one line of JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        name: str = options["file"]
        if name == "-":
            stream = getattr(sys.stdin, "buffer", sys.stdin)
            raw = stream.read()
            data = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogateescape")
            source = "stdin"
        else:
            path = Path(name)
            if not path.exists():
                raise CommandError(f"{path}: no such file")
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise CommandError(f"{path}: cannot read ({exc.strerror or type(exc).__name__})") from exc
            source = str(path)
        lexicon = None
        if options.get("lexicon"):
            try:
                lexicon = load_lexicon(Path(options["lexicon"]))
            except (OSError, ValueError) as exc:  # LexiconError and JSONDecodeError are ValueErrors
                raise CommandError(f"{options['lexicon']}: not a usable lexicon ({exc})") from exc
        text = decode_note(data, source=source)
        try:
            result = extract(text, lexicon=lexicon)
        except LexiconError as exc:
            raise CommandError(str(exc)) from exc
        except Exception as exc:  # a clear error, naming the type only: the message may quote the note
            raise CommandError(f"{source}: extraction failed ({type(exc).__name__})") from exc
        indent = None if options.get("compact") else 2
        self.stdout.write(json.dumps(result, indent=indent, ensure_ascii=False))
