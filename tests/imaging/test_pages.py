"""The imaging panel of the patient page, the viewer, the image endpoints, feedback and the web
upload form: access (another site's patient is a 404), audit, and pinned query counts."""

from __future__ import annotations

import datetime as dt
import io
import re

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from PIL import Image
from pydicom.uid import generate_uid

from cdss.models import AuditEvent, ModelVersion
from imaging.models import FindingFeedback, ImagingFinding, ImagingInstance
from imaging.services import UploadFile, imaging_upload
from patients import models as m
from tests.factories import PatientFactory
from tests.imaging.conftest import dicom_bytes

pytestmark = pytest.mark.django_db

# Session and user, SAVEPOINT (atomic view), the patient (access-checked), studies, series,
# instances and findings (prefetches), the pending-jobs check, the user's permissions and groups
# (may upload), the audit INSERT, RELEASE, and the session save with its savepoints. Whatever the
# number of studies, series, images and findings.
PANEL_QUERIES = 17


def model_version(name: str = "pneumonia", auc: float = 0.951) -> ModelVersion:
    return ModelVersion.objects.create(
        name=name, version="2026.11.25-1", kind=ModelVersion.Kind.IMAGING, architecture="resnet18",
        dataset="PneumoniaMNIST (test file)", split="official splits", metrics={"test_auc": auc},
        file_path=f"{name}.pt", file_sha256="0" * 64, trained_at=timezone.now(), active=True,
    )


def heatmap_png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.zeros((height, width, 4), dtype=np.uint8)).save(out, format="PNG")
    return out.getvalue()


def finding_for(instance: ImagingInstance, mv: ModelVersion, *, label: str = "pneumonia", p: float = 0.83,
                positive: bool = True) -> ImagingFinding:
    finding = ImagingFinding(instance=instance, patient=instance.patient, model_version=mv, label=label,
                             probability=p, threshold=0.5, positive=positive)
    finding.heatmap.name = default_storage.save(f"imaging/heatmaps/{finding.external_id.hex}.png",
                                                ContentFile(heatmap_png(instance.preview_width,
                                                                        instance.preview_height)))
    finding.save()
    return finding


def upload(patient: m.Patient, n: int = 1, *, study_uid: str | None = None) -> list[ImagingInstance]:
    study_uid, series_uid = study_uid or generate_uid(), generate_uid()
    files = [UploadFile(f"{i}.dcm", dicom_bytes(patient_id=patient.mrn, new_instance=True, study_uid=study_uid,
                                                series_uid=series_uid, InstanceNumber=i + 1)) for i in range(n)]
    return imaging_upload(patient=patient, files=files).created


def panel_url(patient: m.Patient) -> str:
    return reverse("patient-imaging", args=[patient.external_id])


def viewer_url(instance: ImagingInstance) -> str:
    return reverse("imaging-viewer", args=[instance.patient.external_id, instance.external_id])


def test_the_patient_page_loads_the_imaging_panel_after_itself(client_a: Client, patient_a: m.Patient) -> None:
    content = client_a.get(reverse("patient-detail", args=[patient_a.external_id])).content.decode()
    assert f'hx-get="{panel_url(patient_a)}"' in content and 'id="imaging-panel"' in content


def test_the_panel_lists_studies_series_thumbnails_and_findings_with_a_fixed_number_of_queries(
    client_a: Client, patient_a: m.Patient, django_assert_num_queries
) -> None:
    [first] = upload(patient_a)
    finding_for(first, model_version())
    with django_assert_num_queries(PANEL_QUERIES):
        response = client_a.get(panel_url(patient_a))
    content = response.content.decode()
    assert response.status_code == 200
    assert reverse("imaging-thumbnail", args=[patient_a.external_id, first.external_id]) in content
    assert viewer_url(first) in content
    assert 'class="finding-chip finding-positive" data-label="pneumonia">pneumonia 0.83 · flagged' in content
    assert "CT" in content and 'class="imaging-upload"' in content
    assert AuditEvent.objects.filter(target="imaging-panel", patient=patient_a).count() == 1

    more = upload(patient_a, 3) + upload(patient_a, 2)
    second = model_version("other")
    for instance in more:
        finding_for(instance, second, label="nodule", p=0.1, positive=False)
    with django_assert_num_queries(PANEL_QUERIES):
        content = client_a.get(panel_url(patient_a)).content.decode()
    assert content.count('class="imaging-thumb"') == 6 and content.count('class="imaging-study"') == 3


