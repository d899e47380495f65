"""Uploaded images in an S3-compatible bucket (CDSS_S3_BUCKET): the settings built from the
environment, and the whole path (upload, preview, the imaging job's heat map, a refused upload)
against a local S3 server speaking the S3 protocol over HTTP (moto's server, started per test on a
free port; boto3 and django-storages as production runs them)."""

from __future__ import annotations

import io
from collections.abc import Iterator

import boto3
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.files.storage import storages
from django.urls import reverse
from PIL import Image
from storages.backends.s3 import S3Storage

from cdss.jobs.runner import job_run
from cdss.models import Job
from cdss.storage import FILESYSTEM, S3, media_storage
from imaging.ml.cpuwork import overlay_dims
from imaging.models import ImagingFinding
from imaging.selectors import heatmap_png
from imaging.services import ImagingUploadError, UploadFile, imaging_upload
from tests.imaging.conftest import chest_png, dicom_bytes, stored_files

BUCKET = "cdss-images"


def test_without_a_bucket_files_stay_in_the_media_folder_and_a_bucket_needs_sane_values() -> None:
    assert media_storage({}) == {"BACKEND": FILESYSTEM}
    assert media_storage({"CDSS_S3_BUCKET": "  "}) == {"BACKEND": FILESYSTEM}
    built = media_storage({"CDSS_S3_BUCKET": "images", "CDSS_S3_ENDPOINT_URL": "https://s3.example.org",
                           "CDSS_S3_REGION": "eu-west-1", "CDSS_S3_PREFIX": "/cdss/", "CDSS_S3_ADDRESSING_STYLE": "path"})
    assert built == {"BACKEND": S3, "OPTIONS": {
        "bucket_name": "images", "default_acl": None, "querystring_auth": True, "file_overwrite": False,
        "endpoint_url": "https://s3.example.org", "region_name": "eu-west-1", "location": "cdss",
        "addressing_style": "path"}}
    for environ, variable in (({"CDSS_S3_BUCKET": "images/cdss"}, "CDSS_S3_BUCKET"),
                              ({"CDSS_S3_BUCKET": "images", "CDSS_S3_ENDPOINT_URL": "s3.example.org"},
                               "CDSS_S3_ENDPOINT_URL"),
                              ({"CDSS_S3_BUCKET": "images", "CDSS_S3_ADDRESSING_STYLE": "dns"},
                               "CDSS_S3_ADDRESSING_STYLE")):
        with pytest.raises(ImproperlyConfigured, match=variable):
            media_storage(environ)


