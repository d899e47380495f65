"""The imaging job against a real (tiny) trained model: findings and heat maps stored once, images
without a model or without an active version recorded, and the path from upload to the panel."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.template.defaultfilters import floatformat
from django.urls import reverse
from PIL import Image

from cdss.jobs.runner import job_run
from cdss.models import Job, ModelVersion
from imaging.ml import inference
from imaging.ml.cpuwork import OVERLAY_MAX_SIDE, overlay_dims
from imaging.models import ImagingFinding, ImagingInstance
from imaging.pixels import ANALYSIS_MAX_SIDE, load_image, model_image
from imaging.selectors import heatmap_png, operating_point
from imaging.services import UploadFile, imaging_upload
from tests.imaging.conftest import chest_image, chest_png, dicom_bytes, png_bytes, stored_files

pytestmark = [pytest.mark.django_db, pytest.mark.needs_data]

NAME = "imaging_pneumoniamnist"


def test_the_job_stores_one_finding_per_label_with_its_heat_map_once(pneumonia_model, patient_a) -> None:
    result = imaging_upload(patient=patient_a, files=[
        UploadFile("chest.dcm", dicom_bytes("RG1_UNCR.dcm", patient_id=patient_a.mrn)),  # CR, CHEST
        UploadFile("head.dcm", dicom_bytes("CT_small.dcm", patient_id=patient_a.mrn)),  # CT: no model
    ])
    result_png = imaging_upload(patient=patient_a, files=[UploadFile("xray.png", chest_png())], modality="DX",
                                body_part="chest")
    chest, png = result.created[0], result_png.created[0]
    jobs = list(Job.objects.filter(kind="imaging").order_by("pk"))
    assert [j.params["instance_ids"] for j in jobs] == [[i.pk for i in result.created], [png.pk]]

    assert job_run(jobs[0].pk) == "succeeded"
    jobs[0].refresh_from_db()
    assert jobs[0].result["findings_written"] == 1
    assert jobs[0].result["models"] == {NAME: pneumonia_model.version}
    assert jobs[0].result["no_model_for"] == {"CT/?": 1}
    finding = ImagingFinding.objects.get(instance=chest)
    loaded = inference.get_loaded_model(NAME)
    assert loaded is not None
    # the probability is the model's on the image as the preview shows it, read from its analysis copy
    # (at most 512 px a side, 16-bit levels), which gives what the radiograph's 1,955 x 1,841 pixels give
    with default_storage.open(str(chest.analysis.name), "rb") as fh:
        copy = model_image(fh.read())
    with default_storage.open(str(chest.file.name), "rb") as fh:
        full = load_image(fh.read()).rendering.image
    assert max(copy.shape) == ANALYSIS_MAX_SIDE < max(full.shape)
    on_copy, on_full = (p.probabilities["pneumonia"] for p in loaded.predict([copy, full], cam=False))
    assert finding.probability == pytest.approx(on_copy, abs=1e-5)
    assert on_copy == pytest.approx(on_full, abs=0.01)
    assert (finding.label, finding.model_version, finding.job) == ("pneumonia", pneumonia_model, jobs[0])
    assert finding.threshold == pytest.approx(loaded.thresholds["pneumonia"])
    assert finding.positive == (finding.probability >= finding.threshold)
    # the registry measured the flag at this very threshold on validation (the viewer says how it did)
    point = operating_point(pneumonia_model, finding.threshold)
    assert point is not None and point.split == "validation" and point.n == 524
    heat = Image.open(io.BytesIO(heatmap_png(finding)))  # its place in the job's heat map pack
    assert str(finding.heatmap.name).endswith(".pack") and finding.heatmap_offset == 0 and finding.heatmap_length
    # at the preview's shape, at most OVERLAY_MAX_SIDE a side (the radiograph's preview is 1,024 px)
    assert heat.format == "PNG" and heat.size == overlay_dims(chest.preview_width, chest.preview_height)
    assert max(heat.size) == OVERLAY_MAX_SIDE < max(chest.preview_width, chest.preview_height)
    assert heat.mode == "P" and "transparency" in heat.info  # the overlay's RGBA colours as a palette

    assert job_run(jobs[1].pk) == "succeeded"
    assert ImagingFinding.objects.filter(instance=png).count() == 1

    # the same work again (a new job for the same images) writes nothing twice
    again = Job.objects.create(kind="imaging", queue="imaging", patient=patient_a, params={}, idempotency_key="again",
                               available_at=jobs[0].available_at)
    assert job_run(again.pk) == "succeeded"
    again.refresh_from_db()
    assert again.result["findings_written"] == 0 and again.result["already_read"] == 2
    assert ImagingFinding.objects.count() == 2


def test_without_an_active_version_the_job_says_so_and_writes_nothing(pneumonia_model, patient_a) -> None:
    imaging_upload(patient=patient_a, files=[UploadFile("xray.png", chest_png(1))], modality="CR",
                   body_part="CHEST")
    ModelVersion.objects.filter(name=NAME).update(active=False)
    job = Job.objects.get(kind="imaging")
    assert job_run(job.pk) == "succeeded"
    job.refresh_from_db()
    assert job.result["no_active_model"] == [NAME] and job.result["findings_written"] == 0
    assert "no active model version for: imaging_pneumoniamnist" in job.result["note"]
    assert ImagingFinding.objects.count() == 0


def test_an_upload_is_analysed_at_commit_and_the_panel_shows_the_finding(
    eager, pneumonia_model, patient_a, client_a, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        response = client_a.post(reverse("patient-imaging-upload", args=[patient_a.external_id]),
                                 {"files": [SimpleUploadedFile("x.png", chest_png(2))], "modality": "CR",
                                  "body_part": "CHEST"})
    assert response.status_code == 200
    finding = ImagingFinding.objects.get()
    content = client_a.get(reverse("patient-imaging", args=[patient_a.external_id])).content.decode()
    assert f'data-label="pneumonia">pneumonia {finding.probability:.2f}' in content
    viewer = client_a.get(reverse("imaging-viewer", args=[patient_a.external_id, finding.instance.external_id]))
    text = viewer.content.decode()
    assert reverse("imaging-heatmap", args=[patient_a.external_id, finding.external_id]) in text
    auc = pneumonia_model.metrics.get("test_auc") or pneumonia_model.metrics["validation_auc"]
    assert f"Measured AUC {floatformat(auc, 3)}" in text  # the template's rounding (half up), not format()'s
    assert np.isfinite(finding.probability)


def test_an_image_whose_file_is_gone_is_counted_and_the_others_are_read(pneumonia_model, patient_a) -> None:
    """Each image is read from its analysis copy, from its original where the copy is gone (or
    there is none), and counted unreadable only when neither can be read."""
    from imaging.jobs import _Reader

    crs = imaging_upload(patient=patient_a, files=[
        UploadFile(f"{i}.dcm", dicom_bytes("RG1_UNCR.dcm", patient_id=patient_a.mrn, new_instance=True))
        for i in range(3)]).created
    pngs = imaging_upload(patient=patient_a, files=[UploadFile(f"{i}.png", chest_png(i)) for i in (3, 4)],
                          modality="CR", body_part="CHEST").created
    assert all(i.analysis.name for i in crs) and not any(i.analysis.name for i in pngs)  # a small 8-bit PNG: none
    for gone in (crs[0].file, crs[0].analysis, crs[1].file, pngs[0].file):
        default_storage.delete(str(gone.name))
    with default_storage.open(str(crs[2].file.name), "rb") as fh:
        original = fh.read()
    with default_storage.open(str(crs[2].analysis.name), "rb") as fh:
        copy = fh.read()
    assert _Reader(28).fetch(crs[2]) == (copy, None)
    assert _Reader(ANALYSIS_MAX_SIDE + 1).fetch(crs[2]) == (original, crs[2].frame_index)  # a larger input
    default_storage.delete(str(crs[2].analysis.name))  # the original is read
    assert _Reader(28).fetch(crs[2]) == (original, crs[2].frame_index)

    for job in Job.objects.filter(kind="imaging"):
        assert job_run(job.pk) == "succeeded"
    assert sum(j.result["unreadable"] for j in Job.objects.filter(kind="imaging")) == 2
    findings = dict(ImagingFinding.objects.values_list("instance_id", "probability"))
    assert set(findings) == {crs[1].pk, crs[2].pk, pngs[1].pk}
    loaded = inference.get_loaded_model(NAME)
    assert loaded is not None
    images = [model_image(copy), model_image(original), chest_image(4)]
    expected = [p.probabilities["pneumonia"] for p in loaded.predict(images, cam=False)]
    got = [findings[crs[1].pk], findings[crs[2].pk], findings[pngs[1].pk]]
    assert got == pytest.approx(expected, abs=1e-5)


def test_with_decode_processes_the_job_stores_what_the_threads_read(pneumonia_model, patient_a, settings) -> None:
    from imaging import jobs as imaging_jobs
    from imaging.ml.pipeline import read_images

    settings.CDSS_IMAGING_PROCESSES = 2
    dicom = imaging_upload(patient=patient_a, files=[
        UploadFile("chest.dcm", dicom_bytes("RG1_UNCR.dcm", patient_id=patient_a.mrn))]).created
    pngs = imaging_upload(patient=patient_a, files=[UploadFile(f"{i}.png", chest_png(i)) for i in (5, 6)],
                          modality="CR", body_part="CHEST").created
    default_storage.delete(str(pngs[1].file.name))  # a small PNG has no analysis copy: unreadable
    for job in Job.objects.filter(kind="imaging").order_by("pk"):
        assert job_run(job.pk) == "succeeded"
    assert sum(Job.objects.get(pk=j.pk).result["unreadable"] for j in Job.objects.filter(kind="imaging")) == 1
    loaded = inference.get_loaded_model(NAME)
    assert loaded is not None
    reader = imaging_jobs._Reader(loaded.input_size)
    expected = {out.item.pk: out for out in read_images(loaded, [dicom[0], pngs[0]], reader.decode,
                                                        imaging_jobs._overlay_size, processes=0)}
    findings = {f.instance_id: f for f in ImagingFinding.objects.all()}
    assert set(findings) == set(expected)
    for pk, out in expected.items():
        assert out.probabilities is not None
        assert findings[pk].probability == pytest.approx(out.probabilities["pneumonia"], abs=1e-6)
        assert heatmap_png(findings[pk]) == out.overlays["pneumonia"]


def _heatmap_files(media_root) -> list[str]:
    folder = media_root / "imaging" / "heatmaps"
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


def test_heat_maps_are_saved_in_packs_in_the_background_and_a_failed_save_leaves_no_file(
        media_root, monkeypatch) -> None:
    """The object store's way (the PNGs come back to the job, which saves them in packs of
    ``PACK_PNGS``), here on the local folder: every PNG is read back from its place, a pack name
    already taken fails the job's saves and removes the packs written, and so does an error."""
    import uuid

    from imaging import jobs as imaging_jobs
    from imaging.jobs import HeatmapStore, heatmap_pack_name
    from imaging.ml.pipeline import ReadOut
    from imaging.ml.store import PACK_PNGS

    def out(png: bytes) -> ReadOut:
        return ReadOut(item=None, probabilities={"a": 0.5}, positive={"a": False}, overlays={"a": png})

    pngs = [b"\x89PNG\r\n\x1a\n png %d" % i for i in range(PACK_PNGS + 3)]
    with HeatmapStore(threads=3) as store:
        placed = [store.stored(out(png), "a") for png in pngs]
        assert store.stored(out(b""), "a") == ("", None, None)  # no overlay: no place
        names = store.names()
    assert len(names) == 2 and names == sorted(set(names), key=names.index)
    assert [name for name, _, _ in placed] == [names[0]] * PACK_PNGS + [names[1]] * 3
    assert all(name.startswith("imaging/heatmaps/") and name.endswith(".pack") for name in names)
    for png, (name, offset, length) in zip(pngs, placed, strict=True):
        finding = ImagingFinding(heatmap=name, heatmap_offset=offset, heatmap_length=length)
        assert heatmap_png(finding) == png

    taken = heatmap_pack_name(uuid.uuid4())
    default_storage.save(taken, ContentFile(b"someone else's"))
    before = _heatmap_files(media_root)
    picks = iter([heatmap_pack_name(uuid.uuid4()), taken, heatmap_pack_name(uuid.uuid4())])
    monkeypatch.setattr(imaging_jobs, "_new_pack_name", lambda: next(picks))
    with HeatmapStore(threads=2) as store:
        for png in pngs * 2:  # three packs, the second's name taken
            store.stored(out(png), "a")
        with pytest.raises(FileExistsError):
            store.names()
    assert _heatmap_files(media_root) == before  # the other two removed again, the existing file kept
    with default_storage.open(taken, "rb") as fh:
        assert fh.read() == b"someone else's"
    monkeypatch.undo()

    with pytest.raises(RuntimeError), HeatmapStore() as store:  # a block left by an error discards
        for png in pngs:
            store.stored(out(png), "a")
        raise RuntimeError("the pipeline failed")
    assert _heatmap_files(media_root) == before


