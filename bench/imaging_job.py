#!/usr/bin/env python
"""Benchmark: the imaging job as a worker runs it, storing included, against the bare forward pass.

    .venv/bin/python bench/imaging_job.py [--database-url postgres://postgres@127.0.0.1:5432/cdss_bench_imaging]
        [--images 512] [--arch resnet18] [--input-size 28] [--processes 0] [--repeats 3] [--data-dir DIR]
        [--work-dir DIR] [--dicom RG1_J2KR.dcm]

``bench/imaging.py`` measures the pipeline without Django, so that it runs on a GPU host with
torch alone; this script measures what it leaves out, the store: the job's findings and heat map
packs written to PostgreSQL and Django's storage with the job's status in one transaction. It
recreates the named database (it must be a scratch database), migrates it, keeps files in a
temporary MEDIA_ROOT, uploads ``--images`` chest X-ray PNG files of 256 px (PneumoniaMNIST
validation images, upscaled, each made unique by one pixel) to one patient as CR / CHEST, and
registers a model of fresh weights as the active ``imaging_pneumoniamnist`` (the throughput does
not depend on the weights' values). Then, the passes alternating after one warm-up each, the best
of ``--repeats``:

1. bare forward: the preprocessed batches, already on the device, through the network alone;
2. the job's two phases called directly: ``imaging.jobs.run`` (read the stored files, decode,
   preprocess, forward with Grad-CAM, encode the overlays) and ``imaging.jobs.write`` in a
   transaction (findings; the heat map packs are written during the run);
3. the whole job: ``cdss.jobs.runner.job_run`` on a job for every image (claim, lease, run,
   write with the status change, the follow-up jobs published to a Redis server the script starts).

Between passes the findings and their files are deleted. Prints figures; asserts only that every
job succeeded and wrote a finding per image.
"""

from __future__ import annotations

import argparse
import io
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import data_dir, fresh_network, pneumonia_source, recreate_database  # noqa: E402
from tests.integration.workers import RedisServer, free_port  # noqa: E402

NAME = "imaging_pneumoniamnist"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/cdss_bench_imaging")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--input-size", type=int, default=28)
    parser.add_argument("--processes", type=int, default=0, help="CDSS_IMAGING_PROCESSES (default 0: threads)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, help="Default: CDSS_DATA_DIR, else ../shared/data")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="After the timings, one more whole job under cProfile (this thread): its N costliest "
                             "functions by cumulative time")
    parser.add_argument("--dicom", metavar="NAME",
                        help="Upload --images copies of this pydicom test file (e.g. RG1_J2KR.dcm, a chest CR of "
                             "1,841 x 1,955 in JPEG 2000; RG1_UNCR.dcm, uncompressed) instead of the PNG files; "
                             "the whole job is then also timed reading the originals instead of the analysis copies")
    parser.add_argument("--work-dir", type=Path,
                        help="Where the files go (a temporary folder made there and removed; default: the system's "
                             "temporary folder). Creating a file costs what the file system there makes it cost")
    args = parser.parse_args()
    if args.images < 1 or args.repeats < 1:
        parser.error("--images and --repeats must be at least 1")
    source = pneumonia_source(parser, args.data_dir)

    work = Path(tempfile.mkdtemp(prefix="cdss-bench-imaging-", dir=args.work_dir))
    recreate_database(args.database_url)
    # A Redis of its own: the follow-up jobs a finished imaging job makes are published, as on a
    # worker, and nobody runs them.
    redis = RedisServer(free_port(), work)
    redis.start()
    os.environ.update(DJANGO_SETTINGS_MODULE="cdss.settings", DATABASE_URL=args.database_url,
                      DJANGO_DEBUG="false", DJANGO_SECRET_KEY=secrets.token_urlsafe(40),
                      DJANGO_MEDIA_ROOT=str(work / "media"), CDSS_MODEL_DIR=str(work / "models"),
                      CDSS_DATA_DIR=str(data_dir(args.data_dir)), CDSS_IMAGING_PROCESSES=str(args.processes),
                      CELERY_BROKER_URL=redis.url)
    try:
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        _bench(args, source)
    finally:
        redis.stop()
        shutil.rmtree(work, ignore_errors=True)