def test_pages_and_images_of_another_sites_patient_are_404(
    client_a: Client, patient_b: m.Patient, site_a: m.Site
) -> None:
    [instance] = upload(patient_b)
    finding = finding_for(instance, model_version())
    pid, iid = patient_b.external_id, instance.external_id
    for url in (panel_url(patient_b), viewer_url(instance), reverse("imaging-thumbnail", args=[pid, iid]),
                reverse("imaging-preview", args=[pid, iid]),
                reverse("imaging-heatmap", args=[pid, finding.external_id])):
        assert client_a.get(url).status_code == 404, url
    assert client_a.post(reverse("imaging-finding-feedback", args=[pid, finding.external_id]),
                         {"verdict": "agree"}).status_code == 404
    # an image of another patient is not reachable under a patient the user may see
    mine = PatientFactory.create(site=site_a)
    assert client_a.get(reverse("imaging-viewer", args=[mine.external_id, iid])).status_code == 404
    assert FindingFeedback.objects.count() == 0


def test_the_viewer_shows_presets_the_overlay_the_model_and_its_measured_auc(
    client_a: Client, patient_a: m.Patient
) -> None:
    [instance] = upload(patient_a)
    finding = finding_for(instance, model_version(auc=0.9512))
    response = client_a.get(viewer_url(instance))
    content = response.content.decode()
    assert response.status_code == 200
    assert '<option value="0">Soft tissue (W 400 L 40) (standard)</option>' in content
    assert '<option value="1">Lung (W 1500 L -600) (standard)</option>' in content
    assert reverse("imaging-heatmap", args=[patient_a.external_id, finding.external_id]) in content
    assert 'id="imaging-overlay-toggle" checked' in content and 'id="imaging-opacity"' in content
    assert '<span class="imaging-probability">0.830</span>' in content
    assert "version 2026.11.25-1 · resnet18" in content
    assert "Measured AUC 0.951 on the test split" in content
    report = re.search(r'<textarea readonly rows="4" class="imaging-report-textarea"[^>]*>(.*?)</textarea>', content, re.S)
    assert report is not None and report.group(1) == (
        "Image analysis by a model (pneumonia 2026.11.25-1, resnet18; measured AUC 0.951 on held-out data, test "
        "split), 2004-01-19: pneumonia probability 0.830, flagged (threshold 0.500). A model's output, not a diagnosis.")
    assert 'name="verdict" value="agree"' in content and 'name="verdict" value="disagree"' in content
    assert AuditEvent.objects.filter(target="imaging-viewer", patient=patient_a).count() == 1


def test_the_viewer_says_how_the_flag_performed_at_its_threshold_on_held_out_data(
    client_a: Client, patient_a: m.Patient
) -> None:
    from imaging.selectors import OperatingPoint, operating_point

    mv = model_version()
    mv.metrics = {"validation": {"n": 524, "prevalence": 0.7424, "auc": 0.99, "threshold": 0.5, "sensitivity": 0.97,
                                 "specificity": 0.9012}}
    mv.save(update_fields=["metrics"])
    assert operating_point(mv, 0.5) == OperatingPoint("validation", 524, 0.7424, 0.97, 0.9012)
    assert operating_point(mv, 0.6) is None  # not measured at that threshold
    mv.metrics["test"] = {"n": 624, "prevalence": 0.625, "auc": 0.95, "threshold": 0.5, "sensitivity": 0.99,
                          "specificity": 0.7}
    assert operating_point(mv, 0.5) == OperatingPoint("test", 624, 0.625, 0.99, 0.7)  # the test split first
    mv.metrics.pop("test")
    mv.save(update_fields=["metrics"])
    [instance] = upload(patient_a)
    finding_for(instance, mv, p=0.83)
    content = " ".join(client_a.get(viewer_url(instance)).content.decode().split())
    assert ("At this threshold, on the validation split (524 images, 74% positive): it flagged 97% of the positive "
            "images (sensitivity) and left 90% of the negative ones unflagged (specificity).") in content
    assert 'class="imaging-legend"' in content