def test_a_job_whose_results_are_not_kept_leaves_no_heat_map_file(pneumonia_model, patient_a, media_root,
                                                                   monkeypatch) -> None:
    from cdss.jobs import runner

    imaging_upload(patient=patient_a, files=[UploadFile(f"{i}.png", chest_png(i)) for i in (7, 8)],
                   modality="CR", body_part="CHEST")
    job = Job.objects.get(kind="imaging")

    def status_fails(job, result):
        raise RuntimeError("the follow-up failed")

    monkeypatch.setattr(runner, "job_succeeded", status_fails)  # fails inside the writer's transaction
    assert job_run(job.pk) == "failed"
    assert ImagingFinding.objects.count() == 0 and _heatmap_files(media_root) == []
    monkeypatch.undo()

    # the handler fails after its heat maps were saved: it removes them itself
    class Ctx:
        def progress(self, percent, message=""):
            raise RuntimeError("the lease renewal failed")

    from imaging import jobs as imaging_jobs

    with pytest.raises(RuntimeError):
        imaging_jobs.run(job, Ctx())
    assert _heatmap_files(media_root) == []

    # two jobs read the same images before either wrote: the second writes nothing and removes its files
    class Quiet:
        def progress(self, percent, message=""):
            pass

    first, second = imaging_jobs.run(job, Quiet()), imaging_jobs.run(job, Quiet())
    packs = [{r.heatmap.rsplit("/", 1)[-1] for r in run["rows"]} for run in (first, second)]
    assert _heatmap_files(media_root) == sorted(packs[0] | packs[1]) and not packs[0] & packs[1]
    assert imaging_jobs.write(job, first)["findings_written"] == 2
    assert imaging_jobs.write(job, second)["findings_written"] == 0
    stored = {name.rsplit("/", 1)[-1] for name in ImagingFinding.objects.values_list("heatmap", flat=True)}
    assert _heatmap_files(media_root) == sorted(stored) and stored == packs[0]
    assert {f.external_id for f in ImagingFinding.objects.all()} == {r.external_id for r in first["rows"]}


