"""A finding's DICOM result sent to a PACS by a real Celery worker process (PostgreSQL, Redis, the
worker's own storage settings) to a real DICOM Storage SCP listening in this test's process."""

from __future__ import annotations

import shutil

import pytest
from django.db import connection, transaction

from cdss.models import Job
from imaging.models import ResultDelivery
from imaging.pacs import PACS_KIND, pacs_send_enqueue
from tests.imaging.conftest import pneumonia_model, trained  # noqa: F401 - the model fixtures
from tests.imaging.test_pacs import Scp, pacs  # noqa: F401 - the SCP fixture
from tests.imaging.test_pages import upload
from tests.imaging.test_results_dicom import real_finding
from tests.integration.workers import free_port, wait_until

pytestmark = [
    pytest.mark.skipif(connection.vendor != "postgresql",
                       reason="workers share the test database: needs PostgreSQL (CI sets DATABASE_URL)"),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
    pytest.mark.django_db(transaction=True),
]


def test_a_worker_sends_a_result_to_the_pacs(platform, pacs: Scp, patient_a, settings, tmp_path) -> None:  # noqa: F811
    settings.MEDIA_ROOT = str(tmp_path / "media")
    [instance] = upload(patient_a)
    Job.objects.filter(kind="imaging").delete()  # no model to run here: only the sending is under test
    finding = real_finding(instance)
    platform.worker(DJANGO_MEDIA_ROOT=settings.MEDIA_ROOT, CDSS_PACS_URL=pacs.url, CDSS_PACS_CALLING_AE="WORKER_AE")
    with transaction.atomic():
        job = pacs_send_enqueue([finding], reason="test")
    assert job is not None and job.kind == PACS_KIND
    wait_until(lambda: Job.objects.filter(pk=job.pk, status=Job.Status.SUCCEEDED).exists(), timeout=90,
               what=lambda: f"the sending job to succeed: {platform.describe()}")
    [received] = pacs.received
    delivery = ResultDelivery.objects.get(finding=finding)
    assert delivery.status == "sent" and delivery.sop_instance_uid == received.SOPInstanceUID
    assert received.StudyInstanceUID == instance.series.study.study_instance_uid
    assert pacs.calling == ["WORKER_AE"]  # the worker's own settings


def test_a_radiograph_routed_by_the_pacs_comes_back_to_it_with_its_result(
    platform, pacs: Scp, pneumonia_model, patient_a, settings, tmp_path  # noqa: F811
) -> None:
    """The whole loop a hospital runs: the PACS sends a chest radiograph to the listener by C-STORE,
    a worker analyses it with the active model, and the result goes back to the PACS by itself."""
    from imaging.listener import DicomListener
    from imaging.models import ImagingFinding
    from tests.imaging.test_listener import dataset, send

    settings.MEDIA_ROOT = str(tmp_path / "media")
    listener = DicomListener(site=patient_a.site, ae_title="CDSS", allowed_callers=["PACS"], port=free_port())
    server = listener.start()
    try:
        platform.worker(DJANGO_MEDIA_ROOT=settings.MEDIA_ROOT, CDSS_MODEL_DIR=str(settings.CDSS_MODEL_DIR),
                        CDSS_PACS_URL=pacs.url, CDSS_PACS_SEND="all", CDSS_PACS_OBJECTS="sc,sr")
        radiograph = dataset("RG1_UNCR.dcm", patient_id=patient_a.mrn)  # a real chest CR, 1,841 x 1,955
        assert send(listener.address[1], [radiograph], calling="PACS") == [0]
        wait_until(lambda: len(pacs.received) == 2, timeout=180,
                   what=lambda: f"the result and the report to reach the PACS: {platform.describe()}")
    finally:
        server.shutdown()
    result, report = pacs.received
    finding = ImagingFinding.objects.get(instance__sop_instance_uid=radiograph.SOPInstanceUID)
    assert finding.model_version_id == pneumonia_model.pk and 0.0 <= finding.probability <= 1.0
    assert result.StudyInstanceUID == radiograph.StudyInstanceUID and result.Modality == "CR"
    assert result.SourceImageSequence[0].ReferencedSOPInstanceUID == radiograph.SOPInstanceUID
    assert f"probability {finding.probability:.3f}" in result.DerivationDescription
    assert sorted(ResultDelivery.objects.filter(finding=finding).values_list("object_type", "status")) == [
        ("sc", "sent"), ("sr", "sent")]
    # the report: the same finding as data, referencing the radiograph
    assert report.Modality == "SR" and report.StudyInstanceUID == radiograph.StudyInstanceUID
    [measurements] = [item for item in report.ContentSequence
                      if item.ConceptNameCodeSequence[0].CodeMeaning == "Imaging Measurements"]
    group = measurements.ContentSequence[0].ContentSequence
    [probability] = [i for i in group if i.ConceptNameCodeSequence[0].CodeMeaning == "Probability"]
    assert float(probability.MeasuredValueSequence[0].NumericValue) == pytest.approx(finding.probability, abs=1e-6)
    [source] = [i for i in group if i.ValueType == "IMAGE"]
    assert source.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == radiograph.SOPInstanceUID
