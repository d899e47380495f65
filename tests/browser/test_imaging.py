"""A clinician uploads a DICOM file on the patient page, opens an image with a finding, changes the
window preset, toggles the heat map overlay and its opacity, and disagrees with the finding; sets a
window of their own, zooms and pans, and moves through the frames of a multi-frame image.

Same browser as the other browser tests: Debian's Chromium through Playwright's sync API against
pytest-django's live server. The ORM work happens in fixtures requested before ``browser_page``.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pydicom
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection
from django.utils import timezone
from PIL import Image
from pydicom.uid import SecondaryCaptureImageStorage, generate_uid

from cdss.models import Job, ModelVersion
from imaging.models import FindingFeedback, ImagingFinding, ImagingInstance
from imaging.services import UploadFile, imaging_upload
from patients import models as m
from tests.browser.conftest import PASSWORD, SCREENSHOT_DIR
from tests.factories import PatientFactory, SiteFactory, clinician_of
from tests.imaging.conftest import dicom_bytes
from tests.imaging.test_pacs import Scp, pacs  # noqa: F401 - the PACS fixture

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
    assert page.locator("#imaging-preset option:not([value=custom])").count() == len(analysed.presets) == 4
    page.select_option("#imaging-preset", "1")
    page.wait_for_function("document.getElementById('imaging-image').src.endsWith('?preset=1')")
    page.wait_for_function("(() => { const i = document.getElementById('imaging-image');"
                           " return i.complete && i.naturalWidth === 128; })()")

    # the findings as text for a report: copied, or at least selected to copy by hand
    page.click(".imaging-report-text summary")
    page.click(".imaging-copy")
    page.wait_for_function("['Copied', 'Selected: copy it'].includes(document.querySelector('.imaging-copy').textContent)")
    assert page.evaluate("(() => { const t = document.querySelector('.imaging-report-textarea');"
                         " return t.selectionEnd - t.selectionStart === t.value.length && t.value.length > 50; })()")
    assert "pneumonia probability 0.910, flagged" in page.input_value(".imaging-report-textarea")

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


def login(page: Page, live_server) -> None:
    page.goto(f"{live_server.url}/login/")
    page.fill("input[name=username]", "dr-img")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")


def src(page: Page) -> str:
    return page.get_attribute("#imaging-image", "src") or ""


def loaded(page: Page, fragment: str) -> None:
    """Wait until the viewer's image has loaded from an address holding ``fragment``."""
    page.wait_for_function(
        "f => { const i = document.getElementById('imaging-image');"
        " return i.getAttribute('src').includes(f) && i.complete && i.naturalWidth > 0; }", arg=fragment)