def test_the_writer_removes_only_the_packs_no_kept_finding_names(pneumonia_model, patient_a, media_root) -> None:
    """Another job stored findings for two of three images meanwhile: the row left to write keeps
    the pack it shares with a taken row; the pack only taken rows name is removed."""
    import uuid

    from imaging import jobs as imaging_jobs

    created = imaging_upload(patient=patient_a, files=[UploadFile(f"{i}.png", chest_png(i)) for i in (13, 14, 15)],
                             modality="CR", body_part="CHEST").created
    job = Job.objects.get(kind="imaging")
    shared, alone = (default_storage.save(imaging_jobs.heatmap_pack_name(uuid.uuid4()), ContentFile(b"p" * 20))
                     for _ in range(2))
    rows = [imaging_jobs.FindingRow(
        instance_id=instance.pk, patient_id=patient_a.pk, model_version_id=pneumonia_model.pk, label="pneumonia",
        probability=0.3, threshold=0.5, positive=False, external_id=uuid.uuid4(), heatmap=pack,
        heatmap_offset=offset, heatmap_length=10)
        for instance, pack, offset in zip(created, (shared, shared, alone), (0, 10, 0), strict=True)]
    for instance in created[1:]:  # stored by another job
        ImagingFinding.objects.create(instance=instance, patient=patient_a, model_version=pneumonia_model,
                                      label="pneumonia", probability=0.3, threshold=0.5, positive=False)
    summary = imaging_jobs.write(job, {"rows": rows, "summary": {"no_active_model": []}})
    assert summary["findings_written"] == 1
    kept = ImagingFinding.objects.get(instance=created[0])
    assert (kept.heatmap.name, kept.heatmap_offset, kept.heatmap_length) == (shared, 0, 10)
    assert default_storage.exists(shared) and not default_storage.exists(alone)


