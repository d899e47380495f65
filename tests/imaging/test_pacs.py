"""Findings' DICOM results sent to a PACS (imaging.pacs): a real DICOM Storage SCP (pynetdicom, on a
port of the test's own) receives them over the network, as a hospital's PACS would."""

from __future__ import annotations

import io
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pydicom
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError, SystemCheckError
from django.db import transaction
from django.test import Client
from django.urls import reverse
from pydicom.uid import EnhancedSRStorage, SecondaryCaptureImageStorage
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from cdss.jobs.runner import job_run
from cdss.jobs.triggers import job_succeeded
from cdss.models import AuditEvent, Job
from imaging.models import ENTERED_IN_ERROR, ResultDelivery
from imaging.pacs import PACS_KIND, PacsConfigError, after_imaging_job, pacs_send_enqueue, parse_pacs_url
from imaging.results import finding_report_dicom, finding_result_dicom
from patients import models as m
from tests.imaging.test_pages import finding_for, upload
from tests.imaging.test_results_dicom import real_finding
from tests.integration.workers import free_port

pytestmark = pytest.mark.django_db


@dataclass
class Scp:
    port: int
    received: list[pydicom.Dataset] = field(default_factory=list)
    calling: list[str] = field(default_factory=list)
    status: int = 0x0000  # what it answers each C-STORE with
    ae: AE | None = None

    @property
    def url(self) -> str:
        return f"dicom://TESTPACS@127.0.0.1:{self.port}"