@pytest.fixture
def viewer_images(imaging_patient: tuple[m.Patient, ImagingInstance, Path]) -> dict[str, ImagingInstance]:
    """Beside the analysed CT: a 10-frame MR (its middle frame analysed, with a heat map) and a
    1,760 px chest radiograph."""
    patient, ct, _ = imaging_patient
    [mr] = imaging_upload(patient=patient, files=[UploadFile("mr.dcm", dicom_bytes("emri_small.dcm",
                                                                                    patient_id=patient.mrn))]).created
    [cr] = imaging_upload(patient=patient, files=[UploadFile("cr.dcm", dicom_bytes("RG3_UNCR.dcm",
                                                                                   patient_id=patient.mrn))]).created
    finding = ImagingFinding(instance=mr, patient=patient, model_version=ModelVersion.objects.get(), label="pneumonia",
                             probability=0.7, threshold=0.5, positive=True)
    heat = np.full((mr.preview_height, mr.preview_width, 4), (255, 0, 0, 255), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(heat).save(out, format="PNG")
    finding.heatmap.name = default_storage.save("imaging/heatmaps/mr.png", ContentFile(out.getvalue()))
    finding.save()
    [prior] = imaging_upload(patient=patient, files=[UploadFile("prior.dcm", dicom_bytes(
        patient_id=patient.mrn, new_instance=True, study_uid=generate_uid(), series_uid=generate_uid(),
        StudyDate="20031001"))]).created
    ImagingFinding.objects.create(instance=prior, patient=patient, model_version=ModelVersion.objects.get(),
                                  label="pneumonia", probability=0.2, threshold=0.5, positive=False)
    return {"ct": ct, "mr": mr, "cr": cr, "prior": prior}


def test_a_clinician_sets_a_window_zooms_pans_and_moves_through_frames(
    live_server, imaging_patient: tuple[m.Patient, ImagingInstance, Path], viewer_images: dict[str, ImagingInstance],
    browser_page: Page,
) -> None:
    patient = imaging_patient[0]
    page = browser_page
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    login(page, live_server)

    def open_viewer(instance: ImagingInstance) -> None:
        page.goto(f"{live_server.url}/patients/{patient.external_id}/imaging/{instance.external_id}/")
        page.wait_for_selector("#imaging-stage")
        loaded(page, "preview.png")

    # CT in HU: the default preset's window in the inputs; a typed one rendered on the server
    open_viewer(viewer_images["ct"])
    assert (page.input_value("#imaging-window-center"), page.input_value("#imaging-window-width")) == ("40", "400")
    page.fill("#imaging-window-width", "80")
    page.press("#imaging-window-width", "Enter")
    loaded(page, "?center=40&width=80")
    assert page.input_value("#imaging-preset") == "custom"
    page.select_option("#imaging-preset", "1")
    loaded(page, "?preset=1")
    assert (page.input_value("#imaging-window-center"), page.input_value("#imaging-window-width")) == ("-600", "1500")
    page.fill("#imaging-window-width", "0")
    page.press("#imaging-window-width", "Enter")
    assert page.inner_text("#imaging-render-problem") == "The window needs a level and a width of at least 1."
    assert src(page).endswith("?preset=1")

    # Shift + drag: across the stage's width is the image's whole range of HU (-896 to 1167)
    stage = page.locator("#imaging-stage").bounding_box()
    assert stage is not None
    x, y = stage["x"] + stage["width"] / 2, stage["y"] + stage["height"] / 2
    page.keyboard.down("Shift")
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + stage["width"] / 4, y, steps=4)
    page.mouse.up()
    page.keyboard.up("Shift")
    width = float(page.input_value("#imaging-window-width"))
    assert width == pytest.approx(1500 + (1167 + 896) / 4, abs=(1167 + 896) / stage["width"] * 2)
    assert float(page.input_value("#imaging-window-center")) == pytest.approx(-600, abs=1)
    loaded(page, f"width={page.input_value('#imaging-window-width')}")

    # zoom: image and overlay move together; a drag pans; Fit goes back
    page.click("#imaging-zoom-in")
    page.click("#imaging-zoom-in")
    assert page.inner_text("#imaging-zoom-value") == "156%"
    image_box, overlay_box = page.locator("#imaging-image").bounding_box(), page.locator("#imaging-overlay").bounding_box()
    assert image_box == overlay_box and image_box is not None
    assert image_box["width"] == pytest.approx(stage["width"] * 1.5625, abs=1)
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 40, y + 30, steps=4)
    page.mouse.up()
    panned = page.locator("#imaging-image").bounding_box()
    assert panned is not None
    assert (panned["x"] - image_box["x"], panned["y"] - image_box["y"]) == (pytest.approx(40, abs=1), pytest.approx(30, abs=1))
    page.dblclick("#imaging-stage")
    assert page.inner_text("#imaging-zoom-value") == "100%"
    assert page.locator("#imaging-image").bounding_box() == page.locator("#imaging-stage").bounding_box()
    # two fingers on a touch screen, 100 px apart, moved to 200 px apart: twice the size
    page.evaluate("""() => {
        const stage = document.getElementById('imaging-stage');
        const box = stage.getBoundingClientRect();
        const touch = (type, id, x, y) => stage.dispatchEvent(new PointerEvent(type, {
            pointerId: id, pointerType: 'touch', isPrimary: id === 1, bubbles: true, cancelable: true,
            clientX: box.left + x, clientY: box.top + y}));
        touch('pointerdown', 11, 100, 100); touch('pointerdown', 12, 200, 100);
        touch('pointermove', 12, 250, 100); touch('pointermove', 11, 50, 100);
        touch('pointerup', 11, 50, 100); touch('pointerup', 12, 250, 100);
    }""")
    assert page.inner_text("#imaging-zoom-value") == "200%"
    page.click("#imaging-zoom-fit")
    assert page.inner_text("#imaging-zoom-value") == "100%"

    # the CT beside an earlier one of the patient's: it follows the zoom
    assert page.inner_text(".imaging-history") == "On other images: 0.200 on 2003-10-01"
    page.select_option("#imaging-compare", str(viewer_images["prior"].external_id))
    page.wait_for_selector("#imaging-compare-stage")
    page.wait_for_function("(() => { const i = document.getElementById('imaging-compare-image');"
                           " return i.complete && i.naturalWidth > 0; })()")
    assert "Compared with: 2003-10-01" in page.inner_text("#imaging-compare-figure")
    page.click("#imaging-zoom-in")
    assert "scale(1.25)" in (page.get_attribute("#imaging-compare-canvas", "style") or "")
    page.select_option("#imaging-preset", "1")  # the lung window, on both
    page.wait_for_function("document.getElementById('imaging-compare-image').getAttribute('src')"
                           ".endsWith('?center=-600&width=1500')")
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT_DIR / "imaging-compare.png"), full_page=True)
    page.select_option("#imaging-compare", "")
    page.wait_for_url(f"**/imaging/{viewer_images['ct'].external_id}/")
    assert page.locator("#imaging-compare-stage").count() == 0

    # a 1,760 px radiograph: zoomed in past the preview's 1,024 px, every pixel is asked for
    open_viewer(viewer_images["cr"])
    assert "size=full" not in src(page)
    page.focus("#imaging-stage")
    for _ in range(4):
        page.keyboard.press("+")
    loaded(page, "size=full")
    assert page.evaluate("document.getElementById('imaging-image').naturalWidth") == 1760

    # 10 frames: the analysed (middle) one first, with its heat map; others by keys, buttons and wheel
    open_viewer(viewer_images["mr"])
    assert page.inner_text("#imaging-frame-value") == "frame 6 of 10"
    assert page.locator("#imaging-overlay").is_visible() and not page.locator("#imaging-overlay-frame-note").is_visible()
    page.focus("#imaging-stage")
    page.keyboard.press("ArrowRight")
    loaded(page, "?frame=6")
    assert page.inner_text("#imaging-frame-value") == "frame 7 of 10"
    assert not page.locator("#imaging-overlay").is_visible()
    assert page.locator("#imaging-overlay-frame-note").is_visible()
    page.click("#imaging-frame-prev")
    page.click("#imaging-frame-prev")
    loaded(page, "?frame=4")
    page.mouse.move(x, y)
    page.mouse.wheel(0, 100)
    loaded(page, "preview.png")
    assert "frame=" not in src(page)  # back on the analysed frame
    assert page.locator("#imaging-overlay").is_visible()
    page.fill("#imaging-frame", "1")
    loaded(page, "?frame=0")
    assert page.inner_text("#imaging-frame-value") == "frame 1 of 10"
    assert errors == []
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    page.locator("#imaging-viewer").screenshot(path=str(SCREENSHOT_DIR / "imaging-viewer-frames.png"))

    # the review list: both flagged findings await a verdict, the newest (the MR's) first
    page.click("nav.app-nav a:text('Imaging review')")
    page.wait_for_selector("#imaging-review")
    rows = page.locator("#imaging-review tbody tr")
    assert rows.count() == 2 and "pneumonia 0.700" in " ".join(rows.nth(0).inner_text().split())
    page.wait_for_function("Array.from(document.querySelectorAll('.imaging-review-thumb'))"
                           ".every(img => img.complete && img.naturalWidth > 0)")
    page.screenshot(path=str(SCREENSHOT_DIR / "imaging-review.png"), full_page=True)
    rows.nth(1).locator("td:nth-child(4) a").click()
    page.wait_for_selector("#imaging-viewer #imaging-overlay")
    assert page.inner_text(".imaging-probability") == "0.910"
    assert errors == []