def test_on_a_local_storage_folder_the_encoders_write_the_heat_maps_as_the_storage_would(
        pneumonia_model, patient_a, media_root, settings, monkeypatch) -> None:
    import stat

    from imaging import jobs as imaging_jobs

    settings.FILE_UPLOAD_PERMISSIONS = 0o640

    def no_storage_save(name, png):
        raise AssertionError("saved through the storage API")

    monkeypatch.setattr(imaging_jobs, "_save_exact", no_storage_save)
    created = imaging_upload(patient=patient_a, files=[UploadFile(f"{i}.png", chest_png(i)) for i in (9, 10)],
                             modality="CR", body_part="CHEST").created
    job = Job.objects.get(kind="imaging")
    assert job_run(job.pk) == "succeeded"
    loaded = inference.get_loaded_model(NAME)
    assert loaded is not None
    expected = {out.item.pk: out for out in read_images_for(loaded, created)}
    packs = set()
    for finding in ImagingFinding.objects.all():
        name = str(finding.heatmap.name)
        assert finding.heatmap_offset is not None and finding.heatmap_length is not None
        assert re.fullmatch(r"imaging/heatmaps/([0-9a-f]{2})/\1[0-9a-f]{30}\.pack", name)  # one of 256 folders
        path = media_root / name
        start, end = finding.heatmap_offset, finding.heatmap_offset + finding.heatmap_length
        assert path.read_bytes()[start:end] == expected[finding.instance_id].overlays["pneumonia"]
        assert stat.S_IMODE(path.stat().st_mode) == 0o640  # FILE_UPLOAD_PERMISSIONS, as the storage sets it
        packs.add(path.name)
    assert _heatmap_files(media_root) == sorted(packs)


