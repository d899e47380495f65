"""python manage.py pacs_echo: is the configured PACS (CDSS_PACS_URL) there and does it answer?"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from imaging.pacs import PacsConfigError, pacs_destination, pacs_echo


class Command(BaseCommand):
    help = "Send a C-ECHO to the PACS that findings' DICOM results go to (CDSS_PACS_URL) and say how it answered."

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            destination = pacs_destination()
        except PacsConfigError as exc:
            raise CommandError(f"CDSS_PACS_URL: {exc}.") from None
        if destination is None:
            raise CommandError("No PACS is configured (CDSS_PACS_URL).")
        try:
            seconds = pacs_echo(destination)
        except ConnectionError as exc:
            raise CommandError(f"{str(exc)[0].upper()}{str(exc)[1:]}.") from None
        self.stdout.write(f"The PACS {destination} answered C-ECHO as {destination.calling_ae} "
                          f"in {seconds * 1000:.0f} ms.")
