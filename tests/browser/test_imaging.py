"""A clinician uploads a DICOM file on the patient page, opens an image with a finding, changes the
window preset, toggles the heat map overlay and its opacity, and disagrees with the finding.

Same browser as the other browser tests: Debian's Chromium through Playwright's sync API against
pytest-django's live server. The ORM work happens in fixtures requested before ``browser_page``.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection
from django.utils import timezone
from PIL import Image

from cdss.models import ModelVersion
from imaging.models import FindingFeedback, ImagingFinding, ImagingInstance
from imaging.services import UploadFile, imaging_upload
from patients import models as m
from tests.browser.conftest import PASSWORD, SCREENSHOT_DIR
from tests.factories import PatientFactory, SiteFactory, clinician_of
from tests.imaging.conftest import dicom_bytes

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def imaging_patient(transactional_db: None, settings, tmp_path: Path) -> tuple[m.Patient, ImagingInstance, Path]:
    """A clinician (dr-img), a patient with one CT image already analysed (a finding with a heat
    map: a red square in the upper left quarter, stored at a quarter of the preview's size, as
    overlays are stored smaller than large previews), and a chest CR file to upload."""
    settings.MEDIA_ROOT = str(tmp_path / "media")
    site = SiteFactory.create(code="browser-imaging-site", name="Browser Imaging Hospital")
    user = clinician_of(site, username="dr-img")
    user.set_password(PASSWORD)
    user.save()
    patient = PatientFactory.create(site=site, family_name="Imager", given_names="Ida", mrn="BRW-IMG-1")
    [instance] = imaging_upload(patient=patient, files=[
        UploadFile("ct.dcm", dicom_bytes("CT_small.dcm", patient_id=patient.mrn))]).created
    mv = ModelVersion.objects.create(
        name="pneumonia", version="2026.11.25-1", kind=ModelVersion.Kind.IMAGING, architecture="resnet18",
        dataset="PneumoniaMNIST", split="official", metrics={"test_auc": 0.95}, file_path="p.pt",
        file_sha256="0" * 64, trained_at=timezone.now(), active=True,
    )
    heat = np.zeros((instance.preview_height // 4, instance.preview_width // 4, 4), dtype=np.uint8)
    heat[:instance.preview_height // 8, :instance.preview_width // 8] = (255, 0, 0, 255)
    out = io.BytesIO()
    Image.fromarray(heat).save(out, format="PNG")
    finding = ImagingFinding(instance=instance, patient=patient, model_version=mv, label="pneumonia",
                             probability=0.91, threshold=0.5, positive=True)
    finding.heatmap.name = default_storage.save("imaging/heatmaps/h.png", ContentFile(out.getvalue()))
    finding.save()
    cr = tmp_path / "cr.dcm"
    cr.write_bytes(dicom_bytes("RG3_UNCR.dcm", patient_id=patient.mrn))
    return patient, instance, cr


def test_a_clinician_uploads_an_image_and_reads_a_finding_with_its_heat_map(
    live_server, imaging_patient: tuple[m.Patient, ImagingInstance, Path], browser_page: Page
) -> None:
    patient, analysed, cr = imaging_patient
    page = browser_page
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    page.goto(f"{live_server.url}/login/")
    page.fill("input[name=username]", "dr-img")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")

    page.goto(f"{live_server.url}/patients/{patient.external_id}/")
    page.wait_for_selector("#imaging-panel .imaging-thumb")
    assert page.locator("#imaging-panel .imaging-thumb").count() == 1
    assert "pneumonia 0.91" in page.inner_text("#imaging-panel .finding-chip")

    page.set_input_files("#imaging-files", str(cr))
    page.click("#imaging-panel button:text('Upload')")
    page.wait_for_selector("#imaging-panel .imaging-uploaded")
    assert "1 new image stored" in page.inner_text("#imaging-panel .imaging-uploaded")
    assert page.locator("#imaging-panel .imaging-thumb").count() == 2
    # every thumbnail arrived as an image
    page.wait_for_function("Array.from(document.querySelectorAll('#imaging-panel .imaging-thumb img'))"
                           ".every(img => img.complete && img.naturalWidth > 0)")

    page.click(f"#imaging-panel [data-instance='{analysed.external_id}'] a")
    page.wait_for_selector("#imaging-viewer #imaging-overlay")
    assert page.inner_text(".imaging-probability") == "0.910"
    assert "Measured AUC 0.950 on the test split" in page.inner_text("#imaging-findings")

    overlay = page.locator("#imaging-overlay")
    assert overlay.is_visible()
    # the small overlay is stretched over the whole image: its red quarter covers the image's upper left
    page.wait_for_function("document.getElementById('imaging-overlay').complete")
    page.fill("#imaging-opacity", "100")
    box = page.locator("#imaging-image").bounding_box()
    assert box is not None and overlay.bounding_box() == box
    shot = np.asarray(Image.open(io.BytesIO(page.screenshot(clip=box))).convert("RGB"), dtype=int)
    h, w = shot.shape[:2]
    red = (shot[..., 0] > 200) & (shot[..., 1] < 60) & (shot[..., 2] < 60)
    mh, mw = h // 8, w // 8  # the edge blends over one overlay pixel stretched (a sixteenth of the side here)
    assert red[: h // 2 - mh, : w // 2 - mw].all() and not red[h // 2 + mh:, :].any() and not red[:, w // 2 + mw:].any()
    page.uncheck("#imaging-overlay-toggle")
    assert not overlay.is_visible()
    page.check("#imaging-overlay-toggle")
    assert overlay.is_visible()
    page.fill("#imaging-opacity", "80")
    assert overlay.evaluate("el => el.style.opacity") == "0.8"
    assert page.inner_text("#imaging-opacity-value") == "80%"

    # CT: four standard windows; the lung window is rendered on the server
    assert page.locator("#imaging-preset option").count() == len(analysed.presets) == 4
    page.select_option("#imaging-preset", "1")
    page.wait_for_function("document.getElementById('imaging-image').src.endsWith('?preset=1')")
    page.wait_for_function("(() => { const i = document.getElementById('imaging-image');"
                           " return i.complete && i.naturalWidth === 128; })()")

    page.fill(".feedback-form input[name=comment]", "old scarring")
    page.click(".feedback-form button:text('Disagree')")
    page.wait_for_selector(".feedback-mine:has-text('You disagreed')")
    assert errors == []
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    page.locator("#imaging-viewer").screenshot(path=str(SCREENSHOT_DIR / "imaging-viewer.png"))

    stored: list[tuple[str, str]] = []

    def read() -> None:  # a thread of its own: no ORM calls where Playwright's loop runs
        try:
            stored.extend(FindingFeedback.objects.values_list("verdict", "comment"))
            stored.append(("instances", str(ImagingInstance.objects.filter(patient=patient).count())))
        finally:
            connection.close()

    thread = threading.Thread(target=read)
    thread.start()
    thread.join()
    assert stored == [("disagree", "old scarring"), ("instances", "2")]