def read_images_for(loaded, instances):
    from imaging import jobs as imaging_jobs
    from imaging.ml.pipeline import read_images

    return read_images(loaded, instances, imaging_jobs._Reader(loaded.input_size).decode, imaging_jobs._overlay_size)


def test_heat_map_files_no_finding_names_are_counted_and_removed_once_old(pneumonia_model, patient_a,
                                                                           media_root) -> None:
    import os
    import time
    import uuid
    from io import StringIO

    from django.core.management import CommandError, call_command

    from imaging.jobs import heatmap_pack_name

    imaging_upload(patient=patient_a, files=[UploadFile(f"{i}.png", chest_png(i)) for i in (11, 12)],
                   modality="CR", body_part="CHEST")
    assert job_run(Job.objects.get(kind="imaging").pk) == "succeeded"
    named = sorted(set(ImagingFinding.objects.values_list("heatmap", flat=True)))  # packs
    old, young = heatmap_pack_name(uuid.uuid4()), heatmap_pack_name(uuid.uuid4())
    for name in (old, young):
        default_storage.save(name, ContentFile(b"x" * 100))
    two_days_ago = time.time() - 2 * 86400
    os.utime(media_root / old, (two_days_ago, two_days_ago))
    for name in named:  # old files that a finding names are never orphans
        os.utime(media_root / name, (two_days_ago, two_days_ago))

    out = StringIO()
    call_command("imaging_orphans", stdout=out)
    assert out.getvalue().startswith("1 heat map file(s) no finding names, older than 24 h (0.1 KiB): none removed")
    assert "1 newer file(s) left alone" in out.getvalue()
    assert default_storage.exists(old)

    out = StringIO()
    call_command("imaging_orphans", "--delete", stdout=out)
    assert "removed 1" in out.getvalue()
    assert not default_storage.exists(old) and default_storage.exists(young)
    assert named and all(default_storage.exists(name) for name in named)

    with pytest.raises(CommandError, match="at least 1"):
        call_command("imaging_orphans", "--older-than-hours", "0.1")


