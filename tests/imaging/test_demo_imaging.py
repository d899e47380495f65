"""demo_imaging: the demo's acute patient gets a real chest radiograph through the imaging upload."""

from __future__ import annotations

import datetime as dt
import io

import pydicom
import pytest
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.core.management.base import CommandError

from cdss.models import AuditEvent
from imaging.management.commands.demo_imaging import acute_patient_mrn
from imaging.models import ImagingInstance, ImagingStudy
from patients import models as m
from patients.demo import DEFAULT_SEED

pytestmark = pytest.mark.django_db
AS_OF = dt.date(2025, 6, 1)


def _run(command: str, *args: str) -> str:
    out = io.StringIO()
    call_command(command, *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.fixture
def demo(settings) -> m.Patient:
    settings.DEBUG = True
    _run("demo_data", "--no-progress", "--patients=5", f"--as-of={AS_OF.isoformat()}")
    return m.Patient.objects.get(mrn=acute_patient_mrn(DEFAULT_SEED))


def test_the_acute_patient_gets_a_chest_radiograph_once(demo: m.Patient) -> None:
    assert m.Encounter.objects.filter(patient=demo, status="in-progress").exists()  # the acute patient
    assert "stored for the demo's acute patient" in _run("demo_imaging")
    [instance] = ImagingInstance.objects.filter(patient=demo)
    assert (instance.modality, instance.body_part, instance.view_position) == ("CR", "CHEST", "PA")
    study = ImagingStudy.objects.get(patient=demo)
    assert study.study_date == dt.date(2025, 5, 31)  # the acute visit: 21:00 UTC the day before as_of, +40 min
    with default_storage.open(str(instance.file.name), "rb") as fh:
        ds = pydicom.dcmread(fh)
    assert ds.PatientID == demo.mrn and str(ds.PatientName) == f"{demo.family_name}^{demo.given_names}"
    assert demo.birth_date is not None and ds.PatientBirthDate == demo.birth_date.strftime("%Y%m%d")
    assert ds.file_meta.TransferSyntaxUID.is_compressed  # JPEG 2000, decoded for the preview
    assert instance.preview and default_storage.exists(str(instance.preview.name))
    assert AuditEvent.objects.filter(patient=demo, action="create", target="imaging-demo").count() == 1
    # again: nothing new
    assert "already stored" in _run("demo_imaging")
    assert ImagingInstance.objects.count() == 1 and ImagingStudy.objects.count() == 1


def test_only_with_debug_and_only_for_a_loaded_demo(settings) -> None:
    settings.DEBUG = True
    with pytest.raises(CommandError, match="run demo_data first"):
        _run("demo_imaging")
    _run("demo_data", "--no-progress", "--patients=5", f"--as-of={AS_OF.isoformat()}")
    with pytest.raises(CommandError, match="seed 9"):
        _run("demo_imaging", "--seed=9")
    settings.DEBUG = False
    with pytest.raises(CommandError, match="DJANGO_DEBUG"):
        _run("demo_imaging")
    assert not ImagingInstance.objects.exists()


def test_a_patient_of_another_site_with_the_demo_mrn_is_never_written(settings) -> None:
    settings.DEBUG = True
    site = m.Site.objects.create(code="real-hospital", name="Real Hospital")
    m.Patient.objects.create(site=site, mrn=acute_patient_mrn(DEFAULT_SEED), family_name="Real")
    with pytest.raises(CommandError, match="not loaded"):
        _run("demo_imaging")
    assert not ImagingInstance.objects.exists()
