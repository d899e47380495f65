"""An image the DICOM listener held for a patient the record did not have yet, filed by the
schedule's sweep (a real ``celery beat`` process) on a real worker once the patient exists, and
analysed there: PostgreSQL, Redis, a real DICOM sender."""

from __future__ import annotations

import shutil

import pytest
from django.db import connection

from imaging.listener import DicomListener
from imaging.models import HeldImage, ImagingFinding
from patients.models import Patient
from tests.imaging.conftest import pneumonia_model, trained  # noqa: F401 - the model fixtures
from tests.imaging.test_listener import dataset, send
from tests.integration.workers import free_port, wait_until

pytestmark = [
    pytest.mark.skipif(connection.vendor != "postgresql",
                       reason="workers share the test database: needs PostgreSQL (CI sets DATABASE_URL)"),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
    pytest.mark.django_db(transaction=True),
]


def test_a_radiograph_sent_before_the_patient_was_registered_is_filed_and_analysed_once_they_are(
    platform, pneumonia_model, site_a, settings, tmp_path  # noqa: F811
) -> None:
    settings.MEDIA_ROOT = str(tmp_path / "media")
    listener = DicomListener(site=site_a, ae_title="CDSS", port=free_port())
    server = listener.start()
    try:
        radiograph = dataset("RG1_UNCR.dcm", patient_id="ED-0042")  # a real chest CR, 1,841 x 1,955
        assert send(listener.address[1], [radiograph]) == [0]
    finally:
        server.shutdown()
    held = HeldImage.objects.get()
    assert held.status == "held"
    platform.worker(DJANGO_MEDIA_ROOT=settings.MEDIA_ROOT, CDSS_MODEL_DIR=str(settings.CDSS_MODEL_DIR))
    platform.beat(CDSS_IMAGING_SWEEP_EVERY="1")
    patient = Patient.objects.create(site=site_a, mrn="ED-0042", fhir_id="ed-0042", family_name="Registered")
    wait_until(lambda: ImagingFinding.objects.filter(patient=patient).exists(), timeout=180,
               what=lambda: f"the held radiograph to be filed and analysed: {platform.describe()}")
    held.refresh_from_db()
    assert held.status == "filed" and held.patient == patient and not held.file
    finding = ImagingFinding.objects.get(patient=patient)
    assert finding.instance.sop_instance_uid == radiograph.SOPInstanceUID
    assert finding.model_version_id == pneumonia_model.pk