def test_a_recommendation_opens_the_viewer_on_its_findings_heat_map(client_a: Client, patient_a: m.Patient) -> None:
    [instance] = upload(patient_a)
    first = finding_for(instance, model_version(name="pneumonia"))
    second = finding_for(instance, model_version(name="effusion"), label="effusion")

    def shown(query: str = "") -> list[str]:  # the overlay's source, then the choices in order
        content = client_a.get(viewer_url(instance) + query).content.decode()
        overlay = re.search(r'id="imaging-overlay" class="imaging-overlay" src="([^"]+)"', content)
        assert overlay is not None
        return [overlay.group(1), *re.findall(r'<option value="([^"]+heatmap.png)"( selected)?', content)]

    url = {f: reverse("imaging-heatmap", args=[patient_a.external_id, f.external_id]) for f in (first, second)}
    default = shown()
    assert default[0] == default[1][0] and default[1][1] == " selected"
    chosen = shown(f"?finding={second.external_id}")
    assert chosen == [url[second], (url[second], " selected"), (url[first], "")]
    assert shown("?finding=not-a-finding")[0] == default[0]  # anything else: as without


def test_a_window_preset_is_rendered_on_the_server(client_a: Client, patient_a: m.Patient) -> None:
    [instance] = upload(patient_a)
    url = reverse("imaging-preview", args=[patient_a.external_id, instance.external_id])
    default = client_a.get(url)
    lung = client_a.get(url + "?preset=1")
    assert default["Content-Type"] == lung["Content-Type"] == "image/png"
    assert "no-store" in lung["Cache-Control"]
    a = np.asarray(Image.open(io.BytesIO(default.content)), dtype=float)
    b = np.asarray(Image.open(io.BytesIO(lung.content)), dtype=float)
    assert a.shape == b.shape == (128, 128) and abs(a.mean() - b.mean()) > 5
    assert client_a.get(url + "?preset=9").status_code == 400
    assert client_a.get(url + "?preset=x").status_code == 400
    assert AuditEvent.objects.filter(target="imaging-image", patient=patient_a).count() == 2


def preview_url(instance: ImagingInstance) -> str:
    return reverse("imaging-preview", args=[instance.patient.external_id, instance.external_id])


def png_array(content: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(content)), dtype=float)


def test_a_window_of_the_users_own_renders_as_the_preset_of_the_same_window(
    client_a: Client, patient_a: m.Patient
) -> None:
    """CT in HU: W 400 L 40 is the default (soft tissue) preset, byte for byte the stored preview;
    W 1500 L -600 is the lung preset; another window renders otherwise; wrong windows are refused
    with the reason, before anything is read or audited."""
    [instance] = upload(patient_a)
    url = preview_url(instance)
    stored = client_a.get(url).content
    assert client_a.get(url + "?center=40&width=400").content == stored
    assert client_a.get(url + "?center=-600&width=1500").content == client_a.get(url + "?preset=1").content
    narrow = png_array(client_a.get(url + "?center=40&width=80").content)
    assert narrow.shape == (128, 128) and np.abs(narrow - png_array(stored)).mean() > 5
    refused = {
        "?center=40": "both its center and its width",
        "?center=40&width=0": "width must be at least 1",
        "?center=nan&width=400": "must be finite",
        "?center=40&width=inf": "must be finite",
        "?center=forty&width=400": "The window center must be a number",
        "?center=40&width=400&preset=1": "not both",
    }
    audited = AuditEvent.objects.filter(target="imaging-image", patient=patient_a).count()
    for query, reason in refused.items():
        response = client_a.get(url + query)
        assert response.status_code == 400 and reason in response.content.decode(), query
    assert AuditEvent.objects.filter(target="imaging-image", patient=patient_a).count() == audited
    details = list(AuditEvent.objects.filter(target="imaging-image", patient=patient_a).values_list("detail", flat=True))
    assert f"instance {instance.external_id} frame 0 window W 80 L 40" in details


