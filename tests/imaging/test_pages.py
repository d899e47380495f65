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
from django.test import Client
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
    assert 'name="verdict" value="agree"' in content and 'name="verdict" value="disagree"' in content
    assert AuditEvent.objects.filter(target="imaging-viewer", patient=patient_a).count() == 1


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
VIEWER_QUERIES = 12


def test_the_viewer_reads_a_fixed_number_of_queries(
    client_a: Client, patient_a: m.Patient, clinician_a, django_assert_num_queries
) -> None:
    [instance] = upload(patient_a)
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
