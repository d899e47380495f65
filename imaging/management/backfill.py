"""What the imaging commands that fill in rows stored before a feature existed share: ``--limit``
and a progress line every 500 images on standard error."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser


class BackfillCommand(BaseCommand):
    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--limit", type=int, help="At most this many images (default: all)")

    def limit(self, options: dict[str, Any]) -> int | None:
        limit = options["limit"]
        if limit is not None and limit < 1:
            raise CommandError("--limit must be at least 1")
        return int(limit) if limit is not None else None

    def progress(self, seen: int) -> None:
        if seen % 500 == 0:
            self.stderr.write(f"{seen} image(s) looked at")
