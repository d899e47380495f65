"""Storing uploads: all or nothing, idempotent, the patient check, storage clean-up, jobs, audit;
the API and the register_dicom command."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from django.core.files.storage import default_storage
from django.core.management import CommandError, call_command
from django.urls import reverse
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from cdss.models import AuditEvent, Job
from imaging.models import ImagingInstance, ImagingSeries, ImagingStudy
from imaging.services import ImagingUploadError, UploadFile, imaging_upload
from patients import models as m
from tests.factories import PatientFactory, UserFactory
from tests.imaging.conftest import dicom_bytes, png_bytes, stored_files

pytestmark = pytest.mark.django_db


def raw(name: str) -> bytes:
    return Path(get_testdata_file(name)).read_bytes()  # type: ignore[arg-type]


def counts() -> tuple[int, int, int]:
    return ImagingStudy.objects.count(), ImagingSeries.objects.count(), ImagingInstance.objects.count()


def png(value: int = 128, size: tuple[int, int] = (40, 30)) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full(size, value, dtype=np.uint8)).save(out, format="PNG")
    return out.getvalue()


def test_a_dicom_file_is_stored_with_its_preview_and_queued_for_inference(patient_a, clinician_a, media_root) -> None:
    data = dicom_bytes(patient_id=patient_a.mrn)
    result = imaging_upload(patient=patient_a, files=[UploadFile("ct.dcm", data)], user=clinician_a)

    assert counts() == (1, 1, 1)
    instance = result.created[0]
    assert (instance.modality, instance.format, instance.rows, instance.columns) == ("CT", "dicom", 128, 128)
    assert instance.series.study.patient == patient_a and instance.header_patient_id_present
    assert instance.presets[0]["name"] == "Soft tissue (W 400 L 40)"
    with default_storage.open(str(instance.file.name), "rb") as fh:
        assert fh.read() == data
    with default_storage.open(str(instance.preview.name), "rb") as fh:
        assert Image.open(fh).size == (128, 128)
    # no model reads a CT: no analysis copy (it would double a CT series' storage for nothing)
    assert instance.analysis.name == ""
    assert {p.name for p in stored_files(media_root)} == {"original.dcm", "preview.png", "thumbnail.png"}
    assert str(instance.file.name).startswith(f"imaging/{instance.external_id.hex}/")  # no identifier in the path
    assert patient_a.mrn not in " ".join(str(p) for p in stored_files(media_root))
    job = Job.objects.get(kind="imaging")
    assert job.patient == patient_a and job.params == {"instance_ids": [instance.pk]} and job.queue == "imaging"
    audit = AuditEvent.objects.get(target="imaging-upload")
    assert audit.patient == patient_a and audit.user == clinician_a and audit.action == "create"


def test_uploading_the_same_instance_again_stores_nothing_new(patient_a, media_root) -> None:
    data = dicom_bytes(patient_id=patient_a.mrn)
    imaging_upload(patient=patient_a, files=[UploadFile("ct.dcm", data)])
    files_before = stored_files(media_root)
    again = imaging_upload(patient=patient_a, files=[UploadFile("ct-again.dcm", data)])
    assert again.created == [] and again.already_stored == ["ct-again.dcm"] and again.job_ids == []
    assert counts() == (1, 1, 1) and Job.objects.count() == 1
    assert stored_files(media_root) == files_before


def test_a_multi_file_study_and_a_zip_become_one_study_with_its_series(patient_a) -> None:
    study, series = generate_uid(), generate_uid()
    files = [dicom_bytes(patient_id=patient_a.mrn, new_instance=True, study_uid=study, series_uid=series,
                         InstanceNumber=n) for n in (1, 2, 3)]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("study/IM2", files[1])
        zf.writestr("study/IM3", files[2])
        zf.writestr("DICOMDIR", raw("DICOMDIR"))
        zf.writestr("__MACOSX/study/._IM2", b"resource fork")
    result = imaging_upload(patient=patient_a, files=[UploadFile("IM1.dcm", files[0]),
                                                      UploadFile("rest.zip", archive.getvalue())])
    assert counts() == (1, 1, 3)
    assert sorted(i.instance_number or 0 for i in result.created) == [1, 2, 3]
    assert {name for name, _ in result.skipped} == {"rest.zip/DICOMDIR", "rest.zip/__MACOSX/study/._IM2"}
    assert Job.objects.get(kind="imaging").params["instance_ids"] == sorted(i.pk for i in result.created)


def test_one_bad_file_refuses_the_whole_batch_and_names_it(patient_a, media_root) -> None:
    good = dicom_bytes(patient_id=patient_a.mrn)
    with pytest.raises(ImagingUploadError) as info:
        imaging_upload(patient=patient_a, files=[
            UploadFile("good.dcm", good),
            UploadFile("short.dcm", raw("MR_truncated.dcm")),
            UploadFile("lossless.dcm", raw("JPEG-LL.dcm")),  # JPEG lossless (process 14): no decoder here
            UploadFile("report.dcm", raw("reportsi.dcm")),
            UploadFile("notes.txt", b"hello"),
        ])
    problems = {p.file: p.code for p in info.value.problems}
    assert problems == {"short.dcm": "truncated", "lossless.dcm": "unsupported", "report.dcm": "not-image",
                        "notes.txt": "not-image"}
    assert counts() == (0, 0, 0) and Job.objects.count() == 0 and AuditEvent.objects.count() == 0
    assert stored_files(media_root) == []


def test_the_dicom_patient_id_must_be_the_patients_mrn(patient_a) -> None:
    other = dicom_bytes(patient_id="SOMEONE-ELSE")
    with pytest.raises(ImagingUploadError) as info:
        imaging_upload(patient=patient_a, files=[UploadFile("ct.dcm", other)])
    [problem] = info.value.problems
    assert problem.code == "patient-mismatch" and "SOMEONE-ELSE" not in problem.message
    assert patient_a.mrn not in problem.message
    assert counts() == (0, 0, 0)


def test_a_file_without_patient_id_is_filed_under_the_chosen_patient_and_marked(patient_a) -> None:
    result = imaging_upload(patient=patient_a, files=[UploadFile("anon.dcm", dicom_bytes(patient_id=""))])
    assert result.created[0].header_patient_id_present is False


def test_an_instance_stored_for_another_patient_refuses_the_upload(site_a, patient_a) -> None:
    twin = PatientFactory.create(site=site_a, mrn="TWIN")
    data = dicom_bytes(patient_id="")
    imaging_upload(patient=twin, files=[UploadFile("ct.dcm", data)])
    with pytest.raises(ImagingUploadError) as info:
        imaging_upload(patient=patient_a, files=[UploadFile("ct.dcm", data)])
    assert info.value.problems[0].code == "other-patient"
    assert ImagingInstance.objects.filter(patient=patient_a).count() == 0


def test_png_and_jpeg_get_the_modality_and_body_part_the_uploader_gives(patient_a) -> None:
    result = imaging_upload(patient=patient_a, files=[UploadFile("a.png", png(10)), UploadFile("b.png", png(200))],
                            modality="cr", body_part="chest")
    assert counts() == (1, 1, 2)
    assert {(i.format, i.modality, i.body_part) for i in result.created} == {("png", "CR", "CHEST")}
    assert not any(i.header_patient_id_present for i in result.created)
    again = imaging_upload(patient=patient_a, files=[UploadFile("a.png", png(10)), UploadFile("b.png", png(200))],
                           modality="cr", body_part="chest")
    assert again.created == [] and counts() == (1, 1, 2)


def test_files_written_before_a_failure_are_removed_from_storage(patient_a, media_root, monkeypatch) -> None:
    import cdss.jobs.runner

    def broken(**kwargs: object) -> None:
        raise RuntimeError("queue unavailable")

    monkeypatch.setattr(cdss.jobs.runner, "job_enqueue", broken)
    with pytest.raises(RuntimeError):
        imaging_upload(patient=patient_a, files=[UploadFile("ct.dcm", dicom_bytes(patient_id=patient_a.mrn))])
    assert counts() == (0, 0, 0) and stored_files(media_root) == []


def test_a_corrupt_zip_is_refused(patient_a) -> None:
    with pytest.raises(ImagingUploadError) as info:
        imaging_upload(patient=patient_a, files=[UploadFile("study.zip", b"PK\x03\x04 broken")])
    assert info.value.problems[0].as_dict() == {"file": "study.zip", "code": "corrupt",
                                                "message": "not a readable zip archive"}


# --- API --------------------------------------------------------------------------------------


def api_post(client, patient: m.Patient, *files: tuple[str, bytes], **extra: str):
    from django.core.files.uploadedfile import SimpleUploadedFile

    payload: dict[str, object] = {"patient": str(patient.external_id),
                                  "files": [SimpleUploadedFile(name, data) for name, data in files], **extra}
    return client.post(reverse("api-imaging-upload"), payload)


def test_the_api_stores_an_upload_and_answers_201(client_a, patient_a) -> None:
    response = api_post(client_a, patient_a, ("ct.dcm", dicom_bytes(patient_id=patient_a.mrn)))
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["patient"] == str(patient_a.external_id) and len(body["created"]) == 1 and len(body["jobs"]) == 1
    assert body["created"][0]["modality"] == "CT"
    assert AuditEvent.objects.filter(target="imaging-api", patient=patient_a).count() == 1
    again = api_post(client_a, patient_a, ("ct.dcm", dicom_bytes(patient_id=patient_a.mrn)))
    assert again.status_code == 200 and again.json()["already_stored"] == ["ct.dcm"]


def test_the_api_names_every_refused_file_in_the_error_shape(client_a, patient_a) -> None:
    response = api_post(client_a, patient_a, ("ct.dcm", dicom_bytes(patient_id=patient_a.mrn)),
                        ("bad.dcm", raw("MR_truncated.dcm")))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_upload" and error["details"] == [
        {"file": "bad.dcm", "code": "truncated",
         "message": "the pixel data is shorter than the image's rows, columns and frames require (truncated)"}]
    assert counts() == (0, 0, 0)


def test_the_api_answers_404_for_another_sites_patient_and_403_without_the_right(
    client_a, patient_b, patient_a, client
) -> None:
    assert api_post(client_a, patient_b, ("ct.dcm", dicom_bytes(patient_id=patient_b.mrn))).status_code == 404
    assert api_post(client_a, patient_a).status_code == 400  # no files
    client.force_login(UserFactory(username="no-group"))
    assert api_post(client, patient_a, ("ct.dcm", dicom_bytes(patient_id=patient_a.mrn))).status_code == 403
    assert counts() == (0, 0, 0)


# --- register_dicom ---------------------------------------------------------------------------


def test_register_dicom_matches_patients_by_patient_id_and_summarises(site_a, tmp_path) -> None:
    ann = PatientFactory.create(site=site_a, mrn="MRN-ANN")
    bob = PatientFactory.create(site=site_a, mrn="MRN-BOB")
    folder = tmp_path / "incoming"
    (folder / "a").mkdir(parents=True)
    (folder / "a" / "1.dcm").write_bytes(dicom_bytes(patient_id="MRN-ANN", new_instance=True))
    (folder / "a" / "2.dcm").write_bytes(dicom_bytes(patient_id="MRN-ANN", new_instance=True))
    (folder / "b.dcm").write_bytes(dicom_bytes("MR_small.dcm", patient_id="MRN-BOB"))
    (folder / "unknown.dcm").write_bytes(dicom_bytes(patient_id="MRN-NOBODY", new_instance=True))
    (folder / "anon.dcm").write_bytes(dicom_bytes(patient_id="", new_instance=True))
    (folder / "readme.txt").write_text("not an image")
    (folder / "short.dcm").write_bytes(dicom_bytes("MR_small.dcm", patient_id="MRN-BOB", new_instance=True)[:-500])

    out = io.StringIO()
    with pytest.raises(CommandError, match="1 file"):
        call_command("register_dicom", str(folder), "--site", site_a.code, "--json", stdout=out)
    summary = json.loads(out.getvalue())
    assert (summary["files"], summary["created"], summary["patients"], summary["jobs"]) == (7, 3, 2, 2)
    assert {Path(s["file"]).name for s in summary["skipped"]} == {"unknown.dcm", "anon.dcm", "readme.txt"}
    assert [Path(f["file"]).name for f in summary["failed"]] == ["short.dcm"]
    assert ImagingInstance.objects.filter(patient=ann).count() == 2
    assert ImagingInstance.objects.filter(patient=bob).count() == 1

    out = io.StringIO()
    (folder / "short.dcm").unlink()
    call_command("register_dicom", str(folder), "--site", site_a.code, stdout=out)
    assert "0 new image(s)" in out.getvalue() and "3 already stored" in out.getvalue()
    assert ImagingInstance.objects.count() == 3


def test_images_a_model_reads_are_stored_with_their_analysis_copy(patient_a, media_root) -> None:
    cr = imaging_upload(patient=patient_a, files=[
        UploadFile("cr.dcm", dicom_bytes("RG1_UNCR.dcm", patient_id=patient_a.mrn))]).created[0]
    with default_storage.open(str(cr.analysis.name), "rb") as fh:  # what the imaging job reads
        copy = np.load(fh, allow_pickle=False)
    assert (copy.shape, copy.dtype) == ((512, 482), np.uint16)  # 1,955 x 1,841 at most 512 a side
    assert str(cr.analysis.name) == f"imaging/{cr.external_id.hex}/analysis.npy"
    big = np.tile(np.arange(256, dtype=np.uint8), (600, 3))  # 768 x 600 PNGs, two different ones
    as_chest, as_ct = (imaging_upload(patient=patient_a, files=[UploadFile("big.png", png_bytes(big + k))],
                                      modality=modality, body_part=part).created[0]
                       for k, (modality, part) in enumerate((("DX", "CHEST"), ("CT", "HEAD"))))
    assert as_chest.analysis.name and not as_ct.analysis.name  # the upload's modality decides



def test_images_stored_without_their_analysis_queued_are_queued_by_the_sweep_once(patient_a, media_root) -> None:
    """A listener or a STOW-RS request stores image by image and queues the analysis at its end; one
    that dies first leaves the images unqueued, and the schedule's sweep queues them."""
    from datetime import timedelta

    from django.utils import timezone

    from imaging.models import ENTERED_IN_ERROR
    from imaging.services import analysis_backlog_queue, images_prepare, images_store, imaging_jobs_queue
    from imaging.tasks import imaging_sweep_task

    files = [UploadFile(f"{i}.dcm", dicom_bytes(patient_id=patient_a.mrn, new_instance=True)) for i in range(3)]
    prepared, problems = images_prepare(files, patient=patient_a)
    assert not problems
    created = images_store(patient=patient_a, images=prepared, queue_jobs=False).created
    assert [i.analysis_queued_at for i in created] == [None] * 3 and not Job.objects.exists()
    assert analysis_backlog_queue() == 0  # too young: its receiver may still be at work
    ImagingInstance.objects.update(created_at=timezone.now() - timedelta(minutes=11))
    ImagingInstance.objects.filter(pk=created[2].pk).update(status=ENTERED_IN_ERROR)
    imaging_sweep_task()
    [job] = Job.objects.filter(kind="imaging")
    assert job.params == {"instance_ids": sorted(i.pk for i in created[:2])} and job.patient == patient_a
    assert all(i.analysis_queued_at for i in ImagingInstance.objects.filter(pk__in=job.params["instance_ids"]))
    assert analysis_backlog_queue(older_than=timedelta(0)) == 0
    # the receiver's own queuing at its end (after the sweep) leaves out what the sweep queued
    assert imaging_jobs_queue(patient=patient_a, instance_ids=[i.pk for i in created[:2]]) == []
    assert Job.objects.filter(kind="imaging").count() == 1
    # an upload queues (and marks) in its own transaction
    [uploaded] = imaging_upload(patient=patient_a, files=[UploadFile("u.dcm", dicom_bytes(
        patient_id=patient_a.mrn, new_instance=True))]).created
    uploaded.refresh_from_db()
    assert uploaded.analysis_queued_at is not None and Job.objects.filter(kind="imaging").count() == 2