def test_images_stored_before_the_range_was_recorded_get_it_from_a_command(
    client_a: Client, patient_a: m.Patient
) -> None:
    from django.core.management import call_command

    [ct] = upload(patient_a)
    [mr] = imaging_upload(patient=patient_a, files=[UploadFile("mr.dcm", dicom_bytes(
        "emri_small.dcm", patient_id=patient_a.mrn))]).created
    out = io.BytesIO()
    Image.fromarray(np.zeros((16, 16), dtype=np.uint8)).save(out, format="PNG")
    [png] = imaging_upload(patient=patient_a, files=[UploadFile("x.png", out.getvalue())]).created
    recorded = {i.pk: i.technical["value_range"] for i in (ct, mr)}
    for instance in (ct, mr):  # as stored before the range was recorded
        instance.technical = {k: v for k, v in instance.technical.items() if k != "value_range"}
        instance.save(update_fields=["technical"])
    assert 'id="imaging-window-center"' not in client_a.get(viewer_url(ct)).content.decode()

    stdout = io.StringIO()
    call_command("imaging_value_ranges", stdout=stdout)
    assert "2 image(s) now with their range of values; 0 without a finite value; 0 original(s)" in stdout.getvalue()
    for instance in (ct, mr):
        instance.refresh_from_db()
        assert instance.technical["value_range"] == recorded[instance.pk]  # as the upload records it
        assert instance.technical["sop_class_uid"]  # the header's fields kept
    png.refresh_from_db()
    assert "value_range" not in png.technical
    assert 'id="imaging-window-center"' in client_a.get(viewer_url(ct)).content.decode()
    stdout = io.StringIO()
    call_command("imaging_value_ranges", stdout=stdout)
    assert stdout.getvalue().startswith("0 image(s)")  # run again: nothing new


def test_a_colour_or_bitmap_image_has_no_window_to_set(client_a: Client, patient_a: m.Patient) -> None:
    out = io.BytesIO()
    Image.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64).astype(np.uint8)).save(out, format="PNG")
    [png] = imaging_upload(patient=patient_a, files=[UploadFile("x.png", out.getvalue())], modality="CR",
                           body_part="CHEST").created
    [rgb] = imaging_upload(patient=patient_a, files=[UploadFile("rgb.dcm", dicom_bytes(
        "SC_rgb.dcm", patient_id=patient_a.mrn))]).created
    for instance in (png, rgb):
        response = client_a.get(preview_url(instance) + "?center=100&width=50")
        assert response.status_code == 400 and "not a grey-scale DICOM image" in response.content.decode()
        content = client_a.get(viewer_url(instance)).content.decode()
        assert 'id="imaging-window-center"' not in content and "data-value-min" not in content
        assert "value_range" not in instance.technical


def test_every_frame_of_a_multi_frame_image_renders_and_a_missing_one_is_refused(
    client_a: Client, patient_a: m.Patient
) -> None:
    from imaging.pixels import load_image, preview_png

    data = dicom_bytes("emri_small.dcm", patient_id=patient_a.mrn)
    [instance] = imaging_upload(patient=patient_a, files=[UploadFile("mr.dcm", data)]).created
    assert (instance.frames, instance.frame_index) == (10, 5)
    url = preview_url(instance)
    assert client_a.get(url + "?frame=5").content == client_a.get(url).content  # the stored frame
    rendered = [client_a.get(url + f"?frame={i}").content for i in range(10)]
    assert rendered == [preview_png(load_image(data, frame=i).rendering) for i in range(10)]
    assert len(set(rendered)) == 10  # ten different frames
    for query in ("?frame=10", "?frame=-1", "?frame=x"):
        response = client_a.get(url + query)
        assert response.status_code == 400 and "the image has 10 (0 to 9)" in response.content.decode(), query
    assert AuditEvent.objects.filter(target="imaging-image", detail=f"instance {instance.external_id} frame 3 preset 0").exists()
    content = client_a.get(viewer_url(instance)).content.decode()
    assert 'id="imaging-frame" min="1" max="10" value="6"' in content and "frame 6 of 10" in content
    single = client_a.get(viewer_url(upload(patient_a)[0])).content.decode()
    assert 'id="imaging-frame"' not in single and 'id="imaging-zoom-in"' in single


