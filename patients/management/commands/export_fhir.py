"""python manage.py export_fhir PATIENT_UUID [-o FILE]: the record as a FHIR R4 collection Bundle."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import orjson
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from cdss.audit import audit_record
from patients.fhir.exporter import patient_everything
from patients.models import Patient


class Command(BaseCommand):
    help = "Export one patient's record ($everything) as a FHIR R4 collection Bundle."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("patient", help="The patient's external id (UUID)")
        parser.add_argument("-o", "--output", help="Write to this file instead of standard output")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            key = uuid.UUID(options["patient"])
        except ValueError:
            raise CommandError("PATIENT must be the patient's external id (a UUID).") from None
        with transaction.atomic():
            patient = Patient.objects.filter(external_id=key).first()
            if patient is None:
                raise CommandError("No patient with that external id.")
            bundle = patient_everything(patient)
            audit_record(user=None, action="export", target="command:export_fhir", patient=patient)
        data = orjson.dumps(bundle, option=orjson.OPT_INDENT_2)
        if options["output"]:
            Path(options["output"]).write_bytes(data)
            self.stderr.write(f"{len(bundle['entry'])} resources written to {options['output']}")
        else:
            self.stdout.write(data.decode())
