"""Images received by DICOM C-STORE (imaging.listener): a real pynetdicom Storage SCU sends real
pydicom test files over the network to the listener, in threads of this process and as the
``dicom_listener`` command's own process."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from django.db import connection
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, MRImageStorage, Verification  # type: ignore[attr-defined]

from cdss.models import AuditEvent, Job
from imaging.listener import DicomListener
from imaging.models import ImagingInstance
from patients import models as m
from tests.imaging.conftest import stored_files
from tests.integration.workers import database_url, free_port, wait_until

pytestmark = [
    pytest.mark.skipif(connection.vendor != "postgresql",
                       reason="the listener's threads and process share the test database: needs PostgreSQL (CI sets DATABASE_URL)"),
    pytest.mark.django_db(transaction=True),  # the listener's threads read what the test wrote
]


def dataset(name: str = "CT_small.dcm", *, patient_id: str, study_uid: str | None = None,
            series_uid: str | None = None) -> pydicom.Dataset:
    ds = pydicom.dcmread(str(get_testdata_file(name)))
    ds.PatientID = patient_id
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    if study_uid:
        ds.StudyInstanceUID = study_uid
    if series_uid:
        ds.SeriesInstanceUID = series_uid
    return ds


def send(port: int, datasets: list[pydicom.Dataset], *, calling: str = "MODALITY", called: str = "CDSS") -> list[int]:
    """The statuses of each C-STORE, sent in one association (raises if it is not accepted)."""
    ae = AE(ae_title=calling)
    for sop_class in sorted({CTImageStorage, MRImageStorage} | {ds.SOPClassUID for ds in datasets}):
        ae.add_requested_context(sop_class)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    if not assoc.is_established:
        raise ConnectionError("association not accepted")
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


def _listening(site: m.Site, **options: object) -> Iterator[DicomListener]:
    scp = DicomListener(site=site, ae_title="CDSS", allowed_callers=["MODALITY"], host="127.0.0.1",
                        port=free_port(), **options)  # type: ignore[arg-type]
    server = scp.start()
    try:
        yield scp
    finally:
        server.shutdown()


@pytest.fixture
def listener(site_a: m.Site) -> Iterator[DicomListener]:
    yield from _listening(site_a)


@pytest.fixture
def refusing_listener(site_a: m.Site) -> Iterator[DicomListener]:
    """One that refuses images of unknown patients instead of holding them (tests/imaging/test_held.py)."""
    yield from _listening(site_a, hold_unmatched=False)


def test_a_study_sent_image_by_image_is_stored_and_analysed_once_per_association(
    listener: DicomListener, patient_a: m.Patient, media_root: Path
) -> None:
    study, series = generate_uid(), generate_uid()
    sent = [dataset(patient_id=patient_a.mrn, study_uid=study, series_uid=series) for _ in range(3)]
    assert send(listener.address[1], sent) == [0, 0, 0]
    stored = ImagingInstance.objects.filter(patient=patient_a).order_by("pk")
    assert [i.sop_instance_uid for i in stored] == [ds.SOPInstanceUID for ds in sent]
    assert {i.series.study.study_instance_uid for i in stored} == {study}
    # the file kept is what was sent, byte for byte of its data set
    with stored[0].file.open("rb") as fh:
        kept = pydicom.dcmread(io.BytesIO(fh.read()))
    assert kept.PixelData == sent[0].PixelData and kept.SOPInstanceUID == sent[0].SOPInstanceUID
    # queued when the association ends (released: the sender has its answers by then)
    wait_until(lambda: listener.counts.jobs == 1, timeout=10, what="the analysis to be queued")
    [job] = Job.objects.filter(kind="imaging")
    assert sorted(job.params["instance_ids"]) == sorted(i.pk for i in stored) and job.patient_id == patient_a.pk
    assert AuditEvent.objects.filter(target="imaging-dicom-listener", patient=patient_a).count() == 3

    # sent again: already stored, a success, nothing new, no job
    assert send(listener.address[1], sent[:1]) == [0]
    assert ImagingInstance.objects.filter(patient=patient_a).count() == 3
    assert listener.counts.stored == 3 and listener.counts.already_stored == 1 and listener.counts.jobs == 1
    assert Job.objects.filter(kind="imaging").count() == 1


def test_what_cannot_be_stored_is_refused_with_its_reason_and_nothing_is_kept(
    refusing_listener: DicomListener, patient_a: m.Patient, patient_b: m.Patient, media_root: Path
) -> None:
    listener = refusing_listener
    from pynetdicom import AE as Scu

    unknown = dataset(patient_id="NO-SUCH-MRN")
    no_id = dataset(patient_id="")
    other_site = dataset(patient_id=patient_b.mrn)  # patient_b is another site's
    ae = Scu(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", listener.address[1], ae_title="CDSS")
    statuses = [assoc.send_c_store(ds) for ds in (unknown, no_id, other_site)]
    assoc.release()
    assert [int(s.Status) for s in statuses] == [0xC000] * 3
    assert "no patient at site" in statuses[0].ErrorComment and patient_a.mrn not in statuses[0].ErrorComment
    assert "no PatientID" in statuses[1].ErrorComment
    assert "no patient at site" in statuses[2].ErrorComment
    # an image already stored for another patient of the site: the upload's own check, its reason
    mine = dataset(patient_id=patient_a.mrn)
    assert send(listener.address[1], [mine]) == [0]
    theirs = m.Patient.objects.create(site=patient_a.site, mrn="A-OTHER", family_name="Other")
    clash = pydicom.dcmread(io.BytesIO(_bytes(mine)))
    clash.PatientID = theirs.mrn
    ae = Scu(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", listener.address[1], ae_title="CDSS")
    status = assoc.send_c_store(clash)
    assoc.release()
    assert int(status.Status) == 0xC000 and "another patient" in status.ErrorComment
    assert ImagingInstance.objects.count() == 1 and len(stored_files(media_root)) == 3  # original, preview, thumbnail
    assert listener.counts.refused == 4


def test_an_image_over_the_uploads_byte_limit_is_refused_by_name(
    listener: DicomListener, patient_a: m.Patient, monkeypatch
) -> None:
    from imaging import services

    monkeypatch.setattr(services, "MAX_TOTAL_BYTES", 10_000)  # CT_small is 39 KB
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", listener.address[1], ae_title="CDSS")
    status = assoc.send_c_store(dataset(patient_id=patient_a.mrn))
    assoc.release()
    assert int(status.Status) == 0xC000 and status.ErrorComment == "larger than 10000 bytes, the limit"
    assert ImagingInstance.objects.count() == 0


def _bytes(ds: pydicom.Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_only_allowed_callers_calling_its_title_are_accepted_and_echo_answers(listener: DicomListener) -> None:
    with pytest.raises(ConnectionError):
        send(listener.address[1], [], calling="STRANGER")
    with pytest.raises(ConnectionError):
        send(listener.address[1], [], called="NOTCDSS")
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", listener.address[1], ae_title="CDSS")
    assert assoc.is_established and int(assoc.send_c_echo().Status) == 0
    assoc.release()


def test_the_command_listens_until_stopped_and_says_what_it_did(patient_a: m.Patient, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "DJANGO_MEDIA_ROOT": str(tmp_path / "media"),
           "DATABASE_URL": database_url(connection.settings_dict)}
    env.pop("CELERY_BROKER_URL", None)  # the jobs are rows; nothing needs to run them here
    proc = subprocess.Popen([sys.executable, "manage.py", "dicom_listener", "--port", str(port), "--host", "127.0.0.1",
                             "--site", patient_a.site.code, "--ae-title", "CDSS"],
                            cwd=Path(__file__).resolve().parents[2], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        assert "Listening as CDSS" in (proc.stdout.readline() if proc.stdout else "")
        assert send(port, [dataset("MR_small.dcm", patient_id=patient_a.mrn)], calling="ANYONE") == [0]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert ("1 association(s), 1 image(s) stored, 0 already stored, 0 held for a patient not in the record yet, "
            "0 refused, 1 job(s)") in out
    instance = ImagingInstance.objects.get(patient=patient_a)
    assert instance.modality == "MR"
    assert (tmp_path / "media" / str(instance.file.name)).is_file()



@pytest.mark.parametrize(("args", "problem"), [
    (["--ae-title", "A\\B"], "The AE title must be 1-16 characters"),
    (["--ae-title", "ANAETITLEOFSEVENTEEN"], "The AE title must be 1-16 characters"),
    (["--allow", "PACS,TOO_LONG_AE_TITLE_X"], "An allowed AE title must be 1-16 characters"),
    (["--site", "no-such-site"], "No site with code 'no-such-site'"),
    (["--port", "70000"], "The port must be between 1 and 65535"),
])
def test_the_command_names_a_wrong_option_before_it_listens(args: list[str], problem: str) -> None:
    from django.core.management import call_command
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match=problem):
        call_command("dicom_listener", *args)