def test_scrolling_through_frames_reads_the_stored_file_once(
    client_a: Client, patient_a: m.Patient, monkeypatch, settings
) -> None:
    from imaging.views import RENDER_SOURCES

    RENDER_SOURCES.clear()
    [mr] = imaging_upload(patient=patient_a, files=[UploadFile("mr.dcm", dicom_bytes(
        "emri_small.dcm", patient_id=patient_a.mrn))]).created
    opened: list[str] = []
    real_open = default_storage.open

    def counting_open(name: str, mode: str = "rb"):
        opened.append(name)
        return real_open(name, mode)

    monkeypatch.setattr(default_storage, "open", counting_open)
    url = preview_url(mr)
    frames = [client_a.get(url + f"?frame={i}").content for i in (0, 1, 2, 3, 4, 6, 7, 8, 9)]
    assert len(set(frames)) == 9 and client_a.get(url + "?center=300&width=400").status_code == 200
    assert opened.count(str(mr.file.name)) == 1  # read once, rendered ten times
    settings.CDSS_IMAGING_RENDER_CACHE_BYTES = 0  # off: every rendering reads the file
    RENDER_SOURCES.clear()
    for i in (0, 1):
        assert client_a.get(url + f"?frame={i}").content == frames[i]
    assert opened.count(str(mr.file.name)) == 3


def test_every_pixel_is_served_for_a_zoomed_viewer(client_a: Client, patient_a: m.Patient) -> None:
    """A 1,760 px radiograph: the preview has 1,024 px a side, ``size=full`` every pixel, in the
    same window (the full rendering shrunk is the preview within a grey level or two)."""
    [instance] = imaging_upload(patient=patient_a, files=[UploadFile("cr.dcm", dicom_bytes(
        "RG3_UNCR.dcm", patient_id=patient_a.mrn))]).created
    url = preview_url(instance)
    preview = Image.open(io.BytesIO(client_a.get(url).content))
    full = Image.open(io.BytesIO(client_a.get(url + "?size=full").content))
    assert preview.size == (1024, 1024) and full.size == (instance.columns, instance.rows) == (1760, 1760)
    shrunk = np.asarray(full.resize(preview.size, Image.Resampling.LANCZOS), dtype=float)
    assert np.abs(shrunk - np.asarray(preview, dtype=float)).mean() < 2
    assert client_a.get(url + "?size=huge").status_code == 400
    assert AuditEvent.objects.filter(target="imaging-image",
                                     detail=f"instance {instance.external_id} frame 0 preset 0 full size").exists()


def test_the_viewer_offers_the_window_in_the_images_own_values(client_a: Client, patient_a: m.Patient) -> None:
    """The range of the shown frame's values after the rescale (HU on CT) is recorded at upload
    and given to the window inputs; each preset's window beside it."""
    import json

    import pydicom
    from pydicom.pixels import apply_modality_lut

    data = dicom_bytes(patient_id=patient_a.mrn)
    [instance] = imaging_upload(patient=patient_a, files=[UploadFile("ct.dcm", data)]).created
    ds = pydicom.dcmread(io.BytesIO(data))
    hu = apply_modality_lut(ds.pixel_array, ds)
    assert instance.technical["value_range"] == [float(hu.min()), float(hu.max())]
    content = client_a.get(viewer_url(instance)).content.decode()
    assert f'data-value-min="{float(hu.min())!r}" data-value-max="{float(hu.max())!r}"' in content
    assert 'id="imaging-window-center"' in content and "(HU)" in content
    about = re.search(r'<details class="imaging-technical" id="imaging-technical">(.*?)</details>', content, re.S)
    assert about is not None
    text = " ".join(re.sub(r"<[^>]+>", " ", about.group(1)).split())
    assert "128 \u00d7 128 pixels" in text and "MONOCHROME2, 16 bits stored" in text
    assert f"Values {hu.min():g} to {hu.max():g} HU" in text and instance.sop_instance_uid in text
    assert "CT Image Storage" in text and "Explicit VR Little Endian" in text
    windows = re.search(r'<script id="imaging-preset-windows" type="application/json">(.*?)</script>', content)
    assert windows is not None
    assert json.loads(windows.group(1)) == [[p["center"], p["width"]] for p in instance.presets]
    assert json.loads(windows.group(1))[:2] == [[40.0, 400.0], [-600.0, 1500.0]]