def start_scp(ssl_context: ssl.SSLContext | None = None, *, reports: bool = True) -> tuple[Scp, Any]:
    """A Storage SCP (and Verification) on a free port of this process, for Secondary Captures and,
    with ``reports``, Enhanced SRs; (its record, its server)."""
    scp = Scp(port=free_port())

    def on_store(event):  # the SCP's own thread
        ds = event.dataset
        ds.file_meta = event.file_meta
        scp.received.append(ds)
        scp.calling.append(event.assoc.requestor.ae_title)
        return scp.status

    ae = AE(ae_title="TESTPACS")
    ae.add_supported_context(SecondaryCaptureImageStorage)
    if reports:
        ae.add_supported_context(EnhancedSRStorage)
    ae.add_supported_context(Verification)
    scp.ae = ae
    server = ae.start_server(("127.0.0.1", scp.port), block=False, ssl_context=ssl_context,
                             evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert server is not None
    return scp, server


@pytest.fixture
def pacs(settings) -> Iterator[Scp]:
    scp, server = start_scp()
    settings.CDSS_PACS_URL = scp.url
    settings.CDSS_PACS_CALLING_AE = "CDSS_TEST"
    settings.CDSS_PACS_TIMEOUT_SECONDS = 5
    try:
        yield scp
    finally:
        server.shutdown()


def send_url(finding) -> str:
    return reverse("imaging-result-send", args=[finding.patient.external_id, finding.external_id])


def viewer_url(instance) -> str:
    return reverse("imaging-viewer", args=[instance.patient.external_id, instance.external_id])


def test_a_clinician_sends_a_result_and_the_pacs_receives_the_object(
    client_a: Client, patient_a: m.Patient, pacs: Scp
) -> None:
    [instance] = upload(patient_a)
    finding = real_finding(instance)
    page = client_a.get(viewer_url(instance)).content.decode()
    assert send_url(finding) in page and "Send to the PACS" in page

    response = client_a.post(send_url(finding))
    assert response.status_code == 200 and "Queued for TESTPACS@127.0.0.1" in response.content.decode()
    job = Job.objects.get(kind=PACS_KIND)
    assert job.params == {"finding_ids": [str(finding.external_id)]} and job.patient_id == patient_a.pk
    event = AuditEvent.objects.get(target="imaging-result-pacs")
    assert event.action == "export" and event.patient_id == patient_a.pk

    assert job_run(job.pk) == "succeeded"
    [received] = pacs.received
    expected = pydicom.dcmread(io.BytesIO(finding_result_dicom(finding).data))
    assert received.SOPInstanceUID == expected.SOPInstanceUID and received.SOPClassUID == SecondaryCaptureImageStorage
    assert received.StudyInstanceUID == instance.series.study.study_instance_uid
    assert received.PatientID == patient_a.mrn
    assert received.PixelData == expected.PixelData  # every pixel arrived
    assert pacs.calling == ["CDSS_TEST"]
    delivery = ResultDelivery.objects.get()
    assert (delivery.finding_id, delivery.status, delivery.destination) == (
        finding.pk, "sent", pacs.url.removeprefix("dicom://"))
    assert delivery.sop_instance_uid == expected.SOPInstanceUID and delivery.detail.startswith("0x0000 Success")
    assert Job.objects.get(pk=job.pk).result == {"sent": 1, "refused": 0, "destination": delivery.destination}
    page = client_a.get(viewer_url(instance)).content.decode()
    assert f"Sent to {delivery.destination}" in page and "Send to the PACS again" in page

    # sent again: a new job (the first one is done), the same object for the PACS to replace
    client_a.post(send_url(finding))
    again = Job.objects.filter(kind=PACS_KIND).exclude(pk=job.pk).get()
    assert job_run(again.pk) == "succeeded"
    assert [ds.SOPInstanceUID for ds in pacs.received] == [expected.SOPInstanceUID] * 2
    assert ResultDelivery.objects.count() == 2


def test_with_reports_set_the_pacs_receives_each_findings_report_beside_its_picture(
    client_a: Client, patient_a: m.Patient, pacs: Scp, settings
) -> None:
    settings.CDSS_PACS_OBJECTS = "sc,sr"
    [instance] = upload(patient_a)
    finding = real_finding(instance, p=0.77)
    client_a.post(send_url(finding))
    assert job_run(Job.objects.get(kind=PACS_KIND).pk) == "succeeded"
    picture, report = pacs.received
    assert picture.SOPClassUID == SecondaryCaptureImageStorage and report.SOPClassUID == EnhancedSRStorage
    assert report.SOPInstanceUID == finding_report_dicom(finding).sop_instance_uid
    assert report.StudyInstanceUID == picture.StudyInstanceUID == instance.series.study.study_instance_uid
    assert sorted(ResultDelivery.objects.values_list("object_type", "status")) == [("sc", "sent"), ("sr", "sent")]
    page = client_a.get(viewer_url(instance)).content.decode()
    assert "Sent to TESTPACS@" in page and "Report sent to TESTPACS@" in page

    settings.CDSS_PACS_OBJECTS = "sr"
    client_a.post(send_url(finding))
    assert job_run(Job.objects.filter(kind=PACS_KIND).latest("pk").pk) == "succeeded"
    assert [ds.SOPClassUID for ds in pacs.received[2:]] == [EnhancedSRStorage]


def test_a_report_the_pacs_did_not_accept_is_refused_by_name_and_the_picture_goes(
    patient_a: m.Patient, settings
) -> None:
    scp, server = start_scp(reports=False)
    settings.CDSS_PACS_URL = scp.url
    settings.CDSS_PACS_OBJECTS = "sc,sr"
    try:
        [instance] = upload(patient_a)
        finding = real_finding(instance)
        with transaction.atomic():
            job = pacs_send_enqueue([finding], reason="test")
        assert job is not None and job_run(job.pk) == "succeeded"
    finally:
        server.shutdown()
    assert [ds.SOPClassUID for ds in scp.received] == [SecondaryCaptureImageStorage]
    report = ResultDelivery.objects.get(object_type="sr")
    assert report.status == "refused" and report.detail == "the PACS did not accept Enhanced SR Storage at association"
    assert ResultDelivery.objects.get(object_type="sc").status == "sent"


def test_asking_twice_while_the_job_waits_queues_one(client_a: Client, patient_a: m.Patient, pacs: Scp) -> None:
    finding = real_finding(upload(patient_a)[0])
    client_a.post(send_url(finding))
    client_a.post(send_url(finding))
    assert Job.objects.filter(kind=PACS_KIND).count() == 1


def test_a_refusal_is_kept_with_its_status_and_the_others_go_on(patient_a: m.Patient, pacs: Scp) -> None:
    instance = upload(patient_a)[0]
    first, second = real_finding(instance), real_finding(instance, label="effusion")
    pacs.status = 0xA700  # out of resources
    with transaction.atomic():
        job = pacs_send_enqueue([first, second], reason="test")
    assert job is not None and job_run(job.pk) == "succeeded"
    assert len(pacs.received) == 2
    rows = list(ResultDelivery.objects.order_by("finding_id"))
    assert [r.status for r in rows] == ["refused", "refused"]
    assert rows[0].detail.startswith("0xA700 Failure") and "Out of Resources" in rows[0].detail
    assert Job.objects.get(pk=job.pk).result["refused"] == 2


def test_a_pacs_that_cannot_be_reached_fails_the_job_with_its_address_only(
    patient_a: m.Patient, pacs: Scp, settings
) -> None:
    settings.CDSS_PACS_URL = f"dicom://TESTPACS@127.0.0.1:{free_port()}"  # nothing listens there
    finding = real_finding(upload(patient_a)[0])
    with transaction.atomic():
        job = pacs_send_enqueue([finding], reason="test")
    assert job is not None and job_run(job.pk) == "failed"
    job.refresh_from_db()
    assert "could not be reached" in job.error and "127.0.0.1" in job.error
    assert patient_a.mrn not in job.error and patient_a.family_name not in job.error
    assert job.status == Job.Status.FAILED  # retried later, as any job
    assert ResultDelivery.objects.count() == 0
    with transaction.atomic():
        assert pacs_send_enqueue([finding], reason="test") == job  # asked again while it is due again
    Job.objects.filter(pk=job.pk).update(status=Job.Status.DEAD)  # its attempts spent
    settings.CDSS_PACS_URL = pacs.url  # the PACS is back: a clinician sends it again
    with transaction.atomic():
        again = pacs_send_enqueue([finding], reason="test")
    assert again is not None and again.pk != job.pk and job_run(again.pk) == "succeeded"
    assert len(pacs.received) == 1


def test_a_pacs_that_refuses_the_association_fails_the_job(patient_a: m.Patient, pacs: Scp, settings) -> None:
    settings.CDSS_PACS_URL = f"dicom://OTHERPACS@127.0.0.1:{pacs.port}"
    finding = real_finding(upload(patient_a)[0])
    with transaction.atomic():
        job = pacs_send_enqueue([finding], reason="test")
    assert job is not None
    assert pacs.ae is not None
    pacs.ae.require_called_aet = True  # an SCP that requires its own AE title refuses another one
    assert job_run(job.pk) == "failed"
    job.refresh_from_db()
    assert "refused the association" in job.error and pacs.received == []


def test_what_cannot_be_sent_is_not_offered_or_queued(client_a: Client, patient_a: m.Patient, pacs: Scp,
                                                     settings) -> None:
    instance = upload(patient_a)[0]
    bare = finding_for(instance, real_finding(instance).model_version, label="nodule")
    bare.heatmap = ""
    bare.save(update_fields=["heatmap"])
    response = client_a.post(send_url(bare))
    assert response.status_code == 409 and Job.objects.filter(kind=PACS_KIND).count() == 0
    with transaction.atomic():
        assert pacs_send_enqueue([bare], reason="test") is None

    finding = real_finding(upload(patient_a)[0], label="effusion")
    with transaction.atomic():
        job = pacs_send_enqueue([finding], reason="test")
    finding.instance.status = ENTERED_IN_ERROR  # entered in error after it was queued: not sent
    finding.instance.save(update_fields=["status"])
    assert job is not None and job_run(job.pk) == "succeeded"
    assert pacs.received == [] and Job.objects.get(pk=job.pk).result["sent"] == 0

    settings.CDSS_PACS_URL = ""  # no PACS: nothing offered, nothing queued
    page = client_a.get(viewer_url(instance)).content.decode()
    assert "Send to the PACS" not in page and "DICOM result" in page
    assert client_a.post(send_url(real_finding(instance, label="mass"))).status_code == 409


def test_after_an_imaging_job_its_flagged_findings_go_by_themselves_when_set(
    patient_a: m.Patient, pacs: Scp, settings
) -> None:
    instance = upload(patient_a)[0]
    imaging_job = Job.objects.get(kind="imaging", patient=patient_a)
    flagged = real_finding(instance, p=0.9)
    unflagged = real_finding(instance, label="effusion", p=0.1, positive=False)
    for finding in (flagged, unflagged):
        finding.job = imaging_job
        finding.save(update_fields=["job"])

    settings.CDSS_PACS_SEND = "off"
    with transaction.atomic():
        after_imaging_job(imaging_job, {})
    assert not Job.objects.filter(kind=PACS_KIND).exists()

    settings.CDSS_PACS_SEND = "flagged"
    with transaction.atomic():
        job_succeeded(imaging_job, {})  # the callback is registered for the imaging kind
    job = Job.objects.get(kind=PACS_KIND)
    assert job.params == {"finding_ids": [str(flagged.external_id)]}
    assert job_run(job.pk) == "succeeded" and len(pacs.received) == 1

    settings.CDSS_PACS_SEND = "all"
    with transaction.atomic():
        after_imaging_job(imaging_job, {})
    latest = Job.objects.filter(kind=PACS_KIND).latest("pk")
    assert sorted(latest.params["finding_ids"]) == sorted([str(flagged.external_id), str(unflagged.external_id)])


def test_pacs_echo_says_whether_the_pacs_answers(pacs: Scp, settings) -> None:
    out = io.StringIO()
    call_command("pacs_echo", stdout=out)
    assert f"The PACS TESTPACS@127.0.0.1:{pacs.port} answered C-ECHO as CDSS_TEST" in out.getvalue()
    settings.CDSS_PACS_URL = f"dicom://TESTPACS@127.0.0.1:{free_port()}"
    with pytest.raises(CommandError, match="could not be reached"):
        call_command("pacs_echo")
    settings.CDSS_PACS_URL = ""
    with pytest.raises(CommandError, match="No PACS is configured"):
        call_command("pacs_echo")
    settings.CDSS_PACS_URL = "dicom://host:104"
    with pytest.raises(CommandError, match="AE title"):
        call_command("pacs_echo")


def test_the_association_does_not_wait_for_delayed_acks(pacs: Scp) -> None:
    """TCP_NODELAY on the sending socket: without it a small object's C-STORE waits for the PACS's
    delayed ACK (bench/dicom_listener.py: reports at 14 a second without, 35-39 with)."""
    import socket

    from pydicom.uid import SecondaryCaptureImageStorage

    from imaging.pacs import _associate, pacs_destination

    destination = pacs_destination()
    assert destination is not None
    assoc = _associate(destination, SecondaryCaptureImageStorage)
    try:
        assert assoc.dul.socket.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        assoc.release()


@pytest.mark.parametrize(("url", "problem"), [
    ("http://PACS@host:104", "must look like dicom://"),
    ("dicom://host:104", "AE title"),
    ("dicom://AVERYLONGAETITLEOF17@host:104", "AE title"),
    ("dicom://PACS@host", "host and a port"),
    ("dicom://PACS@host:notaport", "host and a port"),
])
def test_a_wrong_pacs_address_is_named(url: str, problem: str) -> None:
    with pytest.raises(PacsConfigError, match=problem):
        parse_pacs_url(url, "CDSS")


def test_the_address_gives_the_titles_host_and_port() -> None:
    destination = parse_pacs_url("dicom://MAIN_PACS@pacs.hospital.example:11112", "CDSS")
    assert (destination.called_ae, destination.host, destination.port, destination.calling_ae) == (
        "MAIN_PACS", "pacs.hospital.example", 11112, "CDSS")
    with pytest.raises(PacsConfigError, match="calling AE title"):
        parse_pacs_url("dicom://PACS@host:104", "BAD\\TITLE")


def test_the_system_check_names_wrong_pacs_settings(settings) -> None:
    settings.CDSS_PACS_URL = "dicom://host:104"
    settings.CDSS_PACS_SEND = "sometimes"
    settings.CDSS_PACS_OBJECTS = "sc,pdf"
    with pytest.raises(SystemCheckError) as raised:
        call_command("check")
    text = str(raised.value)
    assert "imaging.E001" in text and "AE title" in text and "CDSS_PACS_SEND must be one of off, flagged, all" in text
    assert "CDSS_PACS_OBJECTS: must be sc (Secondary Capture), sr (Structured Report) or sc,sr" in text
