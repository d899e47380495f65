"""Images held for a patient the record does not have yet (imaging.held): a real pynetdicom
Storage SCU sends real pydicom test files to the listener; the sweep files them once the patient
exists, through the upload's checks; what cannot be filed is kept for an administrator, who files
or discards in the admin; what waits too long is discarded."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import pydicom
import pytest
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from pydicom.uid import generate_uid

from cdss.models import AuditEvent, Job
from imaging.held import held_image_receive, held_images_discard, held_sweep
from imaging.listener import DicomListener
from imaging.models import HeldImage, ImagingInstance
from imaging.services import ImagingUploadError, UploadFile, imaging_upload
from imaging.tasks import imaging_sweep_task
from patients import models as m
from tests.imaging.conftest import dicom_bytes
from tests.imaging.test_listener import dataset, send
from tests.integration.workers import free_port

pytestmark = [
    pytest.mark.skipif(connection.vendor != "postgresql",
                       reason="the listener's threads share the test database: needs PostgreSQL (CI sets DATABASE_URL)"),
    pytest.mark.django_db(transaction=True),  # the listener's threads read what the test wrote; files go on commit
]


@pytest.fixture
def listener(site_a: m.Site):
    scp = DicomListener(site=site_a, ae_title="CDSS", host="127.0.0.1", port=free_port())
    server = scp.start()
    try:
        yield scp
    finally:
        server.shutdown()


def _held_files(media_root: Path) -> list[Path]:
    folder = media_root / "imaging" / "held"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def test_an_image_for_a_patient_not_in_the_record_is_held_then_filed_and_analysed_when_the_patient_arrives(
    listener: DicomListener, site_a: m.Site, media_root: Path
) -> None:
    study = generate_uid()
    sent = [dataset(patient_id="NEW-0001", study_uid=study, series_uid=generate_uid()) for _ in range(2)]
    sent[0].AccessionNumber = "ACC-77"
    assert send(listener.address[1], sent) == [0, 0]  # kept: a success
    held = list(HeldImage.objects.order_by("pk"))
    assert [h.sop_instance_uid for h in held] == [ds.SOPInstanceUID for ds in sent]
    assert {h.status for h in held} == {"held"} and {h.patient_identifier for h in held} == {"NEW-0001"}
    assert held[0].accession_number == "ACC-77" and held[0].modality == "CT" and held[0].calling_ae == "MODALITY"
    assert held[0].study_instance_uid == study and held[0].site == site_a
    assert len(_held_files(media_root)) == 2 and "NEW-0001" not in str(held[0].file.name)
    assert not ImagingInstance.objects.exists() and not Job.objects.exists()
    assert listener.counts.held == 2 and listener.counts.refused == 0
    assert AuditEvent.objects.filter(target="imaging-held", patient=None).count() == 2
    assert all("NEW-0001" not in e.detail for e in AuditEvent.objects.all())

    # sent again while it waits: a success, held once; found by its UID, not decoded again (as an
    # image already stored: a copy whose pixel data is cut short is answered the same)
    assert send(listener.address[1], sent[:1]) == [0]
    cut = pydicom.dcmread(io.BytesIO(_bytes(sent[1])))
    cut.PixelData = cut.PixelData[:100]
    assert send(listener.address[1], [cut]) == [0]
    assert HeldImage.objects.count() == 2 and listener.counts.already_stored == 2

    # no such patient yet: the sweep leaves them
    assert held_sweep().filed == 0 and HeldImage.objects.filter(status="held").count() == 2

    patient = _patient(site_a, "NEW-0001")
    assert imaging_sweep_task() == 2  # the schedule's task
    stored = list(ImagingInstance.objects.filter(patient=patient).order_by("sop_instance_uid"))
    assert sorted(i.sop_instance_uid for i in stored) == sorted(ds.SOPInstanceUID for ds in sent)
    with stored[0].file.open("rb") as fh:
        kept = pydicom.dcmread(io.BytesIO(fh.read()))
    original = next(ds for ds in sent if ds.SOPInstanceUID == kept.SOPInstanceUID)
    assert kept.PixelData == original.PixelData
    [job] = Job.objects.filter(kind="imaging")
    assert sorted(job.params["instance_ids"]) == sorted(i.pk for i in stored) and job.patient == patient
    for row in HeldImage.objects.all():
        assert row.status == "filed" and row.patient == patient and not row.file
        assert row.resolved_at is not None
    assert _held_files(media_root) == []  # the image has its own file now
    assert AuditEvent.objects.filter(target="imaging-dicom-held", patient=patient).count() == 2
    # nothing left to do
    again = held_sweep()
    assert (again.filed, again.refused, again.jobs) == (0, 0, 0)


def test_what_cannot_be_read_or_is_stored_for_another_patient_is_refused_not_held(
    listener: DicomListener, patient_a: m.Patient, media_root: Path
) -> None:
    broken = dataset(patient_id="NEW-0002")
    broken.PixelData = broken.PixelData[:100]  # truncated: 100 of 32,768 bytes
    mine = dataset(patient_id=patient_a.mrn)
    assert send(listener.address[1], [mine]) == [0]
    moved = pydicom.dcmread(io.BytesIO(_bytes(mine)))
    moved.PatientID = "NEW-0003"  # the same image under a PatientID the record does not know
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", listener.address[1], ae_title="CDSS")
    statuses = [assoc.send_c_store(ds) for ds in (broken, moved)]
    assoc.release()
    assert [int(s.Status) for s in statuses] == [0xC000, 0xC000]
    assert "pixel" in statuses[0].ErrorComment.lower() and "NEW-0002" not in statuses[0].ErrorComment
    assert statuses[1].ErrorComment == "other-patient: this image is already stored for another patient"
    assert not HeldImage.objects.exists() and _held_files(media_root) == []
    assert listener.counts.refused == 2 and listener.counts.held == 0


def test_a_listener_told_to_refuse_refuses_an_unknown_patient(site_a: m.Site, media_root: Path) -> None:
    scp = DicomListener(site=site_a, ae_title="CDSS", host="127.0.0.1", port=free_port(), hold_unmatched=False)
    server = scp.start()
    try:
        assert send(scp.address[1], [dataset(patient_id="NEW-0004")]) == [0xC000]
    finally:
        server.shutdown()
    assert not HeldImage.objects.exists() and scp.counts.refused == 1


def _patient(site: m.Site, mrn: str) -> m.Patient:
    return m.Patient.objects.create(site=site, mrn=mrn, fhir_id=mrn.lower(), family_name="Later")


def _bytes(ds: pydicom.Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _hold(site: m.Site, patient_id: str, **changes: str) -> HeldImage:
    assert held_image_receive(site=site, data=dicom_bytes(patient_id=patient_id, new_instance=True, **changes),
                              calling_ae="CT1")
    return HeldImage.objects.latest("pk")


def test_an_image_the_checks_refuse_when_filing_is_kept_for_an_administrator_who_discards_it(
    site_a: m.Site, media_root: Path, admin_user: User
) -> None:
    held = _hold(site_a, "NEW-0005")
    # meanwhile the same image reaches another patient by an upload
    other = _patient(site_a, "OTHER-1")
    with default_storage.open(str(held.file.name), "rb") as fh:
        copy = pydicom.dcmread(fh)
    copy.PatientID = other.mrn
    imaging_upload(patient=other, files=[UploadFile("copy.dcm", _bytes(copy))])
    _patient(site_a, "NEW-0005")
    filing = held_sweep()
    assert (filing.filed, filing.refused) == (0, 1)
    held.refresh_from_db()
    assert held.status == "refused" and held.detail == "other-patient: this image is already stored for another patient"
    assert held.file and len(_held_files(media_root)) == 1  # kept for the administrator
    assert held_sweep().refused == 0  # not tried again

    assert held_images_discard(ids=[held.pk], reason="the PACS corrected it", user=admin_user) == 1
    held.refresh_from_db()
    assert (held.status, held.detail, held.resolved_by, held.file.name) == ("discarded", "the PACS corrected it",
                                                                            admin_user, "")
    assert _held_files(media_root) == []
    assert AuditEvent.objects.get(target="imaging-held-discard").user == admin_user
    assert held_images_discard(ids=[held.pk], reason="again") == 0  # discarded once


def test_held_images_are_discarded_after_the_holding_period(site_a: m.Site, media_root: Path, settings) -> None:
    settings.CDSS_IMAGING_HOLD_DAYS = 30
    old, young = _hold(site_a, "NEW-0006"), _hold(site_a, "NEW-0007")
    HeldImage.objects.filter(pk=old.pk).update(received_at=timezone.now() - timedelta(days=31))
    assert held_sweep().discarded == 1
    old.refresh_from_db()
    young.refresh_from_db()
    assert old.status == "discarded" and old.detail.startswith("not filed within 30 day(s)")
    assert young.status == "held" and [p.name for p in _held_files(media_root)] == [Path(str(young.file.name)).name]
    # an image sent again after it was discarded is held again
    with pytest.raises(ImagingUploadError):
        held_image_receive(site=site_a, data=b"not a DICOM file")
    assert held_image_receive(site=site_a, data=dicom_bytes(patient_id="NEW-0006", SOPInstanceUID=old.sop_instance_uid))
    assert HeldImage.objects.filter(sop_instance_uid=old.sop_instance_uid).count() == 2


def test_the_schedule_and_the_command_count_without_patient_ids(site_a: m.Site, media_root: Path) -> None:
    assert settings.CELERY_BEAT_SCHEDULE["imaging-sweep"]["task"] == "imaging.sweep"
    _hold(site_a, "NEW-0008")
    _hold(site_a, "NEW-0009")
    _patient(site_a, "NEW-0009")
    out = io.StringIO()
    call_command("held_images", stdout=out)
    assert f"site {site_a.code}: 2 held, the oldest received 0.0 h ago" in out.getvalue()
    out = io.StringIO()
    call_command("held_images", "--sweep", stdout=out)
    text = out.getvalue()
    assert "Sweep: 1 filed, 0 could not be filed, 1 analysis job(s) queued, 0 discarded" in text
    assert f"site {site_a.code}: 1 filed" in text and f"site {site_a.code}: 1 held" in text
    assert "NEW-000" not in text


def _changelist() -> str:
    return reverse("admin:imaging_heldimage_changelist")


def test_the_admin_files_and_discards_with_the_permission_and_audits(
    client, admin_client, admin_user: User, site_a: m.Site, media_root: Path
) -> None:
    waiting, filable = _hold(site_a, "NEW-0010"), _hold(site_a, "NEW-0011")
    patient = _patient(site_a, "NEW-0011")
    listing = admin_client.get(_changelist())
    assert listing.status_code == 200 and "NEW-0010" in listing.content.decode()
    page = admin_client.get(reverse("admin:imaging_heldimage_change", args=[waiting.pk])).content.decode()
    assert waiting.file.name in page
    assert AuditEvent.objects.get(target="admin:heldimage").detail == f"held image {waiting.external_id}"

    response = admin_client.post(_changelist(), {"action": "file_now", "_selected_action": [waiting.pk, filable.pk]},
                                 follow=True)
    assert "1 filed, 0 could not be filed (see their detail), 1 still without a patient" in response.content.decode()
    filable.refresh_from_db()
    assert filable.status == "filed" and filable.patient == patient and filable.resolved_by == admin_user
    assert Job.objects.filter(kind="imaging", patient=patient).count() == 1
    page = admin_client.get(reverse("admin:imaging_heldimage_change", args=[filable.pk])).content.decode()
    assert filable.instance is not None
    assert reverse("imaging-viewer", args=[patient.external_id, filable.instance.external_id]) in page

    # discarding asks for a reason first
    ask = admin_client.post(_changelist(), {"action": "discard", "_selected_action": [waiting.pk]})
    assert ask.status_code == 200 and "Discard 1 held image?" in ask.content.decode()
    assert HeldImage.objects.get(pk=waiting.pk).status == "held"
    done = admin_client.post(_changelist(), {"action": "discard", "_selected_action": [waiting.pk], "apply": "yes",
                                             "reason": "test image from the modality's service engineer"}, follow=True)
    assert "1 held image(s) discarded." in done.content.decode()
    waiting.refresh_from_db()
    assert waiting.status == "discarded" and waiting.detail == "test image from the modality's service engineer"
    assert _held_files(media_root) == []

    # staff who may see held images but not resolve them are offered neither action
    viewer = User.objects.create_user("records", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_heldimage"))
    client.force_login(viewer)
    other = _hold(site_a, "NEW-0012")
    page = client.get(_changelist()).content.decode()
    assert "NEW-0012" in page and 'value="discard"' not in page and 'value="file_now"' not in page
    client.post(_changelist(), {"action": "discard", "_selected_action": [other.pk], "apply": "yes", "reason": "x"})
    assert HeldImage.objects.get(pk=other.pk).status == "held"


def test_an_image_stored_for_its_patient_meanwhile_is_filed_as_that_image_without_a_second_analysis(
    site_a: m.Site, media_root: Path
) -> None:
    held = _hold(site_a, "NEW-0013")
    patient = _patient(site_a, "NEW-0013")
    with default_storage.open(str(held.file.name), "rb") as fh:
        data = fh.read()
    # the sender sent the study again once the patient existed: stored then, and analysed
    [stored] = imaging_upload(patient=patient, files=[UploadFile("again.dcm", data)]).created
    assert Job.objects.filter(kind="imaging").count() == 1
    filing = held_sweep()
    assert (filing.filed, filing.refused, filing.jobs) == (1, 0, 0)
    held.refresh_from_db()
    assert held.status == "filed" and held.instance == stored and _held_files(media_root) == []
    assert ImagingInstance.objects.count() == 1 and Job.objects.filter(kind="imaging").count() == 1