def test_images_stored_before_analysis_copies_get_theirs_from_the_command(pneumonia_model, patient_a,
                                                                            media_root) -> None:
    from io import StringIO

    from django.core.management import CommandError, call_command

    crs = imaging_upload(patient=patient_a, files=[
        UploadFile(f"{i}.dcm", dicom_bytes("RG1_UNCR.dcm", patient_id=patient_a.mrn, new_instance=True))
        for i in range(3)]).created
    big = np.tile(np.arange(256, dtype=np.uint8), (600, 3))  # 768 x 600: larger than a copy
    pngs = imaging_upload(patient=patient_a, files=[UploadFile("small.png", chest_png(1)),
                                                    UploadFile("big.png", png_bytes(big))],
                          modality="CR", body_part="CHEST").created
    imaging_upload(patient=patient_a, files=[UploadFile("ct.dcm", dicom_bytes("CT_small.dcm", patient_id=patient_a.mrn))])
    made_at_upload = {}
    for instance in crs + pngs:
        if instance.analysis.name:
            with default_storage.open(str(instance.analysis.name), "rb") as fh:
                made_at_upload[instance.pk] = fh.read()
            default_storage.delete(str(instance.analysis.name))
    assert set(made_at_upload) == {crs[0].pk, crs[1].pk, crs[2].pk, pngs[1].pk}  # the small PNG has none
    ImagingInstance.objects.update(analysis="")  # as stored before there were copies
    default_storage.delete(str(crs[2].file.name))  # an original gone: counted

    with pytest.raises(CommandError, match="--limit"):
        call_command("imaging_analysis_copies", "--limit", "0")
    out = StringIO()
    call_command("imaging_analysis_copies", "--limit", "1", stdout=out)
    assert out.getvalue().startswith("1 analysis copy(ies) written")
    call_command("imaging_analysis_copies", stdout=out)
    assert "2 analysis copy(ies) written" in out.getvalue() and "1 original(s) that could not be read" in out.getvalue()
    assert "1 image(s) no model reads" in out.getvalue()  # the CT
    assert patient_a.mrn not in out.getvalue()
    for instance in ImagingInstance.objects.all():
        if instance.pk in (crs[0].pk, crs[1].pk, pngs[1].pk):
            with default_storage.open(str(instance.analysis.name), "rb") as fh:
                assert fh.read() == made_at_upload[instance.pk]  # what the upload would have written
        else:
            assert instance.analysis.name == ""
    again = StringIO()
    call_command("imaging_analysis_copies", stdout=again)
    assert again.getvalue().startswith("0 analysis copy(ies) written") and "1 original(s)" in again.getvalue()
    assert len([p for p in stored_files(media_root) if p.name.startswith("analysis")]) == 3
