"""python manage.py imaging_value_ranges [--limit N]

Records the range of values (after the Modality LUT: HU on CT) of every grey-scale DICOM image
stored before uploads recorded it, so that the viewer offers those images its window inputs and
Shift + drag as well as their presets. Safe to run while the application runs and to run again;
stops after ``--limit`` images. Prints counts only.
"""

from __future__ import annotations

from typing import Any

from imaging.management.backfill import BackfillCommand
from imaging.services import value_ranges_backfill


class Command(BackfillCommand):
    help = "Record the range of values of every grey-scale DICOM image stored without it (the viewer's window)."

    def handle(self, *args: Any, **options: Any) -> None:
        done = value_ranges_backfill(limit=self.limit(options), progress=self.progress)
        self.stdout.write(f"{done.recorded} image(s) now with their range of values; {done.no_values} without a "
                          f"finite value; {done.unreadable} original(s) that could not be read")
