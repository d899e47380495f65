"""python manage.py nlp_context < targets.jsonl > context.jsonl

Reads JSON lines {"id", "text", "start", "end"} (a condition already marked by character
offsets) and writes one JSON line per input line: {"id", "negated", "historical",
"hypothetical", "experiencer"} (experiencer "patient", "family" or "other"), or
{"id", "error"} when that line cannot be classified. The flags come from the ConText rules and
the assertion classifier beside them (``nlp.assertion.context.assert_context``: per flag, the
head that cross-validation chose); the committed classifier artefact is loaded once, before the
first line. Blank lines are skipped. Exit status 0
unless stdin cannot be read. No note text is ever written to stderr or the logs.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import IO, Any

from django.core.management.base import BaseCommand, CommandError

from nlp.assertion.context import assert_context, get_classifier
from nlp.assertion.encoder import EncoderError
from nlp.assertion.model import AssertionModelError
from nlp.pipeline import SpanError, get_pipeline


def _fail(record_id: Any, message: str) -> dict[str, Any]:
    return {"id": record_id, "error": message}


def _salvage_id(raw: bytes) -> Any:
    """The id of a line that is JSON apart from its bad bytes, so the caller can match the error."""
    try:
        record = json.loads(raw.decode("utf-8", "replace"))
    except ValueError:
        return None
    record_id = record.get("id") if isinstance(record, dict) else None
    return record_id if isinstance(record_id, str | int | float) else None


def context_line(raw: bytes, line_no: int) -> dict[str, Any]:
    """The output record for one input line (never raises for bad input)."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _fail(_salvage_id(raw), f"line {line_no}: not valid UTF-8 (byte {exc.start})")
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        return _fail(None, f"line {line_no}: not JSON ({exc.msg} at column {exc.colno})")
    if not isinstance(record, dict):
        return _fail(None, f"line {line_no}: a JSON object is expected")
    record_id = record.get("id")
    if isinstance(record_id, dict | list):
        return _fail(None, f"line {line_no}: id must be a string or a number")
    missing = [k for k in ("id", "text", "start", "end") if k not in record]
    if missing:
        return _fail(record_id, f"missing field(s): {', '.join(missing)}")
    text, start, end = record["text"], record["start"], record["end"]
    if not isinstance(text, str):
        return _fail(record_id, "text must be a string")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (start, end)):
        return _fail(record_id, "start and end must be integers")
    try:
        result = assert_context(text, start, end)
    except SpanError as exc:
        return _fail(record_id, str(exc))
    except Exception as exc:  # noqa: BLE001 - one bad note must not stop the stream
        # The type only: an exception's message may quote the note.
        return _fail(record_id, f"could not classify: {type(exc).__name__}")
    return {
        "id": record_id,
        "negated": result["negated"],
        "historical": result["historical"],
        "hypothetical": result["hypothetical"],
        "experiencer": result["experiencer"],
    }


def _lines(stream: IO[Any]) -> Iterable[bytes]:
    for raw in stream:
        yield raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogateescape")


class Command(BaseCommand):
    help = "Context (negated, historical, hypothetical, experiencer) of marked spans by rules + classifier, JSON lines."

    def handle(self, *args: Any, **options: Any) -> None:
        stream = getattr(sys.stdin, "buffer", sys.stdin)
        get_pipeline()  # load once before the first line, so a broken install fails here
        try:
            get_classifier()
        except (AssertionModelError, EncoderError) as exc:
            raise CommandError(f"assertion classifier: {exc}") from exc
        try:
            for line_no, raw in enumerate(_lines(stream), start=1):
                raw = raw.rstrip(b"\r\n")
                if not raw.strip():
                    continue
                self.stdout.write(json.dumps(context_line(raw, line_no)))
                self.stdout.flush()
        except OSError as exc:
            raise CommandError(f"cannot read stdin: {exc.strerror or type(exc).__name__}") from exc
