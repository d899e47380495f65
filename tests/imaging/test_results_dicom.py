"""A finding's result as a DICOM Secondary Capture (imaging.results_dicom / imaging.results): what
the object holds, its pixels, its UIDs; the viewer's download and the REST API's files."""

from __future__ import annotations

import datetime as dt
import io

import numpy as np
import pydicom
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.test import Client
from django.urls import reverse
from PIL import Image
from pydicom.uid import UID, SecondaryCaptureImageStorage

from cdss.models import AuditEvent, ModelVersion
from imaging.ml.cpuwork import heatmap_overlay_png
from imaging.models import ENTERED_IN_ERROR, ImagingFinding
from imaging.results import finding_result_dicom
from imaging.results_dicom import CAPTION_NOTICE, ResultFacts, caption_lines, composite, result_uids, secondary_capture
from imaging.services import UploadFile, imaging_upload
from patients import models as m
from tests.api.conftest import token_client
from tests.imaging.test_pages import finding_for, model_version, upload

NOW = dt.datetime(2026, 11, 27, 14, 5, 9)


def facts(**changes: object) -> ResultFacts:
    base = dict(
        patient_id="MRN-1", family_name="Ünal", given_names="Zoë Anne", birth_date=dt.date(1950, 3, 4), sex="female",
        study_instance_uid="1.2.3.4", study_date=dt.date(2026, 11, 20), accession_number="ACC1",
        study_description="Chest PA", modality="CR", sop_class_uid="1.2.840.10008.5.1.4.1.1.1",
        sop_instance_uid="1.2.3.4.5", frame_number=None, finding_id="5f0e1c1e-0000-4000-8000-000000000001",
        label="pneumonia", probability=0.873, threshold=0.5, positive=True, model_name="pneumonia",
        model_version="2026.11.25-1", architecture="resnet18", auc=0.951, auc_split="test",
        created_at=dt.datetime(2026, 11, 21, 8, 30, 0),
    )
    base.update(changes)
    return ResultFacts(**base)  # type: ignore[arg-type]


