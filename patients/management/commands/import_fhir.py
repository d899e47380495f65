"""python manage.py import_fhir PATH... [--site CODE] [--json]"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from patients.fhir.importer import UnitResult
from patients.fhir.parse import InputError, discover_files, units_from_files
from patients.management.sites import site_option
from patients.services import fhir_import_units


class Command(BaseCommand):
    help = "Import FHIR R4 bundles (.json) and bulk-export files (.ndjson), from files or folders."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("paths", nargs="+", help="Files or folders")
        parser.add_argument("--site", help="Site code the patients belong to (default: CDSS_DEFAULT_SITE_CODE)")
        parser.add_argument("--json", action="store_true", help="Print the summary as JSON")
        parser.add_argument("--no-progress", action="store_true", help="Hide the progress bar")

    def handle(self, *args: Any, **options: Any) -> None:
        site = site_option(options["site"])
        try:
            files = discover_files(options["paths"])
        except InputError as exc:
            raise CommandError(str(exc)) from None
        if not files:
            raise CommandError("No .json or .ndjson files found.")
        bar = tqdm(total=len(files), unit="file", disable=options["no_progress"] or options["json"],
                   file=self.stderr._out)

        def progress(result: UnitResult) -> None:
            bar.update(1)
            if not result.ok:
                bar.write(f"FAILED {result.label}")

        summary = fhir_import_units(units_from_files(files), site=site, progress=progress)
        bar.close()
        data = summary.as_dict()
        data["resources"] = summary.resources
        if options["json"]:
            self.stdout.write(json.dumps(data, indent=2))
        else:
            self.print_summary(data)
        if not summary.ok:
            raise CommandError(f"{len(summary.failed)} of {len(summary.units)} file(s) failed; nothing was "
                               "written from them.")

    def print_summary(self, data: dict[str, Any]) -> None:
        out = self.stdout
        out.write(f"{data['bundles']} file(s), {data['bundles_failed']} failed, {data['resources']} resources read")
        out.write(f"{'type':<28}{'created':>9}{'updated':>9}{'unchanged':>11}")
        for model, counts in data["counts"].items():
            out.write(f"{model:<28}{counts.get('created', 0):>9}{counts.get('updated', 0):>9}"
                      f"{counts.get('unchanged', 0):>11}")
        if data["skipped"]:
            out.write("skipped:")
            for what, n in data["skipped"].items():
                out.write(f"  {what}: {n}")
        for err in data["errors"]:
            loc = f" {err['location']}:" if err["location"] else ":"
            out.write(self.style.ERROR(f"{err['source']}{loc} {err['message']}"))
