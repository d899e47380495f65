"""python manage.py imaging_orphans [--older-than-hours 24] [--delete]

Counts the heat map files in storage that no finding names (a worker killed in the middle of an
imaging job leaves them: its handler had written them, its result was never stored) and, with
``--delete``, removes them. Files newer than the cut-off are left alone: a running job's files have
no rows yet. Prints counts only.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from imaging.services import heatmap_orphans_sweep


class Command(BaseCommand):
    help = "Count (and with --delete remove) heat map files in storage that no finding names."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--older-than-hours", type=float, default=24.0,
                            help="Only files older than this (default 24; at least 1: a job runs up to 30 minutes)")
        parser.add_argument("--delete", action="store_true", help="Remove them (default: count only)")

    def handle(self, *args: Any, **options: Any) -> None:
        hours = float(options["older_than_hours"])
        if not hours >= 1:
            raise CommandError("--older-than-hours must be at least 1 (a running job's files have no rows yet)")
        sweep = heatmap_orphans_sweep(older_than=timedelta(hours=hours), delete=options["delete"])
        action = f"removed {sweep.removed}" if options["delete"] else "none removed (--delete removes them)"
        self.stdout.write(f"{sweep.files} heat map file(s) no finding names, older than {hours:g} h "
                          f"({sweep.bytes / 1024:.1f} KiB): {action}; {sweep.young} newer file(s) left alone")
