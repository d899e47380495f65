"""python manage.py held_images [--sweep]

What the DICOM listener holds for patients the record does not have yet (``imaging.held``): counts
by site and status, and how long the oldest has waited; PatientIDs are not printed (the admin's
"Held images" page shows them to those allowed). ``--sweep`` files and expires now, as the
schedule does every ``CDSS_IMAGING_SWEEP_EVERY`` seconds.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db.models import Count, Min
from django.utils import timezone

from imaging.held import held_sweep
from imaging.models import HeldImage


class Command(BaseCommand):
    help = "Count the images held for patients the record does not have yet; --sweep files and expires them now."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--sweep", action="store_true",
                            help="File those whose patient the record now has, discard those held longer than "
                                 "CDSS_IMAGING_HOLD_DAYS")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["sweep"]:
            filing = held_sweep()
            self.stdout.write(f"Sweep: {filing.filed} filed, {filing.refused} could not be filed, {filing.jobs} "
                              f"analysis job(s) queued, {filing.discarded} discarded after the holding period.")
        rows = (HeldImage.objects.values("site__code", "status").annotate(n=Count("id"), oldest=Min("received_at"))
                .order_by("site__code", "status"))
        if not rows:
            self.stdout.write("No images held.")
            return
        now = timezone.now()
        for row in rows:
            waited = ""
            if row["status"] == HeldImage.Status.HELD:
                waited = f", the oldest received {(now - row['oldest']).total_seconds() / 3600:.1f} h ago"
            self.stdout.write(f"site {row['site__code']}: {row['n']} {row['status']}{waited}")