@pytest.fixture
def s3_bucket(settings, monkeypatch) -> Iterator[object]:
    """A bucket on a local S3 server, made the default storage (under the prefix ``cdss``)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for name, value in (("AWS_ACCESS_KEY_ID", "cdss-test"), ("AWS_SECRET_ACCESS_KEY", "cdss-test-secret"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    settings.STORAGES = {**settings.STORAGES, "default": media_storage({
        "CDSS_S3_BUCKET": BUCKET, "CDSS_S3_ENDPOINT_URL": endpoint, "CDSS_S3_PREFIX": "cdss",
        "CDSS_S3_ADDRESSING_STYLE": "path", "CDSS_S3_REGION": "us-east-1"})}
    try:
        yield client
    finally:
        server.stop()


def objects(client) -> dict[str, bytes]:
    listed = client.list_objects_v2(Bucket=BUCKET).get("Contents", [])
    return {o["Key"]: client.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read() for o in listed}


@pytest.mark.django_db
def test_uploads_previews_and_refusals_go_to_the_bucket_and_nothing_to_the_media_folder(
    s3_bucket, media_root, patient_a, client_a
) -> None:
    assert isinstance(storages["default"], S3Storage)
    data = dicom_bytes(patient_id=patient_a.mrn)
    result = imaging_upload(patient=patient_a, files=[UploadFile("ct.dcm", data)])
    instance = result.created[0]
    stored = objects(s3_bucket)
    assert stored[f"cdss/{instance.file.name}"] == data  # the original, byte for byte, under the prefix
    assert Image.open(io.BytesIO(stored[f"cdss/{instance.preview.name}"])).size == (128, 128)
    assert f"cdss/{instance.thumbnail.name}" in stored
    assert patient_a.mrn not in " ".join(stored)  # no identifier in any key
    assert stored_files(media_root) == []

    # the preview is streamed from the bucket by the access-checked view
    response = client_a.get(reverse("imaging-preview", args=[patient_a.external_id, instance.external_id]))
    assert response.status_code == 200
    assert response.content == stored[f"cdss/{instance.preview.name}"]
    window = client_a.get(reverse("imaging-preview", args=[patient_a.external_id, instance.external_id]) + "?preset=0")
    assert window.status_code == 200 and Image.open(io.BytesIO(window.content)).size == (128, 128)  # from the file

    # another patient's header: refused, and nothing written to the bucket
    before = set(objects(s3_bucket))
    with pytest.raises(ImagingUploadError):
        imaging_upload(patient=patient_a, files=[UploadFile("other.dcm", dicom_bytes(patient_id="NOT-THIS-ONE",
                                                                                     new_instance=True))])
    assert set(objects(s3_bucket)) == before


@pytest.mark.django_db
@pytest.mark.needs_data
def test_the_imaging_job_reads_from_the_bucket_and_writes_its_heat_map_packs_there(
    s3_bucket, media_root, pneumonia_model, patient_a
) -> None:
    result = imaging_upload(patient=patient_a, files=[UploadFile("xray.png", chest_png()),
                                                     UploadFile("xray-2.png", chest_png(1))],
                            modality="DX", body_part="chest")
    first, instance = result.created
    job = Job.objects.get(kind="imaging")
    assert job_run(job.pk) == "succeeded"
    finding = ImagingFinding.objects.get(instance=instance)
    # the job gathered both PNGs into one pack: one object written, the second PNG after the first
    other = ImagingFinding.objects.get(instance=first)
    assert other.heatmap.name == finding.heatmap.name and finding.heatmap_offset == other.heatmap_length
    # a radiograph's analysis copy goes to the bucket and the job reads it there (its original is gone)
    cr = imaging_upload(patient=patient_a, files=[
        UploadFile("cr.dcm", dicom_bytes("RG1_UNCR.dcm", patient_id=patient_a.mrn))]).created[0]
    assert f"cdss/{cr.analysis.name}" in objects(s3_bucket)
    from django.core.files.storage import default_storage

    default_storage.delete(str(cr.file.name))
    assert job_run(Job.objects.filter(kind="imaging").latest("pk").pk) == "succeeded"
    assert ImagingFinding.objects.filter(instance=cr).count() == 1
    stored = objects(s3_bucket)
    start = finding.heatmap_offset
    assert str(finding.heatmap.name).endswith(".pack") and start is not None and finding.heatmap_length
    png = stored[f"cdss/{finding.heatmap.name}"][start:start + finding.heatmap_length]
    gets: list[dict] = []  # what the storage asks the bucket for: the PNG's bytes alone, not the pack
    client = default_storage.connection.meta.client  # type: ignore[attr-defined]
    client.meta.events.register("before-parameter-build.s3.GetObject", lambda params, **_: gets.append(dict(params)))
    assert heatmap_png(finding) == png  # read back through the storage API: its place in the pack's object
    assert [g.get("Range") for g in gets] == [f"bytes={start}-{start + finding.heatmap_length - 1}"]
    size = len(stored[f"cdss/{finding.heatmap.name}"])
    for offset, length, error in ((size - 10, 20, ValueError), (size + 10, 20, OSError)):  # cut short; past the end
        with pytest.raises(error):
            heatmap_png(ImagingFinding(heatmap=finding.heatmap.name, heatmap_offset=offset, heatmap_length=length))
    heat = Image.open(io.BytesIO(png))
    assert heat.format == "PNG" and heat.size == overlay_dims(instance.preview_width, instance.preview_height)
    assert stored_files(media_root) == []

    # the orphan sweep works through the storage API on a bucket too: the finding's file is named,
    # a new unnamed one is young, and with no cut-off left nothing old is unnamed
    import uuid
    from datetime import timedelta

    from django.core.files.base import ContentFile

    from imaging.jobs import heatmap_pack_name
    from imaging.services import heatmap_orphans_sweep

    stray = default_storage.save(heatmap_pack_name(uuid.uuid4()), ContentFile(b"stray"))
    sweep = heatmap_orphans_sweep(older_than=timedelta(hours=1), delete=True)
    assert (sweep.files, sweep.young, sweep.removed) == (0, 1, 0)
    sweep = heatmap_orphans_sweep(older_than=timedelta(seconds=-60), delete=True)  # every unnamed file is old
    assert (sweep.files, sweep.removed, sweep.bytes) == (1, 1, 5)
    assert f"cdss/{stray}" not in objects(s3_bucket) and f"cdss/{finding.heatmap.name}" in objects(s3_bucket)