def hot_top_left(width: int, height: int) -> bytes:
    """A heat map overlay (the job's own encoder) hot in the top-left quarter, cold elsewhere."""
    heat = np.zeros((height, width), dtype=np.float32)
    heat[: height // 2, : width // 2] = 1.0
    return heatmap_overlay_png(heat, width=width, height=height)


def grey_frame(width: int = 200, height: int = 160) -> Image.Image:
    return Image.fromarray(np.full((height, width), 90, dtype=np.uint8), "L")


def read(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def test_the_secondary_capture_holds_the_patient_the_study_and_what_it_is(monkeypatch) -> None:
    # every value written must suit its VR (lengths, characters): pydicom raises otherwise
    monkeypatch.setattr(pydicom.config.settings, "writing_validation_mode", pydicom.config.RAISE)
    ds = read(secondary_capture(facts(), grey_frame(), hot_top_left(64, 51), now=NOW))
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.SOPClassUID == SecondaryCaptureImageStorage == ds.file_meta.MediaStorageSOPClassUID
    assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
    assert (str(ds.PatientName), ds.PatientID, ds.PatientBirthDate, ds.PatientSex) == (
        "Ünal^Zoë Anne", "MRN-1", "19500304", "F")  # UTF-8 (ISO_IR 192) names read back as written
    assert (ds.StudyInstanceUID, ds.StudyDate, ds.AccessionNumber, ds.StudyDescription) == (
        "1.2.3.4", "20261120", "ACC1", "Chest PA")
    assert ds.Modality == "CR" and ds.ConversionType == "WSD" and ds.BurnedInAnnotation == "YES"
    assert list(ds.ImageType) == ["DERIVED", "SECONDARY"]
    assert ds.SeriesInstanceUID != ds.StudyInstanceUID and ds.SeriesNumber == 9000
    assert ds.SeriesDescription == "AI pneumonia 2026.11.25-1"
    assert (ds.Manufacturer, ds.ManufacturerModelName, ds.SoftwareVersions) == ("CDSS", "pneumonia", "2026.11.25-1")
    assert (ds.ContentDate, ds.ContentTime) == ("20261121", "083000")  # when the model read the image
    [source] = ds.SourceImageSequence
    assert (source.ReferencedSOPClassUID, source.ReferencedSOPInstanceUID) == ("1.2.840.10008.5.1.4.1.1.1", "1.2.3.4.5")
    assert "ReferencedFrameNumber" not in source
    assert "probability 0.873 (threshold 0.500)" in ds.DerivationDescription
    assert ds.ImageComments.startswith(CAPTION_NOTICE) and "FLAGGED" in ds.ImageComments
    assert "test AUC 0.951" in ds.ImageComments
    assert UID(ds.SOPInstanceUID).is_valid and UID(ds.SeriesInstanceUID).is_valid


def test_a_multi_frame_source_names_its_frame_and_a_bitmap_upload_references_nothing() -> None:
    ds = read(secondary_capture(facts(frame_number=6), grey_frame(), hot_top_left(64, 51), now=NOW))
    assert ds.SourceImageSequence[0].ReferencedFrameNumber == 6
    ds = read(secondary_capture(facts(sop_class_uid="", modality="", sex="unknown", birth_date=None,
                                      study_date=None, auc=None), grey_frame(), hot_top_left(64, 51), now=NOW))
    assert "SourceImageSequence" not in ds and ds.Modality == "OT"
    assert ds.PatientSex == "" and ds.PatientBirthDate == "" and ds.StudyDate == ""
    assert "no measured AUC" in ds.ImageComments


def test_the_pixels_are_the_frame_with_the_heat_map_over_its_hot_part_and_the_caption_below() -> None:
    frame = grey_frame(520, 400)
    ds = read(secondary_capture(facts(), frame, hot_top_left(64, 49), now=NOW))
    assert (ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.BitsAllocated) == (3, "RGB", 8)
    pixels = ds.pixel_array
    assert ds.Columns == 520 and ds.Rows > 400 and pixels.shape == (ds.Rows, 520, 3)
    image = pixels[:400]
    # cold: the frame as it is (grey 90 in every channel); hot: the colour map's yellow blended in
    assert (image[300:, 300:] == 90).all()
    hot = image[20:150, 20:200].reshape(-1, 3).mean(axis=0)
    assert hot[0] > 150 and hot[1] > 150 and hot[2] < hot[0]
    band = pixels[400:]
    assert (band == 0).mean() > 0.6 and (band == 255).any()  # black band, white letters
    assert len(caption_lines(facts())) == 4


def test_a_small_frame_is_magnified_by_a_whole_factor_with_no_value_made_up() -> None:
    values = np.arange(200 * 160, dtype=np.uint32).reshape(160, 200) % 251
    frame = Image.fromarray(values.astype(np.uint8), "L")
    cold = heatmap_overlay_png(np.zeros((8, 8), dtype=np.float32), width=50, height=40)
    ds = read(secondary_capture(facts(), frame, cold, now=NOW))
    assert ds.Columns == 600 and ds.Rows > 480  # 3 x 200: the first whole factor to reach 512
    blocks = np.repeat(np.repeat(values.astype(np.uint8), 3, axis=0), 3, axis=1)
    assert np.array_equal(ds.pixel_array[:480, :, 0], blocks) and np.array_equal(ds.pixel_array[:480, :, 2], blocks)


def test_the_caption_wraps_whole_words_to_the_room_it_has() -> None:
    from imaging.results_dicom import _wrap

    assert _wrap("a bb ccc dddd", len, 6) == ["a bb", "ccc", "dddd"]
    assert _wrap("averyveryverylongword x", len, 5) == ["averyveryverylongword", "x"]
    assert _wrap("", len, 5) == [""]


def test_a_colour_frame_keeps_its_colours_where_the_map_is_cold() -> None:
    rgb = np.zeros((400, 600, 3), dtype=np.uint8)
    rgb[..., 2] = 200
    out = composite(Image.fromarray(rgb, "RGB"), hot_top_left(60, 40), ["x"])
    assert (out[250:400, 350:, 2] == 200).all() and (out[250:400, 350:, :2] == 0).all()


def test_a_heat_map_that_is_not_an_image_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="heat map is not a readable image"):
        secondary_capture(facts(), grey_frame(), b"\x89PNG\r\n\x1a\nbroken", now=NOW)


def test_the_same_finding_always_gets_the_same_uids_and_a_model_version_one_series_per_study() -> None:
    first = read(secondary_capture(facts(), grey_frame(), hot_top_left(64, 51), now=NOW))
    again = read(secondary_capture(facts(probability=0.874), grey_frame(), hot_top_left(64, 51),
                                   now=NOW + dt.timedelta(days=1)))
    assert (first.SOPInstanceUID, first.SeriesInstanceUID) == (again.SOPInstanceUID, again.SeriesInstanceUID)
    other_label = facts(finding_id="5f0e1c1e-0000-4000-8000-000000000002", label="effusion")
    series, instance = result_uids(other_label)
    assert series == first.SeriesInstanceUID and instance != first.SOPInstanceUID
    assert result_uids(facts(model_version="2026.12.01-1"))[0] != first.SeriesInstanceUID
    assert result_uids(facts(study_instance_uid="1.2.3.9"))[0] != first.SeriesInstanceUID


# --- from the record ------------------------------------------------------------------------------

pytestmark_db = pytest.mark.django_db


def real_finding(instance, **kwargs) -> ImagingFinding:
    """A finding with a heat map hot in its top-left quarter, of the active "pneumonia" model."""
    mv = ModelVersion.objects.filter(name="pneumonia").first() or model_version()
    finding = finding_for(instance, mv, **kwargs)
    finding.heatmap.name = default_storage.save(
        f"imaging/heatmaps/{finding.external_id.hex}-hot.png",
        ContentFile(hot_top_left(instance.preview_width, instance.preview_height)))
    finding.save(update_fields=["heatmap"])
    return finding


@pytestmark_db
def test_a_findings_result_is_made_from_its_image_its_study_and_the_patients_record(patient_a: m.Patient) -> None:
    [instance] = upload(patient_a)
    finding = real_finding(instance, p=0.91)
    result = finding_result_dicom(finding)
    ds = read(result.data)
    assert result.name == f"{ds.SOPInstanceUID}.dcm" == f"{result.sop_instance_uid}.dcm"
    study = instance.series.study
    assert ds.StudyInstanceUID == study.study_instance_uid and ds.PatientID == patient_a.mrn
    assert str(ds.PatientName).startswith(patient_a.family_name)
    assert ds.Modality == instance.modality == "CT"
    source = ds.SourceImageSequence[0]
    assert (source.ReferencedSOPClassUID, source.ReferencedSOPInstanceUID) == (instance.sop_class_uid,
                                                                              instance.sop_instance_uid)
    # CT_small's 128 px preview, magnified 4 times
    assert ds.Columns == instance.preview_width * 4 == 512 and ds.Rows > instance.preview_height * 4
    # the image part is the stored preview (grey), coloured where the map is hot
    with instance.preview.open("rb") as fh:
        preview = np.asarray(Image.open(fh).convert("RGB"))
    preview = np.repeat(np.repeat(preview, 4, axis=0), 4, axis=1)
    h, w = preview.shape[:2]
    image = ds.pixel_array[:h]
    assert np.array_equal(image[h * 3 // 4:, w * 3 // 4:], preview[h * 3 // 4:, w * 3 // 4:])
    assert not np.array_equal(image[: h // 4, : w // 4], preview[: h // 4, : w // 4])
    assert "probability 0.910" in ds.DerivationDescription


@pytestmark_db
def test_a_png_uploads_result_is_other_in_its_own_study(patient_a: m.Patient) -> None:
    png = io.BytesIO()
    Image.fromarray(np.tile(np.arange(64, dtype=np.uint8), (48, 1)), "L").save(png, format="PNG")
    [instance] = imaging_upload(patient=patient_a, files=[UploadFile("x.png", png.getvalue())]).created
    ds = read(finding_result_dicom(real_finding(instance)).data)
    assert "SourceImageSequence" not in ds and ds.Modality == "OT"
    assert ds.StudyInstanceUID == instance.series.study.study_instance_uid


def result_url(finding: ImagingFinding) -> str:
    return reverse("imaging-result-dicom", args=[finding.patient.external_id, finding.external_id])


@pytestmark_db
def test_the_viewer_downloads_the_result_audited_and_refuses_what_has_none(
    client_a: Client, patient_a: m.Patient, patient_b: m.Patient
) -> None:
    [instance] = upload(patient_a)
    finding = real_finding(instance)
    viewer = client_a.get(reverse("imaging-viewer", args=[patient_a.external_id, instance.external_id]))
    assert result_url(finding) in viewer.content.decode()
    response = client_a.get(result_url(finding))
    assert response.status_code == 200 and response["Content-Type"] == "application/dicom"
    ds = read(response.content)
    assert response["Content-Disposition"] == f'attachment; filename="{ds.SOPInstanceUID}.dcm"'
    event = AuditEvent.objects.get(target="imaging-result")
    assert (event.action, event.patient_id) == ("export", patient_a.pk) and ds.SOPInstanceUID in event.detail

    bare = finding_for(instance, model_version("other"), label="nodule")
    bare.heatmap = ""
    bare.save(update_fields=["heatmap"])
    response = client_a.get(result_url(bare))
    assert response.status_code == 404 and b"no heat map" in response.content
    [theirs] = upload(patient_b)
    assert client_a.get(result_url(real_finding(theirs))).status_code == 404  # another site's patient
    instance.status = ENTERED_IN_ERROR
    instance.save(update_fields=["status"])
    response = client_a.get(result_url(finding))
    assert response.status_code == 404 and b"entered in error" in response.content
    assert AuditEvent.objects.filter(target="imaging-result").count() == 1


@pytestmark_db
def test_the_api_gives_a_findings_heat_map_and_its_result(patient_a: m.Patient, patient_b: m.Patient,
                                                         clinician_a) -> None:
    api = token_client(clinician_a)
    [instance] = upload(patient_a)
    finding = real_finding(instance)
    heat = api.get(reverse("api-imaging-finding-heatmap", args=[finding.external_id]))
    assert heat.status_code == 200 and heat["Content-Type"] == "image/png"
    with default_storage.open(str(finding.heatmap.name), "rb") as fh:
        assert heat.content == fh.read()
    result = api.get(reverse("api-imaging-finding-result", args=[finding.external_id]), HTTP_ACCEPT="application/dicom")
    assert result.status_code == 200 and result["Content-Type"] == "application/dicom"
    assert read(result.content).StudyInstanceUID == instance.series.study.study_instance_uid
    assert AuditEvent.objects.filter(target="api:imaging-heatmap", action="view", patient=patient_a).count() == 1
    assert AuditEvent.objects.filter(target="api:imaging-result", action="export", patient=patient_a).count() == 1

    [theirs] = upload(patient_b)
    other = real_finding(theirs)
    for name in ("api-imaging-finding-heatmap", "api-imaging-finding-result"):
        missing = api.get(reverse(name, args=[other.external_id]), HTTP_ACCEPT="application/dicom")
        # an error is JSON whatever the client asked for
        assert missing.status_code == 404 and missing.json()["error"]["message"] == "No such finding."
    bare = finding_for(instance, model_version("other"), label="nodule")
    bare.heatmap = ""
    bare.save(update_fields=["heatmap"])
    assert api.get(reverse("api-imaging-finding-result", args=[bare.external_id])).json()["error"]["message"] == (
        "This finding has no heat map.")
    assert api.get(reverse("api-imaging-finding-heatmap", args=[bare.external_id])).status_code == 404
