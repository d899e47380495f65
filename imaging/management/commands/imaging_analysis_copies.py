"""python manage.py imaging_analysis_copies [--limit N]

Writes the analysis copy of every stored image that has none: the images stored before analysis
copies existed, which the imaging job otherwise decodes from their originals each time it reads
them (a chest radiograph's JPEG 2000: 0.3-0.6 s, against 0.2 ms for its copy). Safe to run while
workers run and to run again; stops after ``--limit`` images. Prints counts only.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from imaging.services import analysis_copies_backfill


class Command(BaseCommand):
    help = "Write the analysis copy (what the models read) of every stored image that has none."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--limit", type=int, help="At most this many images (default: all)")

    def handle(self, *args: Any, **options: Any) -> None:
        limit = options["limit"]
        if limit is not None and limit < 1:
            raise CommandError("--limit must be at least 1")

        def progress(seen: int) -> None:
            if seen % 500 == 0:
                self.stderr.write(f"{seen} image(s) looked at")

        done = analysis_copies_backfill(limit=limit, progress=progress)
        self.stdout.write(f"{done.made} analysis copy(ies) written ({done.bytes / 1024 / 1024:.1f} MiB); "
                          f"{done.unreadable} original(s) that could not be read; "
                          f"{done.no_model} image(s) no model reads (no copy needed)")