def test_feedback_is_stored_and_shown_and_audited(client_a: Client, patient_a: m.Patient, clinician_a) -> None:
    [instance] = upload(patient_a)
    finding = finding_for(instance, model_version())
    url = reverse("imaging-finding-feedback", args=[patient_a.external_id, finding.external_id])
    response = client_a.post(url, {"verdict": "disagree", "comment": "  consolidation is old scarring "})
    content = response.content.decode()
    assert response.status_code == 200
    row = FindingFeedback.objects.get()
    assert (row.finding, row.user, row.verdict, row.comment) == (finding, clinician_a, "disagree",
                                                                 "consolidation is old scarring")
    assert "You disagreed" in content and "Agree 0 · Disagree 1" in content
    client_a.post(url, {"verdict": "agree"})  # a change of mind: the latest verdict counts
    assert "Agree 1 · Disagree 0" in client_a.get(viewer_url(instance)).content.decode()
    assert FindingFeedback.objects.count() == 2
    assert client_a.post(url, {"verdict": "maybe"}).status_code == 400
    assert AuditEvent.objects.filter(target="imaging-feedback", patient=patient_a).count() == 2


def test_the_web_form_uploads_and_the_panel_says_what_happened(client_a: Client, patient_a: m.Patient) -> None:
    url = reverse("patient-imaging-upload", args=[patient_a.external_id])
    good = SimpleUploadedFile("ct.dcm", dicom_bytes(patient_id=patient_a.mrn))
    content = client_a.post(url, {"files": [good]}).content.decode()
    assert "1 new image stored" in content and "Analysis queued." in content
    assert ImagingInstance.objects.filter(patient=patient_a).count() == 1

    other = SimpleUploadedFile("other.dcm", dicom_bytes(patient_id=patient_a.mrn, new_instance=True))
    bad = SimpleUploadedFile("broken.dcm", b"\x00" * 128 + b"DICM" + b"\x02\x00")
    content = client_a.post(url, {"files": [other, bad]}).content.decode()
    assert "The upload was refused; nothing was stored." in content
    assert '<span class="mono">broken.dcm</span>:' in content
    assert ImagingInstance.objects.filter(patient=patient_a).count() == 1


def test_the_panel_polls_while_an_imaging_job_is_unfinished(client_a: Client, patient_a: m.Patient) -> None:
    upload(patient_a)  # its job is queued (a broker is configured; no worker runs here)
    assert 'data-polling="1"' in client_a.get(panel_url(patient_a)).content.decode()
    from cdss.models import Job

    Job.objects.update(status=Job.Status.SUCCEEDED, finished_at=timezone.now() + dt.timedelta(seconds=1))
    assert 'data-polling="0"' in client_a.get(panel_url(patient_a)).content.decode()


# Session and user, SAVEPOINT, the patient, the image (with its series and study), its findings
# (with their model versions), their feedback, the audit INSERT, RELEASE, and the session save
# with its savepoints: whatever the number of findings and feedback rows.
# ... and the patient's other images of the kind with their findings (one query fewer without any)
VIEWER_QUERIES = 14


def test_the_viewer_reads_a_fixed_number_of_queries(
    client_a: Client, patient_a: m.Patient, clinician_a, django_assert_num_queries
) -> None:
    instance, _ = upload(patient_a, 2)  # another image of the kind: the comparison's queries run
    first = finding_for(instance, model_version())
    with django_assert_num_queries(VIEWER_QUERIES):
        assert client_a.get(viewer_url(instance)).status_code == 200
    second = model_version("other")
    for label in ("a", "b", "c"):
        finding = finding_for(instance, second, label=label)
        FindingFeedback.objects.create(finding=finding, user=clinician_a, verdict="agree")
    FindingFeedback.objects.create(finding=first, user=clinician_a, verdict="disagree")
    with django_assert_num_queries(VIEWER_QUERIES):
        content = client_a.get(viewer_url(instance)).content.decode()
    assert content.count('class="imaging-model"') == 2 and content.count('class="imaging-finding ') == 4