def _bench(args: argparse.Namespace, source: Path) -> None:
    import torch
    from django.conf import settings
    from django.core.files.storage import default_storage
    from django.db import connection, transaction
    from django.utils import timezone

    from cdss.jobs.runner import job_run
    from cdss.model_registry import model_dir, model_version_register
    from cdss.models import Job
    from imaging import jobs as imaging_jobs
    from imaging.ml.inference import get_loaded_model
    from imaging.ml.modelfile import save_model_file
    from imaging.ml.pipeline import BATCH
    from imaging.models import ImagingFinding, ImagingInstance
    from imaging.pixels import model_image
    from imaging.services import UploadFile, imaging_upload
    from patients.models import Patient, Site

    config, state = fresh_network(args.arch, args.input_size, label="pneumonia")
    config["file_label_values"] = {"pneumonia": 1}
    relative = Path(NAME) / "bench.pt"
    sha = save_model_file(model_dir() / relative, config, [state])
    model_version_register(name=NAME, kind="imaging", architecture=config["architecture"], dataset="fresh weights (bench)",
                           split="none", file_path=relative.as_posix(), file_sha256=sha, metrics={},
                           trained_at=timezone.now(), activate=True)

    site = Site.objects.create(code="BENCH", name="Bench site")
    patient = Patient.objects.create(site=site, mrn="BENCH-1", given_names="Bench", family_name="Imaging",
                                     birth_date="1970-01-01", sex="female")
    files = _dicom_files(args.dicom, args.images, patient.mrn) if args.dicom else _png_files(source, args.images)
    what = f"copies of {args.dicom}" if args.dicom else "PNG files of 256 px"
    t = time.perf_counter()
    imaging_upload(patient=patient, files=[UploadFile(f"{i}.{'dcm' if args.dicom else 'png'}", data)
                                           for i, data in enumerate(files)], modality="CR", body_part="CHEST")
    print(f"setup: {args.images} {what} uploaded in {time.perf_counter() - t:.1f} s")
    Job.objects.all().delete()  # the upload's own jobs (published, never run): each pass below makes its own
    instances = list(ImagingInstance.objects.order_by("pk"))
    ids = [i.pk for i in instances]
    copies = {i.pk: i.analysis.name for i in instances}

    model = get_loaded_model(NAME)
    assert model is not None
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)
    images = [model_image(files[0])] * len(files) if args.dicom else [model_image(data) for data in files]
    batches = [model.preprocess(images[i:i + BATCH]).to(model.device) for i in range(0, len(images), BATCH)]

    def clear() -> None:
        names = set(ImagingFinding.objects.values_list("heatmap", flat=True))  # a pack per few findings
        ImagingFinding.objects.all().delete()
        for name in names:
            if name:
                default_storage.delete(name)

    def new_job() -> Job:
        return Job.objects.create(kind=imaging_jobs.IMAGING_KIND, queue="imaging", patient=patient,
                                  params={"instance_ids": ids}, idempotency_key=secrets.token_hex(8),
                                  available_at=timezone.now())

    class Context:
        def progress(self, percent: int, message: str = "") -> None:
            pass

    phases: dict[str, float] = {}

    def bare() -> None:
        for b in batches:
            model.forward(b)
        sync()

    def split() -> None:
        clear()
        job = new_job()
        t0 = time.perf_counter()
        payload = imaging_jobs.run(job, Context())
        t1 = time.perf_counter()
        with transaction.atomic():
            result = imaging_jobs.write(job, payload)
        t2 = time.perf_counter()
        assert result["findings_written"] == len(ids), result
        phases["run"] = min(phases.get("run", float("inf")), t1 - t0)
        phases["write"] = min(phases.get("write", float("inf")), t2 - t1)

    def whole() -> None:
        clear()
        job = new_job()
        assert job_run(job.pk) == "succeeded", Job.objects.get(pk=job.pk).error
        assert ImagingFinding.objects.count() == len(ids)

    def originals() -> None:  # the whole job with no analysis copies: every original decoded, as before them
        ImagingInstance.objects.update(analysis="")
        try:
            whole()
        finally:
            for pk, name in copies.items():
                ImagingInstance.objects.filter(pk=pk).update(analysis=name)

    passes = [("bare", bare), ("split", split), ("whole", whole)] + ([("originals", originals)] if args.dicom else [])
    best = {kind: float("inf") for kind, _ in passes}
    for repeat in range(args.repeats + 1):
        for kind, fn in passes:
            t = time.perf_counter()
            fn()
            took = time.perf_counter() - t
            if repeat and kind != "split":  # the split pass's own phases are timed inside it
                best[kind] = min(best[kind], took)
    if args.profile:
        import cProfile
        import pstats

        profile = cProfile.Profile()
        profile.runcall(whole)
        pstats.Stats(profile).sort_stats("cumulative").print_stats(args.profile)
    n = len(ids)
    device = torch.cuda.get_device_name() if model.device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"imaging job bench: {config['architecture']} at {args.input_size}px ({config['stem']} stem), batch {BATCH}, {n} {what}, "
          f"device {device}, {args.processes or 'no'} decode process(es), storage {type(default_storage).__name__}, "
          f"{connection.vendor}, torch {torch.__version__}, DEBUG={settings.DEBUG}")
    rows = [("bare forward", best["bare"]), ("job run phase (read, decode, forward, Grad-CAM, overlay PNG files)",
                                              phases["run"]),
            ("job write phase (findings, one transaction)", phases["write"]),
            ("whole job (job_run: claim, run, write, status)", best["whole"])]
    if args.dicom:
        rows.append(("whole job reading the originals (no analysis copies)", best["originals"]))
    for label, seconds in rows:
        print(f"  {label:66s} {n / seconds:9.1f} images/s  ({seconds * 1000 / n:.3f} ms/image)")
    print(f"  the whole job keeps {100 * best['bare'] / best['whole']:.0f}% of the bare forward throughput "
          f"(goal >= 80%); the run phase alone {100 * best['bare'] / phases['run']:.0f}%")


def _png_files(source: Path, count: int) -> list[bytes]:
    """``count`` chest X-ray PNG files of 256 px (PneumoniaMNIST validation images, upscaled),
    each made unique by one pixel (PNG images get UIDs from their content)."""
    import numpy as np
    from PIL import Image

    with np.load(source) as npz:
        base = npz["val_images"]
    out = []
    for i in range(count):
        pixels = np.asarray(Image.fromarray(base[i % len(base)]).resize((256, 256), Image.Resampling.BILINEAR)).copy()
        pixels[0, 0], pixels[0, 1] = i % 256, i // 256
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def _dicom_files(name: str, count: int, mrn: str) -> list[bytes]:
    """``count`` copies of a pydicom test file, each a new instance of the patient ``mrn``."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    path = get_testdata_file(name)
    if path is None:
        raise SystemExit(f"--dicom: no pydicom test file named {name!r}")
    ds = pydicom.dcmread(str(path))
    ds.PatientID = mrn
    out = []
    for _ in range(count):
        uid = generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out.append(buf.getvalue())
    return out


if __name__ == "__main__":
    main()
