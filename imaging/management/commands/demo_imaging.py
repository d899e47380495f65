"""python manage.py demo_imaging [--seed S]

Gives the demo's acute patient (the demo patient at the emergency department with fever, cough
and shortness of breath; ``patients.demo``) a chest radiograph, so that the imaging panel, the
viewer and, with a trained model, the findings and heat maps show in the demo: pydicom-data's
computed radiography test image ``RG1_J2KR.dcm`` (CR, chest PA, MONOCHROME1, JPEG 2000, 1,841 x
1,955), its header given the demo patient's identity (MRN, name, birth date, sex), the acute
visit's date and UIDs made from the MRN, stored through the imaging upload (checks, previews, the
analysis copy, the audit row and the analysis job of an active model). Running it again stores
nothing new. It writes only to patients of the demo sites, and only with ``DJANGO_DEBUG`` on.
"""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from imaging.services import ImagingUploadError, UploadFile, imaging_upload
from patients.demo import ACUTE_INDEX, DEFAULT_SEED, DEMO_SITES, demo_mrn
from patients.models import Encounter, Patient

RADIOGRAPH = "RG1_J2KR.dcm"  # pydicom-data: CR, CHEST, PA, MONOCHROME1, JPEG 2000 lossless


def acute_patient_mrn(seed: int) -> str:
    """The MRN of the demo patient with the acute visit, for ``seed``."""
    return demo_mrn(seed, ACUTE_INDEX)


def radiograph_for(patient: Patient, taken: dt.datetime) -> bytes:
    """The test radiograph with ``patient``'s identity, ``taken``'s date and time, and study,
    series and instance UIDs derived from the MRN (the same on every run, another for every
    patient)."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    path = get_testdata_file(RADIOGRAPH)
    if path is None:
        raise CommandError(f"pydicom-data's {RADIOGRAPH} is not installed (pip install pydicom-data).")
    ds = pydicom.dcmread(str(path))
    ds.PatientID = patient.mrn
    ds.PatientName = f"{patient.family_name}^{patient.given_names}"
    ds.PatientBirthDate = patient.birth_date.strftime("%Y%m%d") if patient.birth_date else ""
    ds.PatientSex = {"female": "F", "male": "M"}.get(patient.sex, "O")
    for keyword in ("StudyDate", "SeriesDate", "ContentDate", "AcquisitionDate"):
        setattr(ds, keyword, taken.strftime("%Y%m%d"))
    for keyword in ("StudyTime", "SeriesTime", "ContentTime", "AcquisitionTime"):
        setattr(ds, keyword, taken.strftime("%H%M%S"))
    ds.StudyDescription = "Chest X-ray PA (emergency department)"
    ds.AccessionNumber = f"DEMO{patient.mrn[-7:]}"
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["cdss-demo", patient.mrn, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["cdss-demo", patient.mrn, "series"])
    ds.SOPInstanceUID = generate_uid(entropy_srcs=["cdss-demo", patient.mrn, "instance"])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


class Command(BaseCommand):
    help = ("Give the demo's acute patient a chest radiograph (pydicom-data's CR test image, with the patient's "
            "identity), through the imaging upload. Runs only with DJANGO_DEBUG on.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                            help=f"The seed demo_data was run with (default {DEFAULT_SEED})")

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG:
            raise CommandError("demo_imaging writes a made-up image to a demo patient; it runs only with "
                               "DJANGO_DEBUG on.")
        mrn = acute_patient_mrn(options["seed"])
        patient = Patient.objects.filter(mrn=mrn, site__code__in=[s.code for s in DEMO_SITES]).first()
        if patient is None:
            raise CommandError(f"The demo's acute patient (seed {options['seed']}) is not loaded: run demo_data "
                               "first, with the same --seed.")
        visit = (Encounter.objects.filter(patient=patient, status="in-progress", period_start__isnull=False)
                 .order_by("-period_start").first())
        taken = (visit.period_start + dt.timedelta(minutes=40)) if visit and visit.period_start else (
            dt.datetime.now(dt.UTC))
        try:
            result = imaging_upload(patient=patient, files=[UploadFile(RADIOGRAPH, radiograph_for(patient, taken))],
                                    source="demo")
        except ImagingUploadError as exc:
            raise CommandError("The demo radiograph was refused: "
                               + "; ".join(f"{p.file}: {p.message}" for p in exc.problems)) from None
        if result.created:
            self.stdout.write(f"Chest radiograph stored for the demo's acute patient; {len(result.job_ids)} "
                              "analysis job(s) queued.")
        else:
            self.stdout.write("The demo's chest radiograph was already stored.")