def ct_on(patient: m.Patient, day: str) -> ImagingInstance:
    """A CT image of its own study, dated ``day`` (YYYYMMDD)."""
    [instance] = imaging_upload(patient=patient, files=[UploadFile("ct.dcm", dicom_bytes(
        patient_id=patient.mrn, new_instance=True, study_uid=generate_uid(), series_uid=generate_uid(),
        StudyDate=day))]).created
    return instance


def test_the_viewer_compares_with_the_patients_other_images_of_the_kind(
    client_a: Client, patient_a: m.Patient, patient_b: m.Patient
) -> None:
    """Other CT images of the patient, the newest study first (not an MR, not one entered in
    error, not another patient's), offered for comparison and with their probabilities beside the
    finding's; ``?compare=`` shows one beside the image (audited), anything else is a 404."""
    mv = model_version()
    now = ct_on(patient_a, "20261120")
    older, oldest = ct_on(patient_a, "20261001"), ct_on(patient_a, "20250301")
    finding_for(now, mv, p=0.91)
    finding_for(older, mv, p=0.35, positive=False)
    finding_for(oldest, mv, p=0.62)
    gone = ct_on(patient_a, "20261101")
    gone.status = "entered-in-error"
    gone.save()
    [mr] = imaging_upload(patient=patient_a, files=[UploadFile("mr.dcm", dicom_bytes(
        "MR_small.dcm", patient_id=patient_a.mrn))]).created
    elsewhere = ct_on(patient_b, "20261002")

    content = client_a.get(viewer_url(now)).content.decode()
    offered = re.findall(r'<option value="([0-9a-f-]{36})"[^>]*>([^<]*)</option>', content)
    assert [value for value, _ in offered] == [str(older.external_id), str(oldest.external_id)]
    assert offered[0][1] == "2026-10-01 · CT · pneumonia 0.35" and offered[1][1].startswith("2025-03-01 · CT")
    assert str(mr.external_id) not in content and str(gone.external_id) not in content
    history = re.search(r'<p class="imaging-history">(.*?)</p>', content, re.S)
    assert history is not None
    assert [re.sub(r"\s+", " ", t) for t in re.findall(r">([^<]+)</a>", history.group(1))] == [
        "0.350 on 2026-10-01", "0.620 on 2025-03-01 (flagged)"]
    assert 'id="imaging-compare-stage"' not in content

    with CaptureQueriesContext(connection) as comparing:
        paired = client_a.get(viewer_url(now) + f"?compare={older.external_id}").content.decode()
    assert len(comparing) == VIEWER_QUERIES  # the compared image was read with the others
    assert 'id="imaging-compare-stage"' in paired and "imaging-viewer-comparing" in paired
    assert 'data-windowable="1"' in paired  # both in HU: the window set applies to both
    assert reverse("imaging-preview", args=[patient_a.external_id, older.external_id]) in paired
    assert f'<option value="{older.external_id}" selected>' in paired
    assert AuditEvent.objects.filter(target="imaging-viewer",
                                     detail=f"instance {now.external_id} compared with instance {older.external_id}").exists()
    for wrong in (mr.external_id, gone.external_id, elsewhere.external_id, now.external_id, "not-an-id"):
        assert client_a.get(viewer_url(now) + f"?compare={wrong}").status_code == 404, wrong


def test_the_viewers_comparison_reads_a_fixed_number_of_queries(
    client_a: Client, patient_a: m.Patient, django_assert_num_queries
) -> None:
    mv = model_version()
    now = ct_on(patient_a, "20261120")
    finding_for(now, mv)
    finding_for(ct_on(patient_a, "20261001"), mv)
    with django_assert_num_queries(VIEWER_QUERIES):
        client_a.get(viewer_url(now))
    for day in ("20260101", "20250101", "20240101"):
        finding_for(ct_on(patient_a, day), mv)
    with django_assert_num_queries(VIEWER_QUERIES):
        assert client_a.get(viewer_url(now)).content.decode().count('class="imaging-history"') == 1


