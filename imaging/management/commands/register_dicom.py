"""python manage.py register_dicom FOLDER [--site CODE] [--json]"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from imaging.services import imaging_register_folder
from patients.management.sites import site_option


class Command(BaseCommand):
    help = ("Register the DICOM files of a folder (recursively) with the patients of a site whose MRN is the "
            "file's PatientID; queue their analysis.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("folder")
        parser.add_argument("--site", help="Site code of the patients (default: CDSS_DEFAULT_SITE_CODE)")
        parser.add_argument("--json", action="store_true", help="Print the summary as JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        folder = Path(options["folder"])
        if not folder.is_dir():
            raise CommandError(f"{folder} is not a folder.")
        site = site_option(options["site"])
        summary = imaging_register_folder(folder, site=site)
        data = summary.as_dict()
        if options["json"]:
            self.stdout.write(json.dumps(data, indent=2))
        else:
            self.stdout.write(f"{data['files']} file(s): {data['created']} new image(s) for {data['patients']} "
                              f"patient(s), {data['already_stored']} already stored, {len(data['skipped'])} skipped, "
                              f"{len(data['failed'])} failed; {data['jobs']} analysis job(s) queued")
            for item in data["skipped"]:
                self.stdout.write(f"skipped {item['file']}: {item['reason']}")
            for item in data["failed"]:
                self.stdout.write(self.style.ERROR(f"FAILED {item['file']}: {item['reason']}"))
        if summary.failed:
            raise CommandError(f"{len(summary.failed)} file(s) failed; they were not stored.")