def test_a_clinician_downloads_a_findings_dicom_result_and_sends_it_to_the_pacs(
    live_server, imaging_patient: tuple[m.Patient, ImagingInstance, Path], pacs: Scp,  # noqa: F811
    browser_page: Page,
) -> None:
    patient, analysed, _cr = imaging_patient
    page = browser_page
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    login(page, live_server)
    page.goto(f"{live_server.url}/patients/{patient.external_id}/imaging/{analysed.external_id}/")
    with page.expect_download() as download:
        page.click(".imaging-result-dicom a")
    ds = pydicom.dcmread(download.value.path())
    assert ds.SOPClassUID == SecondaryCaptureImageStorage and ds.PatientID == patient.mrn
    assert ds.StudyInstanceUID == analysed.series.study.study_instance_uid

    page.click(".imaging-result-send button")
    page.wait_for_selector(f".imaging-result-status:has-text('Queued for TESTPACS@127.0.0.1:{pacs.port}')")
    assert errors == []
    jobs: list[Any] = []
    finding_ids: list[str] = []

    def read() -> None:  # a thread of its own: no ORM calls where Playwright's loop runs
        try:
            jobs.extend(Job.objects.filter(kind="imaging.pacs").values("params"))
            finding_ids.extend(str(f) for f in ImagingFinding.objects.values_list("external_id", flat=True))
        finally:
            connection.close()

    thread = threading.Thread(target=read)
    thread.start()
    thread.join()
    assert jobs == [{"params": {"finding_ids": finding_ids}}] and len(finding_ids) == 1