def png_bytes(grey: int = 128) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((64, 64), grey, dtype=np.uint8)).save(out, format="PNG")
    return out.getvalue()


def test_an_image_without_findings_says_why_instead_of_no_findings(client_a: Client, patient_a: m.Patient) -> None:
    from cdss.models import Job

    upload(patient_a)  # a CT: no model reads CT
    content = client_a.get(panel_url(patient_a)).content.decode()
    assert "Not analysed: no model for this kind of image (CT" in content
    assert "No findings" not in content

    ImagingInstance.objects.all().delete()
    [png] = imaging_upload(patient=patient_a, files=[UploadFile("film.png", png_bytes())], modality="CR",
                           body_part="CHEST").created
    assert "Not analysed: the model for this kind of image has no active version" in client_a.get(
        panel_url(patient_a)).content.decode()
    model_version("imaging_pneumoniamnist")  # active; the upload's job is still queued (no worker here)
    assert "Analysis pending" in client_a.get(panel_url(patient_a)).content.decode()
    Job.objects.update(status=Job.Status.SUCCEEDED, finished_at=timezone.now())
    content = client_a.get(panel_url(patient_a)).content.decode()
    assert "Not analysed yet: run the imaging analysis" in content
    assert "Not analysed yet: run the imaging analysis" in client_a.get(viewer_url(png)).content.decode()

    [unlabelled] = imaging_upload(patient=patient_a, files=[UploadFile("bare.png", png_bytes(90))]).created
    assert "Not analysed: no model for this kind of image (no modality or body part given)" in client_a.get(
        viewer_url(unlabelled)).content.decode()


def test_a_heat_map_is_served_from_its_place_in_a_pack_and_a_place_without_a_png_is_refused(
    client_a: Client, patient_a: m.Patient, caplog: pytest.LogCaptureFixture
) -> None:
    [instance] = upload(patient_a)
    mv = model_version()
    pngs = [heatmap_png(8, 6), heatmap_png(5, 4)]
    name = default_storage.save("imaging/heatmaps/ab/ab01.pack", ContentFile(pngs[0] + pngs[1]))
    placed = [ImagingFinding.objects.create(instance=instance, patient=patient_a, model_version=mv, label=label,
                                            probability=0.4, threshold=0.5, positive=False, heatmap=name,
                                            heatmap_offset=offset, heatmap_length=len(png))
              for label, offset, png in (("a", 0, pngs[0]), ("b", len(pngs[0]), pngs[1]))]
    urls = [reverse("imaging-heatmap", args=[patient_a.external_id, f.external_id]) for f in placed]
    for url, png in zip(urls, pngs, strict=True):
        response = client_a.get(url)
        assert response.status_code == 200 and response["Content-Type"] == "image/png"
        assert response.content == png
    # a place that holds no PNG (a pack cut short or replaced): refused, never another finding's image
    ImagingFinding.objects.filter(pk=placed[1].pk).update(heatmap_offset=1)
    ImagingFinding.objects.filter(pk=placed[0].pk).update(heatmap_length=len(pngs[0]) + len(pngs[1]) + 1)
    for url in urls:
        response = client_a.get(url)
        assert response.status_code == 404
        assert response.content.decode() == "This finding's heat map could not be read from storage."
    default_storage.delete(name)  # the pack gone
    assert client_a.get(reverse("imaging-heatmap", args=[patient_a.external_id, placed[0].external_id])
                        ).status_code == 404
    assert "could not be read" in caplog.text and patient_a.mrn not in caplog.text
    assert AuditEvent.objects.filter(target="imaging-heatmap").count() == 2  # the two served


def test_a_heat_map_place_needs_both_its_offset_and_a_length(patient_a: m.Patient) -> None:
    from django.db import IntegrityError, transaction

    [instance] = upload(patient_a)
    mv = model_version()
    for offset, length in ((0, None), (None, 10), (5, 0)):
        with pytest.raises(IntegrityError, match="imgfinding_heatmap_span"), transaction.atomic():
            ImagingFinding.objects.create(instance=instance, patient=patient_a, model_version=mv, label="a",
                                          probability=0.4, threshold=0.5, positive=False, heatmap="p.pack",
                                          heatmap_offset=offset, heatmap_length=length)
